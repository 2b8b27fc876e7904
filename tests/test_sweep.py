"""make sweep: the grid runs through the real launcher, the table and the stored sweep agree with
the points' run records, and the report plots it."""
from __future__ import annotations

import json

from pipelines import data, sweep
from pipelines.record import store
from pipelines.report import __main__ as report
from pipelines.worker import tokenizer_files
from tests.test_faults import SMALL_MATRIX


def test_sweep_runs_the_grid_and_stores_it(tmp_path, monkeypatch, capsys, models_dir):
  monkeypatch.setenv("BENCHMARK_MATRIX", str(SMALL_MATRIX))
  monkeypatch.delenv("INFLUXDB_URL", raising=False)
  monkeypatch.delenv("BIGQUERY_DATASET", raising=False)
  results = tmp_path / "results"
  data_dir = tmp_path / "data"  # enough sentences for two batches per process at batch 4
  data.write_sentences(data_dir, 24, models_dir / tokenizer_files.VOCAB_FILE)
  code = sweep.main(["small-bert", "--batch-sizes", "2,4", "--layouts", "1x2,2x1",
                     "--batchings", "padded", "--items", "24", "--results-dir", str(results),
                     "--models-dir", str(models_dir), "--data-dir", str(data_dir)])
  assert code == 0
  out = capsys.readouterr().out
  assert "[4/4] small-bert layout 2x1 padded batch 4" in out
  (stored,) = (results / "sweeps").glob("small-bert-*.json")
  saved = json.loads(stored.read_text())
  assert [(p["layout"], p["batch_size"]) for p in saved["points"]] == [
      ("1x2", 2), ("1x2", 4), ("2x1", 2), ("2x1", 4)]
  records = {r.run_id: r for r in store.load_all(results / "sweeps" / "runs")}
  assert not (results / "records").exists()  # points stay out of the benchmark history
  for point in saved["points"]:
    (run_id,) = point["run_ids"]
    record = records[run_id]
    assert record.plan["layout"] == point["layout"]
    assert record.plan["batch_size"] == point["batch_size"]
    assert point["processes_loaded_model"] == int(point["layout"][0])
    assert point["steady_items_per_s"] == record.metrics["steady_throughput_per_s"] > 0
  assert "1x2 padded *" in out  # the matrix default marked in the table
  assert report.main(["--results-dir", str(results)]) == 0
  page = (results / "report.html").read_text()
  assert "Worker layout sweeps" in page and 'alt="sweep of small-bert"' in page


def test_a_point_too_short_for_a_steady_state_still_shows_its_whole_process_time():
  """One batch per process has no steady state, but what one worker's share cost is known."""
  from pipelines import sweep_results
  point = {"status": "succeeded", "steady_items_per_s": None, "p99_batch_ms": None,
           "worker_share_s": 154.19}
  assert sweep_results.cell(point) == "too few batches | 154.2 s"
  assert sweep_results.cell({**point, "status": "failed"}) == "failed"
  assert sweep_results.cell({**point, "steady_items_per_s": 0.1, "p99_batch_ms": 90.0}) == \
      "0.10 (90) | 154.2 s"


def test_the_sweep_offers_only_layouts_dataflow_can_run_on_the_machine_type(
    tmp_path, monkeypatch, capsys):
  """Dataflow runs one SDK process per worker or one per vCPU: 2x2 on four vCPUs would choose a
  default no job can use, so it is refused before any point runs."""
  from pipelines.layout import Layout
  monkeypatch.setenv("BENCHMARK_MATRIX", str(SMALL_MATRIX))
  assert sweep.dataflow_layouts(2) == [Layout(1, 2), Layout(2, 1), Layout(2, 2)]
  assert sweep.dataflow_layouts(4) == [Layout(1, 4), Layout(4, 1), Layout(4, 4)]
  assert sweep.dataflow_layouts(1) == [Layout(1, 1)]
  code = sweep.main(["small-rightfit", "--layouts", "1x4,2x2", "--results-dir",
                     str(tmp_path / "results")])
  assert code == 2
  err = capsys.readouterr().err
  assert "one per vCPU (4), not 2 on n1-standard-4" in err and "(1x4,4x1,4x4)" in err
  assert not (tmp_path / "results").exists()  # nothing ran


def test_a_stopped_sweep_keeps_what_finished_and_passes_the_signal_on(tmp_path, models_dir):
  """SIGTERM to `make sweep` while a point runs: the point gets it (it records itself as
  cancelled), the sweep writes its table with the points that finished, exits 143, and leaves
  no process behind."""
  import os
  import signal
  import subprocess
  import sys
  import time

  from pipelines import interrupts
  from pipelines.matrix import REPO_ROOT
  data_dir = tmp_path / "data"
  data.write_sentences(data_dir, 24, models_dir / tokenizer_files.VOCAB_FILE)
  results = tmp_path / "results"
  env = {k: v for k, v in os.environ.items() if k not in ("INFLUXDB_URL", "BIGQUERY_DATASET")}
  env["BENCHMARK_MATRIX"] = str(SMALL_MATRIX)
  sweeping = subprocess.Popen(
      [sys.executable, "-m", "pipelines.sweep", "small-bert", "--batch-sizes", "2,3,4",
       "--layouts", "1x2", "--batchings", "padded", "--items", "24",
       "--results-dir", str(results), "--models-dir", str(models_dir),
       "--data-dir", str(data_dir)], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)
  try:
    runs = results / "sweeps" / "runs" / "records"
    deadline = time.monotonic() + 240
    while len(list(runs.glob("*.json"))) < 1 and time.monotonic() < deadline:
      assert sweeping.poll() is None, sweeping.communicate()
      time.sleep(0.2)
    time.sleep(2)  # the second point is starting
    sweeping.send_signal(signal.SIGTERM)
    out, err = sweeping.communicate(timeout=120)
  finally:
    if sweeping.poll() is None:
      sweeping.kill()
  assert sweeping.returncode == 128 + signal.SIGTERM, err[-3000:]
  assert "interrupted by SIGTERM; the points that finished are kept above" in err
  (stored,) = (results / "sweeps").glob("small-bert-*.json")
  points = json.loads(stored.read_text())["points"]
  assert points and points[0]["status"] == "succeeded"
  assert "Traceback" not in err, err[-3000:]
  assert interrupts.sdk_workers(sweeping.pid) == []
