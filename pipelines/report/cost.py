"""Estimated cost of a run and per 1,000 inferences from infra/prices.toml."""
from __future__ import annotations

import tomllib
from typing import Any

from pipelines.matrix import REPO_ROOT

PRICES_PATH = REPO_ROOT / "infra" / "prices.toml"


def load_prices(path=PRICES_PATH) -> dict[str, Any]:
  with open(path, "rb") as f:
    return tomllib.load(f)


def estimate(record: dict[str, Any], prices: dict[str, Any]) -> dict[str, Any]:
  """{'applicable': False, 'why': ...} for local runs; else the run's and per-1k cost."""
  meta = record["metadata"]
  if meta.get("runner") != "DataflowRunner":
    return {"applicable": False, "why": "local run: no cloud bill"}
  machine = prices["machine_types"].get(meta.get("machine_type"))
  if machine is None:
    return {"applicable": False, "why": f"no price for machine type {meta.get('machine_type')}"}
  rates = prices["dataflow_batch"]
  per_worker_hour = (machine["vcpus"] * rates["vcpu_hour"]
                     + machine["memory_gb"] * rates["memory_gb_hour"]
                     + meta.get("disk_size_gb", 0) * rates["pd_standard_gb_hour"])
  accelerator = meta.get("accelerator")
  if accelerator:
    if accelerator not in prices.get("accelerators", {}):
      return {"applicable": False, "why": f"no price for accelerator {accelerator}"}
    per_worker_hour += (meta.get("accelerator_count", 1)
                        * prices["accelerators"][accelerator]["gpu_hour"])
  worker_hours = meta.get("num_workers", 1) * record["metrics"]["wall_time_s"] / 3600
  total = worker_hours * per_worker_hour
  n = record["metrics"]["num_inferences"]
  return {"applicable": True, "currency": prices.get("currency", "USD"),
          "worker_hours": worker_hours, "per_worker_hour": per_worker_hour,
          "run": total, "per_1k_inferences": total / n * 1000 if n else None}
