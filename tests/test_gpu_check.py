"""`make gpu-check` without a GPU: what it does with a run that failed."""
from __future__ import annotations

import pytest

from pipelines import gpu_check
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
