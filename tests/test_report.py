"""The report: regression detection on synthetic histories, cost, comparison, and the page."""
from __future__ import annotations

import base64
import html.parser
import io
import json
import subprocess

import numpy as np
import pytest
from PIL import Image

from pipelines import cost
from pipelines.record import store
from pipelines.report import __main__ as report_cli
from pipelines.report import compare, history, page
from tests import servers
from tests.records import history as make_history
from tests.records import make_record, synthetic_record


def noisy(level, n, seed, rel_noise=0.02):
  rng = np.random.default_rng(seed)
  return list(level * (1 + rng.normal(0, rel_noise, n)))


def test_planted_step_is_flagged_as_a_recent_regression(tmp_path):
  runs = make_history(tmp_path, noisy(50_000, 12, 1) + noisy(60_000, 8, 2))
  assert report_cli.main(["--results-dir", str(tmp_path)]) == 0
  summary = json.loads((tmp_path / "regressions.json").read_text())
  (group,) = summary["groups"]
  flagged = [r for r in group["regressions"]
             if r["metric"] == "mean_inference_batch_latency_micro_secs"]
  assert len(flagged) == 1
  assert flagged[0]["index"] == 12 and flagged[0]["run_id"] == runs[12].run_id
  assert 0.15 < flagged[0]["relative_change"] < 0.25 and flagged[0]["recent"]
  # Throughput fell with the same step: flagged too, the other way round.
  assert any(r["metric"] == "throughput_per_s_excl_model_load" and r["relative_change"] < 0
             for r in group["regressions"])
  assert summary["recent_regressions"] >= 1
  assert report_cli.main(["--results-dir", str(tmp_path), "--fail-on-regression"]) == 3


@pytest.mark.parametrize("seed", [3, 4, 5, 6])
def test_flat_noise_is_not_flagged(tmp_path, seed):
  make_history(tmp_path, noisy(50_000, 25, seed, rel_noise=0.03))
  assert report_cli.main(["--results-dir", str(tmp_path), "--fail-on-regression"]) == 0
  summary = json.loads((tmp_path / "regressions.json").read_text())
  assert summary["groups"][0]["regressions"] == []
  assert all(cps == [] for cps in summary["groups"][0]["change_points"].values())


def test_an_improvement_is_a_change_point_but_not_a_regression(tmp_path):
  make_history(tmp_path, noisy(60_000, 10, 7) + noisy(45_000, 10, 8))
  analysis = page.analyze(page_records(tmp_path))
  (group,) = analysis["groups"]
  (cp,) = group["change_points"]["mean_inference_batch_latency_micro_secs"]
  assert cp.index == 10 and cp.relative_change < -0.2 and not cp.regression
  assert not [r for r in group["regressions"]
              if r["metric"] == "mean_inference_batch_latency_micro_secs"]


def test_only_like_is_compared_with_like(tmp_path):
  # Local runs and (slower) Dataflow runs alternate: two flat groups, no step anywhere.
  make_history(tmp_path, noisy(50_000, 10, 9))
  make_history(tmp_path, noisy(80_000, 10, 10), runner="DataflowRunner",
               machine_type="n1-standard-2", plan_extra={"workers": 75})
  make_history(tmp_path, noisy(50_000, 10, 11), weights="pretrained")
  analysis = page.analyze(page_records(tmp_path))
  keys = [g["group"] for g in analysis["groups"]]
  assert len(keys) == 3
  assert {(k.runner, k.weights) for k in keys} == {
      ("DirectRunner", "random"), ("DataflowRunner", "random"), ("DirectRunner", "pretrained")}
  assert all(g["regressions"] == [] for g in analysis["groups"])


def page_records(folder):
  from pipelines.record import store
  return store.load_all(folder)


# --- cost ----------------------------------------------------------------------------------

PRICES = {"currency": "USD",
          "dataflow_batch": {"vcpu_hour": 0.056, "memory_gb_hour": 0.003557,
                             "pd_standard_gb_hour": 0.000054},
          "machine_types": {"n1-standard-2": {"vcpus": 2, "memory_gb": 7.5}},
          "accelerators": {"nvidia-tesla-t4": {"gpu_hour": 0.35}}}


def dataflow_record(accelerator=None):
  return synthetic_record(wall_time_s=1800, batches=50, batch_size=1000,
                          runner="DataflowRunner", machine_type="n1-standard-2",
                          plan_extra={"workers": 75, "disk_size_gb": 50,
                                      "accelerator": accelerator, "accelerator_count": 1})


def test_cost_of_a_dataflow_run():
  estimate = cost.estimate(dataflow_record(), PRICES)
  # 75 workers x 0.5 h x (2 x 0.056 + 7.5 x 0.003557 + 50 x 0.000054) $/h
  assert estimate["worker_hours"] == pytest.approx(37.5)
  assert estimate["run"] == pytest.approx(37.5 * 0.1413775)
  assert estimate["per_1k_inferences"] == pytest.approx(37.5 * 0.1413775 / 50)


def test_cost_with_a_t4_per_worker():
  estimate = cost.estimate(dataflow_record("nvidia-tesla-t4"), PRICES)
  assert estimate["run"] == pytest.approx(37.5 * (0.1413775 + 0.35))


def test_cost_is_not_applicable_locally_or_without_a_price():
  assert cost.estimate(synthetic_record(), PRICES) == {
      "applicable": False, "why": "local run: no cloud bill"}
  unknown = synthetic_record(runner="DataflowRunner", machine_type="n2-standard-4")
  assert cost.estimate(unknown, PRICES)["applicable"] is False


def test_the_checked_in_price_table_has_every_dataflow_shape():
  from pipelines import matrix
  prices = cost.load_prices()
  for bench in matrix.load().values():
    assert bench.dataflow.machine_type in prices["machine_types"]
    if bench.dataflow.accelerator:
      assert bench.dataflow.accelerator in prices["accelerators"]


# --- compare -------------------------------------------------------------------------------

def test_compare_latest_with_previous_flags_a_step_beyond_noise(tmp_path, capsys):
  runs = make_history(tmp_path, noisy(50_000, 10, 12) + [65_000])
  assert compare.main(["--results-dir", str(tmp_path)]) == 0
  out = capsys.readouterr().out
  assert f"A: {runs[-2].run_id}" in out and f"B: {runs[-1].run_id}" in out
  row = next(line for line in out.splitlines()
             if line.startswith("mean_inference_batch_latency_micro_secs"))
  assert row.endswith("beyond noise")
  change = (65_000 * 1.0 - runs[-2].metrics["mean_inference_batch_latency_micro_secs"]) / (
      runs[-2].metrics["mean_inference_batch_latency_micro_secs"])
  assert f"{change:+.1%}" in row


def test_compare_two_named_runs_within_noise(tmp_path, capsys):
  runs = make_history(tmp_path, noisy(50_000, 10, 13, rel_noise=0.03))
  a, b = runs[3], runs[4]
  assert compare.main([a.run_id, b.run_id, "--results-dir", str(tmp_path)]) == 0
  rows = compare.compare(a, b, page_records(tmp_path))
  latency = next(r for r in rows if r["metric"] == "mean_inference_batch_latency_micro_secs")
  assert latency["verdict"] == "within noise"
  assert "within noise" in capsys.readouterr().out


def test_compare_with_a_single_run_says_so(tmp_path, capsys):
  make_history(tmp_path, [50_000])
  assert compare.main(["--results-dir", str(tmp_path)]) == 2
  assert "nothing to compare" in capsys.readouterr().err


# --- the page --------------------------------------------------------------------------------

class _Images(html.parser.HTMLParser):
  def __init__(self):
    super().__init__()
    self.images, self.sections = [], []

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    if tag == "img":
      self.images.append(attrs)
    if tag == "section":
      self.sections.append(attrs["id"])


@pytest.fixture
def report_with_step(tmp_path):
  make_history(tmp_path, noisy(50_000, 12, 1) + noisy(60_000, 8, 2))
  make_history(tmp_path, noisy(30_000, 6, 14), benchmark="bert-base")
  assert report_cli.main(["--results-dir", str(tmp_path)]) == 0
  return tmp_path / "report.html"


def test_page_is_self_contained_with_real_plots(report_with_step):
  text = report_with_step.read_text()
  parser = _Images()
  parser.feed(text)
  assert len(parser.sections) == 2
  assert len(parser.images) == 4  # history grid + latency spread, per group
  for image in parser.images:
    assert image["src"].startswith("data:image/png;base64,")  # opens offline
    png = Image.open(io.BytesIO(base64.b64decode(image["src"].split(",", 1)[1])))
    assert png.width > 500 and png.height > 200
    assert np.asarray(png.convert("L")).std() > 5  # drawn, not blank
  assert "Regressions flagged" in text and "No regression flagged" in text
  assert "not applicable: local run" in text
  assert "http" not in text.split("<body>")[1].replace("https://", "")  # no remote assets


def test_headless_chromium_renders_the_plots(report_with_step, tmp_path):
  browser = servers.require_binary("chromium", "chromium-browser")  # fails under CI
  shot = tmp_path / "shot.png"
  subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars",
                  "--window-size=1280,2400", f"--screenshot={shot}",
                  report_with_step.as_uri()], check=True, capture_output=True, timeout=120)
  pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
  # The history lines are matplotlib blue (#1f77b4); the regression markers red (#d62728).
  blue = (abs(pixels - [31, 119, 180]).sum(axis=2) < 60).sum()
  red = (abs(pixels - [214, 39, 40]).sum(axis=2) < 60).sum()
  assert blue > 500, blue
  assert red > 20, red


def test_bench_all_failure_runs_are_listed_not_charted(tmp_path):
  make_history(tmp_path, [50_000, 51_000])
  failed = synthetic_record()
  failed.status, failed.error = "failed", "RuntimeError: boom"
  from pipelines.record import store
  store.save(failed, tmp_path)
  analysis = page.analyze(page_records(tmp_path))
  assert len(analysis["groups"][0]["runs"]) == 2
  assert "1 failed run(s) not charted" in page.render(page_records(tmp_path), analysis, PRICES,
                                                      "now")


def test_headline_metrics_are_the_seeds_three_plus_throughput():
  assert set(history.HEADLINE) == {
      "mean_inference_request_batch_size", "mean_inference_batch_latency_micro_secs",
      "mean_load_model_latency_milli_secs", "throughput_per_s_excl_model_load"}


def test_compare_against_a_run_that_failed_says_so_and_exits_1(tmp_path, capsys):
  good = make_record(tmp_path, started="2026-11-01T00:00:00+00:00")
  failed = make_record(tmp_path, started="2026-11-02T00:00:00+00:00")
  path = store.path_for(failed, tmp_path)
  failed.status, failed.error = "failed", "WorkerDied: an SDK worker process died"
  store.save(failed, tmp_path)
  assert path.exists()
  assert compare.main([good.run_id, failed.run_id, "--results-dir", str(tmp_path)]) == 1
  out = capsys.readouterr().out
  assert f"B: {failed.run_id}" in out and "failed: WorkerDied" in out
  assert "WARNING: B did not succeed (failed): its figures are partial or missing" in out


@pytest.mark.parametrize("edit, why", [
    (lambda sweep: sweep["points"][0].update(batch_size="x"),
     "points[0]: layout or batch_size of the wrong type"),
    (lambda sweep: sweep["points"][0].update(layout=5),
     "points[0]: layout or batch_size of the wrong type"),
    (lambda sweep: sweep["points"][0].update(steady_items_per_s=float("nan")),
     "points[0]: steady_items_per_s not a finite number"),
    (lambda sweep: sweep.update(batch_sizes=[0, 2]), "batch_sizes is not a list of whole numbers"),
])
def test_a_hand_edited_sweep_is_skipped_by_name_and_the_report_still_written(
    tmp_path, capsys, edit, why):
  make_history(tmp_path, noisy(50_000, 4, 3))
  sweep = {"benchmark": "resnet101", "items": 16, "repeats": 1, "batch_sizes": [2, 4],
           "layouts": ["1x2"], "default_layout": "1x2", "default_batch_size": 2,
           "default_batching": None, "started": "2026-11-01T00:00:00+00:00",
           "points": [{"layout": "1x2", "batching": None, "batch_size": b, "status": "succeeded",
                       "steady_items_per_s": 10.0, "p99_batch_ms": 5.0, "worker_share_s": 3.0,
                       "peak_rss_mib_per_process": 900, "run_ids": ["r"]} for b in (2, 4)]}
  edit(sweep)
  (tmp_path / "sweeps").mkdir()
  (tmp_path / "sweeps" / "resnet101-x.json").write_text(json.dumps(sweep))
  assert report_cli.main(["--results-dir", str(tmp_path)]) == 0
  assert f"resnet101-x.json: not a readable sweep ({why}); skipped" in capsys.readouterr().err
