"""`make gpu-check` without a GPU: what it does with a run that failed."""
from __future__ import annotations

import pytest

from pipelines import dataflow, gpu_check
from pipelines.plan import Overrides
from tests.test_faults import kit  # noqa: F401 - the launcher fixture on the small matrix


def test_a_failed_run_ends_the_check_with_one_line(kit, tmp_path, models_dir,  # noqa: F811
                                                   data_dir):
  bad = tmp_path / "bad.txt"  # every input dead-lettered: the run fails, its figures are None
  bad.write_text(f"{tmp_path / 'missing.jpg'}\n{tmp_path / 'gone.jpg'}\n")
  with pytest.raises(SystemExit) as stop:
    gpu_check.launched(Overrides("small-resnet", input=str(bad), models_dir=models_dir,
                                 data_dir=data_dir, results_dir=kit.results))
  message = str(stop.value)
  assert "\n" not in message
  assert message.startswith("error: gpu-check: small-resnet run ")
  assert message.endswith(" failed: no inferences ran (2 inputs dead-lettered)")


def test_the_in_image_check_says_why_it_did_not_run(tmp_path, monkeypatch):
  monkeypatch.setenv("BENCH_BUILD_DIR", str(tmp_path / "build"))
  skipped = gpu_check.in_image("resnet152-gpu", 4, tmp_path / "results")
  assert skipped["ran"] is False
  assert skipped["why"].startswith(f"no pushed image ({tmp_path / 'build' / 'image-gpu.digest'})")
  dataflow.write_digest(tmp_path / "build" / "image-gpu.digest", "127.0.0.1:5000/b/gpu:t",
                        "sha256:" + "ab" * 32)
  monkeypatch.setenv("CONTAINER_CLI", str(tmp_path / "no-such-cli"))
  skipped = gpu_check.in_image("resnet152-gpu", 4, tmp_path / "results")
  assert skipped == {"ran": False,
                     "why": "IN_IMAGE=1 needs podman or docker (make image-tools installs podman)"}
