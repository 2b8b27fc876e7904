"""Dataflow jobs built offline (Beam's --dry_run) must match the matrix and the seed."""
import argparse
import json
import sys

import pytest

from pipelines import dataflow, matrix, run
from pipelines.worker.options import BenchmarkOptions

SETTINGS = {"PROJECT": "proj-123456", "REGION": "us-central1",
            "TEMP_LOCATION": "gs://bkt-x/tmp", "REGISTRY": "us-docker.pkg.dev/proj-123456/bench",
            "IMAGE_TAG": "0123abcd",
            "PUBSUB_SUBSCRIPTION": "projects/proj-123456/subscriptions/bench-items"}
# The first five benchmarks' shape (Beam's ResNet and BERT jobs); tests/test_beam_suite.py checks
# the rest of Beam's suite against its option files.
FIVE = ("resnet101", "resnet152", "resnet152-gpu", "bert-base", "bert-large")
T4 = "worker_accelerator=type:nvidia-tesla-t4;count:1;install-nvidia-driver:5xx"


@pytest.fixture
def cloud_env(monkeypatch):
  for name, value in SETTINGS.items():
    monkeypatch.setenv(name, value)
  for name in ("INFLUXDB_URL", "BIGQUERY_DATASET"):
    monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
  """Dry-runs all five benchmarks once: {name: job file contents}."""
  out = tmp_path_factory.mktemp("dry")
  mp = pytest.MonkeyPatch()
  for name, value in SETTINGS.items():
    mp.setenv(name, value)
  try:
    for name in matrix.load():
      assert run.main([name, "--runner", "DataflowRunner", "--dry-run",
                       "--results-dir", str(out)]) == 0
  finally:
    mp.undo()
  return {p.stem: json.loads(p.read_text()) for p in (out / "dataflow-jobs").glob("*.json")}


@pytest.mark.parametrize("name", FIVE)
def test_dry_run_job_matches_the_matrix(jobs, name):
  bench = matrix.get(name)
  job = jobs[name]
  (pool,) = job["worker_pools"]
  assert pool["machineType"] == "n1-standard-2"
  assert pool["numWorkers"] == bench.dataflow.num_workers == (
      250 if bench.task == "language_modeling" else 75)
  assert pool["autoscalingSettings"]["algorithm"] == "AUTOSCALING_ALGORITHM_NONE"
  assert pool["diskSizeGb"] == 50
  image = f"us-docker.pkg.dev/proj-123456/bench/beam-bench-{bench.image}:0123abcd"
  assert job["container_images"] == [image]
  assert [c["containerImage"] for c in pool["sdkHarnessContainerImages"]] == [image]
  if bench.needs_gpu:
    assert job["service_options"] == [T4]
    assert "no_use_multiple_sdk_containers" in job["experiments"]
    assert bench.image == "gpu"
  else:
    assert job["service_options"] == []
    assert bench.image == ("cpu-resnet" if bench.task == "image_classification" else "cpu-bert")
  options = job["pipeline_options"]
  assert options["input"] == bench.dataset_input
  assert options["model_state_dict_path"] == f"/opt/models/{bench.model}.pth"
  assert options["device"] == bench.device
  assert options["min_batch_size"] == options["max_batch_size"] == bench.local_batch_size
  assert options["output"].startswith("gs://bkt-x/tmp/bench-outputs/" + name + "/")
  assert ("vocab_path" in options) == (bench.task == "language_modeling")
  assert any(t.startswith("RunInference/BeamML_RunInference") for t in job["transforms"])
  assert "WriteDeadLetters/Write/WriteImpl/WriteBundles" in job["transforms"]


def test_dry_run_job_carries_every_benchmark_option(jobs):
  # The flags as BenchmarkOptions' own parser defines them, not a list kept beside it.
  parser = argparse.ArgumentParser()
  BenchmarkOptions._add_argparse_args(parser)  # noqa: SLF001 - the call Beam makes
  flags = set(vars(parser.parse_args([])))
  bert, resnet = jobs["bert-base"]["pipeline_options"], jobs["resnet101"]["pipeline_options"]
  # None where the task has no vocab, or the job is not a streaming one
  assert set(bert) == flags - {"pubsub_subscription"}
  assert set(resnet) == flags - {"vocab_path", "pubsub_subscription"}
  assert bert["sentence_batching"] == "length" and resnet["sentence_batching"] == "padded"
  assert bert["benchmark"] == "bert-base" and resnet["max_image_pixels"] == 50_000_000
  assert resnet["max_image_bytes"] == 100_000_000


def test_missing_cloud_settings_are_named_before_anything_runs(monkeypatch, capsys, tmp_path):
  for name in dataflow.REQUIRED:
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setenv("PROJECT", "proj-123456")
  code = run.main(["bert-base", "--runner", "DataflowRunner", "--results-dir", str(tmp_path)])
  assert code == 2
  err = capsys.readouterr().err
  assert "needs REGION, TEMP_LOCATION, REGISTRY" in err
  assert not (tmp_path / "records").exists()


@pytest.mark.parametrize("name, value", [("TEMP_LOCATION", "gs://b/t"),
                                         ("TEMP_LOCATION", "/tmp/local"),
                                         ("OUTPUT_LOCATION", "gs://Bucket/out")])
def test_a_malformed_gcs_location_is_refused_before_beam_sees_it(cloud_env, monkeypatch, capsys,
                                                                 tmp_path, name, value):
  """Beam would try to create a default bucket for two minutes, then print a traceback."""
  monkeypatch.setenv(name, value)
  code = run.main(["bert-base", "--runner", "DataflowRunner", "--dry-run", "--results-dir",
                   str(tmp_path)])
  assert code == 2
  assert f"{name} must be gs://BUCKET[/PATH]" in capsys.readouterr().err


def test_dry_run_is_refused_for_local_runs(capsys, tmp_path):
  assert run.main(["bert-base", "--dry-run", "--results-dir", str(tmp_path)]) == 2
  assert "RUNNER=DataflowRunner" in capsys.readouterr().err


def test_default_image_tag_is_the_git_sha(cloud_env, monkeypatch):
  monkeypatch.delenv("IMAGE_TAG")
  tag = dataflow.settings()["IMAGE_TAG"]
  assert len(tag) == 12 and all(c in "0123456789abcdef" for c in tag)


def test_launcher_python_matches_the_images():
  from tests.test_images import dockerfile_args
  for variant in ("cpu", "gpu"):
    assert dockerfile_args(variant)["PYTHON_VERSION"] == "%d.%d" % sys.version_info[:2]
