"""Local runs that are interrupted, or lose a worker process, through the real launcher in a
subprocess with real signals: every such run ends with a record, stops its SDK worker processes
and exits with the signal's code."""
from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from pipelines import interrupts, progress
from pipelines.matrix import REPO_ROOT
from pipelines.record import store

ITEMS = 60  # batches of 1: the run is still going when the first batch has ended


class Launch:
  """`python -m pipelines.run small-resnet` on ITEMS images, its output in files."""

  def __init__(self, tmp_path: pathlib.Path, models_dir: pathlib.Path,
               data_dir: pathlib.Path, layout: str):
    paths = (data_dir / "images.txt").read_text().split()
    listing = tmp_path / "images.txt"
    listing.write_text("\n".join((paths * ITEMS)[:ITEMS]) + "\n")
    self.results = tmp_path / "results"
    self.tmp = tmp_path / "tmp"  # the launcher's progress folder goes here
    self.tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("INFLUXDB_URL", "BIGQUERY_DATASET")}
    env.update(BENCHMARK_MATRIX=str(REPO_ROOT / "tests" / "small-matrix.toml"),
               TMPDIR=str(self.tmp))
    self.out = open(tmp_path / "out.txt", "w+")
    self.err = open(tmp_path / "err.txt", "w+")
    self.process = subprocess.Popen(
        [sys.executable, "-m", "pipelines.run", "small-resnet", "--models-dir", str(models_dir),
         "--data-dir", str(data_dir), "--results-dir", str(self.results), "--input",
         str(listing), "--batch-size", "1", "--layout", layout],
        cwd=REPO_ROOT, env=env, stdout=self.out, stderr=self.err, start_new_session=True)
    self.workers: set[int] = set()

  def wait_for_first_batch(self, timeout_s: float = 180) -> None:
    """Until a worker reported a finished batch; remembers the SDK worker processes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
      self.workers.update(interrupts.sdk_workers(self.process.pid))
      done = [n for folder in self.tmp.glob("bench-progress-*")
              for n in progress.read_counts(folder).values() if n]
      if done:
        return
      assert self.process.poll() is None, self.output()
      time.sleep(0.1)
    raise AssertionError(f"no batch within {timeout_s}s: {self.output()}")

  def finish(self, timeout_s: float = 120) -> int:
    try:
      return self.process.wait(timeout=timeout_s)
    finally:
      if self.process.poll() is None:
        os.killpg(self.process.pid, signal.SIGKILL)

  def output(self) -> str:
    self.out.seek(0)
    self.err.seek(0)
    return self.out.read()[-3000:] + self.err.read()[-5000:]

  def stderr(self) -> str:
    self.err.seek(0)
    return self.err.read()

  def record(self) -> dict:
    (record,) = store.load_all(self.results)
    return record

  def python_worker(self) -> int:
    """One SDK worker's Python process (not the shell that started it)."""
    (victim, *_) = [pid for pid in self.workers
                    if "sh -c" not in interrupts._cmdline(pid)
                    and interrupts._cmdline(pid).startswith(sys.executable)] or [None]
    assert victim, self.workers
    return victim

  def survivors(self) -> list[int]:
    deadline = time.monotonic() + 10  # reaped by now; a zombie does not count
    while time.monotonic() < deadline and any(interrupts.alive(p) for p in self.workers):
      time.sleep(0.1)
    return [pid for pid in sorted(self.workers) if interrupts.alive(pid)]


@pytest.fixture
def launch(tmp_path, models_dir, data_dir):
  started = []

  def start(layout: str) -> Launch:
    started.append(Launch(tmp_path, models_dir, data_dir, layout))
    return started[-1]
  yield start
  for each in started:  # never leave a run behind, whatever the test found
    if each.process.poll() is None:
      os.killpg(each.process.pid, signal.SIGKILL)
    each.process.wait()
    interrupts.stop_workers([pid for pid in each.workers if interrupts.alive(pid)], 1)


@pytest.mark.parametrize("layout", ["1x2", "2x1"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_local_run_is_recorded_as_cancelled(launch, layout, signum):
  run = launch(layout)
  run.wait_for_first_batch()
  if layout == "2x1":
    assert len(run.workers) >= 2, run.workers  # the SDK worker processes were running
  if signum == signal.SIGINT:  # Ctrl-C: the terminal signals the whole process group
    os.killpg(run.process.pid, signum)
  else:  # `kill`: the launcher alone
    run.process.send_signal(signum)
  code = run.finish()
  assert code == 128 + signum, run.output()
  record = run.record()
  m = record.metrics
  assert record.status == "cancelled"
  assert record.error.startswith(f"interrupted by {signal.Signals(signum).name}")
  assert record.metadata["interrupted_by"] == signal.Signals(signum).name
  # what the workers said they loaded, though Beam's metrics never came
  assert (record.device_used, record.weights) == ("CPU", "random")
  assert m["partial"] is True
  assert 1 <= m["num_inferences"] < ITEMS
  assert m["num_inferences"] + m["dead_lettered"] <= ITEMS
  assert m["num_batches"] == m["num_inferences"]  # batches of 1
  assert record.plan["items"] == ITEMS
  assert not (run.results / "runs" / record.run_id).exists()  # no half-written outputs
  assert run.survivors() == []
  err = run.stderr()
  assert f"small-resnet: interrupted by {signal.Signals(signum).name}" in err
  # The launcher prints no traceback. (Ctrl-C reaches Beam's worker processes too, and a
  # worker may print its own KeyboardInterrupt before the launcher stops it.)
  assert "pipelines/run.py" not in err, err[-5000:]
  if signum == signal.SIGTERM:
    assert "Traceback" not in err, err[-5000:]


def test_a_worker_process_killed_with_sigkill_is_named(launch):
  run = launch("2x1")
  run.wait_for_first_batch()
  victim = run.python_worker()
  os.kill(victim, signal.SIGKILL)
  code = run.finish()
  assert code == 1, run.output()
  record = run.record()
  assert record.status == "failed"
  assert record.error.startswith("WorkerDied: an SDK worker process died (killed by SIGKILL)")
  # What finished before the worker died is kept, marked partial.
  assert record.metrics["partial"] is True and record.metrics["num_inferences"] >= 1
  err = run.stderr()
  assert "an SDK worker process died (killed by SIGKILL)" in err
  assert "Traceback" not in err, err[-5000:]
  assert run.survivors() == []


def test_a_stopped_worker_process_fails_the_run_naming_it(launch):
  """SIGSTOP to one SDK worker process: the run does not wait forever; it fails with a record
  naming the stopped process, and no worker is left behind."""
  run = launch("2x1")
  run.wait_for_first_batch()
  victim = run.python_worker()
  os.kill(victim, signal.SIGSTOP)
  code = run.finish(timeout_s=progress.STOPPED_S + 60)
  assert code == 1, run.output()
  record = run.record()
  assert record.status == "failed"
  assert record.error.startswith(f"WorkerStalled: SDK worker process {victim} is stopped "
                                 "(state T)"), record.error
  assert record.metrics["partial"] is True
  assert run.survivors() == []
  assert "Traceback" not in run.stderr(), run.stderr()[-5000:]


SLOW_CHECK = """
import sys, time
from pipelines import agreement, run
real = agreement.check
def slow(plan, *args, **kwargs):
  time.sleep(120)  # the check of a big model under compile takes minutes
  return real(plan, *args, **kwargs)
agreement.check = slow
sys.exit(run.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_run_stopped_during_its_agreement_check_keeps_its_record(tmp_path, models_dir,
                                                                  data_dir, signum):
  """The measurement is done when the post-run check starts: its record is already saved, and
  an interrupted check is said in it."""
  results = tmp_path / "results"
  env = {k: v for k, v in os.environ.items() if k not in ("INFLUXDB_URL", "BIGQUERY_DATASET")}
  env["BENCHMARK_MATRIX"] = str(REPO_ROOT / "tests" / "small-matrix.toml")
  process = subprocess.Popen(
      [sys.executable, "-c", SLOW_CHECK, "small-resnet", "--optimize", "channels_last",
       "--models-dir", str(models_dir), "--data-dir", str(data_dir),
       "--results-dir", str(results), "--layout", "1x2"],
      cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      start_new_session=True)
  try:
    deadline = time.monotonic() + 180
    while not list((results / "records").glob("*.json")) and time.monotonic() < deadline:
      assert process.poll() is None, process.communicate()
      time.sleep(0.1)
    os.killpg(process.pid, signum)  # the check is sleeping: the measured run is over
    out, err = process.communicate(timeout=60)
  finally:
    if process.poll() is None:
      os.killpg(process.pid, signal.SIGKILL)
  assert process.returncode == 128 + signum, err[-3000:]
  (record,) = store.load_all(results)
  assert record.status == "succeeded" and record.metrics["num_inferences"] == 6
  assert record.metadata["post_run_interrupted_by"] == signal.Signals(signum).name
  assert record.metrics["agreement"] is None
  assert record.metric_notes["agreement"].startswith(
      f"agreement check interrupted by {signal.Signals(signum).name}")
  assert "Traceback" not in err, err[-3000:]
  assert not [p for p in (results / "records").iterdir() if p.suffix != ".json"]
