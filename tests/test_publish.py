"""Publishing against real servers on loopback, and what happens when they misbehave."""
from __future__ import annotations

import json
import pathlib
import time

import pytest
import requests

from pipelines.matrix import REPO_ROOT
from pipelines.post_run import publish as publish_after_run
from pipelines.publish import metrics_rows, publisher
from pipelines.record import ledger, store
from tests import servers
from tests.records import make_record

MEASUREMENT = "torch_inference_imagenet_resnet101"
TABLE = "torch_inference_imagenet_results_resnet101"
# records without a profile are tuned runs; a local run's series ends _local
TUNED_MEASUREMENT = MEASUREMENT + "_tuned_local"
TUNED_TABLE = TABLE + "_tuned_local"
SECRET = "s3cr3t-Pa55"
KIT_STEP = "BeamML_PyTorch_runinference/beamml_runinference_"  # label "RunInference"
BEAM_STEP = "BeamML_PyTorch_pytorchruninference/beamml_runinference_"  # "PyTorchRunInference"

# Verbatim from Apache Beam's Grafana dashboard
# (.test-infra/metrics/grafana/dashboards/perftests_metrics/
#  Python_ML_RunInference_Benchmark_Tests.json), double space before "metric" included.
BEAM_DASHBOARD_QUERIES = {
    "batch_latency_resnet101":
    ('SELECT mean("value") FROM "torch_inference_imagenet_resnet101" WHERE metric = '
     "'BeamML_PyTorch_pytorchruninference/beamml_runinference_mean_inference_batch_latency_micro_secs' "  # noqa: E501
     'AND $timeFilter GROUP BY time($__interval),  "metric"'),
    "load_model_resnet101":
    ('SELECT mean("value") FROM "torch_inference_imagenet_resnet101" WHERE metric = '
     "'BeamML_PyTorch_pytorchruninference/beamml_runinference_mean_load_model_latency_milli_secs' "
     'AND $timeFilter GROUP BY time($__interval),  "metric"'),
    "batch_size_resnet101":
    ('SELECT mean("value") FROM "torch_inference_imagenet_resnet101" WHERE metric = '
     "'BeamML_PyTorch_pytorchruninference/beamml_runinference_mean_inference_request_batch_size' "
     'AND $timeFilter GROUP BY time($__interval),  "metric"'),
    "batch_latency_bert_base":
    ('SELECT mean("value") FROM "torch_language_modeling_bert_base_uncased" WHERE metric = '
     "'BeamML_PyTorch_pytorchruninference/beamml_runinference_mean_inference_batch_latency_micro_secs' "  # noqa: E501
     'AND $timeFilter GROUP BY time($__interval),  "metric"'),
}


def reload(record, results):
  return store.find(record.run_id, results)


def ledger_of(record, results) -> dict:
  """The run's ledger: what was sent where."""
  return ledger.entries(results, record)


@pytest.fixture
def results(tmp_path):
  return tmp_path / "results"


@pytest.fixture
def no_targets(monkeypatch):
  for name in ("INFLUXDB_URL", "INFLUXDB_API", "INFLUXDB_DB", "INFLUXDB_BUCKET",
               "INFLUXDB_TOKEN", "INFLUXDB_USER", "INFLUXDB_PASSWORD", "INFLUXDB_ORG",
               "BIGQUERY_DATASET", "BIGQUERY_PROJECT", "BIGQUERY_EMULATOR_URL", "PROJECT"):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setenv("PUBLISH_TIMEOUT_S", "2")
  return monkeypatch


def influx_v1_env(env, url, db="beam_test_metrics"):
  env.setenv("INFLUXDB_URL", url)
  env.setenv("INFLUXDB_API", "v1")
  env.setenv("INFLUXDB_DB", db)


def influx_query(url, q, db="beam_test_metrics", auth=None):
  response = requests.get(f"{url}/query", params={"db": db, "q": q}, auth=auth, timeout=5)
  response.raise_for_status()
  result = response.json()["results"][0]
  assert "error" not in result, result
  return [dict(zip(s["columns"], v), **s.get("tags", {}))
          for s in result.get("series", []) for v in s["values"]]


def influx_v1_points(url, measurement=TUNED_MEASUREMENT, db="beam_test_metrics"):
  return influx_query(url, f'SELECT * FROM "{measurement}"', db)


def create_db(url, db="beam_test_metrics", auth=None):
  requests.post(f"{url}/query", params={"q": f"CREATE DATABASE {db}"}, auth=auth,
                timeout=5).raise_for_status()


def dashboard(query, record):
  """A Grafana query as Grafana sends it: $timeFilter (the clock hour of the run) and
  $__interval (1h) filled in."""
  hour = metrics_rows.epoch_seconds(record) // 3600 * 3600
  return (query.replace("$timeFilter", f"time >= {hour}s AND time < {hour + 3600}s")
          .replace("$__interval", "1h"))


# --- real servers --------------------------------------------------------------------------

def test_influxdb_v1_write_then_read_back_without_duplicates(tmp_path, results, no_targets):
  with servers.influxdb_v1(tmp_path) as url:
    create_db(url)
    influx_v1_env(no_targets, url)
    record = make_record(results)
    assert publisher.main(["--results-dir", str(results)]) == 0
    assert publisher.main(["--results-dir", str(results), "--run", record.run_id]) == 0
    points = influx_v1_points(url)
    assert influx_v1_points(url, MEASUREMENT) == []  # a tuned run stays out of Beam's series
  published = metrics_rows.published_metrics(record)
  assert len(points) == len(published)  # one point per metric; sent twice, stored once
  by_metric = {p["metric"]: p for p in points}
  assert set(by_metric) == set(published)
  assert {tuple(sorted(p)) for p in points} == {("metric", "test_id", "time", "value")}
  assert {p["test_id"] for p in points} == {record.run_id}
  assert by_metric[KIT_STEP + "mean_inference_batch_latency_micro_secs"]["value"] == 52_000.0
  assert by_metric[KIT_STEP + "mean_load_model_latency_milli_secs"]["value"] == 1500.0
  assert by_metric[KIT_STEP + "mean_inference_request_batch_size"]["value"] == 16.0
  assert by_metric[KIT_STEP + "num_inferences"]["value"] == 64.0
  assert by_metric["BenchmarkKit/throughput_per_s"]["value"] == pytest.approx(
      record.metrics["throughput_per_s"])
  assert ledger_of(record, results)["influxdb"]["status"] == "ok"


def test_beams_dashboard_queries_read_beam_profile_runs(tmp_path, results, no_targets):
  """Beam's own dashboard queries, unchanged, chart runs with profile 'beam'; two runs started
  in the same second are two points (their mean is charted), and tuned runs stay out."""
  same_second = "2026-11-20T02:00:00+00:00"
  batches = 100  # enough for a p99 (the kit's p99 panel)
  beam_runs = [make_record(results, latency_us=us, load_ms=ms, started=same_second,
                           profile="beam", inference_step="PyTorchRunInference", batches=batches,
                           runner="DataflowRunner")
               for us, ms in ((40_000.0, 1000.0), (60_000.0, 2000.0))]
  bert = make_record(results, benchmark="bert-base", latency_us=90_000.0, started=same_second,
                     profile="beam", inference_step="PyTorchRunInference", batches=batches,
                     runner="DataflowRunner")
  tuned = make_record(results, latency_us=10_000.0, started=same_second, batches=batches)
  with servers.influxdb_v1(tmp_path) as url:
    create_db(url)
    influx_v1_env(no_targets, url)
    assert publisher.main(["--results-dir", str(results)]) == 0
    assert publisher.main(["--results-dir", str(results), "--run", beam_runs[0].run_id]) == 0
    answers = {name: influx_query(url, dashboard(q, tuned))
               for name, q in BEAM_DASHBOARD_QUERIES.items()}
    latency_points = influx_query(
        url, f'SELECT "value", "test_id" FROM "{MEASUREMENT}" '
        f"WHERE metric = '{BEAM_STEP}mean_inference_batch_latency_micro_secs'")
    tuned_answer = influx_query(url, dashboard(
        BEAM_DASHBOARD_QUERIES["batch_latency_resnet101"]
        .replace(MEASUREMENT, TUNED_MEASUREMENT).replace(BEAM_STEP, KIT_STEP), tuned))
    kit_dashboard = json.loads((REPO_ROOT / "infra" / "grafana-dashboard.json").read_text())
    kit_answers = {
        (panel["title"], measurement, step): influx_query(url, dashboard(
            target["query"].replace("$measurement", measurement).replace("${step}", step),
            tuned))
        for panel in kit_dashboard["panels"] for target in panel["targets"]
        for measurement, step in ((MEASUREMENT, "pytorchruninference"),
                                  (TUNED_MEASUREMENT, "runinference"))}
  for answer in answers.values():
    assert len(answer) == 1 and answer[0]["metric"].startswith(BEAM_STEP)
  # Both resnet101 runs are there (mean of 40 and 60 ms); the tuned run's 10 ms is not.
  assert answers["batch_latency_resnet101"][0]["mean"] == pytest.approx(50_000.0)
  assert answers["load_model_resnet101"][0]["mean"] == 1500.0
  assert answers["batch_size_resnet101"][0]["mean"] == 16.0
  assert answers["batch_latency_bert_base"][0]["mean"] == pytest.approx(90_000.0)
  assert sorted((p["test_id"], p["value"]) for p in latency_points) == sorted(
      (r.run_id, r.metrics["mean_inference_batch_latency_micro_secs"]) for r in beam_runs)
  assert [p["mean"] for p in tuned_answer] == [pytest.approx(10_000.0)]
  assert bert.run_id not in {p["test_id"] for p in latency_points}
  # The kit's own dashboard charts both series, except GPU utilization (no GPU in these runs).
  for (title, measurement, _), answer in kit_answers.items():
    expected = [] if title.startswith("GPU") else [1]
    assert [1 for _ in answer] == expected, (title, measurement)
  assert kit_answers[("Mean inference batch latency (\u00b5s)", MEASUREMENT,
                      "pytorchruninference")][0]["mean"] == pytest.approx(50_000.0)


def vm_export(url, measurement, metric, auth=None):
  requests.get(f"{url}/internal/force_flush", auth=auth, timeout=5)
  match = f'{{__name__="{measurement}_value",metric="{metric}"}}'  # VM names <measurement>_<field>
  response = requests.get(f"{url}/api/v1/export", params={"match[]": match}, auth=auth, timeout=5)
  response.raise_for_status()
  return [json.loads(line) for line in response.text.splitlines()]


def test_influxdb_v2_protocol_write_then_read_back(tmp_path, results, no_targets):
  with servers.victoria_metrics(tmp_path) as url:
    no_targets.setenv("INFLUXDB_URL", url)
    no_targets.setenv("INFLUXDB_BUCKET", "beam")
    no_targets.setenv("INFLUXDB_ORG", "kit")
    no_targets.setenv("INFLUXDB_TOKEN", SECRET)
    started = "2026-11-20T03:00:00+00:00"
    record, other = (make_record(results, latency_us=us, started=started)
                     for us in (52_000.0, 70_000.0))
    assert publisher.main(["--results-dir", str(results)]) == 0
    assert publisher.main(["--results-dir", str(results), "--run", record.run_id]) == 0
    exported = vm_export(url, TUNED_MEASUREMENT,
                         KIT_STEP + "mean_inference_batch_latency_micro_secs")
  by_run = {line["metric"]["test_id"]: line for line in exported}
  assert set(by_run) == {record.run_id, other.run_id}  # same second, two series
  line = by_run[record.run_id]
  assert line["values"] == [52_000.0]  # one sample: the resend did not duplicate it
  assert line["timestamps"] == [int(run_record_ts(record)) * 1000]  # precision: seconds
  assert set(line["metric"]) == {"__name__", "metric", "test_id"}
  # the token stays out of the record and its ledger
  assert SECRET not in json.dumps(reload(record, results).to_dict())
  assert SECRET not in json.dumps(ledger_of(record, results))


def test_influxdb_v2_credentials_in_url_are_sent_as_basic_auth_and_never_shown(
    tmp_path, results, no_targets, capsys):
  password = "s3cr3t@Pa55/x"  # written percent-encoded in the URL
  quoted = "s3cr3t%40Pa55%2Fx"
  with servers.victoria_metrics(tmp_path, auth=("kit", password)) as url:
    host = url.removeprefix("http://")
    no_targets.setenv("INFLUXDB_URL", f"http://kit:{quoted}@{host}")
    no_targets.setenv("INFLUXDB_BUCKET", "beam")
    record = make_record(results)
    assert publisher.main(["--results-dir", str(results)]) == 0
    exported = vm_export(url, TUNED_MEASUREMENT, KIT_STEP + "num_inferences",
                         auth=("kit", password))
    assert requests.get(f"{url}/api/v1/export", params={"match[]": "{test_id!=''}"},
                        timeout=5).status_code == 401  # the server does require the password
  assert [line["values"] for line in exported] == [[64.0]]
  out = capsys.readouterr()
  saved = json.dumps(reload(record, results).to_dict()) + json.dumps(ledger_of(record, results))
  for text in (out.out, out.err, saved):
    assert password not in text and quoted not in text and "kit:" not in text
  assert ledger_of(record, results)["influxdb"]["target"] == (
      f"InfluxDB v2 at {url} (beam)")


def test_influxdb_v1_credentials_in_url_are_redacted_everywhere(tmp_path, results, no_targets,
                                                                  capsys):
  with servers.influxdb_v1(tmp_path, auth=True) as url:
    requests.post(f"{url}/query", params={"q": f"CREATE USER kit WITH PASSWORD '{SECRET}' "
                                               "WITH ALL PRIVILEGES"}, timeout=5)
    create_db(url, auth=("kit", SECRET))
    host = url.removeprefix("http://")
    influx_v1_env(no_targets, f"http://kit:{SECRET}@{host}")
    record = make_record(results)
    assert publisher.main(["--results-dir", str(results)]) == 0
    stored = influx_query(url, f'SELECT * FROM "{TUNED_MEASUREMENT}"', auth=("kit", SECRET))
    assert requests.get(f"{url}/query", params={"db": "beam_test_metrics", "q": "SHOW SERIES"},
                        timeout=5).status_code == 401
  assert len(stored) == len(metrics_rows.published_metrics(record))
  # A failure (server gone) is reported with the same redaction.
  assert publisher.main(["--results-dir", str(results), "--run", record.run_id]) == 1
  out = capsys.readouterr()
  assert "InfluxDB v1 at http://127.0.0.1" in out.out and "InfluxDB v1" in out.err
  saved = reload(record, results)
  for text in (out.out, out.err, json.dumps(saved.to_dict()),
               json.dumps(ledger_of(saved, results))):
    assert SECRET not in text and "kit:" not in text
  attempts = ledger_of(saved, results)["influxdb"]["attempts"]
  assert [a["status"] for a in attempts] == ["ok", "failed"]


def run_record_ts(record):
  return metrics_rows.timestamp(record).timestamp()


@pytest.fixture(scope="module")
def bigquery_url(tmp_path_factory):
  with servers.bigquery_emulator(tmp_path_factory.mktemp("bq")) as url:
    yield url


def bigquery_env(env, url, dataset="beam_perf", create_dataset=True):
  env.setenv("BIGQUERY_EMULATOR_URL", url)
  env.setenv("BIGQUERY_PROJECT", "test")
  env.setenv("BIGQUERY_DATASET", dataset)
  if create_dataset:
    env.setenv("BIGQUERY_CREATE_DATASET", "1")
  else:
    env.delenv("BIGQUERY_CREATE_DATASET", raising=False)


def bq_client(url, dataset="beam_perf"):
  from pipelines.publish import bigquery, settings
  return bigquery.client(settings.BigQuerySettings("test", dataset, url))


def bigquery_rows(url, run_id, dataset="beam_perf", table=TUNED_TABLE):
  client = bq_client(url, dataset)
  sql = f"SELECT metric, value, job_id FROM `test.{dataset}.{table}` WHERE test_id = '{run_id}'"
  return {row["metric"]: (row["value"], row["job_id"]) for row in client.query(sql).result()} | {
      "__count__": sum(1 for _ in client.query(sql).result())}


def test_bigquery_create_insert_query_back_without_duplicates(bigquery_url, results, no_targets):
  bigquery_env(no_targets, bigquery_url)
  record = make_record(results)
  assert publisher.main(["--results-dir", str(results)]) == 0
  first = bigquery_rows(bigquery_url, record.run_id)
  assert publisher.main(["--results-dir", str(results), "--run", record.run_id]) == 0
  second = bigquery_rows(bigquery_url, record.run_id)
  assert first == second  # the resend inserted nothing
  # job_id is NULL outside Dataflow, as in Beam's rows
  assert first[KIT_STEP + "mean_inference_batch_latency_micro_secs"] == (52_000.0, None)
  assert first[KIT_STEP + "mean_load_model_latency_milli_secs"][0] == 1500.0
  assert first[KIT_STEP + "num_inferences"][0] == 64.0
  assert first["__count__"] == len(metrics_rows.published_metrics(record))


def beams_fetch_query(project, dataset, table, metric_name):
  """The query Beam's change-point analyzer runs (BigQueryMetricsFetcher.fetch_metric_data in
  apache_beam/testing/analyzers/perf_analysis_utils.py), taken from the installed Beam's source
  and filled in as Beam fills it in. It is run unchanged: the emulator accepts it (unquoted
  project.dataset.table, CONTAINS_SUBSTR). Beam's fetcher itself cannot be called here: the
  module imports signal_processing_algorithms, and the fetcher builds its own
  `bigquery.Client()` for real BigQuery and reads the result with to_dataframe() (pandas)."""
  import importlib.util
  import re

  from apache_beam.testing.analyzers import constants
  from apache_beam.testing.load_tests import load_test_metrics_utils
  beam = pathlib.Path(importlib.util.find_spec("apache_beam").submodule_search_locations[0])
  source = (beam / "testing" / "analyzers" / "perf_analysis_utils.py").read_text()
  template = re.search(r'query = f"""((?:(?!""").)*CONTAINS_SUBSTR(?:(?!""").)*)"""', source,
                       re.S).group(1)
  return eval('f"""' + template + '"""', {  # noqa: S307 - Beam's own f-string, Beam's names
      "project": project, "metrics_dataset": dataset, "metrics_table": table,
      "metric_name": metric_name, "load_test_metrics_utils": load_test_metrics_utils,
      "constants": constants})


def test_bigquery_rows_in_beams_schema_read_by_beams_analyzer_query(bigquery_url, results,
                                                                    no_targets):
  from apache_beam.testing.load_tests.load_test_metrics_utils import SCHEMA as BEAM_SCHEMA
  bigquery_env(no_targets, bigquery_url, dataset="beam_run_inference")
  same_second = "2026-11-20T02:00:00+00:00"
  beam_runs = [make_record(results, latency_us=us, started=started, profile="beam",
                           inference_step="PyTorchRunInference", runner="DataflowRunner")
               for us, started in ((40_000.0, same_second), (60_000.0, same_second),
                                   (45_000.0, "2026-11-21T02:00:00+00:00"))]
  tuned = make_record(results, latency_us=10_000.0, started=same_second)
  assert publisher.main(["--results-dir", str(results)]) == 0
  client = bq_client(bigquery_url, "beam_run_inference")
  for table in (TABLE, TUNED_TABLE):
    schema = client.get_table(f"test.beam_run_inference.{table}").schema
    assert [(f.name, f.field_type, f.mode) for f in schema] == [
        (f["name"], f["field_type"], f["mode"]) for f in BEAM_SCHEMA]
  # The analyzer's config for this benchmark (tests_config.yaml) names the metric without the
  # step prefix: metric_name: mean_inference_batch_latency_micro_secs.
  query = beams_fetch_query("test", "beam_run_inference", TABLE,
                            "mean_inference_batch_latency_micro_secs")
  assert "CONTAINS_SUBSTR((metric), 'mean_inference_batch_latency_micro_secs')" in query
  rows = [dict(row) for row in client.query(query).result()]
  assert sorted((r["test_id"], r["value"]) for r in rows) == sorted(
      (r.run_id, r.metrics["mean_inference_batch_latency_micro_secs"]) for r in beam_runs)
  assert {r["metric"] for r in rows} == {BEAM_STEP + "mean_inference_batch_latency_micro_secs"}
  assert rows[0]["timestamp"].isoformat() == "2026-11-21T02:00:00+00:00"  # newest first
  assert set(rows[0]) == {"test_id", "timestamp", "metric", "value", "job_id"}
  # The tuned run is in the suffixed table only, under the kit's step name.
  tuned_rows = [dict(row) for row in client.query(beams_fetch_query(
      "test", "beam_run_inference", TUNED_TABLE, "mean_inference_batch_latency_micro_secs"))]
  assert [(r["test_id"], r["value"], r["metric"]) for r in tuned_rows] == [
      (tuned.run_id, 10_000.0, KIT_STEP + "mean_inference_batch_latency_micro_secs")]


def test_bigquery_missing_dataset_is_an_error_unless_asked(bigquery_url, results, no_targets):
  from google.api_core.exceptions import NotFound
  bigquery_env(no_targets, bigquery_url, dataset="beam_perf_typo", create_dataset=False)
  record = make_record(results)
  assert publisher.main(["--results-dir", str(results)]) == 1
  outcome = ledger_of(record, results)["bigquery"]
  assert outcome["status"] == "failed"
  assert "dataset test.beam_perf_typo does not exist" in outcome["error"]
  assert "BIGQUERY_CREATE_DATASET=1" in outcome["error"]
  with pytest.raises(NotFound):  # nothing was created
    bq_client(bigquery_url).get_dataset("test.beam_perf_typo")
  bigquery_env(no_targets, bigquery_url, dataset="beam_perf_typo", create_dataset=True)
  assert publisher.main(["--results-dir", str(results)]) == 0
  assert bigquery_rows(bigquery_url, record.run_id, "beam_perf_typo")["__count__"] == len(
      metrics_rows.published_metrics(record))


def test_bigquery_insert_failure_is_reported_not_swallowed(bigquery_url, results, no_targets):
  from google.cloud import bigquery as bq

  from pipelines.publish import bigquery, settings
  client = bigquery.client(settings.BigQuerySettings("test", "broken", bigquery_url))
  client.create_dataset("test.broken", exists_ok=True)
  # A table someone created with another schema: our ISO timestamps do not fit an INT64.
  client.create_table(bq.Table(f"test.broken.{TUNED_TABLE}", schema=[
      bq.SchemaField("test_id", "STRING"), bq.SchemaField("timestamp", "INT64"),
      bq.SchemaField("metric", "STRING"), bq.SchemaField("value", "FLOAT64"),
      bq.SchemaField("job_id", "STRING")]), exists_ok=True)
  bigquery_env(no_targets, bigquery_url, dataset="broken")
  record = make_record(results)
  assert publisher.main(["--results-dir", str(results)]) == 1
  outcome = ledger_of(record, results)["bigquery"]
  assert outcome["status"] == "failed"
  assert "BigQuery test.broken" in outcome["error"]
  assert reload(record, results).metrics == record.metrics


def test_bigquery_row_level_insert_errors_are_reported(bigquery_url, results, no_targets):
  # The emulator answers a bad row with HTTP 500; real BigQuery answers 200 with insertErrors.
  # A proxy in front of the real emulator rewrites only insertAll's answer into that form.
  with servers.rewriting_proxy(bigquery_url, "/insertAll", {"insertErrors": [
      {"index": 0, "errors": [{"reason": "invalid", "message": "no such field: job_id"}]}]}) as url:
    bigquery_env(no_targets, url, dataset="rows")
    record = make_record(results)
    assert publisher.main(["--results-dir", str(results)]) == 1
  outcome = ledger_of(record, results)["bigquery"]
  assert outcome["status"] == "failed"
  assert "rows rejected" in outcome["error"] and "no such field: job_id" in outcome["error"]


# --- faults: the record survives, the command fails clearly, a later publish succeeds ----------

@pytest.mark.parametrize("fault", ["down", "http_500", "hangs"])
def test_influx_fault_then_later_publish_succeeds(fault, tmp_path, results, no_targets, capsys):
  no_targets.setenv("INFLUXDB_USER", "kit")
  no_targets.setenv("INFLUXDB_PASSWORD", SECRET)
  record = make_record(results)
  before = json.dumps(record.metrics, sort_keys=True)
  started = time.monotonic()
  with fault_url(fault) as url:
    influx_v1_env(no_targets, url)
    assert publisher.main(["--results-dir", str(results)]) == 1
  assert time.monotonic() - started < 30  # a hanging server is cut off by the timeout
  err = capsys.readouterr().err
  assert f"resnet101 run {record.run_id}" in err and "InfluxDB v1" in err
  assert SECRET not in err
  failed = reload(record, results)
  assert json.dumps(failed.metrics, sort_keys=True) == before  # the local record is intact
  assert ledger_of(failed, results)["influxdb"]["status"] == "failed"
  assert SECRET not in json.dumps(failed.to_dict()) + json.dumps(ledger_of(failed, results))

  with servers.influxdb_v1(tmp_path) as url:
    requests.post(f"{url}/query", params={"q": "CREATE DATABASE beam_test_metrics"}, timeout=5)
    influx_v1_env(no_targets, url)
    assert publisher.main(["--results-dir", str(results)]) == 0
    assert publisher.main(["--results-dir", str(results)]) == 0  # nothing left: no resend
    assert len(influx_v1_points(url)) == len(metrics_rows.published_metrics(record))
  assert ledger_of(record, results)["influxdb"]["status"] == "ok"


@pytest.mark.parametrize("fault", ["down", "http_500", "hangs"])
def test_bigquery_fault_then_later_publish_succeeds(fault, bigquery_url, results, no_targets):
  record = make_record(results)
  with fault_url(fault) as url:
    bigquery_env(no_targets, url)
    started = time.monotonic()
    assert publisher.main(["--results-dir", str(results)]) == 1
    assert time.monotonic() - started < 60
  assert ledger_of(record, results)["bigquery"]["status"] == "failed"
  bigquery_env(no_targets, bigquery_url)
  assert publisher.main(["--results-dir", str(results)]) == 0
  rows = bigquery_rows(bigquery_url, record.run_id)
  assert rows["__count__"] == len(metrics_rows.published_metrics(record))


def test_post_run_publish_failure_keeps_the_run(results, no_targets, capsys):
  influx_v1_env(no_targets, servers.closed_port_url())
  record = make_record(results)
  publish_after_run(record, results)  # must not raise
  saved = reload(record, results)
  assert saved.status == "succeeded"
  assert ledger_of(saved, results)["influxdb"]["status"] == "failed"
  assert "make publish" in capsys.readouterr().err


def test_no_settings_means_nothing_to_publish(results, no_targets):
  make_record(results)
  assert publisher.main(["--results-dir", str(results)]) == 2


def fault_url(fault):
  import contextlib
  if fault == "down":
    return contextlib.nullcontext(servers.closed_port_url())
  return servers.http_500() if fault == "http_500" else servers.hanging_server()


# --- the publish history on the record -----------------------------------------------------------

def test_forced_resend_failure_keeps_the_earlier_success(tmp_path, results, no_targets, capsys):
  record = make_record(results)
  (tmp_path / "a").mkdir()
  with servers.influxdb_v1(tmp_path / "a") as url:
    create_db(url)
    influx_v1_env(no_targets, url)
    assert publisher.main(["--results-dir", str(results)]) == 0
  # Same target, server now down: `make publish RUN=<id>` fails and says so...
  assert publisher.main(["--results-dir", str(results), "--run", record.run_id]) == 1
  assert "stays published" in capsys.readouterr().err
  entry = ledger_of(record, results)["influxdb"]
  # ...but the run stays published (sends are idempotent: the points are still there).
  assert (entry["status"], entry["last_attempt"]) == ("ok", "failed")
  assert "ConnectionError" in entry["error"]
  assert [a["status"] for a in entry["attempts"]] == ["ok", "failed"]
  assert {a["target"] for a in entry["attempts"]} == {f"InfluxDB v1 at {url} (beam_test_metrics)"}
  assert ledger.is_published(results, record, "influxdb")
  assert publisher.main(["--results-dir", str(results)]) == 0  # nothing to resend
  assert len(ledger_of(record, results)["influxdb"]["attempts"]) == 2
  # A different server never got the run: `make publish` sends it there.
  (tmp_path / "b").mkdir()
  with servers.influxdb_v1(tmp_path / "b") as other:
    create_db(other)
    influx_v1_env(no_targets, other)
    assert publisher.main(["--results-dir", str(results)]) == 0
    assert len(influx_v1_points(other)) == len(metrics_rows.published_metrics(record))
  entry = ledger_of(record, results)["influxdb"]
  assert [a["status"] for a in entry["attempts"]] == ["ok", "failed", "ok"]
  assert (entry["status"], entry["last_attempt"], entry["error"]) == ("ok", "ok", None)


def test_records_from_before_the_history_keep_their_outcome_without_credentials(
    results, no_targets):
  url = servers.closed_port_url()
  host = url.removeprefix("http://")
  record = make_record(results)
  old = {**record.to_dict(), "schema_version": 1, "publish": {"influxdb": {
      # as version 1 records kept it: inside the record, one outcome, credentials in the URL
      "status": "ok", "target": f"InfluxDB v1 at http://kit:{SECRET}@{host} (beam_test_metrics)",
      "at": "2026-11-01T00:00:00+00:00"}}}
  store.path_for(record, results).write_text(json.dumps(old))
  influx_v1_env(no_targets, f"http://kit:{SECRET}@{host}")
  assert publisher.main(["--results-dir", str(results)]) == 0  # already published there
  assert publisher.main(["--results-dir", str(results), "--run", record.run_id]) == 1
  saved = reload(record, results)
  entry = ledger_of(saved, results)["influxdb"]
  assert SECRET not in json.dumps(entry)
  assert [(a["status"], a["at"]) for a in entry["attempts"]][0] == (
      "ok", "2026-11-01T00:00:00+00:00")
  assert (entry["status"], entry["last_attempt"]) == ("ok", "failed")


def test_beams_newer_benchmarks_publish_under_beams_names_with_the_cost_figures(
    tmp_path, bigquery_url, results, no_targets):
  """distilbert-sentiment with the beam profile, run locally: Beam's measurement and table with
  `_local` (a laptop never lands in Beam's series), RunInference's metrics under its
  'RunInference' label, and DataflowCostBenchmark's four figures under their bare labels (the
  run priced as one Dataflow worker), in the real InfluxDB and the BigQuery emulator alike."""
  record = make_record(results, benchmark="distilbert-sentiment", profile="beam",
                       inference_step="RunInference",
                       plan_extra={"dataflow": {"machine_type": "n1-standard-2",
                                                "disk_size_gb": 50}})
  metrics = record.metrics
  expected = {"EstimatedCost": metrics["estimated_cost_usd"],
              "JobRuntimeSeconds": metrics["job_runtime_s"],
              "AvgThroughputElements": metrics["avg_throughput_elements_per_s"],
              KIT_STEP + "mean_inference_batch_latency_micro_secs": 52_000.0}
  assert metrics["estimated_cost_usd"] == pytest.approx(
      (2 * 0.056 + 7.5 * 0.003557 + 50 * 0.000054) * metrics["wall_time_s"] / 3600)
  bigquery_env(no_targets, bigquery_url, dataset="beam_run_inference")
  with servers.influxdb_v1(tmp_path) as url:
    create_db(url)
    influx_v1_env(no_targets, url)
    assert publisher.main(["--results-dir", str(results)]) == 0
    points = influx_query(url, 'SELECT "value", "metric" FROM '
                               '"torch_sentiment_distilbert_base_uncased_local"')
  influx = {p["metric"]: p["value"] for p in points}
  rows = bigquery_rows(bigquery_url, record.run_id, dataset="beam_run_inference",
                       table="torch_sentiment_distilbert_base_uncased_batch_local")
  for name, value in expected.items():
    assert influx[name] == pytest.approx(value), name
    assert rows[name][0] == pytest.approx(value), name
  assert not any(name.startswith(BEAM_STEP) for name in influx)  # not Beam's ResNet label


@pytest.mark.parametrize("value", ["abc", "nan", "0", "-1", "inf", "601"])
def test_a_bad_publish_timeout_is_one_line_not_a_traceback(results, no_targets, capsys, value):
  """PUBLISH_TIMEOUT_S is checked once: `make publish` refuses with one line (exit 2); after a
  run, the record is saved and a warning says why it was not sent."""
  influx_v1_env(no_targets, servers.closed_port_url())
  no_targets.setenv("PUBLISH_TIMEOUT_S", value)
  record = make_record(results)
  assert publisher.main(["--results-dir", str(results)]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err == [f"error: PUBLISH_TIMEOUT_S must be a number of seconds above 0 and at most "
                 f"600, not {value!r}"]
  publish_after_run(record, results)
  (warning,) = capsys.readouterr().err.strip().splitlines()
  assert warning.startswith("warning: not published: PUBLISH_TIMEOUT_S must be")
  assert ledger_of(record, results) == {}  # nothing was attempted
