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

from pipelines.matrix import REPO_ROOT
from pipelines.record import store
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


def good() -> dict:
  return synthetic_record().to_dict()


def good_text() -> str:
  return json.dumps(good(), indent=2)


DAMAGED = {  # file name: (content, what its skip line must say)
    "20261101T020000_resnet101_truncated.json": (lambda: good_text()[:400], "not valid JSON"),
    "20261101T020000_resnet101_empty.json": (lambda: "", "empty file"),
    ".hidden.json": (lambda: good_text(), "hidden file"),
    "20261101T020000_resnet101_notime.json": (
        lambda: json.dumps({k: v for k, v in good().items() if k != "timestamp"}),
        "no timestamp"),
    "20261101T020000_resnet101_nometrics.json": (
        lambda: json.dumps({k: v for k, v in good().items() if k != "metrics"}),
        "no metrics"),
    "20261101T020000_resnet101_newer.json": (
        lambda: json.dumps({**good(), "schema_version": 3}),
        "schema_version 3 is newer than this kit reads (2)"),
    "20261101T020000_resnet101_reshaped.json": (  # a changed structure under the same version
        lambda: json.dumps({**good(), "metrics": {
            **good()["metrics"], "throughput_per_s": {"value": 3.0}}}),
        "metrics throughput_per_s are not numbers"),
    # numbers that are not numbers: Python's json writes and reads NaN and Infinity
    "20261101T020000_resnet101_nan.json": (
        lambda: json.dumps({**good(), "metrics": {**good()["metrics"],
                                                  "throughput_per_s": math.nan}}),
        "metrics throughput_per_s=nan are not finite, negative or absurd"),
    "20261101T020000_resnet101_inf.json": (
        lambda: json.dumps({**good(), "metrics": {**good()["metrics"],
                                                  "mean_load_model_latency_milli_secs": math.inf}}),
        "mean_load_model_latency_milli_secs=inf are not finite"),
    "20261101T020000_resnet101_negative.json": (
        lambda: json.dumps({**good(), "metrics": {**good()["metrics"], "num_inferences": -64}}),
        "num_inferences=-64 are not finite, negative or absurd"),
    "20261101T020000_resnet101_absurd.json": (
        lambda: json.dumps({**good(), "metrics": {
            **good()["metrics"], "mean_inference_batch_latency_micro_secs": 1e300}}),
        "are not finite, negative or absurd"),
    # names that would become paths outside the store, or too long for a file name
    "20261101T020000_resnet101_traversal.json": (
        lambda: json.dumps({**good(), "run_id": "trav/../../../../../PWNED_trav"}),
        "run_id 'trav/../../../../../PWNED_trav' is not a name this kit writes"),
    "20261101T020000_resnet101_benchtraversal.json": (
        lambda: json.dumps({**good(), "benchmark": "x/../../../../../PWNED_bench"}),
        "benchmark 'x/../../../../../PWNED_bench' is not a name this kit writes"),
    "20261101T020000_resnet101_longid.json": (
        lambda: json.dumps({**good(), "run_id": "a" * 300}), "run_id 'aaaa"),
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
  assert good[1].run_id[:10] in page
  done = kit("pipelines.report.compare", "--results-dir", str(results))
  no_traceback(done)
  assert done.returncode == 0, done.stderr
  assert_each_damaged_file_named(done.stderr)
  assert f"A: {good[0].run_id}" in done.stdout and f"B: {good[1].run_id}" in done.stdout
  done = kit("pipelines.summary", "--results", str(results))
  no_traceback(done)
  assert_each_damaged_file_named(done.stderr)
  assert good[0].run_id in done.stdout and good[1].run_id in done.stdout


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
  assert {p["test_id"] for p in points} == {r.run_id for r in good}  # nothing else sent
  # The ledger holds the two it sent; no file was written anywhere else (a traversing name
  # would have put one five folders up).
  assert sorted(p.name for p in (results / "ledger").iterdir()) == sorted(
      f"{r.run_id}.json" for r in good)
  assert not [p for d in (results, *list(results.parents)[:6]) for p in d.glob("PWNED*")]


def test_publish_of_an_unknown_or_a_failed_run_says_what_was_sent(tmp_path):
  results = tmp_path / "results"
  failed = synthetic_record()
  failed.status, failed.error = "failed", "RuntimeError: boom"
  store.save(failed, results)
  with servers.influxdb_v1(tmp_path) as url:
    create_db(url)
    unknown = kit("pipelines.publish", "--results-dir", str(results), "--run", "nope",
                  influx_url=url)
    refused = kit("pipelines.publish", "--results-dir", str(results), "--run",
                  failed.run_id, influx_url=url)
    points = influx_v1_points(url)
  no_traceback(unknown)
  assert unknown.returncode == 2
  assert unknown.stderr.strip() == f"error: no run nope in {results / 'records'}"
  no_traceback(refused)
  assert refused.returncode == 2
  assert "published" not in refused.stdout
  assert refused.stderr.strip() == (
      f"error: resnet101 run {failed.run_id} failed: not published (only succeeded runs are "
      "published)")
  assert points == []


def test_compare_refuses_runs_of_different_benchmarks(tmp_path, capsys):
  a = make_record(tmp_path, benchmark="resnet101")
  b = make_record(tmp_path, benchmark="bert-base")
  assert compare.main([a.run_id, b.run_id, "--results-dir", str(tmp_path)]) == 2
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
  metrics, notes = records[1].metrics, records[1].metric_notes
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
  metrics = synthetic_record(latencies_us=latencies, batch_size=1).metrics
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
  foreign.run_id, foreign.benchmark = "20261101T030000-gone", "resnet9000"
  for record in (known, foreign):
    store.save(record, results)
  with servers.influxdb_v1(tmp_path) as url:
    create_db(url)
    done = kit("pipelines.publish", "--results-dir", str(results), influx_url=url)
    points = influx_v1_points(url)
  no_traceback(done)
  assert done.returncode == 1
  assert "published 1 of 2 run(s)" in done.stdout
  assert "benchmark 'resnet9000' is not in the matrix" in done.stderr
  assert {p["test_id"] for p in points} == {known.run_id}


# --- records of the previous shape, and values that would reach a terminal raw --------------

V1_RECORD = {  # a version 1 record as the kit wrote it until 2026-12 (fields abridged)
    "schema_version": 1, "run_id": "0123456789abcdef", "benchmark": "resnet101",
    "timestamp": "2026-11-20T02:00:00+00:00", "status": "succeeded", "error": None,
    "metrics": {"num_inferences": 64, "dead_lettered": 0,
                "mean_inference_request_batch_size": 16.0,
                "mean_inference_batch_latency_micro_secs": 52000.0,
                "mean_load_model_latency_milli_secs": 1500.0, "throughput_per_s": 10.0,
                "throughput_per_s_excl_model_load": 12.0, "partial": False},
    "gpu": {"telemetry": "unavailable"}, "latency_histogram": {}, "metric_notes": {},
    "metadata": {"runner": "DataflowRunner", "profile": "tuned", "layout": "2x1",
                 "optimization": "int8", "machine_type": "n1-standard-2", "num_workers": 75,
                 "device_used": "CPU", "weights": "pretrained",
                 "inference_step": "RunInference", "length_aware_batching": False,
                 "influx_measurement": "torch_inference_imagenet_resnet101",
                 "bigquery_table": "torch_inference_imagenet_results_resnet101",
                 "dataflow_machine_type": "n1-standard-2", "git_sha": "abc"},
    "plan": {"benchmark": "resnet101", "optimization": "int8", "optimization_override": True,
             "layout": "2x1", "runner": "DataflowRunner", "profile": "tuned"},
    "publish": {"influxdb": {"status": "ok", "target": "InfluxDB v1 at http://old (db)",
                             "at": "2026-11-20T03:00:00+00:00", "error": None}},
}


def test_a_version_1_record_reads_as_today_s(tmp_path):
  from pipelines.publish import metrics_rows
  from pipelines.record import comparable, ledger
  results = tmp_path / "results"
  (results / "records").mkdir(parents=True)
  (results / "records" / "20261120T020000_resnet101_0123456789abcdef.json").write_text(
      json.dumps(V1_RECORD))
  (record,) = store.load_all(results)
  assert (record.runner, record.profile, record.layout, record.optimization) == (
      "DataflowRunner", "tuned", "2x1", "int8")
  assert record.plan["workers"] == 75 and record.plan["sentence_batching"] == "padded"
  assert record.plan["dataflow"]["machine_type"] == "n1-standard-2"
  assert not set(record.plan) & set(record.metadata)
  # the same series and group as before: its OPTIMIZE= was an override (a Dataflow run)
  assert metrics_rows.series_name(record, "influx_measurement") == (
      "torch_inference_imagenet_resnet101_tuned_int8")
  assert comparable.key(record).experiment == (("optimization", "int8"),)
  # its publishing outcomes, kept inside it, are read as the ledger's first attempt
  assert ledger.is_published(results, record, "influxdb", "InfluxDB v1 at http://old (db)")
  assert not ledger.is_published(results, record, "influxdb", "InfluxDB v1 at http://new (db)")


def test_control_characters_in_a_record_never_reach_the_terminal_raw(tmp_path):
  results = tmp_path / "results"
  record = synthetic_record(weights="\x1b[31mred\x1b[0m")
  record.plan["layout"] = "1x2\x1b]0;title\x07"
  store.save(record, results)
  for done in (kit("pipelines.summary", "--results", str(results)),
               kit("pipelines.report.compare", "--results-dir", str(results),
                   record.run_id, record.run_id)):
    assert "\x1b" not in done.stdout and "\x07" not in done.stdout, done.stdout
    assert "\\x1b[31mred" in done.stdout  # shown, escaped


def test_one_nan_record_in_a_group_of_eight_is_named_and_the_report_still_written(tmp_path):
  from tests.records import history
  results = tmp_path / "results"
  runs = history(results, [50_000.0, 51_000.0, 50_500.0, 49_800.0, 50_200.0, 50_900.0, 51_100.0,
                           50_300.0])
  path = store.path_for(runs[3], results)
  data = json.loads(path.read_text())
  data["metrics"]["mean_inference_batch_latency_micro_secs"] = math.nan
  path.write_text(json.dumps(data))
  done = kit("pipelines.report", "--results-dir", str(results))
  no_traceback(done)
  assert done.returncode == 0
  assert skipped_lines(done.stderr) == {path.name: (
      "metrics mean_inference_batch_latency_micro_secs=nan are not finite, negative or absurd")}
  compared = kit("pipelines.report.compare", "--results-dir", str(results))
  assert compared.returncode == 0 and "nan" not in compared.stdout
