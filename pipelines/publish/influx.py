"""InfluxDB publisher, in the shape Apache Beam's own benchmarks write (so Beam's Grafana
dashboards read the kit's points unchanged).

Beam's InfluxDBMetricsPublisher (apache_beam/testing/load_tests/load_test_metrics_utils.py,
`_build_payload`) writes one point per metric:

    <measurement>,metric=<metric name>,test_id=<run id> value=<value> <epoch seconds>

posted to `/write?db=<db>&precision=s`. The kit writes exactly that: tags `metric` (the name
from metrics_rows.published_metrics) and `test_id` (the run id), one float field `value`,
precision seconds. The timestamp is the run's start (Beam uses the time of publishing): it is
fixed for a run, so re-sending a run overwrites its points instead of duplicating them, and
since the run id is a tag, two runs started in the same second stay two distinct points.

v2: influxdb-client's write API (InfluxDB 1.8+, 2.x, 3.x, Cloud, and compatible stores).
v1: plain `POST /write?db=` for older 1.x servers (Beam's community InfluxDB is 1.x).
"""
from __future__ import annotations

import base64

import requests
from influxdb_client import Point, WritePrecision

from pipelines.publish import PublishError, metrics_rows
from pipelines.publish.settings import InfluxSettings, redact
from pipelines.record.schema import Record


def points(record: Record, measurement: str) -> list[Point]:
  seconds = metrics_rows.epoch_seconds(record)
  return [Point(measurement).tag("metric", name).tag("test_id", record.run_id)
          .field("value", float(value)).time(seconds, WritePrecision.S)
          for name, value in sorted(metrics_rows.published_metrics(record).items())]


def line_protocol(record: Record, measurement: str) -> str:
  return "\n".join(p.to_line_protocol() for p in points(record, measurement))


def publish(record: Record, measurement: str, settings: InfluxSettings) -> None:
  try:
    lines = line_protocol(record, measurement)
    if settings.api == "v1":
      _write_v1(lines, settings)
    else:
      _write_v2(lines, settings)
  except PublishError as e:
    raise PublishError(redact(str(e), settings.secrets)) from None
  except Exception as e:  # noqa: BLE001 - every failure becomes one clear, redacted message
    raise PublishError(redact(f"{settings.describe()}: {type(e).__name__}: {e}",
                              settings.secrets)) from None


def _write_v1(lines: str, settings: InfluxSettings) -> None:
  auth = (settings.user, settings.password) if settings.user else None
  response = requests.post(f"{settings.url}/write",
                           params={"db": settings.db, "precision": "s"},
                           data=lines.encode(), auth=auth, timeout=settings.timeout_s)
  if response.status_code != 204:
    raise PublishError(
        f"{settings.describe()}: HTTP {response.status_code}: {response.text[:300]}")


def _write_v2(lines: str, settings: InfluxSettings) -> None:
  from influxdb_client import InfluxDBClient
  from influxdb_client.client.write_api import SYNCHRONOUS
  basic = not settings.token and settings.user
  with InfluxDBClient(url=settings.url, token=settings.token or ("" if basic else "none"),
                      org=settings.org or "-", timeout=int(settings.timeout_s * 1000),
                      retries=0) as client:
    if basic:  # user and password (INFLUXDB_USER/PASSWORD or in the URL): HTTP basic auth
      pair = f"{settings.user}:{settings.password}".encode()
      client.api_client.set_default_header(
          "Authorization", "Basic " + base64.b64encode(pair).decode())
    client.write_api(write_options=SYNCHRONOUS).write(
        bucket=settings.bucket, org=settings.org or "-", record=lines,
        write_precision=WritePrecision.S)
