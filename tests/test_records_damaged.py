"""Damaged, foreign and newer records, and numbers that would mislead, through the real entry
points (`python -m pipelines.publish / pipelines.report / pipelines.report.compare /
pipelines.summary`, as the Make targets run them) and a real InfluxDB."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from pipelines import results_store
from pipelines.matrix import REPO_ROOT
from pipelines.report import __main__ as report_cli
from pipelines.report import compare
from pipelines.worker import latency_histogram
from tests import servers
from tests.records import make_record, synthetic_record
from tests.test_publish import create_db, influx_v1_points

TARGET_VARS = ("INFLUXDB_URL", "INFLUXDB_API", "INFLUXDB_DB", "INFLUXDB_BUCKET", "INFLUXDB_TOKEN",
               "INFLUXDB_USER", "INFLUXDB_PASSWORD", "INFLUXDB_ORG", "BIGQUERY_DATASET",
               "BIGQUERY_PROJECT", "BIGQUERY_EMULATOR_URL", "PROJECT", "BENCHMARK_MATRIX")


def kit(module: str, *args: str, influx_url: str | None = None) -> subprocess.CompletedProcess:
  env = {k: v for k, v in os.environ.items() if k not in TARGET_VARS}
  if influx_url:
    env.update(INFLUXDB_URL=influx_url, INFLUXDB_API="v1", INFLUXDB_DB="beam_test_metrics",
               PUBLISH_TIMEOUT_S="5")
  return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO_ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


def skipped_lines(stderr: str) -> dict[str, str]:
  """{file name: why} from the '<file>: <why>; skipped' lines."""
  out = {}
  for line in stderr.splitlines():
    if line.endswith("; skipped"):
      path, why = line[:-len("; skipped")].split(": ", 1)
      out[os.path.basename(path)] = why
  return out


def no_traceback(done: subprocess.CompletedProcess) -> None:
  assert "Traceback" not in done.stderr, done.stderr


def good_text() -> str:
  return json.dumps(synthetic_record(), indent=2)


DAMAGED = {  # file name: (content, what its skip line must say)
    "20261101T020000_resnet101_truncated.json": (lambda: good_text()[:400], "not valid JSON"),
    "20261101T020000_resnet101_empty.json": (lambda: "", "empty file"),
    ".hidden.json": (lambda: good_text(), "hidden file"),
    "20261101T020000_resnet101_notime.json": (
        lambda: json.dumps({k: v for k, v in synthetic_record().items() if k != "timestamp"}),
        "no timestamp"),
    "20261101T020000_resnet101_nometrics.json": (
        lambda: json.dumps({k: v for k, v in synthetic_record().items() if k != "metrics"}),
        "no metrics"),
    "20261101T020000_resnet101_newer.json": (
        lambda: json.dumps({**synthetic_record(), "schema_version": 2}),
        "schema_version 2 is newer than this kit reads (1)"),
    "20261101T020000_resnet101_reshaped.json": (  # a changed structure under the same version
        lambda: json.dumps({**synthetic_record(), "metrics": {
            **synthetic_record()["metrics"], "throughput_per_s": {"value": 3.0}}}),
        "metrics throughput_per_s are not numbers"),
}


@pytest.fixture
def damaged_store(tmp_path):
  """Two good runs of one group, then one file of each damaged kind."""
  results = tmp_path / "results"
  good = [make_record(results, latency_us=50_000.0, started="2026-11-01T02:00:00+00:00"),
          make_record(results, latency_us=52_000.0, started="2026-11-02T02:00:00+00:00")]
  for name, (content, _) in DAMAGED.items():
    (results / "records" / name).write_text(content())
  return results, good


def assert_each_damaged_file_named(stderr: str) -> None:
  found = skipped_lines(stderr)
  assert set(found) == set(DAMAGED), stderr
  for name, (_, why) in DAMAGED.items():
    assert why in found[name], (name, found[name])


def test_report_compare_and_summary_skip_damaged_records_by_name(damaged_store):
  results, good = damaged_store
  done = kit("pipelines.report", "--results-dir", str(results))
  no_traceback(done)
  assert done.returncode == 0, done.stderr
  assert_each_damaged_file_named(done.stderr)
  page = (results / "report.html").read_text()
  assert good[1]["run_id"][:10] in page
  done = kit("pipelines.report.compare", "--results-dir", str(results))
  no_traceback(done)
  assert done.returncode == 0, done.stderr
  assert_each_damaged_file_named(done.stderr)
  assert f"A: {good[0]['run_id']}" in done.stdout and f"B: {good[1]['run_id']}" in done.stdout
  done = kit("pipelines.summary", "--results", str(results))
  no_traceback(done)
  assert_each_damaged_file_named(done.stderr)
  assert good[0]["run_id"] in done.stdout and good[1]["run_id"] in done.stdout


def test_publish_skips_damaged_and_newer_records_and_sends_the_rest(damaged_store, tmp_path):
  results, good = damaged_store
  with servers.influxdb_v1(tmp_path) as url:
    create_db(url)
    done = kit("pipelines.publish", "--results-dir", str(results), influx_url=url)
    points = influx_v1_points(url)
  no_traceback(done)
  assert done.returncode == 0, done.stderr
  assert_each_damaged_file_named(done.stderr)
  assert "published 2 of 2 run(s)" in done.stdout
  assert {p["test_id"] for p in points} == {r["run_id"] for r in good}  # nothing else sent
  # The newer record was left as it was: not marked published.
  newer = json.loads((results / "records" / "20261101T020000_resnet101_newer.json").read_text())
  assert newer["publish"] == {}


def test_publish_of_an_unknown_or_a_failed_run_says_what_was_sent(tmp_path):
  results = tmp_path / "results"
  failed = synthetic_record()
  failed["status"], failed["error"] = "failed", "RuntimeError: boom"
  results_store.save(failed, results)
  with servers.influxdb_v1(tmp_path) as url:
    create_db(url)
    unknown = kit("pipelines.publish", "--results-dir", str(results), "--run", "nope",
                  influx_url=url)
    refused = kit("pipelines.publish", "--results-dir", str(results), "--run",
                  failed["run_id"], influx_url=url)
    points = influx_v1_points(url)
  no_traceback(unknown)
  assert unknown.returncode == 2
  assert unknown.stderr.strip() == f"error: no run nope in {results / 'records'}"
  no_traceback(refused)
  assert refused.returncode == 2
  assert "published" not in refused.stdout
  assert refused.stderr.strip() == (
      f"error: resnet101 run {failed['run_id']} failed: not published (only succeeded runs are "
      "published)")
  assert points == []


def test_compare_refuses_runs_of_different_benchmarks(tmp_path, capsys):
  a = make_record(tmp_path, benchmark="resnet101")
  b = make_record(tmp_path, benchmark="bert-base")
  assert compare.main([a["run_id"], b["run_id"], "--results-dir", str(tmp_path)]) == 2
  out, err = capsys.readouterr()
  assert out == ""
  assert err.count("\n") == 1 and "resnet101" in err and "bert-base" in err
  assert "not comparable" in err


def test_report_of_a_folder_without_records_writes_nothing(tmp_path, capsys):
  make_record(tmp_path / "results")
  mistyped = tmp_path / "resluts"
  assert report_cli.main(["--results-dir", str(mistyped)]) == 2
  out, err = capsys.readouterr()
  assert err.count("\n") == 1 and "holds no run records" in err and str(mistyped) in err
  assert not mistyped.exists()


# --- percentiles ---------------------------------------------------------------------------

def test_a_small_run_has_no_p90_or_p99_and_says_why(tmp_path):
  # The reported run: 3 batches around 1.75 s, where p99 came out as the minimum, below the mean.
  results = tmp_path / "results"
  records = [make_record(results, latency_us=1_751_900.0, batches=3,
                         started=f"2026-11-0{day}T02:00:00+00:00") for day in (1, 2)]
  metrics, notes = records[1]["metrics"], records[1]["metric_notes"]
  assert metrics["batch_latency_p99_ms"] is None and metrics["batch_latency_p90_ms"] is None
  assert notes["batch_latency_p99_ms"] == "n/a (too few batches: 3; p99 needs >= 100)"
  assert notes["batch_latency_p90_ms"] == "n/a (too few batches: 3; p90 needs >= 10)"
  low = metrics["min_inference_batch_latency_micro_secs"] / 1000
  high = metrics["max_inference_batch_latency_micro_secs"] / 1000
  assert low <= metrics["batch_latency_p50_ms"] <= high
  summary = kit("pipelines.summary", "--results", str(results))
  assert "n/a (3 batches)" in summary.stdout
  compared = kit("pipelines.report.compare", "--results-dir", str(results))
  assert compared.returncode == 0, compared.stderr
  (p99_row,) = [line for line in compared.stdout.splitlines()
                if line.startswith("batch_latency_p99_ms")]
  assert "A n/a (too few batches: 3; p99 needs >= 100)" in p99_row
  assert report_cli.main(["--results-dir", str(results)]) == 0
  assert "n/a (too few batches: 3; p99 needs &gt;= 100)" in (results / "report.html").read_text()


def test_percentiles_stay_consistent_with_beams_min_mean_and_max():
  # 200 batches, all in the upper part of one 5% histogram bucket: the bucket's midpoint lies
  # below every batch, so the estimate alone put p99 at the minimum, below the mean.
  index = latency_histogram.bucket_index(1_750_000.0)
  mid, top = 1.05 ** (index - 0.5), 1.05 ** index
  latencies = [mid * 1.01 + (top * 0.999 - mid * 1.01) * i / 199 for i in range(200)]
  assert len({latency_histogram.bucket_index(us) for us in latencies}) == 1
  metrics = synthetic_record(latencies_us=latencies, batch_size=1)["metrics"]
  mean, low, high = (metrics[f"{m}_inference_batch_latency_micro_secs"] / 1000
                     for m in ("mean", "min", "max"))
  p50, p90, p99 = (metrics[f"batch_latency_p{q}_ms"] for q in (50, 90, 99))
  assert low <= p50 <= p90 <= p99 <= high
  assert p99 > low  # not the minimum
  for q, p in ((50, p50), (90, p90), (99, p99)):
    k = math.ceil(q * 200 / 100) / 200  # the share of batches at or below the percentile
    assert k * p + (1 - k) * high >= mean - 1e-9  # else the mean could not be reached
    assert k * low + (1 - k) * p <= mean + 1e-9


def test_publish_of_a_benchmark_the_matrix_no_longer_has_names_it_and_sends_the_rest(tmp_path):
  results = tmp_path / "results"
  known = synthetic_record()
  foreign = synthetic_record()
  foreign["run_id"], foreign["benchmark"] = "20261101T030000-gone", "resnet9000"
  for record in (known, foreign):
    results_store.save(record, results)
  with servers.influxdb_v1(tmp_path) as url:
    create_db(url)
    done = kit("pipelines.publish", "--results-dir", str(results), influx_url=url)
    points = influx_v1_points(url)
  no_traceback(done)
  assert done.returncode == 1
  assert "published 1 of 2 run(s)" in done.stdout
  assert "benchmark 'resnet9000' is not in the matrix" in done.stderr
  assert {p["test_id"] for p in points} == {known["run_id"]}
