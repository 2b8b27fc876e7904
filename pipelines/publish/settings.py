"""Publishing settings from the environment (.env): which targets are configured, and the
secrets to keep out of every message and record."""
from __future__ import annotations

import base64
import dataclasses
import math
import os
import re
import urllib.parse
from typing import Mapping, Optional


@dataclasses.dataclass(frozen=True)
class InfluxSettings:
  url: str
  api: str  # "v2" (InfluxDB 1.8+/2.x/3.x/Cloud) or "v1" (/write, older 1.x)
  org: str = ""
  bucket: str = ""
  token: str = dataclasses.field(default="", repr=False)
  db: str = ""
  user: str = ""
  password: str = dataclasses.field(default="", repr=False)
  timeout_s: float = 10.0
  written: tuple[str, ...] = dataclasses.field(default=(), repr=False)  # URL secrets as written

  @property
  def secrets(self) -> list[str]:
    found = [s for s in (self.token, self.password, *self.written) if s]
    if self.password or self.written:  # as written in a URL, and as sent in a basic auth header
      found.append(urllib.parse.quote(self.password, safe=""))
      found.append(base64.b64encode(f"{self.user}:{self.password}".encode()).decode())
    return sorted(set(found), key=len, reverse=True)

  def describe(self) -> str:
    """Never shows a secret: `url` carries no credentials (see split_credentials)."""
    return f"InfluxDB {self.api} at {self.url} ({self.bucket or self.db})"


@dataclasses.dataclass(frozen=True)
class BigQuerySettings:
  project: str
  dataset: str
  emulator_url: str = ""  # set for the BigQuery emulator: anonymous credentials, this endpoint
  timeout_s: float = 30.0
  create_dataset: bool = False  # BIGQUERY_CREATE_DATASET=1; otherwise a missing dataset is an error

  @property
  def secrets(self) -> list[str]:
    return written_secrets(self.emulator_url)

  def describe(self) -> str:
    where = redact_url(self.emulator_url) if self.emulator_url else "bigquery.googleapis.com"
    return f"BigQuery {self.project}.{self.dataset} at {where}"


class SettingsError(ValueError):
  pass


SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def split_credentials(url: str) -> tuple[str, str, str]:
  """'http://user:pw@host:8086/x' -> ('http://host:8086/x', 'user', 'pw'); the URL that is
  shown, stored and requested never carries the credentials (they are sent as basic auth).
  Everything between the scheme (or the start) and the LAST '@' is the userinfo, whatever it
  holds: a password with an unencoded '/', '#', '?' or '@' is still a password, never a path
  or fragment that would be shown. (A path holding '@' is taken for credentials: an InfluxDB
  URL has no reason to hold one, and hiding too much is the safe mistake.)"""
  head, userinfo, host = _split(url)
  if userinfo is None:
    return url, "", ""
  user, _, password = userinfo.partition(":")
  return head + host, urllib.parse.unquote(user), urllib.parse.unquote(password)


def _split(url: str) -> tuple[str, str | None, str]:
  """(scheme:// or '', the raw userinfo up to the last '@' or None without one, the rest)."""
  scheme = SCHEME.match(url)
  head, rest = (url[:scheme.end()], url[scheme.end():]) if scheme else ("", url)
  userinfo, at, host = rest.rpartition("@")
  return (head, userinfo, host) if at else (head, None, rest)


def written_secrets(url: str) -> list[str]:
  """The credentials of a URL as written (raw) and as decoded: what a message must not show."""
  _, user, password = split_credentials(url)
  if not (user or password):
    return []
  raw_user, _, raw_password = _split(url)[1].partition(":")
  # Without a password the user part is the secret (a token written as https://token@host).
  found = [raw_password, password] if password else [raw_user, user]
  return sorted({s for s in found if s}, key=len, reverse=True)


def redact_url(url: str) -> str:
  """http://user:pw@host -> http://***@host; user:pw@host -> ***@host."""
  head, _, host = _split(url)
  _, user, password = split_credentials(url)
  return head + "***@" + host if user or password else url


MAX_TIMEOUT_S = 600.0


def timeout_s(env: Mapping[str, str], default: float) -> float:
  """PUBLISH_TIMEOUT_S: seconds a publish may wait on a server, above 0 and at most 600."""
  text = env.get("PUBLISH_TIMEOUT_S", "").strip()
  if not text:
    return default
  try:
    value = float(text)
  except ValueError:
    value = math.nan
  if not 0 < value <= MAX_TIMEOUT_S:  # NaN fails this too
    raise SettingsError(f"PUBLISH_TIMEOUT_S must be a number of seconds above 0 and at most "
                        f"{MAX_TIMEOUT_S:g}, not {text!r}")
  return value


def influx(env: Mapping[str, str] = os.environ) -> Optional[InfluxSettings]:
  written = env.get("INFLUXDB_URL", "").strip()
  if not written:
    return None
  if not re.match(r"https?://", written, re.IGNORECASE):
    # Guessing http:// would send a password in clear text to a server that may want https.
    raise SettingsError("INFLUXDB_URL must start with http:// or https:// (got "
                        f"'{redact_url(written)}')")
  url, url_user, url_password = split_credentials(written)
  api = env.get("INFLUXDB_API", "v2").strip()
  user = env.get("INFLUXDB_USER", "")
  password = env.get("INFLUXDB_PASSWORD", "")
  if not user and url_user:  # INFLUXDB_USER/PASSWORD win over credentials in the URL
    user, password = url_user, url_password
  s = InfluxSettings(
      url=url.rstrip("/"), api=api, org=env.get("INFLUXDB_ORG", ""),
      bucket=env.get("INFLUXDB_BUCKET", ""), token=env.get("INFLUXDB_TOKEN", ""),
      db=env.get("INFLUXDB_DB", ""), user=user, password=password,
      timeout_s=timeout_s(env, 10.0),
      written=tuple(written_secrets(written)))
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
                          timeout_s=timeout_s(env, 30.0),
                          create_dataset=env.get("BIGQUERY_CREATE_DATASET", "").strip() == "1")


def redact(message: str, secrets: list[str]) -> str:
  for secret in secrets:
    message = message.replace(secret, "***")
  return message
