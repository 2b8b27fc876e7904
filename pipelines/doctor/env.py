"""The settings the doctor reads, as a `make` command would see them, and the values its screen
must never show."""
from __future__ import annotations

import os
import pathlib
from typing import Mapping

from pipelines.publish import settings

SECRET_VARS = ("INFLUXDB_TOKEN", "INFLUXDB_PASSWORD")


def read_dotenv(path: pathlib.Path) -> dict[str, str]:
  """KEY=value lines of .env, as the Makefile reads them (no quotes, no expansion)."""
  values = {}
  if path.exists():
    for line in path.read_text().splitlines():
      key, sep, value = line.partition("=")
      if sep and key.strip().isidentifier() and not line.lstrip().startswith("#"):
        values[key.strip()] = value.strip()
  return values


def effective_env(root: pathlib.Path, env: Mapping[str, str] = os.environ) -> dict[str, str]:
  """The settings a `make` command would see: .env, with the environment on top (make exports
  .env's variables, so under make both agree)."""
  return {**read_dotenv(root / ".env"), **env}


def redact_url(url: str) -> str:
  """http://user:pw@host -> http://***@host (the publishers' own parser finds the credentials,
  whatever characters they hold)."""
  return settings.redact_url(url)


def secrets_in(env: Mapping[str, str]) -> list[str]:
  """Every value the screen must never show."""
  found = [env.get(name, "") for name in SECRET_VARS]
  for name in ("INFLUXDB_URL", "BIGQUERY_EMULATOR_URL"):
    url = env.get(name, "").strip()
    found += settings.written_secrets(url) + [settings.split_credentials(url)[1]]
  return sorted({s for s in found if len(s) >= 3}, key=len, reverse=True)
