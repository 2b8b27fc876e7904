"""The run history, grouped so that only like is compared with like."""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable

from pipelines.profiles import DEFAULT as DEFAULT_PROFILE

# The seed's headline metrics plus throughput, with the direction that counts as a regression.
HEADLINE = {
    "mean_inference_request_batch_size": "changed",  # a batching change, not better or worse
    "mean_inference_batch_latency_micro_secs": "higher_is_worse",
    "mean_load_model_latency_milli_secs": "higher_is_worse",
    "throughput_per_s_excl_model_load": "lower_is_worse",
}
LABELS = {
    "mean_inference_request_batch_size": "mean batch size",
    "mean_inference_batch_latency_micro_secs": "mean batch latency (µs)",
    "mean_load_model_latency_milli_secs": "mean model load (ms)",
    "throughput_per_s_excl_model_load": "throughput (items/s, excl. load)",
    "throughput_per_s": "throughput (items/s)",
    "batch_latency_p50_ms": "batch latency p50 (ms)",
    "batch_latency_p90_ms": "batch latency p90 (ms)",
    "batch_latency_p99_ms": "batch latency p99 (ms)",
    "gpu_utilization_mean_pct": "GPU utilization (%)",
    "dead_lettered": "dead-lettered",
    "num_inferences": "inferences",
}


@dataclasses.dataclass(frozen=True, order=True)
class GroupKey:
  """Runs are comparable only with the same benchmark, runner, device, machine, weights,
  profile (a `beam` run batches, labels and lays out workers differently from a `tuned` one),
  worker layout (2x1 and 1x2 are different machines' worth of work) and CPU optimization."""
  benchmark: str
  runner: str
  device: str
  machine_type: str
  weights: str
  profile: str = DEFAULT_PROFILE
  layout: str = "unrecorded"  # records from before layouts existed
  optimization: str = "none"  # records from before OPTIMIZE= existed ran none

  def label(self) -> str:
    return (f"{self.benchmark} · {self.runner} · {self.device} · {self.machine_type} · "
            f"{self.weights} weights · profile {self.profile} · layout {self.layout}"
            + (f" · {self.optimization}" if self.optimization != "none" else ""))

  def slug(self) -> str:
    return "-".join([self.benchmark, self.runner, self.device, self.machine_type,
                     self.weights, self.profile, self.layout]
                    + ([self.optimization] if self.optimization != "none" else [])).lower()


def profile(record: dict[str, Any]) -> str:
  """The record's run profile; records from before profiles existed ran the tuned settings."""
  return str(record["metadata"].get("profile") or DEFAULT_PROFILE)


def key(record: dict[str, Any]) -> GroupKey:
  meta = record["metadata"]
  return GroupKey(record["benchmark"], str(meta.get("runner")), str(meta.get("device_used")),
                  str(meta.get("machine_type")), str(meta.get("weights")), profile(record),
                  str(meta.get("layout") or "unrecorded"), str(meta.get("optimization") or "none"))


def groups(records: Iterable[dict[str, Any]]) -> dict[GroupKey, list[dict[str, Any]]]:
  """Successful runs by comparable group, oldest first."""
  out: dict[GroupKey, list[dict[str, Any]]] = {}
  for record in sorted(records, key=lambda r: (r["timestamp"], r["run_id"])):
    if record["status"] == "succeeded":
      out.setdefault(key(record), []).append(record)
  return dict(sorted(out.items()))


def series(runs: list[dict[str, Any]], metric: str) -> list[float | None]:
  return [r["metrics"].get(metric) for r in runs]
