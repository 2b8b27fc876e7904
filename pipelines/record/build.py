"""A run's plan and its outcome -> its record (schema.py): the one place a record is made.

The plan (RunPlan.as_record) goes in whole; the outcome (what the runner returns, `Outcome`)
gives Beam's raw metrics and what the runner learned. Every number is checked on the way in: a
metric that came out non-finite or negative is None with a note saying so, never a number
that is not one.
"""
from __future__ import annotations

import dataclasses
import datetime
import math
import socket
import uuid
from typing import Any

from pipelines import cost
from pipelines.record import facts
from pipelines.record.schema import ABSURD, Record
from pipelines.worker import beam_metrics, latency_histogram, process_stats, vocab

PERCENTILES = (50, 90, 99)


def new_run_id() -> str:
  return uuid.uuid4().hex[:16]


def utc_now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


@dataclasses.dataclass
class Outcome:
  """What a runner returns (runners.py): the raw metrics, and what it learned running."""
  started: str  # UTC ISO, when the run started
  wall_time_s: float  # launch to finish
  raw: dict[str, Any] | None = None  # Beam's metrics (beam_metrics.query); None: never came
  error: str | None = None  # one line; None: the run did what was asked
  status: str | None = None  # 'cancelled' (interrupted); None: succeeded or failed by `error`
  partial: dict[str, int] | None = None  # counts the workers reported before the run stopped
  facts: dict[str, Any] = dataclasses.field(default_factory=dict)  # engine, job id, container...
  job: dict[str, Any] | None = None  # a Dataflow job's own figures (dataflow.job_figures)
  share_start: tuple[int, str] | None = None  # (epoch ms, what) the worker share counts from
  detail: str | None = None  # the error's whole text (a traceback): kept in a log, not the record


def gpu_section(raw: dict[str, Any]) -> dict[str, Any]:
  utilization = beam_metrics.kit_distribution(raw, "gpu_utilization_pct")
  if not utilization:
    return {"telemetry": "unavailable"}
  memory = beam_metrics.kit_distribution(raw, "gpu_memory_used_mib")
  power = beam_metrics.kit_distribution(raw, "gpu_power_w")
  sm_active = beam_metrics.kit_distribution(raw, "gpu_sm_active_pct")  # GPM GPUs only
  return {
      "telemetry": "available",
      "window": "steady (after each process's first batch)",
      "samples": utilization["count"],
      "utilization_mean_pct": beam_metrics.mean(utilization),
      "utilization_max_pct": utilization["max"],
      "sm_active_mean_pct": beam_metrics.mean(sm_active),
      "memory_max_mib": memory["max"] if memory else None,
      "power_mean_w": beam_metrics.mean(power),
  }


def job_metrics(metrics: dict[str, Any], job: dict[str, Any] | None,
                plan: dict[str, Any], metadata: dict[str, Any]) -> None:
  """Dataflow: throughput over the job's own processing window (dataflow.job_window says how
  it is bounded) and cost from its metered resources; launch-to-finish stays its own figure."""
  n = metrics["num_inferences"]
  window = (job or {}).get("job_window_s")
  metrics["job_window_s"] = window
  if window:
    metrics["throughput_per_s"] = n / window
    steady = window - (metrics["mean_load_model_latency_milli_secs"] or 0) / 1000
    metrics["throughput_per_s_excl_model_load"] = n / steady if steady > 0 else None
  usage = cost.usage_from_resource_metrics((job or {}).get("resources") or {})
  metrics.update(usage)
  run_cost = cost.usage_cost(usage, cost.load_prices(), plan.get("accelerator"))
  metrics["cost_usd"] = run_cost
  metrics["cost_per_1k_inferences_usd"] = run_cost / n * 1000 if run_cost and n else None
  if job:
    metadata.update({k: job.get(k) for k in ("job_window_source", "job_window_start",
                                             "job_window_end", "job_state", "job_create_time")})
    if "stream" in job:  # a streaming job: what was published, how many done, why drained
      metadata["stream"] = job["stream"]
  metadata["throughput_basis"] = "job window" if window else "launch to finish"


def _latency(metrics: dict[str, Any], counters: dict[str, int],
             notes: dict[str, str]) -> dict[str, int]:
  histogram = latency_histogram.parse_counters(counters)
  percentiles = latency_histogram.consistent_percentiles(
      histogram, PERCENTILES, count=metrics["num_batches"],
      mean=metrics["mean_inference_batch_latency_micro_secs"],
      low=metrics["min_inference_batch_latency_micro_secs"],
      high=metrics["max_inference_batch_latency_micro_secs"])
  for q, (value_us, note) in percentiles.items():
    metrics[f"batch_latency_p{q}_ms"] = value_us / 1000 if value_us is not None else None
    if note:
      notes[f"batch_latency_p{q}_ms"] = note
  return histogram


def _throughput(metrics: dict[str, Any], wall_time_s: float, raw: dict[str, Any],
                processes: list[dict[str, Any]], metadata: dict[str, Any]) -> None:
  load_s = (metrics["mean_load_model_latency_milli_secs"] or 0) / 1000
  n = metrics["num_inferences"]
  metrics["wall_time_s"] = wall_time_s  # launch to finish
  metrics["throughput_per_s"] = n / wall_time_s if wall_time_s > 0 else None
  # Model load happens once per worker process; excluding it isolates steady-state inference.
  steady = wall_time_s - load_s
  metrics["throughput_per_s_excl_model_load"] = n / steady if steady > 0 else None
  metrics["steady_throughput_per_s"] = process_stats.steady_throughput(processes)
  # the same from whole time windows with every process steady, and whether they agree
  windows = process_stats.steady_windows(raw, processes)
  metrics["steady_window_throughput_per_s"] = windows.get("items_per_s")
  metrics["steady_window_spread"] = windows.get("spread")
  metadata["steady_state"] = windows


def _worker_share(metrics: dict[str, Any], processes: list[dict[str, Any]],
                  share_start: tuple[int, str] | None, metadata: dict[str, Any]) -> None:
  """One worker's share of the job, whole: from the launcher's start to the last batch's end."""
  share = process_stats.worker_share(processes, share_start[0] if share_start else None)
  metrics["worker_share_s"] = share["seconds"] if share else None
  for part in process_stats.SHARE_PARTS:
    metrics[f"worker_share_{part}"] = share["parts"][part] if share else None
  if share:
    metadata["worker_share_from"] = share_start[1]
    metadata["worker_share_process"] = share["process"]


def _optimization(metrics: dict[str, Any], processes: list[dict[str, Any]],
                  counters: dict[str, int], plan: dict[str, Any], metadata: dict[str, Any],
                  notes: dict[str, str]) -> None:
  optimize = [p["optimize_end_ms"] - p["model_load_end_ms"] for p in processes
              if "optimize_end_ms" in p and "model_load_end_ms" in p]
  metrics["optimize_s"] = max(optimize) / 1000 if optimize else None
  ran = facts.single(counters, vocab.OPTIMIZATION_RAN)
  if ran != "unknown":  # what the workers applied (the plan says what was asked)
    metadata["optimization_ran"] = ran
  applied = ran if ran != "unknown" else plan.get("optimization") or "none"
  if metrics["optimize_s"] and applied != "none":
    notes["mean_load_model_latency_milli_secs"] = (
        f"Beam's load time includes the {applied} optimization "
        f"({metrics['optimize_s']:.1f} s at most per process: optimize_s)")


def add_agreement(record: Record, agreement: dict[str, Any] | None) -> None:
  """The launcher's post-run check of the run's optimization against none (agreement.py)."""
  _add_check(record, agreement, "", ("agreement", "max_logit_diff"), "agreement_check")


def add_decode_check(record: Record, check: dict[str, Any] | None) -> None:
  """DECODE=device against cpu on the same items (agreement.check_decode)."""
  _add_check(record, check, "decode_", ("agreement", "max_logit_diff", "max_input_diff"),
             "decode_check")


def _add_check(record: Record, check: dict[str, Any] | None, prefix: str,
               figures: tuple[str, ...], fact: str) -> None:
  """A check's figures as metrics (`prefix` + name), its note, the rest as metadata[fact]."""
  check = check or {}
  for name in figures:
    record.metrics[prefix + name] = check.get(name)
  if check.get("note"):
    record.metric_notes[prefix + "agreement"] = check["note"]
  if check:
    record.metadata[fact] = {k: v for k, v in check.items() if k not in (*figures, "note")}
  _checked(record.metrics, record.metric_notes)


def add_ceilings(record: Record, ceilings: dict[str, Any] | None) -> None:
  """What each stage of the run does alone, and the run's ceiling (ceilings.measure, with its
  bottleneck in words): the efficiency against it."""
  ceilings = ceilings or {}
  rate = ceilings.get("ceiling_items_per_s")
  steady = record.metrics.get("steady_throughput_per_s")
  record.metrics["ceiling_items_per_s"] = rate
  record.metrics["efficiency_vs_ceiling"] = steady / rate if steady and rate else None
  for stage in ceilings.get("stages", []):
    record.metrics[f"ceiling_{stage['name']}_items_per_s"] = stage["items_per_s"]
  if ceilings.get("note"):
    record.metric_notes["ceiling_items_per_s"] = ceilings["note"]
  if ceilings.get("stages"):
    record.metadata["ceilings"] = ceilings
  _checked(record.metrics, record.metric_notes)


def _checked(metrics: dict[str, Any], notes: dict[str, str]) -> None:
  """A metric that came out not finite, negative or absurd is None, and says so."""
  for name, value in metrics.items():
    if isinstance(value, (int, float)) and not isinstance(value, bool) and (
        not math.isfinite(value) or value < 0 or value > ABSURD):
      metrics[name] = None
      notes[name] = f"computed as {value!r}, which is not a measurement: left out"


def build(plan: dict[str, Any], outcome: Outcome) -> Record:
  """The record of a run: `plan` whole (RunPlan.as_record), `outcome`'s numbers and facts."""
  raw = outcome.raw or {"counters": {}, "distributions": {}}
  metadata = dict(outcome.facts)
  notes: dict[str, str] = {}  # metric name: why it is None
  metrics = beam_metrics.summarize(raw)
  metrics.update(outcome.partial or {})
  counters = beam_metrics.kit_counters(raw)
  histogram = _latency(metrics, counters, notes)
  processes = process_stats.read(raw)
  _throughput(metrics, outcome.wall_time_s, raw, processes, metadata)
  _worker_share(metrics, processes, outcome.share_start, metadata)
  _optimization(metrics, processes, counters, plan, metadata, notes)
  # the post-run steps' figures (add_*), None until a step measures them
  for name in ("agreement", "max_logit_diff", "decode_agreement", "decode_max_logit_diff",
               "decode_max_input_diff", "ceiling_items_per_s", "efficiency_vs_ceiling"):
    metrics[name] = None
  if plan.get("runner") == "DataflowRunner":
    job_metrics(metrics, outcome.job, plan, metadata)
  figures, basis = cost.cost_benchmark_metrics(metrics, plan, cost.load_prices())
  metrics.update(figures)
  notes["estimated_cost_usd"] = basis
  gpu = gpu_section(raw)
  metrics["gpu_utilization_mean_pct"] = gpu.get("utilization_mean_pct")
  metrics["gpu_sm_active_mean_pct"] = gpu.get("sm_active_mean_pct")
  _checked(metrics, notes)
  error = outcome.error
  if error is None and ((outcome.job or {}).get("stream") or {}).get("shortfall"):
    error = outcome.job["stream"]["shortfall"]  # a streaming job drained before it was done
  if error is None and metrics["num_inferences"] == 0:  # never publish zeros as a result
    error = f"no inferences ran ({metrics['dead_lettered']} inputs dead-lettered)"
  status = outcome.status or ("failed" if error else "succeeded")
  # Counts the workers reported before a run stopped or failed: not Beam's final metrics.
  metrics["partial"] = status == "cancelled" or outcome.partial is not None
  metadata.update({
      "device_used": facts.device_used(counters),
      # Where Beam's metrics were really reported; publishers name them after
      # plan.inference_step, so the two must agree.
      "inference_metric_steps": beam_metrics.beam_steps(raw),
      "weights": facts.weights_used(counters),
      "decoded": facts.decoded(counters),
      "processes_loaded_model": sum(1 for p in processes if p.get("model_loads")),
      "worker_processes": processes,
      **facts.workers(counters, processes),
      **facts.git_state(),
      "launcher_hostname": socket.gethostname(),
  })
  for name in ("device_used", "weights"):  # a stopped run: what its workers said as they loaded
    if metadata[name] == "unknown" and outcome.facts.get(name):
      metadata[name] = outcome.facts[name]
  return Record(run_id=plan["run_id"], benchmark=plan["benchmark"], timestamp=outcome.started,
                status=status, error=error, plan=plan, metrics=metrics, metadata=metadata,
                gpu=gpu, latency_histogram={str(k): v for k, v in sorted(histogram.items())},
                metric_notes=notes)
