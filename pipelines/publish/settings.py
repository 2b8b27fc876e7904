"""Publishing settings from the environment (.env): which targets are configured, and the
secrets to keep out of every message and record."""
from __future__ import annotations

import dataclasses
import os
from typing import Mapping, Optional


@dataclasses.dataclass(frozen=True)
class InfluxSettings:
  url: str
  api: str  # "v2" (InfluxDB 1.8+/2.x/3.x/Cloud) or "v1" (/write, older 1.x)
  org: str = ""
  bucket: str = ""
  token: str = ""
  db: str = ""
  user: str = ""
  password: str = ""
  timeout_s: float = 10.0

  @property
  def secrets(self) -> list[str]:
    return [s for s in (self.token, self.password) if s]

  def describe(self) -> str:
    return f"InfluxDB {self.api} at {self.url} ({self.bucket or self.db})"


@dataclasses.dataclass(frozen=True)
class BigQuerySettings:
  project: str
  dataset: str
  emulator_url: str = ""  # set for the BigQuery emulator: anonymous credentials, this endpoint
  timeout_s: float = 30.0

  @property
  def secrets(self) -> list[str]:
    return []

  def describe(self) -> str:
    where = self.emulator_url or "bigquery.googleapis.com"
    return f"BigQuery {self.project}.{self.dataset} at {where}"


class SettingsError(ValueError):
  pass


def influx(env: Mapping[str, str] = os.environ) -> Optional[InfluxSettings]:
  url = env.get("INFLUXDB_URL", "").strip()
  if not url:
    return None
  api = env.get("INFLUXDB_API", "v2").strip()
  s = InfluxSettings(
      url=url.rstrip("/"), api=api, org=env.get("INFLUXDB_ORG", ""),
      bucket=env.get("INFLUXDB_BUCKET", ""), token=env.get("INFLUXDB_TOKEN", ""),
      db=env.get("INFLUXDB_DB", ""), user=env.get("INFLUXDB_USER", ""),
      password=env.get("INFLUXDB_PASSWORD", ""),
      timeout_s=float(env.get("PUBLISH_TIMEOUT_S", "10")))
  if api == "v2" and not s.bucket:
    raise SettingsError("INFLUXDB_URL is set with INFLUXDB_API=v2 but INFLUXDB_BUCKET is not")
  if api == "v1" and not s.db:
    raise SettingsError("INFLUXDB_URL is set with INFLUXDB_API=v1 but INFLUXDB_DB is not")
  if api not in ("v1", "v2"):
    raise SettingsError(f"INFLUXDB_API must be v1 or v2, got '{api}'")
  return s


def bigquery(env: Mapping[str, str] = os.environ) -> Optional[BigQuerySettings]:
  dataset = env.get("BIGQUERY_DATASET", "").strip()
  if not dataset:
    return None
  project = env.get("BIGQUERY_PROJECT", "").strip() or env.get("PROJECT", "").strip()
  if not project:
    raise SettingsError("BIGQUERY_DATASET is set but neither BIGQUERY_PROJECT nor PROJECT is")
  return BigQuerySettings(project=project, dataset=dataset,
                          emulator_url=env.get("BIGQUERY_EMULATOR_URL", "").strip(),
                          timeout_s=float(env.get("PUBLISH_TIMEOUT_S", "30")))


def redact(message: str, secrets: list[str]) -> str:
  for secret in secrets:
    message = message.replace(secret, "***")
  return message
