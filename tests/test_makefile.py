"""The Makefile is the front door: every documented target exists and passes the right flags."""
import subprocess

import pytest

from pipelines import matrix
from pipelines.matrix import REPO_ROOT


def make(*args: str) -> str:
  result = subprocess.run(["make", "-n", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=60)
  assert result.returncode == 0, result.stderr
  return result.stdout


@pytest.mark.parametrize("name", sorted(matrix.load()))
def test_each_benchmark_target_runs_its_benchmark(name):
  assert f"-m pipelines.run {name} --runner DirectRunner" in make(f"bench-{name}")
  assert f"-m pipelines.run {name} --runner DirectRunner --results-dir results --items 7" in make(
      f"bench-{name}", "N=7")


def test_dataflow_dry_run_flags_reach_the_launcher():
  out = make("bench-bert-base", "RUNNER=DataflowRunner", "DRY_RUN=1", "BATCH_SIZE=4",
             "INPUT=gs://bkt-x/mine.txt")
  assert "--runner DataflowRunner" in out and "--batch-size 4" in out and "--dry-run" in out
  assert "--input gs://bkt-x/mine.txt" in out
  assert "pipelines.data" not in out  # Dataflow reads its own datasets


def test_help_lists_every_entry_point():
  out = subprocess.run(["make"], cwd=REPO_ROOT, capture_output=True, text=True).stdout
  for target in ("setup", "data", "models", "bench-all", "bench-<name>", "perf", "test", "lint",
                 "clean", "image-cpu", "image-gpu", "push", "publish", "report", "compare",
                 "gpu-check", "test-servers", "doctor"):
    assert target in out, target
  for variable in ("RUNNER", "N ", "BATCH_SIZE", "WEIGHTS", "DRY_RUN", "REGISTRY"):
    assert variable in out, variable
