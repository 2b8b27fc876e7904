"""Reads a finished pipeline's metrics into plain numbers: the one place that knows Beam's
metric names."""
from __future__ import annotations

from typing import Any

from apache_beam.metrics.metric import MetricsFilter

BEAM_NAMESPACE = "BeamML_PyTorch"
KIT_NAMESPACE = "BenchmarkKit"


def _value(result):
  committed = result.committed
  return committed if committed is not None else result.attempted


def query(pipeline_result) -> dict[str, Any]:
  """{'counters': {(namespace, name): int}, 'distributions': {(namespace, name): dict}} summed
  over steps (a metric can be reported by more than one step), and 'steps':
  {(namespace, name): [steps that reported it]}."""
  results = pipeline_result.metrics().query(MetricsFilter())
  counters: dict[tuple[str, str], int] = {}
  steps: dict[tuple[str, str], set[str]] = {}
  for m in (*results["counters"], *results["distributions"]):
    steps.setdefault((m.key.metric.namespace, m.key.metric.name), set()).add(m.key.step)
  for c in results["counters"]:
    key = (c.key.metric.namespace, c.key.metric.name)
    counters[key] = counters.get(key, 0) + int(_value(c) or 0)
  distributions: dict[tuple[str, str], dict[str, float]] = {}
  for d in results["distributions"]:
    value = _value(d)
    if value is None or not value.count:
      continue
    key = (d.key.metric.namespace, d.key.metric.name)
    agg = distributions.setdefault(key, {"sum": 0, "count": 0, "min": value.min,
                                         "max": value.max})
    agg["sum"] += value.sum
    agg["count"] += value.count
    agg["min"] = min(agg["min"], value.min)
    agg["max"] = max(agg["max"], value.max)
  return {"counters": counters, "distributions": distributions,
          "steps": {key: sorted(names) for key, names in steps.items()}}


def beam_steps(raw: dict[str, Any]) -> list[str]:
  """The steps that reported Beam's RunInference metrics ('<label>/BeamML_RunInference')."""
  return sorted({step for (namespace, _), names in raw.get("steps", {}).items()
                 if namespace == BEAM_NAMESPACE for step in names})


def mean(dist: dict[str, float] | None) -> float | None:
  return dist["sum"] / dist["count"] if dist and dist["count"] else None


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
  """The run record's metrics section from Beam's and the kit's metrics."""
  counters, dists = raw["counters"], raw["distributions"]
  beam_counter = lambda name: counters.get((BEAM_NAMESPACE, name), 0)  # noqa: E731
  kit_counter = lambda name: counters.get((KIT_NAMESPACE, name), 0)  # noqa: E731
  batch_size = dists.get((BEAM_NAMESPACE, "inference_request_batch_size"))
  latency = dists.get((BEAM_NAMESPACE, "inference_batch_latency_micro_secs"))
  load = dists.get((BEAM_NAMESPACE, "load_model_latency_milli_secs"))
  model_bytes = dists.get((BEAM_NAMESPACE, "model_byte_size"))
  input_bytes = dists.get((BEAM_NAMESPACE, "inference_request_batch_byte_size"))
  param_bytes = dists.get((KIT_NAMESPACE, "model_param_bytes"))
  return {
      # The seed's three headline metrics.
      "mean_inference_request_batch_size": mean(batch_size),
      "mean_inference_batch_latency_micro_secs": mean(latency),
      "mean_load_model_latency_milli_secs": mean(load),
      "num_inferences": beam_counter("num_inferences"),
      "num_batches": batch_size["count"] if batch_size else 0,
      "sum_inference_request_batch_size": batch_size["sum"] if batch_size else 0,
      # the bytes of the model inputs (Beam's handler's get_num_bytes of each batch)
      "sum_inference_request_batch_byte_size": input_bytes["sum"] if input_bytes else None,
      "failed_batches": beam_counter("failed_batches_counter"),
      "min_inference_batch_latency_micro_secs": latency["min"] if latency else None,
      "max_inference_batch_latency_micro_secs": latency["max"] if latency else None,
      "model_loads": load["count"] if load else 0,
      "model_byte_size": model_bytes["max"] if model_bytes else None,  # Beam's: an RSS delta
      # The loaded model's parameters and buffers (what the weights really take).
      "model_param_and_buffer_bytes": param_bytes["max"] if param_bytes else None,
      "dead_lettered": kit_counter("dead_lettered"),
      # Of those, the items Beam counted in num_inferences too: they reached the model call and
      # failed there (a file the batched decode could not read: --decode device).
      "dead_lettered_after_batching": kit_counter("dead_lettered_after_batching"),
      # Language modeling: the share of token slots in batches that were padding.
      "padding_fraction": (kit_counter("padding_slots") / kit_counter("token_slots")
                           if kit_counter("token_slots") else None),
      # Sentiment: sentences cut at 128 tokens, as Beam's example cuts them (0 for other tasks).
      "sentences_truncated": kit_counter("sentences_truncated"),
  }


def kit_counters(raw: dict[str, Any]) -> dict[str, int]:
  return {name: value for (namespace, name), value in raw["counters"].items()
          if namespace == KIT_NAMESPACE}


def kit_distribution(raw: dict[str, Any], name: str) -> dict[str, float] | None:
  return raw["distributions"].get((KIT_NAMESPACE, name))
