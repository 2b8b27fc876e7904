"""Progress: the workers' side channel adds up across SDK processes, the display ends on the
exact count, the launcher and the multi-benchmark commands show where they are, and the Dataflow
watcher prints state and elapsed time at a steady interval."""
from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import textwrap
import time

from pipelines import matrix, progress
from pipelines.dataflow import status as dataflow_status
from pipelines.matrix import REPO_ROOT
from tests.conftest import run_pipeline

TWO_PROCESSES = ("--direct_num_workers=2", "--direct_running_mode=multi_processing")


def reporting_pids(folder) -> set[int]:
  """The processes that reported, from the file names (`<pid>-<token>`)."""
  return {int(name.split("-")[0]) for name in progress.read_counts(folder)}


def test_counts_from_two_sdk_processes_add_up_to_num_inferences(tmp_path, monkeypatch,
                                                                  models_dir, data_dir):
  folder = tmp_path / "progress"
  folder.mkdir()
  monkeypatch.setenv(progress.ENV_VAR, str(folder))  # as the launcher does before p.run()
  monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two processes on a 2-core machine
  paths = (data_dir / "images.txt").read_text().split()
  out = run_pipeline(tmp_path / "run", paths, task="image_classification",
                     architecture="resnet18", models_dir=models_dir, batch_size=2,
                     beam_args=TWO_PROCESSES)
  counts = progress.read_counts(folder)
  pids = reporting_pids(folder)
  assert sum(counts.values()) == out["record"].metrics["num_inferences"] == len(paths)
  assert len(pids) == 2, counts  # both SDK worker processes reported...
  assert os.getpid() not in pids  # ...and neither is this process
  assert not list(folder.glob("*.tmp"))


def test_without_the_variable_workers_report_nothing(monkeypatch, tmp_path):
  monkeypatch.delenv(progress.ENV_VAR, raising=False)
  progress.reporter().add(5)  # a no-op, as on Dataflow
  monkeypatch.setenv(progress.ENV_VAR, str(tmp_path))
  reporter = progress.reporter()
  assert progress.reporter() is reporter  # one per process and folder
  reporter.add(3)
  reporter.add(4)
  assert progress.read_counts(tmp_path) == {reporter.path.name: 7}
  assert reporting_pids(tmp_path) == {os.getpid()}


def test_a_worker_says_what_it_loaded_before_any_batch(tmp_path, monkeypatch, models_dir):
  """The device and weights reach the launcher's folder at load: a run stopped before Beam's
  metrics (or before its first batch) still says what it loaded."""
  from pipelines.worker import handler
  from pipelines.worker.tasks import image_classification
  monkeypatch.setenv(progress.ENV_VAR, str(tmp_path))
  path = str(models_dir / "resnet18.pth")
  wrapped = handler.BenchmarkModelHandler(
      image_classification.TASK.model_handler(path, "resnet18", "CPU", {}), device="CPU",
      state_dict_path=path, telemetry_reader=lambda: None)
  wrapped.load_model()
  tallies = progress.sum_tallies(tmp_path)
  assert tallies["loaded"] == {"device_used": "CPU", "weights": "random"}
  assert tallies["items"] == 0


def _fake_worker(folder, pid_name: str, count: int) -> None:
  (folder / f"{pid_name}-abc").write_text(str(count))


def test_display_ends_exactly_at_the_total(tmp_path):
  stream = io.StringIO()
  with progress.ProgressDisplay(12, "resnet18", stream=stream, interactive=True,
                                poll_s=0.05) as display:
    folder = display.folder
    assert os.environ[progress.ENV_VAR] == str(folder)
    _fake_worker(folder, "101", 5)
    _fake_worker(folder, "102", 7)  # the last write lands just before the run ends
  assert display.done == 12
  assert progress.ENV_VAR not in os.environ  # restored
  assert not folder.exists()  # its own temp folder is removed
  final = stream.getvalue().replace("\r", "\n").strip().splitlines()[-1]
  assert "resnet18" in final and "12/12" in final and "100%" in final, final
  assert re.search(r"item/s|s/item", final), final


def test_display_in_logs_prints_a_plain_line_at_an_interval(tmp_path):
  stream = io.StringIO()
  display = progress.ProgressDisplay(10, "bert-base", unit="sentence", stream=stream,
                                     folder=tmp_path, poll_s=0.02, plain_every_s=0.05)
  assert not display.interactive  # StringIO is no terminal
  with display:
    _fake_worker(tmp_path, "7", 4)
    for _ in range(200):
      if "4/10" in stream.getvalue():
        break
      time.sleep(0.02)
  lines = stream.getvalue().splitlines()
  assert lines and all(line.startswith("bert-base: ") for line in lines)
  assert any(re.fullmatch(r"bert-base: 4/10 sentences \(40%\), [\d.]+ sentences/s"
                          r"(, ETA \d+m\d\ds)?", line) for line in lines), lines
  assert "\r" not in stream.getvalue()  # no bar drawing in logs
  assert tmp_path.exists()  # a folder it was given is left in place


def test_launcher_shows_progress_only_for_local_runs():
  assert isinstance(progress.for_launch(True, 16, "resnet101"), progress.ProgressDisplay)
  assert not isinstance(progress.for_launch(False, 50_000, "resnet101"),
                        progress.ProgressDisplay)
  assert progress.step(2, 4, "resnet152") == "[2/4] resnet152"


def test_bench_all_numbers_its_steps(tmp_path):
  """bench-all where torch sees no GPU: every CPU benchmark a numbered step out of their count,
  the GPU ones skipped with their reason (the runs and the report are stubbed out)."""
  script = textwrap.dedent("""
      import sys
      from pipelines import bench_all
      def refused(o, quiet=False):  # no real runs
          raise bench_all.child.NotStarted("stubbed")
      bench_all.child.run = refused
      bench_all.report.main = lambda argv: 0
      sys.exit(bench_all.main(["--results-dir", sys.argv[1]]))
  """)
  result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
  steps = re.findall(r"=== (\[\d+/\d+\] \S+) ===", result.stdout)
  cpu = [name for name, bench in matrix.load().items() if not bench.needs_gpu]
  assert len(cpu) == 8
  assert steps == [f"[{i}/{len(cpu)}] {name}" for i, name in enumerate(cpu, 1)], (
      result.stdout + result.stderr)
  for gpu in ("resnet152-gpu", "faster-rcnn-gpu", "gemma-vllm-gpu"):
    assert f"skipped {gpu}: needs a CUDA GPU" in result.stdout


def test_dataflow_status_prints_state_and_elapsed_at_a_steady_interval():
  now = [0.0]
  url = "https://console.cloud.google.com/dataflow/jobs/us-central1/2026-1?project=p"
  stream = io.StringIO()
  status = dataflow_status.JobStatus(url, interval_s=30, stream=stream, clock=lambda: now[0])
  for t, state, note in ((0, "JOB_STATE_PENDING", ""), (10, "JOB_STATE_RUNNING", ""),
                         (20, "JOB_STATE_RUNNING", ""), (40, "JOB_STATE_RUNNING", ""),
                         (50, "JOB_STATE_RUNNING", "status unavailable: ConnectionError"),
                         (75, "JOB_STATE_RUNNING", "")):
    now[0] = t
    status.update(state, note)
  now[0] = 120
  status.finish("JOB_STATE_DONE")
  assert stream.getvalue().splitlines() == [
      f"Dataflow job: {url}",
      "Dataflow job PENDING, 0m00s elapsed",
      "Dataflow job RUNNING, 0m10s elapsed",  # a change of state shows at once
      "Dataflow job RUNNING, 0m40s elapsed",  # then once per interval
      "Dataflow job RUNNING (status unavailable: ConnectionError), 0m50s elapsed",
      "Dataflow job RUNNING, 1m15s elapsed",
      f"Dataflow job DONE after 2m00s: {url}",
  ]


def test_dataflow_status_takes_beam_pipeline_states():
  from apache_beam.runners.runner import PipelineState
  stream = io.StringIO()
  status = dataflow_status.JobStatus("u", stream=stream, clock=lambda: 0.0)
  status.finish(PipelineState.FAILED)
  assert stream.getvalue().splitlines()[-1] == "Dataflow job FAILED after 0m00s: u"
