"""`make plan` (pipelines/capacity.py) and `make plan-check`'s straight line: projections from
planted measurements. Each record is built by the real record builder from Beam-shaped metrics
whose worker timestamps plant a known start-up and steady throughput, saved in the real store."""
from __future__ import annotations

import pytest

from pipelines import capacity, capacity_table
from pipelines.projection_check import straight_line
from pipelines.record import build, store
from pipelines.record.schema import Record
from pipelines.worker import worker_facts

T0 = 1_800_000_000_000  # the launcher's start, epoch ms
BATCH = 10


def planted(layout: str, startup_s: float, rate: float, items: int = 200, in_image=True,
            profile: str = "tuned", benchmark: str = "bert-base", gpu: str | None = None
            ) -> Record:
  """A bert-base (or `benchmark`) record of one SDK process whose timeline gives worker_share_s
  = startup_s + items / rate and a steady rate of `rate` items/s."""
  last = T0 + (startup_s + items / rate) * 1000
  first = last - (items - BATCH) / rate * 1000
  process = "process/box:7/"
  dist = {("BenchmarkKit", process + "batch_end_ms"):
          {"sum": 0, "count": items // BATCH, "min": int(first), "max": int(last)}}
  for fact, value in (("process_started_ms", T0 + 1000), ("model_load_start_ms", T0 + 3000),
                      ("model_load_end_ms", T0 + 5000)):
    dist[("BenchmarkKit", process + fact)] = {"sum": value, "count": 1, "min": value,
                                              "max": value}
  dist[("BeamML_PyTorch", "inference_request_batch_size")] = {
      "sum": items, "count": items // BATCH, "min": BATCH, "max": BATCH}
  counters = {("BeamML_PyTorch", "num_inferences"): items,
              ("BenchmarkKit", process + "items_after_first_batch"): items - BATCH,
              ("BenchmarkKit", process + "model_loads"): 1,
              ("BenchmarkKit", f"model_loaded_on_{'cuda' if gpu else 'cpu'}"): 1}
  facts = {"cpus": "2", "gpu": gpu or "none", "cpu_model": "Planted CPU"}
  counters.update({("BenchmarkKit", name): 1 for name in worker_facts.counter_names(facts)})
  plan = {"run_id": build.new_run_id(), "benchmark": benchmark, "runner": "DirectRunner",
          "layout": layout, "in_image": in_image, "profile": profile, "overrides": {}}
  return build.build(plan, build.Outcome(
      started=build.utc_now(), wall_time_s=startup_s + items / rate,
      raw={"counters": counters, "distributions": dist},
      share_start=(T0, "launcher process start")))


NO_STARTUP_CONSTANTS = {"WORKER_BOOT_S": 0.0, "IMAGE_GB": 0.0, "IMAGE_PULL_GBPS": 1.0}


@pytest.fixture
def measured_here(tmp_path):
  results = tmp_path / "results"
  for record in (planted("1x2", 10, 8), planted("2x1", 40, 10), planted("2x1", 40, 10)):
    store.save(record, results)
  return results


def test_the_plan_recovers_the_planted_start_up_and_throughput(measured_here):
  result = capacity.plan("bert-base", 50_000, None, None, measured_here, NO_STARTUP_CONSTANTS)
  found = {m["layout"]: m for m in result["measured"]}
  assert found["1x2"]["startup_s"] == pytest.approx(10, abs=0.01)
  assert found["1x2"]["rate"] == pytest.approx(8, rel=1e-3)
  assert found["2x1"]["startup_s"] == pytest.approx(40, abs=0.01)
  assert found["2x1"]["rate"] == pytest.approx(10, rel=1e-3)
  # 50,000 items on 250 n1-standard-2 workers, layout 1x2: 10 s + 200 / 8 items/s
  row = next(r for r in result["rows"] if (r["machine_type"], r["workers"], r["layout"])
             == ("n1-standard-2", 250, "1x2"))
  assert row["job_s"] == pytest.approx(35.0) and row["basis"] == "measured"


def test_the_plan_picks_the_cheapest_configuration_that_meets_the_deadline(measured_here):
  result = capacity.plan("bert-base", 50_000, 600, None, measured_here, NO_STARTUP_CONSTANTS)
  best = result["recommended"]
  # 2x1 on n1-standard-4 (projected: 4 processes, twice the items/s): 5 workers, 40 + 500 s;
  # cheaper than 10 n1-standard-2 workers at the same time (the disk is per worker) and
  # than any 1x2 (its 8 items/s needs 20 workers to meet 600 s)
  assert (best["machine_type"], best["layout"], best["workers"]) == ("n1-standard-4", "2x1", 5)
  assert best["layout_on_machine"] == "4x1" and best["basis"] == "projected"
  assert best["job_s"] == pytest.approx(540.0)
  faster_and_cheaper = [r for r in result["rows"] if r["job_s"] <= 600
                        and r["cost_usd"] < best["cost_usd"]]
  assert faster_and_cheaper == []
  # the frontier: each row faster than the next and dearer
  frontier = result["frontier"]
  assert all(a["job_s"] <= b["job_s"] and a["cost_usd"] > b["cost_usd"]
             for a, b in zip(frontier, frontier[1:]))


def test_beams_configuration_is_marked_when_its_layout_was_measured(tmp_path):
  results = tmp_path / "results"
  store.save(planted("2x2", 30, 9, profile="beam"), results)  # Beam's own settings
  store.save(planted("2x2", 20, 12), results)  # the same layout, tuned: not Beam's
  result = capacity.plan("bert-base", 50_000, None, None, results, NO_STARTUP_CONSTANTS)
  (beam,) = [r for r in result["rows"] if r["beam"]]
  assert (beam["machine_type"], beam["workers"], beam["layout"], beam["profile"]) == (
      "n1-standard-2", 250, "2x2", "beam")
  assert beam["job_s"] == pytest.approx(30 + 200 / 9, abs=0.01)  # whole ms timestamps
  assert "Beam's configuration" in capacity_table.table(result)


def test_an_autoscaling_beam_configuration_is_shown_as_where_its_job_starts(tmp_path):
  """distilbert-sentiment autoscales from 20 to 250 workers: the projection at 20 is its start."""
  results = tmp_path / "results"
  store.save(planted("2x2", 30, 9, profile="beam", benchmark="distilbert-sentiment"),
                     results)
  result = capacity.plan("distilbert-sentiment", 50_000, None, None, results,
                         NO_STARTUP_CONSTANTS)
  assert result["beam"]["workers"] == 20 and result["beam"]["max_workers"] == 250
  assert "Beam's configuration at its start (autoscales to 250)" in capacity_table.table(result)
  assert "autoscales" not in capacity_table.table(capacity.plan(
      "bert-base", 50_000, None, None, planted_results(tmp_path), NO_STARTUP_CONSTANTS))


def planted_results(tmp_path):
  results = tmp_path / "fixed"
  store.save(planted("2x2", 30, 9, profile="beam"), results)
  return results


def test_no_measurement_is_one_line(tmp_path, capsys):
  assert capacity.main(["bert-base", "--results-dir", str(tmp_path)]) == 2
  (line,) = capsys.readouterr().err.strip().splitlines()
  assert "no local run of bert-base with a worker share" in line and "N=share" in line


@pytest.mark.parametrize("name, value", [("IMAGE_PULL_GBPS", "0"), ("IMAGE_GB", "nan"),
                                         ("IMAGE_GB", "inf"), ("WORKER_BOOT_S", "-1"),
                                         ("IMAGE_GB", "abc")])
def test_a_bad_constant_is_refused(monkeypatch, name, value):
  monkeypatch.setenv(name, value)
  with pytest.raises(capacity.PlanInputMissing, match=f"{name} must be a .*number"):
    capacity.constants()


def test_a_nan_constant_never_reaches_a_plan_or_the_report(tmp_path, measured_here, capsys,
                                                            monkeypatch):
  from pipelines.report import __main__ as report
  monkeypatch.setenv("IMAGE_GB", "nan")
  assert capacity.main(["bert-base", "--results-dir", str(measured_here)]) == 2
  assert "IMAGE_GB must be a finite number" in capsys.readouterr().err
  assert not (measured_here / "plans").exists()
  # a plan file holding NaN (hand-edited, or from an older kit) is skipped by the report
  (measured_here / "plans").mkdir()
  (measured_here / "plans" / "bert-base.json").write_text(
      '{"benchmark": "bert-base", "rows": [{"job_s": NaN, "cost_usd": 1.0}], "constants": {}}')
  assert report.main(["--results-dir", str(measured_here)]) == 0
  assert "not a readable plan (a job time, cost or constant is not a finite number)" in (
      capsys.readouterr().err)


def test_the_check_line_goes_through_both_points():
  startup, per_item = straight_line(100, 30.0, 400, 60.0)
  assert (startup, per_item) == pytest.approx((20.0, 0.1))
  assert startup + 200 * per_item == pytest.approx(40.0)


def test_the_report_draws_the_plans_frontier(measured_here):
  from pipelines.report import __main__ as report
  assert capacity.main(["bert-base", "--results-dir", str(measured_here), "--deadline-s", "600",
                        "--worker-boot-s", "0", "--image-gb", "0"]) == 0
  assert report.main(["--results-dir", str(measured_here)]) == 0
  page = (measured_here / "report.html").read_text()
  assert "<section id=plans>" in page and 'alt="plan of bert-base"' in page
  assert "recommended: 5 x n1-standard-4 (layout 4x1, projected)" in page


def test_a_dataflow_record_is_shown_beside_its_projection_and_refits_the_boot(measured_here):
  job = planted("2x1", 40, 10)  # a Dataflow run of 50,000 items on 250 n1-standard-2 workers
  job.plan.update(runner="DataflowRunner", machine_type="n1-standard-2", workers=250)
  job.metrics.update(num_inferences=50_000, job_window_s=400.0, cost_usd=4.2)
  store.save(job, measured_here)
  result = capacity.plan("bert-base", 50_000, None, None, measured_here, NO_STARTUP_CONSTANTS)
  # 400 s of window less the boot-free projection (40 s + 200 / 10 items/s) is the boot
  assert result["boot_fitted_from_dataflow"]
  assert result["constants"]["WORKER_BOOT_S"] == pytest.approx(340, abs=0.1)
  (actual,) = result["dataflow_actuals"]
  assert actual["job_s"] == 400.0 and actual["projected"]["job_s"] == pytest.approx(400, abs=0.1)
  assert "Dataflow run" in capacity_table.table(result)


def test_a_gpu_plan_stands_beside_its_cpu_twin_saying_what_each_was_measured_on(tmp_path):
  """make plan BENCH=resnet152-gpu: its T4 workers beside resnet152 on CPU workers, for the same
  images; the GPU rows are never projected to other machine types (the GPU bounds them)."""
  results = tmp_path / "results"
  for record in (planted("1x2", 20, 400, benchmark="resnet152-gpu", gpu="NVIDIA H200"),
                 planted("2x1", 30, 4, benchmark="resnet152")):
    store.save(record, results)
  result = capacity.plan("resnet152-gpu", 50_000, None, None, results, NO_STARTUP_CONSTANTS)
  by_bench = {}
  for row in result["rows"]:
    by_bench.setdefault(row["benchmark"], []).append(row)
  assert set(by_bench) == {"resnet152-gpu", "resnet152"}
  assert {r["machine_type"] for r in by_bench["resnet152-gpu"]} == {"n1-standard-2"}
  assert {r["accelerator"] for r in by_bench["resnet152-gpu"]} == {"nvidia-tesla-t4"}
  assert {r["measured_on"] for r in by_bench["resnet152-gpu"]} == {"NVIDIA H200, 2 CPUs"}
  assert {r["measured_on"] for r in by_bench["resnet152"]} == {"2 CPUs of Planted CPU"}
  gpu75 = next(r for r in by_bench["resnet152-gpu"] if r["workers"] == 75)
  cpu75 = next(r for r in by_bench["resnet152"] if r["workers"] == 75
               and r["machine_type"] == "n1-standard-2")
  assert gpu75["job_s"] == pytest.approx(20 + 667 / 400, abs=0.01)
  assert cpu75["job_s"] == pytest.approx(30 + 667 / 4, abs=0.01)
  text = capacity_table.table(result)
  for mark in ("cheapest resnet152-gpu", "cheapest resnet152", "fastest resnet152-gpu"):
    assert mark in text
  assert "n1-standard-2+t4" in text and "NVIDIA H200, 2 CPUs" in text


def test_a_gpu_plan_without_its_own_runs_shows_its_cpu_twin_and_says_what_is_missing(tmp_path):
  results = tmp_path / "results"
  store.save(planted("2x1", 30, 4, benchmark="resnet152"), results)
  result = capacity.plan("resnet152-gpu", 50_000, None, None, results, NO_STARTUP_CONSTANTS)
  assert {r["benchmark"] for r in result["rows"]} == {"resnet152"}
  assert result["not_measured"].startswith("no local run of resnet152-gpu")
  assert "make bench-resnet152-gpu N=share" in capacity_table.table(result)


def test_plan_check_refuses_to_project_when_more_items_took_no_longer(tmp_path, monkeypatch,
                                                                       capsys):
  """`make plan-check BENCH=bert-base N=8`: start-up hides the per-item time; no 'inf items/s'
  and no error figure said as fine."""
  from pipelines import projection_check
  seconds = {8: 20.0, 32: 19.5, 16: 20.2}
  monkeypatch.setattr(projection_check, "run_share", lambda asked: _share(seconds[asked.items]))
  assert projection_check.main(["bert-base", "--items", "8",
                                "--results-dir", str(tmp_path)]) == 1
  err = capsys.readouterr().err
  assert "32 items took no longer than 8" in err and "raise N" in err
  seconds.update({8: 20.0, 32: 50.0, 16: 40.0})  # 16 projects to 30 s: the line does not hold
  assert projection_check.main(["bert-base", "--items", "8",
                                "--results-dir", str(tmp_path)]) == 1
  assert "beyond 10%: the plan's straight line does not hold" in capsys.readouterr().out


def _share(seconds: float) -> Record:
  record = planted("1x2", 1, 10)
  record.metrics["worker_share_s"] = seconds
  return record
