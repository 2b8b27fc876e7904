"""The numbers a record publishes, flattened: shared by every publisher so they agree."""
from __future__ import annotations

import datetime
from typing import Any


def numeric_metrics(record: dict[str, Any]) -> dict[str, float]:
  """Every numeric metric of the record (None and non-numbers left out)."""
  out = {}
  for name, value in record["metrics"].items():
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      out[name] = float(value)
  gpu = record.get("gpu", {})
  for name in ("utilization_max_pct", "memory_max_mib", "power_mean_w", "samples"):
    if isinstance(gpu.get(name), (int, float)):
      out[f"gpu_{name}"] = float(gpu[name])
  return out


def timestamp(record: dict[str, Any]) -> datetime.datetime:
  return datetime.datetime.fromisoformat(record["timestamp"])
