"""What every reader of the results store may rely on in a run record (run_record.py writes it).

results_store checks each record once, as it loads it, so publish, report, compare and summary
never meet a record that would crash them or be misread: a damaged, foreign or newer one is
skipped with a line that names its file and why.
"""
from __future__ import annotations

import datetime
from typing import Any

SCHEMA_VERSION = 1
STATUSES = ("succeeded", "failed", "cancelled")
# Read by index (not .get) somewhere; run_record.build writes them all, for failed runs too.
REQUIRED_METRICS = ("num_inferences", "dead_lettered", "mean_inference_request_batch_size",
                    "mean_inference_batch_latency_micro_secs",
                    "mean_load_model_latency_milli_secs", "throughput_per_s",
                    "throughput_per_s_excl_model_load")
SECTIONS = ("metrics", "metadata", "gpu")  # required objects
OPTIONAL_SECTIONS = ("publish", "latency_histogram", "metric_notes")


def problem(record: Any) -> str | None:
  """Why the record cannot be read by this kit, or None when it can."""
  if not isinstance(record, dict):
    return f"not a run record (a JSON {type(record).__name__}, not an object)"
  version = record.get("schema_version")
  if version is None:
    return "no schema_version: not a run record"
  if not isinstance(version, int) or isinstance(version, bool) or version < 1:
    return f"schema_version {version!r} is not one this kit knows"
  if version > SCHEMA_VERSION:
    return f"schema_version {version} is newer than this kit reads ({SCHEMA_VERSION})"
  for name in ("run_id", "benchmark", "timestamp", "status"):
    if not isinstance(record.get(name), str) or not record[name]:
      return f"no {name}" if name not in record else f"{name} is not a text"
  try:
    datetime.datetime.fromisoformat(record["timestamp"])
  except ValueError:
    return f"timestamp {record['timestamp']!r} is not an ISO date and time"
  if record["status"] not in STATUSES:
    return f"status {record['status']!r} is not one of {', '.join(STATUSES)}"
  for name in SECTIONS + OPTIONAL_SECTIONS:
    if (name in record or name in SECTIONS) and not isinstance(record.get(name), dict):
      return f"no {name}" if name not in record else f"{name} is not an object"
  metrics = record["metrics"]
  missing = [m for m in REQUIRED_METRICS if m not in metrics]
  if missing:
    return f"metrics lack {', '.join(missing)}"
  odd = sorted(m for m, v in metrics.items() if v is not None and not isinstance(v, (int, float)))
  if odd:
    return f"metrics {', '.join(odd)} are not numbers"
  for target, entry in record.get("publish", {}).items():
    attempts = entry.get("attempts", []) if isinstance(entry, dict) else None
    if not isinstance(attempts, list) or not all(isinstance(a, dict) for a in attempts):
      return f"publish.{target} is not an object with a list of attempts"
  return None
