"""BigQuery publisher: one table per benchmark in the schema Beam's own benchmarks write, so
Beam's change-point analyzer (apache_beam/testing/analyzers/perf_analysis.py) reads the rows.

The schema is load_test_metrics_utils.SCHEMA, the columns BigQueryMetricsPublisher creates:
  test_id STRING REQUIRED, timestamp TIMESTAMP REQUIRED, metric STRING REQUIRED,
  value FLOAT REQUIRED, job_id STRING NULLABLE
one row per metric (names from metrics_rows.published_metrics); test_id is the run id,
timestamp the run's start, job_id the Dataflow job id (NULL for local runs, as in Beam).

Idempotent: metrics already in the table for this run are not sent again, and each row's
insert id is run id + metric so a retried request is de-duplicated by BigQuery too.
The dataset must exist (as Beam's BigQueryClient requires): a typo in BIGQUERY_DATASET is an
error, not a new dataset, unless BIGQUERY_CREATE_DATASET=1. A missing table is created.
"""
from __future__ import annotations

from typing import Any

from pipelines.publish import PublishError, metrics_rows
from pipelines.publish.settings import BigQuerySettings, redact
from pipelines.record.schema import Record

SCHEMA = (("test_id", "STRING", "REQUIRED"), ("timestamp", "TIMESTAMP", "REQUIRED"),
          ("metric", "STRING", "REQUIRED"), ("value", "FLOAT", "REQUIRED"),
          ("job_id", "STRING", "NULLABLE"))


def client(settings: BigQuerySettings):
  from google.cloud import bigquery
  if settings.emulator_url:
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    return bigquery.Client(project=settings.project, credentials=AnonymousCredentials(),
                           client_options=ClientOptions(api_endpoint=settings.emulator_url))
  return bigquery.Client(project=settings.project)


def rows(record: Record) -> list[dict[str, Any]]:
  ts = metrics_rows.timestamp(record).isoformat()
  job_id = record.metadata.get("job_id") or None
  return [{"test_id": record.run_id, "timestamp": ts, "metric": name, "value": value,
           "job_id": job_id}
          for name, value in sorted(metrics_rows.published_metrics(record).items())]


def bounded_retry(settings: BigQuerySettings):
  """The client retries 5xx for up to 10 minutes by default; a publish gives up sooner."""
  from google.cloud.bigquery import DEFAULT_RETRY
  return DEFAULT_RETRY.with_timeout(settings.timeout_s)


def ensure_dataset(bq, settings: BigQuerySettings) -> None:
  from google.api_core.exceptions import NotFound
  from google.cloud import bigquery
  retry = bounded_retry(settings)
  name = f"{settings.project}.{settings.dataset}"
  try:
    bq.get_dataset(name, retry=retry, timeout=settings.timeout_s)
  except NotFound:
    if not settings.create_dataset:
      raise PublishError(
          f"{settings.describe()}: dataset {name} does not exist; check BIGQUERY_DATASET "
          "and BIGQUERY_PROJECT for a typo, create the dataset, or set "
          "BIGQUERY_CREATE_DATASET=1 to let the kit create it") from None
    bq.create_dataset(bigquery.Dataset(name), exists_ok=True, retry=retry,
                      timeout=settings.timeout_s)


def ensure_table(bq, settings: BigQuerySettings, table_name: str):
  from google.cloud import bigquery
  retry = bounded_retry(settings)
  ensure_dataset(bq, settings)
  table = bigquery.Table(f"{settings.project}.{settings.dataset}.{table_name}",
                         schema=[bigquery.SchemaField(n, t, mode=m) for n, t, m in SCHEMA])
  return bq.create_table(table, exists_ok=True, retry=retry, timeout=settings.timeout_s)


def existing_metrics(bq, table, run_id: str, settings: BigQuerySettings) -> set[str]:
  from google.cloud import bigquery
  job = bq.query(
      f"SELECT metric FROM `{table.project}.{table.dataset_id}.{table.table_id}` "
      "WHERE test_id = @run_id",
      job_config=bigquery.QueryJobConfig(
          query_parameters=[bigquery.ScalarQueryParameter("run_id", "STRING", run_id)]),
      retry=bounded_retry(settings), job_retry=None, timeout=settings.timeout_s)
  rows = job.result(retry=bounded_retry(settings), timeout=settings.timeout_s)
  return {row["metric"] for row in rows}


def publish(record: Record, table_name: str, settings: BigQuerySettings) -> int:
  """Returns how many rows were inserted (0 when the run was already there)."""
  try:
    bq = client(settings)
    table = ensure_table(bq, settings, table_name)
    present = existing_metrics(bq, table, record.run_id, settings)
    missing = [r for r in rows(record) if r["metric"] not in present]
    if not missing:
      return 0
    errors = bq.insert_rows_json(
        table, missing, row_ids=[f"{r['test_id']}:{r['metric']}" for r in missing],
        retry=bounded_retry(settings), timeout=settings.timeout_s)
  except PublishError:
    raise
  except Exception as e:  # noqa: BLE001 - one clear message per failure
    raise PublishError(redact(f"{settings.describe()}: {type(e).__name__}: {str(e)[:500]}",
                              settings.secrets)) from None
  if errors:
    raise PublishError(f"{settings.describe()}: {len(errors)} rows rejected: {errors[:3]}")
  return len(missing)
