"""The numbers a record publishes, named as Apache Beam names them: shared by every publisher so
InfluxDB and BigQuery agree, and so Beam's dashboards and change-point analyzer read them.

Metric names (`published_metrics`):

* Beam's own metrics keep Beam's names, composed as
  `apache_beam/testing/load_tests/load_test_metrics_utils.py` composes them from a pipeline
  result (`Metric.__init__`, `DistributionMetric.__init__`, `parse_step`):
    counter:       <namespace>_<parse_step(step)>_<counter name>
    distribution:  <namespace>_<parse_step(step)>_<count|max|min|sum|mean>_<distribution name>
  RunInference reports its metrics in namespace `BeamML_PyTorch` at step
  `<RunInference label>/BeamML_RunInference`, and parse_step lower-cases the step and turns
  spaces into underscores. With Beam's own benchmark label `PyTorchRunInference`:
    BeamML_PyTorch_pytorchruninference/beamml_runinference_mean_inference_batch_latency_micro_secs
  The label is the record's `plan.inference_step` (default `RunInference`, so a tuned run's
  names start `BeamML_PyTorch_runinference/beamml_runinference_`).
  Published from the record: mean/min/max_inference_batch_latency_micro_secs,
  mean/sum/count_inference_request_batch_size, mean/count_load_model_latency_milli_secs,
  max_model_byte_size, num_inferences, failed_batches_counter.
* The four figures Beam's DataflowCostBenchmark publishes beside them keep its bare labels
  (`MetricsReader.publish_metrics` writes each extra metric with label = its key):
  EstimatedCost, JobRuntimeSeconds, AvgThroughputElements, AvgThroughputBytes (cost.py's
  cost_benchmark_metrics says how the kit computes each).
* Everything else the kit measures (latency percentiles, throughput, wall time, dead letters,
  GPU telemetry) is published as `BenchmarkKit/<record metric name>`, e.g.
  `BenchmarkKit/batch_latency_p99_ms`, `BenchmarkKit/throughput_per_s`,
  `BenchmarkKit/gpu_utilization_max_pct`. No kit name contains a Beam metric name, so Beam's
  analyzer (which selects rows with CONTAINS_SUBSTR(metric, '<beam name>')) never picks one up.

Series names: record/comparable.py's one key decides them (Comparable.series): Beam's own
measurement / table only for a `beam` profile run on Dataflow; `_<profile>` for every other
profile, the experiment's settings (`_int8`, `_b32`, ...) for a run that asked beyond its
profile, and `_local` for a local run, so neither an experiment nor a laptop ever moves the
series Beam's dashboards read.
"""
from __future__ import annotations

import datetime

from pipelines.publish import PublishError
from pipelines.record import comparable
from pipelines.record.schema import Record
from pipelines.worker.vocab import BEAM_NAMESPACE, KIT_NAMESPACE

KIT_PREFIX = f"{KIT_NAMESPACE}/"

# record metric -> the name Beam gives it after the step prefix (aggregation type first for a
# distribution, as DistributionMetric composes it).
BEAM_NAMES = {
    "mean_inference_batch_latency_micro_secs": "mean_inference_batch_latency_micro_secs",
    "min_inference_batch_latency_micro_secs": "min_inference_batch_latency_micro_secs",
    "max_inference_batch_latency_micro_secs": "max_inference_batch_latency_micro_secs",
    "mean_inference_request_batch_size": "mean_inference_request_batch_size",
    "sum_inference_request_batch_size": "sum_inference_request_batch_size",
    "num_batches": "count_inference_request_batch_size",
    "mean_load_model_latency_milli_secs": "mean_load_model_latency_milli_secs",
    "model_loads": "count_load_model_latency_milli_secs",
    "model_byte_size": "max_model_byte_size",
    "num_inferences": "num_inferences",
    "failed_batches": "failed_batches_counter",
}


# record metric -> DataflowCostBenchmark's label (published as is, no step prefix)
COST_BENCHMARK_NAMES = {
    "estimated_cost_usd": "EstimatedCost",
    "job_runtime_s": "JobRuntimeSeconds",
    "avg_throughput_elements_per_s": "AvgThroughputElements",
    "avg_throughput_bytes_per_s": "AvgThroughputBytes",
}


def parse_step(step_name: str) -> str:
  """Beam's load_test_metrics_utils.parse_step: lower case, spaces to '_', a leading 'step'
  and surrounding ':' / '_' removed."""
  prefix = "step"
  step_name = step_name.lower().replace(" ", "_")
  step_name = step_name[len(prefix):] if step_name.startswith(prefix) else step_name
  return step_name.strip(":_")


def beam_prefix(step_label: str) -> str:
  """'BeamML_PyTorch_pytorchruninference/beamml_runinference_' for 'PyTorchRunInference'."""
  return f"{BEAM_NAMESPACE}_{parse_step(f'{step_label}/BeamML_RunInference')}_"


def numeric_metrics(record: Record) -> dict[str, float]:
  """Every numeric metric of the record under the record's own names (None and non-numbers
  left out)."""
  out = {}
  for name, value in record.metrics.items():
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      out[name] = float(value)
  gpu = record.gpu
  for name in ("utilization_max_pct", "memory_max_mib", "power_mean_w", "samples"):
    if isinstance(gpu.get(name), (int, float)):
      out[f"gpu_{name}"] = float(gpu[name])
  return out


def published_metrics(record: Record) -> dict[str, float]:
  """{metric name as published: value}: Beam's names for Beam's metrics, `BenchmarkKit/...`
  for the kit's own. The one mapping every publisher uses."""
  prefix = beam_prefix(record.inference_step)

  def published(name: str) -> str:
    if name in BEAM_NAMES:
      return prefix + BEAM_NAMES[name]
    return COST_BENCHMARK_NAMES.get(name) or KIT_PREFIX + name
  return {published(name): value for name, value in numeric_metrics(record).items()}


def series_name(record: Record, which: str) -> str:
  """The measurement (`influx_measurement`) or table (`bigquery_table`) the record goes to: the
  name its plan recorded (older records: the matrix's), as its comparable group names it."""
  base = (record.plan.get("series") or {}).get(which)
  if not base:
    from pipelines import matrix  # records from before the plan carried the series names
    benchmarks = matrix.load()
    if record.benchmark not in benchmarks:
      raise PublishError(f"benchmark '{record.benchmark}' is not in the matrix "
                         f"({matrix.matrix_path().name}) and its record names no series")
    base = getattr(benchmarks[record.benchmark], which)
  try:
    return comparable.key(record).series(base)
  except comparable.SeriesNameError as e:
    raise PublishError(str(e)) from None


def timestamp(record: Record) -> datetime.datetime:
  return datetime.datetime.fromisoformat(record.timestamp)


def epoch_seconds(record: Record) -> int:
  """The run's start in whole seconds: Beam writes InfluxDB points with precision 's'."""
  return int(timestamp(record).timestamp())
