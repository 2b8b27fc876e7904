"""The run history's metrics: which count as headline figures and how a regression moves them,
their labels, and a group's values of one (groups: record/comparable.py)."""
from __future__ import annotations

from pipelines.record.schema import Record

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


def series(runs: list[Record], metric: str) -> list[float | None]:
  return [r.metrics.get(metric) for r in runs]
