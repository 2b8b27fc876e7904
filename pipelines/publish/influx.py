"""InfluxDB publisher: one point per run in the benchmark's measurement.

v2: influxdb-client's write API (InfluxDB 1.8+, 2.x, 3.x, Cloud, and compatible stores).
v1: plain `POST /write?db=` for older 1.x servers (Beam's community InfluxDB is 1.x).
A point is identified by measurement + tags + timestamp (the run's start), so re-sending a run
overwrites it instead of adding a duplicate.
"""
from __future__ import annotations

from typing import Any

import requests
from influxdb_client import Point, WritePrecision

from pipelines.publish import PublishError, metrics_rows
from pipelines.publish.settings import InfluxSettings, redact

TAGS = ("benchmark", "runner", "device", "machine_type", "accelerator", "weights")


def point(record: dict[str, Any], measurement: str) -> Point:
  meta = record["metadata"]
  tags = {"benchmark": record["benchmark"], "runner": meta.get("runner"),
          "device": meta.get("device_used"), "machine_type": meta.get("machine_type"),
          "accelerator": meta.get("accelerator") or "none", "weights": meta.get("weights")}
  p = Point(measurement).time(metrics_rows.timestamp(record), WritePrecision.S)
  for key in TAGS:
    p = p.tag(key, str(tags[key]))
  for name, value in metrics_rows.numeric_metrics(record).items():
    p = p.field(name, value)
  return p.field("run_id", record["run_id"]).field("git_sha", meta.get("git_sha", "unknown"))


def publish(record: dict[str, Any], measurement: str, settings: InfluxSettings) -> None:
  line = point(record, measurement).to_line_protocol()
  try:
    if settings.api == "v1":
      _write_v1(line, settings)
    else:
      _write_v2(line, settings)
  except PublishError:
    raise
  except Exception as e:  # noqa: BLE001 - every failure becomes one clear, redacted message
    raise PublishError(redact(f"{settings.describe()}: {type(e).__name__}: {e}",
                              settings.secrets)) from None


def _write_v1(line: str, settings: InfluxSettings) -> None:
  auth = (settings.user, settings.password) if settings.user else None
  response = requests.post(f"{settings.url}/write",
                           params={"db": settings.db, "precision": "s"},
                           data=line.encode(), auth=auth, timeout=settings.timeout_s)
  if response.status_code != 204:
    raise PublishError(redact(
        f"{settings.describe()}: HTTP {response.status_code}: {response.text[:300]}",
        settings.secrets))


def _write_v2(line: str, settings: InfluxSettings) -> None:
  from influxdb_client import InfluxDBClient
  from influxdb_client.client.write_api import SYNCHRONOUS
  with InfluxDBClient(url=settings.url, token=settings.token or "none", org=settings.org or "-",
                      timeout=int(settings.timeout_s * 1000), retries=0) as client:
    client.write_api(write_options=SYNCHRONOUS).write(
        bucket=settings.bucket, org=settings.org or "-", record=line,
        write_precision=WritePrecision.S)
