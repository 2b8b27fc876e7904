"""One Dataflow worker's share of the job (#18): N=share runs the items one worker gets, and the
record says what those items cost whole (metrics.worker_share_s) and where the time went."""
from __future__ import annotations

import re

import pytest

from pipelines import child, matrix, run
from pipelines.layout import Layout
from pipelines.plan import Overrides
from pipelines.worker import process_stats
from tests.test_faults import SMALL_MATRIX, kit  # noqa: F401 - the launcher fixture


@pytest.fixture
def shares_of_five(tmp_path, monkeypatch):
  """The small matrix with 20 sentences for 4 Dataflow workers: a share is 5 sentences."""
  text = SMALL_MATRIX.read_text()
  text = re.sub(r'(\[datasets\.sentences\][^\[]*?items = )\d+', r"\g<1>20", text)
  text = re.sub(r'(\[benchmarks\.small-bert\][^\[]*?dataflow = \{ num_workers = )\d+', r"\g<1>4",
                text)
  path = tmp_path / "matrix.toml"
  path.write_text(text)
  return path


def test_n_share_runs_one_workers_items_and_times_them_whole(shares_of_five, models_dir,
                                                             data_dir, tmp_path, monkeypatch):
  monkeypatch.setenv("BENCHMARK_MATRIX", str(shares_of_five))
  assert matrix.get("small-bert").share_items == 5
  # in a fresh process (child.py), as a user's `make bench-... N=share` runs
  record = child.run(Overrides("small-bert", items="share", layout=Layout.parse("1x2"),
                                  models_dir=models_dir, data_dir=data_dir,
                                  results_dir=tmp_path / "results"))
  assert record.status == "succeeded"
  assert record.metrics["num_inferences"] == 5
  assert record.plan["worker_share"] == {"items": 5, "dataset_items": 20, "num_workers": 4}
  m = record.metrics
  parts = {part: m[f"worker_share_{part}"] for part in process_stats.SHARE_PARTS}
  assert all(v is not None and v >= 0 for v in parts.values()), parts
  assert sum(parts.values()) == pytest.approx(m["worker_share_s"], abs=0.02)
  # the launcher process's own start: its interpreter and imports are inside the figure, so
  # the share exceeds the run's launch-to-finish wall time
  assert record.metadata["worker_share_from"] == "launcher process start"
  assert m["worker_share_s"] > m["wall_time_s"] > m["worker_share_model_load_s"] > 0
  # a 1-process layout runs in the launcher: no SDK process to start
  assert m["worker_share_launch_s"] == 0


def test_a_later_run_in_the_same_process_counts_from_its_own_start(kit):  # noqa: F811
  kit("small-bert", "--items", "3")
  code, record = kit("small-bert", "--items", "3")
  assert code == 0
  assert record.metadata["worker_share_from"] == "run start (not the first run in its process)"
  m = record.metrics
  assert 0 < m["worker_share_s"] < 60


def test_n_share_is_refused_where_the_data_is_short(kit, monkeypatch, capsys):  # noqa: F811
  code, record = kit("small-bert", "--items", "share")  # 1000 / 2 workers = 500 sentences
  assert code == 2 and record is None
  assert "has 12 items, 500 requested: run `make data N=share`" in capsys.readouterr().err


def test_a_bad_n_names_both_forms(kit, capsys):  # noqa: F811
  with pytest.raises(SystemExit):
    run.main(["small-bert", "--items", "half"])
  assert "'half' is neither a whole number from 1 nor 'share'" in capsys.readouterr().err


def test_the_share_follows_the_process_that_finished_last():
  early = {"process": "a:1", "process_started_ms": 1_000, "model_load_start_ms": 3_000,
           "model_load_end_ms": 4_000, "first_batch_end_ms": 5_000, "last_batch_end_ms": 9_000}
  late = {"process": "a:2", "process_started_ms": 1_500, "model_load_start_ms": 3_500,
          "model_load_end_ms": 5_500, "optimize_end_ms": 5_700, "first_batch_end_ms": 6_000,
          "last_batch_end_ms": 10_000}
  share = process_stats.worker_share([early, late], launcher_started_ms=500)
  assert share["process"] == "a:2" and share["seconds"] == 9.5
  assert share["parts"] == {"launch_s": 1.0, "process_start_s": 2.0, "model_load_s": 2.0,
                            "optimize_s": 0.2, "first_batch_s": 0.3, "steady_s": 4.0}
  # a process from before OPTIMIZE= existed reports no optimization end: it took no time
  older = process_stats.worker_share([early], launcher_started_ms=500)
  assert older["parts"]["optimize_s"] == 0 and older["parts"]["first_batch_s"] == 1.0
  assert process_stats.worker_share([{"process": "old"}], 500) is None  # older workers
