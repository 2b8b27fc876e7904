"""The worker layout reaches the workers, on the FnApiRunner and in the Dataflow job alike, and
a layout whose model copies cannot fit the machine type is refused before anything runs."""
from __future__ import annotations

import json

import pytest

from pipelines import matrix, run
from pipelines.layout import Layout, LayoutError
from pipelines.record import store
from tests.test_dataflow import SETTINGS
from tests.test_faults import SMALL_MATRIX


@pytest.fixture
def small(monkeypatch, tmp_path, models_dir, data_dir):
  monkeypatch.setenv("BENCHMARK_MATRIX", str(SMALL_MATRIX))
  for name in ("INFLUXDB_URL", "BIGQUERY_DATASET"):
    monkeypatch.delenv(name, raising=False)
  return ["--models-dir", str(models_dir), "--data-dir", str(data_dir),
          "--results-dir", str(tmp_path / "results")]


def only_record(tmp_path):
  (record,) = store.load_all(tmp_path / "results")
  return record


@pytest.mark.parametrize("layout,processes,threads", [("2x1", 2, 1), ("1x2", 1, 2)])
def test_the_layout_reaches_every_worker_process(small, tmp_path, layout, processes, threads):
  assert run.main(["small-resnet", "--layout", layout, "--items", "8", *small]) == 0
  record = only_record(tmp_path)
  meta, asked = record.metadata, record.plan
  assert (asked["layout"], asked["processes"], asked["threads"]) == (layout, processes, threads)
  assert meta["processes_loaded_model"] == processes
  workers = meta["worker_processes"]
  assert len({w["process"] for w in workers}) == processes
  assert {w["intra_op_threads"] for w in workers} == {threads}
  assert {w["inter_op_threads"] for w in workers} == {1}
  assert all(w["peak_rss_mib"] > 100 for w in workers)
  assert sum(w["items_after_first_batch"] for w in workers if "items_after_first_batch" in w) \
      <= record.metrics["num_inferences"] == 8


def test_the_local_run_and_the_dry_run_show_the_same_layout(small, tmp_path, monkeypatch):
  for name, value in SETTINGS.items():
    monkeypatch.setenv(name, value)
  for layout, experiments in (("2x1", ["use_multiple_sdk_containers"]),  # Beam's default
                              ("1x2", ["no_use_multiple_sdk_containers"])):
    assert run.main(["small-bert", "--runner", "DataflowRunner", "--dry-run", "--layout", layout,
                     *small]) == 0
    job = json.loads((tmp_path / "results" / "dataflow-jobs" / "small-bert.json").read_text())
    parsed = Layout.parse(layout)
    # one bundle per SDK process at once, pinned (the tuned profile), as the FnApiRunner runs
    assert job["layout"] == {"layout": layout, "sdk_processes_per_worker": parsed.processes,
                             "torch_threads": parsed.threads, "torch_interop_threads": 1,
                             "harness_threads": 1}
    assert job["worker_pools"][0]["numThreadsPerWorker"] == 1  # what Dataflow receives
    assert [e for e in job["experiments"] if "sdk_containers" in e] == experiments


def test_the_beam_profile_leaves_harness_threads_to_dataflow_as_beams_files_do(
    small, tmp_path, monkeypatch):
  for name, value in SETTINGS.items():
    monkeypatch.setenv(name, value)
  assert run.main(["small-bert", "--runner", "DataflowRunner", "--dry-run", "--profile", "beam",
                   *small]) == 0
  job = json.loads((tmp_path / "results" / "dataflow-jobs" / "small-bert.json").read_text())
  assert job["layout"]["harness_threads"] is None
  assert job["worker_pools"][0].get("numThreadsPerWorker", 0) == 0  # unset: the service picks


def test_a_layout_dataflow_cannot_run_is_refused(small, monkeypatch, capsys):
  for name, value in SETTINGS.items():
    monkeypatch.setenv(name, value)
  assert run.main(["small-bert", "--runner", "DataflowRunner", "--dry-run", "--layout", "3x1",
                   *small]) == 2
  assert "Dataflow runs 1 SDK process per worker or one per vCPU (2), not 3" in (
      capsys.readouterr().err)


def test_copies_that_cannot_fit_the_machine_are_refused_before_anything_runs(tmp_path, capsys):
  results = tmp_path / "results"
  # bert-large peaks at 3.45 GB per process (load-time state dict + model): three copies are
  # more than n1-standard-2's 7.5 GB less the 0.5 GB kept for the OS and harness.
  code = run.main(["bert-large", "--layout", "3x1", "--results-dir", str(results)])
  assert code == 2
  (line,) = capsys.readouterr().err.strip().splitlines()
  assert "layout 3x1 needs 3 x 3450 MiB = 10350 MiB for 3 copies of bert-large-uncased" in line
  assert "n1-standard-2 has 7.5 GB" in line and "LAYOUT=1x1" in line
  assert not results.exists()
  matrix.get("bert-large").check_memory(Layout.parse("2x1"))  # two copies fit, as on Beam's
  matrix.get("bert-base").check_memory(Layout.parse("2x1"))
  with pytest.raises(LayoutError):
    matrix.get("resnet101").check_memory(Layout.parse("5x1"))


@pytest.mark.parametrize("text", ["2", "0x2", "2x0", "axb", "2x2i0", ""])
def test_layout_syntax(text):
  with pytest.raises(LayoutError, match="is not PxT"):
    Layout.parse(text)
  assert str(Layout.parse("1x2i2")) == "1x2i2" and Layout.parse("2x1") == Layout(2, 1, 1)


def test_the_report_never_compares_runs_of_different_layouts():
  from pipelines.record import comparable
  from tests.records import synthetic_record
  runs = [synthetic_record(plan_extra={"layout": layout}) for layout in ("1x2", "2x1", "1x2")]
  groups = comparable.groups(runs)
  assert sorted((k.layout, len(v)) for k, v in groups.items()) == [("1x2", 2), ("2x1", 1)]
  assert all(f"layout {k.layout}" in k.label() for k in groups)
