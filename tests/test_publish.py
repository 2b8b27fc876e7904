"""Publishing against real servers on loopback, and what happens when they misbehave."""
from __future__ import annotations

import json
import time

import pytest
import requests

from pipelines import results_store
from pipelines.publish import publisher
from pipelines.run import publish_after_run
from tests import servers
from tests.records import make_record

MEASUREMENT = "torch_inference_imagenet_resnet101"
TABLE = "torch_inference_imagenet_results_resnet101"
SECRET = "s3cr3t-Pa55"


def reload(record, results):
  return results_store.find(record["run_id"], results)


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


def influx_v1_points(url, db="beam_test_metrics"):
  response = requests.get(f"{url}/query", params={"db": db, "q": f'SELECT * FROM "{MEASUREMENT}"'},
                          timeout=5).json()
  series = response["results"][0].get("series", [])
  return [dict(zip(s["columns"], v)) for s in series for v in s["values"]]


# --- real servers --------------------------------------------------------------------------

def test_influxdb_v1_write_then_read_back_without_duplicates(tmp_path, results, no_targets):
  with servers.influxdb_v1(tmp_path) as url:
    requests.post(f"{url}/query", params={"q": "CREATE DATABASE beam_test_metrics"}, timeout=5)
    influx_v1_env(no_targets, url)
    record = make_record(results)
    assert publisher.main(["--results-dir", str(results)]) == 0
    assert publisher.main(["--results-dir", str(results), "--run", record["run_id"]]) == 0
    points = influx_v1_points(url)
  assert len(points) == 1  # sent twice, stored once
  point = points[0]
  assert point["mean_inference_batch_latency_micro_secs"] == 52_000.0
  assert point["mean_load_model_latency_milli_secs"] == 1500.0
  assert point["mean_inference_request_batch_size"] == 16.0
  assert point["num_inferences"] == 64.0
  assert point["run_id"] == record["run_id"]
  assert (point["benchmark"], point["device"], point["runner"], point["weights"]) == (
      "resnet101", "CPU", "DirectRunner", "random")
  assert reload(record, results)["publish"]["influxdb"]["status"] == "ok"


def test_influxdb_v2_protocol_write_then_read_back(tmp_path, results, no_targets):
  with servers.victoria_metrics(tmp_path) as url:
    no_targets.setenv("INFLUXDB_URL", url)
    no_targets.setenv("INFLUXDB_BUCKET", "beam")
    no_targets.setenv("INFLUXDB_ORG", "kit")
    no_targets.setenv("INFLUXDB_TOKEN", SECRET)
    record = make_record(results)
    assert publisher.main(["--results-dir", str(results)]) == 0
    assert publisher.main(["--results-dir", str(results), "--run", record["run_id"]]) == 0
    requests.get(f"{url}/internal/force_flush", timeout=5)
    series = f"{MEASUREMENT}_mean_inference_batch_latency_micro_secs"
    exported = requests.get(f"{url}/api/v1/export", params={"match[]": series},
                            timeout=5).text.splitlines()
  assert len(exported) == 1
  line = json.loads(exported[0])
  assert line["values"] == [52_000.0]  # one sample: the resend did not duplicate it
  assert line["timestamps"] == [int(run_record_ts(record) * 1000)]
  assert line["metric"]["device"] == "CPU" and line["metric"]["benchmark"] == "resnet101"
  assert SECRET not in json.dumps(reload(record, results))  # the token stays out of the record


def run_record_ts(record):
  from pipelines.publish.metrics_rows import timestamp
  return timestamp(record).timestamp()


@pytest.fixture(scope="module")
def bigquery_url(tmp_path_factory):
  with servers.bigquery_emulator(tmp_path_factory.mktemp("bq")) as url:
    yield url


def bigquery_env(env, url, dataset="beam_perf"):
  env.setenv("BIGQUERY_EMULATOR_URL", url)
  env.setenv("BIGQUERY_PROJECT", "test")
  env.setenv("BIGQUERY_DATASET", dataset)


def bigquery_rows(url, run_id, dataset="beam_perf"):
  from pipelines.publish import bigquery, settings
  client = bigquery.client(settings.BigQuerySettings("test", dataset, url))
  sql = f"SELECT metric, value, job_id FROM `test.{dataset}.{TABLE}` WHERE test_id = '{run_id}'"
  return {row["metric"]: (row["value"], row["job_id"]) for row in client.query(sql).result()} | {
      "__count__": sum(1 for _ in client.query(sql).result())}


def test_bigquery_create_insert_query_back_without_duplicates(bigquery_url, results, no_targets):
  bigquery_env(no_targets, bigquery_url)
  record = make_record(results)
  assert publisher.main(["--results-dir", str(results)]) == 0
  first = bigquery_rows(bigquery_url, record["run_id"])
  assert publisher.main(["--results-dir", str(results), "--run", record["run_id"]]) == 0
  second = bigquery_rows(bigquery_url, record["run_id"])
  assert first == second  # the resend inserted nothing
  assert first["mean_inference_batch_latency_micro_secs"] == (52_000.0, record["run_id"])
  assert first["mean_load_model_latency_milli_secs"][0] == 1500.0
  assert first["num_inferences"][0] == 64.0
  numeric = [k for k, v in record["metrics"].items() if isinstance(v, (int, float))]
  assert first["__count__"] == len(numeric)


def test_bigquery_insert_failure_is_reported_not_swallowed(bigquery_url, results, no_targets):
  from google.cloud import bigquery as bq

  from pipelines.publish import bigquery, settings
  client = bigquery.client(settings.BigQuerySettings("test", "broken", bigquery_url))
  client.create_dataset("test.broken", exists_ok=True)
  # A table someone created with another schema: our ISO timestamps do not fit an INT64.
  client.create_table(bq.Table(f"test.broken.{TABLE}", schema=[
      bq.SchemaField("test_id", "STRING"), bq.SchemaField("timestamp", "INT64"),
      bq.SchemaField("metric", "STRING"), bq.SchemaField("value", "FLOAT64"),
      bq.SchemaField("job_id", "STRING")]), exists_ok=True)
  bigquery_env(no_targets, bigquery_url, dataset="broken")
  record = make_record(results)
  assert publisher.main(["--results-dir", str(results)]) == 1
  outcome = reload(record, results)["publish"]["bigquery"]
  assert outcome["status"] == "failed"
  assert "BigQuery test.broken" in outcome["error"]
  assert reload(record, results)["metrics"] == record["metrics"]


def test_bigquery_row_level_insert_errors_are_reported(bigquery_url, results, no_targets):
  # The emulator answers a bad row with HTTP 500; real BigQuery answers 200 with insertErrors.
  # A proxy in front of the real emulator rewrites only insertAll's answer into that form.
  with servers.rewriting_proxy(bigquery_url, "/insertAll", {"insertErrors": [
      {"index": 0, "errors": [{"reason": "invalid", "message": "no such field: job_id"}]}]}) as url:
    bigquery_env(no_targets, url, dataset="rows")
    record = make_record(results)
    assert publisher.main(["--results-dir", str(results)]) == 1
  outcome = reload(record, results)["publish"]["bigquery"]
  assert outcome["status"] == "failed"
  assert "rows rejected" in outcome["error"] and "no such field: job_id" in outcome["error"]


# --- faults: the record survives, the command fails clearly, a later publish succeeds ----------

@pytest.mark.parametrize("fault", ["down", "http_500", "hangs"])
def test_influx_fault_then_later_publish_succeeds(fault, tmp_path, results, no_targets, capsys):
  no_targets.setenv("INFLUXDB_USER", "kit")
  no_targets.setenv("INFLUXDB_PASSWORD", SECRET)
  record = make_record(results)
  before = json.dumps(record["metrics"], sort_keys=True)
  started = time.monotonic()
  with fault_url(fault) as url:
    influx_v1_env(no_targets, url)
    assert publisher.main(["--results-dir", str(results)]) == 1
  assert time.monotonic() - started < 30  # a hanging server is cut off by the timeout
  err = capsys.readouterr().err
  assert f"resnet101 run {record['run_id']}" in err and "InfluxDB v1" in err
  assert SECRET not in err
  failed = reload(record, results)
  assert json.dumps(failed["metrics"], sort_keys=True) == before  # the local record is intact
  assert failed["publish"]["influxdb"]["status"] == "failed"
  assert SECRET not in json.dumps(failed)

  with servers.influxdb_v1(tmp_path) as url:
    requests.post(f"{url}/query", params={"q": "CREATE DATABASE beam_test_metrics"}, timeout=5)
    influx_v1_env(no_targets, url)
    assert publisher.main(["--results-dir", str(results)]) == 0
    assert publisher.main(["--results-dir", str(results)]) == 0  # nothing left: no resend
    assert len(influx_v1_points(url)) == 1
  assert reload(record, results)["publish"]["influxdb"]["status"] == "ok"


@pytest.mark.parametrize("fault", ["down", "http_500", "hangs"])
def test_bigquery_fault_then_later_publish_succeeds(fault, bigquery_url, results, no_targets):
  record = make_record(results)
  with fault_url(fault) as url:
    bigquery_env(no_targets, url)
    started = time.monotonic()
    assert publisher.main(["--results-dir", str(results)]) == 1
    assert time.monotonic() - started < 60
  assert reload(record, results)["publish"]["bigquery"]["status"] == "failed"
  bigquery_env(no_targets, bigquery_url)
  assert publisher.main(["--results-dir", str(results)]) == 0
  rows = bigquery_rows(bigquery_url, record["run_id"])
  numeric = [k for k, v in record["metrics"].items() if isinstance(v, (int, float))]
  assert rows["__count__"] == len(numeric)


def test_post_run_publish_failure_keeps_the_run(results, no_targets, capsys):
  influx_v1_env(no_targets, servers.closed_port_url())
  record = make_record(results)
  publish_after_run(record, results)  # must not raise
  saved = reload(record, results)
  assert saved["status"] == "succeeded"
  assert saved["publish"]["influxdb"]["status"] == "failed"
  assert "make publish" in capsys.readouterr().err


def test_no_settings_means_nothing_to_publish(results, no_targets):
  make_record(results)
  assert publisher.main(["--results-dir", str(results)]) == 2


def fault_url(fault):
  import contextlib
  if fault == "down":
    return contextlib.nullcontext(servers.closed_port_url())
  return servers.http_500() if fault == "http_500" else servers.hanging_server()
