"""Cost of a Dataflow run from infra/prices.toml: the one cost computation of the kit.

Two bases, best first:
  * job resource metrics: what Dataflow metered for the job (TotalVcpuTime, TotalMemoryUsage,
    TotalPdUsage, TotalSsdUsage, TotalGpuTime, TotalStreamingDataProcessed), priced as Beam's
    own cost benchmark prices them (apache_beam/testing/load_tests/dataflow_cost_benchmark.py);
    the run record carries the usage as vcpu_hours, memory_gb_hours, ... and cost_usd;
  * worker shape x launch-to-finish: workers x hours x (vCPU + memory + disk + accelerator
    prices), for records without resource metrics (older ones, failed jobs).
"""
from __future__ import annotations

import tomllib
from typing import Any

from pipelines.matrix import REPO_ROOT

PRICES_PATH = REPO_ROOT / "infra" / "prices.toml"
USAGE_FIELDS = ("vcpu_hours", "memory_gb_hours", "pd_gb_hours", "ssd_gb_hours", "gpu_hours",
                "shuffle_gb")


def load_prices(path=PRICES_PATH) -> dict[str, Any]:
  with open(path, "rb") as f:
    return tomllib.load(f)


def usage_from_resource_metrics(resources: dict[str, float]) -> dict[str, float | None]:
  """Dataflow's resource metrics in billing units; None for a metric the job did not report.
  Units as Beam reads them: vCPU-seconds, MB-seconds (Beam divides by 1000 for GB), GB-seconds,
  GPU-seconds, GB of shuffled data."""
  def hours(name: str, divisor: float = 1.0) -> float | None:
    return resources[name] / divisor / 3600 if name in resources else None
  return {"vcpu_hours": hours("TotalVcpuTime"),
          "memory_gb_hours": hours("TotalMemoryUsage", 1000),
          "pd_gb_hours": hours("TotalPdUsage"),
          "ssd_gb_hours": hours("TotalSsdUsage"),
          "gpu_hours": hours("TotalGpuTime"),
          "shuffle_gb": resources.get("TotalStreamingDataProcessed")}


def usage_cost(usage: dict[str, float | None], prices: dict[str, Any],
               accelerator: str | None) -> float | None:
  """The job's cost from its metered usage; None when nothing was metered or a GPU was used
  that has no price."""
  if all(usage.get(k) is None for k in USAGE_FIELDS):
    return None
  rates = prices["dataflow_batch"]
  cost = ((usage.get("vcpu_hours") or 0) * rates["vcpu_hour"]
          + (usage.get("memory_gb_hours") or 0) * rates["memory_gb_hour"]
          + (usage.get("pd_gb_hours") or 0) * rates["pd_standard_gb_hour"]
          + (usage.get("ssd_gb_hours") or 0) * rates.get("pd_ssd_gb_hour", 0)
          + (usage.get("shuffle_gb") or 0) * rates.get("shuffle_gb", 0))
  if usage.get("gpu_hours"):
    gpu = prices.get("accelerators", {}).get(accelerator or "")
    if gpu is None:
      return None
    cost += usage["gpu_hours"] * gpu["gpu_hour"]
  return cost


def worker_hour_price(machine_type: str, disk_gb: float, accelerator: str | None,
                      accelerator_count: int | None, prices: dict[str, Any]) -> float | None:
  """One Dataflow batch worker's hourly price: vCPUs, memory, disk and GPUs; None where the
  price list lacks the machine type or the accelerator."""
  machine = prices["machine_types"].get(machine_type)
  if machine is None or (accelerator and accelerator not in prices.get("accelerators", {})):
    return None
  rates = prices["dataflow_batch"]
  hourly = (machine["vcpus"] * rates["vcpu_hour"] + machine["memory_gb"] * rates["memory_gb_hour"]
            + disk_gb * rates["pd_standard_gb_hour"])
  if accelerator:
    hourly += (accelerator_count or 1) * prices["accelerators"][accelerator]["gpu_hour"]
  return hourly


def cost_benchmark_metrics(metrics: dict[str, Any], plan: dict[str, Any],
                           prices: dict[str, Any]) -> tuple[dict[str, Any], str]:
  """The four figures Beam's DataflowCostBenchmark publishes beside RunInference's metrics
  (apache_beam/testing/load_tests/dataflow_cost_benchmark.py), as record metrics, and a note
  saying how they were had:
    job_runtime_s          JobRuntimeSeconds: Dataflow, the job window (the first 'All workers
                           have finished the startup processes...' to the last 'Stopping worker
                           pool', the messages Beam reads); locally, launch to finish
    avg_throughput_elements_per_s  AvgThroughputElements: inferences / job_runtime_s (Beam
                           averages Cloud Monitoring's element_count of its PostProcess output)
    avg_throughput_bytes_per_s     AvgThroughputBytes: the model inputs' bytes (RunInference's
                           inference_request_batch_byte_size) / job_runtime_s (Beam: the
                           estimated_byte_count of its PostProcess output)
    estimated_cost_usd     EstimatedCost: Dataflow, the metered usage priced as Beam prices it,
                           plus GPU hours (Beam's benchmarks pass no GPU and leave them out);
                           locally, one worker of the benchmark's machine type for
                           job_runtime_s: what this run's work costs on one Dataflow worker."""
  dataflow = plan.get("runner") == "DataflowRunner"
  runtime = metrics.get("job_window_s") if dataflow else metrics.get("wall_time_s")
  n, input_bytes = metrics.get("num_inferences") or 0, metrics.get(
      "sum_inference_request_batch_byte_size")
  out = {"job_runtime_s": runtime,
         "avg_throughput_elements_per_s": n / runtime if runtime else None,
         "avg_throughput_bytes_per_s": input_bytes / runtime if runtime and input_bytes else None,
         "estimated_cost_usd": None}
  if dataflow:
    out["estimated_cost_usd"] = metrics.get("cost_usd")
    return out, "Dataflow's metered usage over the job window"
  shape = plan.get("dataflow") or {}  # the benchmark's Dataflow worker
  machine = shape.get("machine_type")
  hourly = None if not machine else worker_hour_price(
      machine, shape.get("disk_size_gb") or 0, shape.get("accelerator"),
      shape.get("accelerator_count"), prices)
  if runtime and hourly is not None:
    out["estimated_cost_usd"] = hourly * runtime / 3600
  return out, (f"local run priced as one {machine} worker for its launch-to-finish time"
               if hourly is not None else f"no price for machine type {machine}")


def estimate(record, prices: dict[str, Any]) -> dict[str, Any]:
  """{'applicable': False, 'why': ...} for local runs; else the run's (a Record's) and per-1k
  cost."""
  meta = record.plan
  if record.local:
    return {"applicable": False, "why": "local run: no cloud bill"}
  metrics = record.metrics
  n = metrics["num_inferences"]
  currency = prices.get("currency", "USD")
  usage = {k: metrics.get(k) for k in USAGE_FIELDS}
  metered = usage_cost(usage, prices, meta.get("accelerator"))
  if metered is not None:
    return {"applicable": True, "currency": currency, "basis": "job resource metrics",
            "usage": usage, "run": metered,
            "per_1k_inferences": metered / n * 1000 if n else None}
  if meta.get("machine_type") not in prices["machine_types"]:
    return {"applicable": False, "why": f"no price for machine type {meta.get('machine_type')}"}
  accelerator = meta.get("accelerator")
  per_worker_hour = worker_hour_price(meta["machine_type"], meta.get("disk_size_gb", 0),
                                      accelerator, meta.get("accelerator_count", 1), prices)
  if per_worker_hour is None:
    return {"applicable": False, "why": f"no price for accelerator {accelerator}"}
  hours = metrics.get("launch_to_finish_s") or metrics["wall_time_s"]
  worker_hours = (meta.get("workers") or 1) * hours / 3600
  total = worker_hours * per_worker_hour
  return {"applicable": True, "currency": currency, "basis": "worker shape x launch-to-finish",
          "worker_hours": worker_hours, "per_worker_hour": per_worker_hour,
          "run": total, "per_1k_inferences": total / n * 1000 if n else None}
