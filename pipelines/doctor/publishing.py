"""The doctor's publishing row: the InfluxDB and BigQuery targets the settings name, and whether
they answer (1 s each, in parallel). Only addresses on the settings are probed: the doctor is
offline, so real BigQuery (no emulator) is not called; `make publish` checks it."""
from __future__ import annotations

import dataclasses
import threading
import time
import urllib.parse
from typing import Any, Callable, Mapping

from pipelines.doctor.env import redact_url
from pipelines.doctor.text import row
from pipelines.publish import settings

PROBE_TIMEOUT_S = 1.0
BIGQUERY_NOT_CHECKED = "not checked: doctor is offline; `make publish` will tell"


@dataclasses.dataclass(frozen=True)
class Answer:
  """What a probed address answered: its HTTP status, or None with why there was no answer."""
  status: int | None
  text: str  # '3 ms', or 'unreachable (why)'
  body: Any = None  # the JSON answer, when there was one

  def __str__(self) -> str:
    return self.text if self.status is None else f"reachable (HTTP {self.status}, {self.text})"


def probe(url: str) -> Answer:
  """GET url; the answer never holds the URL itself (it may hold credentials)."""
  import requests
  start = time.perf_counter()
  try:
    response = requests.get(url, timeout=PROBE_TIMEOUT_S, allow_redirects=False)
  except requests.Timeout:
    return Answer(None, f"unreachable (no answer within {PROBE_TIMEOUT_S:g} s)")
  except requests.ConnectionError:
    return Answer(None, "unreachable (connection refused or host not found)")
  except Exception as e:  # noqa: BLE001
    return Answer(None, f"unreachable ({type(e).__name__})")
  ms = (time.perf_counter() - start) * 1000
  try:
    body = response.json()
  except ValueError:
    body = None
  return Answer(response.status_code, f"{ms:.0f} ms", body)


def probe_all(urls: Mapping[str, str], budget_s: float = PROBE_TIMEOUT_S + 1.0
              ) -> dict[str, Answer]:
  """Probes in parallel on daemon threads; whatever has not answered within the budget (DNS
  lookups have no timeout of their own) is reported as such."""
  results: dict[str, Answer] = {}

  def run(key: str, url: str) -> None:
    results[key] = probe(url)

  threads = [threading.Thread(target=run, args=item, daemon=True) for item in urls.items()]
  for thread in threads:
    thread.start()
  deadline = time.monotonic() + budget_s
  for thread in threads:
    thread.join(max(0.0, deadline - time.monotonic()))
  return {key: results.get(key, Answer(None, f"unreachable (no answer within {budget_s:g} s)"))
          for key in urls}


def dataset_url(bigquery: settings.BigQuerySettings) -> str:
  """The BigQuery REST address of the settings' dataset (the emulator's)."""
  quote = lambda part: urllib.parse.quote(part, safe="")  # noqa: E731
  return (f"{bigquery.emulator_url.rstrip('/')}/bigquery/v2/projects/{quote(bigquery.project)}"
          f"/datasets/{quote(bigquery.dataset)}")


def dataset_status(bigquery: settings.BigQuerySettings, answer: Answer) -> str:
  """Whether the dataset exists, as BigQuery's REST API says (a 404 in its error shape)."""
  name = f"{bigquery.project}.{bigquery.dataset}"
  error = answer.body.get("error") if isinstance(answer.body, dict) else None
  if answer.status == 200:
    return f"dataset {name} exists ({answer.text})"
  if answer.status == 404 and isinstance(error, dict) and error.get("status") == "NOT_FOUND":
    if bigquery.create_dataset:
      return (f"reachable; dataset {name} does not exist yet: `make publish` creates it "
              "(BIGQUERY_CREATE_DATASET=1)")
    return (f"reachable, but dataset {name} does not exist: create it, or set "
            "BIGQUERY_CREATE_DATASET=1 and `make publish` creates it")
  if answer.status == 404:
    return f"{answer}: not BigQuery's API (is BIGQUERY_EMULATOR_URL the emulator's REST address?)"
  return str(answer)


def publishing_section(env: Mapping[str, str],
                       probe_urls: Callable[[Mapping[str, str]], dict[str, Answer]] = probe_all
                       ) -> list[str]:
  described: dict[str, str] = {}
  urls: dict[str, str] = {}
  try:
    influx = settings.influx(env)
  except settings.SettingsError as e:
    described["influx"] = f"InfluxDB misconfigured: {e}"
  else:
    if influx is None:
      described["influx"] = "InfluxDB not configured (INFLUXDB_URL unset)"
    else:
      where = influx.bucket and f"bucket {influx.bucket}" or f"db {influx.db}"
      extras = [where] + [f"{label} set (hidden)" for label, value in
                          (("token", influx.token), ("password", influx.password)) if value]
      described["influx"] = (f"InfluxDB {influx.api} at {redact_url(influx.url)} "
                             f"({', '.join(extras)})")
      urls["influx"] = influx.url + "/ping"
  bigquery = None
  try:
    bigquery = settings.bigquery(env)
  except settings.SettingsError as e:
    described["bigquery"] = f"BigQuery misconfigured: {e}"
  else:
    if bigquery is None:
      described["bigquery"] = "BigQuery not configured (BIGQUERY_DATASET unset)"
    elif bigquery.emulator_url:
      described["bigquery"] = (f"BigQuery {bigquery.project}.{bigquery.dataset} at "
                               f"{redact_url(bigquery.emulator_url)}")
      urls["bigquery"] = dataset_url(bigquery)
    else:
      described["bigquery"] = (f"BigQuery {bigquery.project}.{bigquery.dataset} at "
                               f"https://bigquery.googleapis.com: {BIGQUERY_NOT_CHECKED}")
  reach = probe_urls(urls) if urls else {}
  lines = []
  for i, (key, text) in enumerate(described.items()):
    if key == "bigquery" and key in reach:
      text += f": {dataset_status(bigquery, reach[key])}"
    elif key in reach:
      text += f": {reach[key]}"
    lines.append(row("publishing" if i == 0 else "", text))
  return lines
