"""The run record: one plain, versioned JSON document per benchmark run.

It is the contract publishers and reports consume. Schema (version 1):
  schema_version, run_id, benchmark, timestamp (UTC ISO start),
  status ('succeeded'|'failed'|'cancelled': interrupted, its Dataflow job cancelled),
  error (str|None), metrics {...numbers or None..., partial: true when the counts are what a
  cancelled or failed run's workers finished before it stopped; never published}, gpu {...},
  latency_histogram {bucket: count},
  metric_notes {metric: why it is None, e.g. a percentile of too few batches},
  metadata {runner, engine, device_requested, device_used, weights, versions, git_sha, ...},
  publish {target: {status, target, at, error, last_attempt, attempts: [...]}} (see
  pipelines/publish/publisher.py).
What readers require of it, and how a newer schema_version is refused: record_schema.py.
"""
from __future__ import annotations

import datetime
import importlib.metadata
import platform
import socket
import subprocess
import uuid
from typing import Any

from pipelines import cost
from pipelines.matrix import REPO_ROOT
from pipelines.record_schema import SCHEMA_VERSION
from pipelines.worker import beam_metrics, latency_histogram, process_stats, worker_facts
from pipelines.worker.optimizations import bf16_support

PERCENTILES = (50, 90, 99)


def new_run_id() -> str:
  return uuid.uuid4().hex[:16]


def utc_now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def versions() -> dict[str, str]:
  found = {"python": platform.python_version()}
  for package in ("apache-beam", "torch", "torchvision", "transformers", "numpy", "pillow"):
    try:
      found[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      found[package] = "absent"
  return found


def git_state() -> dict[str, Any]:
  def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=10, check=True).stdout.strip()
  try:
    return {"git_sha": git("rev-parse", "HEAD"), "git_dirty": bool(git("status", "--porcelain"))}
  except (OSError, subprocess.SubprocessError):
    return {"git_sha": "unknown", "git_dirty": None}


def _single(counters: dict[str, int], prefix: str) -> str:
  """'cuda' from {'model_loaded_on_cuda': 1}; 'mixed' if several, 'unknown' if none."""
  seen = sorted(name[len(prefix):] for name, value in counters.items()
                if name.startswith(prefix) and value)
  if not seen:
    return "unknown"
  return seen[0] if len(seen) == 1 else "mixed:" + ",".join(seen)


def device_used(counters: dict[str, int]) -> str:
  return {"cuda": "GPU", "cpu": "CPU"}.get(d := _single(counters, "model_loaded_on_"), d)


def weights_used(counters: dict[str, int]) -> str:
  return _single(counters, "model_weights_")


def gpu_section(raw: dict[str, Any]) -> dict[str, Any]:
  utilization = beam_metrics.kit_distribution(raw, "gpu_utilization_pct")
  if not utilization:
    return {"telemetry": "unavailable"}
  memory = beam_metrics.kit_distribution(raw, "gpu_memory_used_mib")
  power = beam_metrics.kit_distribution(raw, "gpu_power_w")
  return {
      "telemetry": "available",
      "samples": utilization["count"],
      "utilization_mean_pct": beam_metrics.mean(utilization),
      "utilization_max_pct": utilization["max"],
      "memory_max_mib": memory["max"] if memory else None,
      "power_mean_w": beam_metrics.mean(power),
  }


def job_metrics(metrics: dict[str, Any], job: dict[str, Any] | None,
                metadata: dict[str, Any]) -> None:
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
  run_cost = cost.usage_cost(usage, cost.load_prices(), metadata.get("accelerator"))
  metrics["cost_usd"] = run_cost
  metrics["cost_per_1k_inferences_usd"] = run_cost / n * 1000 if run_cost and n else None
  if job:
    metadata.update({k: job.get(k) for k in ("job_window_source", "job_window_start",
                                             "job_window_end", "job_state", "job_create_time")})
    if "stream" in job:  # a streaming job: what was published, how many done, why drained
      metadata["stream"] = job["stream"]
  metadata["throughput_basis"] = "job window" if window else "launch to finish"


def worker_metadata(counters: dict[str, int],
                    processes: list[dict[str, Any]]) -> dict[str, Any]:
  """Versions and hostname as the workers reported them (worker_facts.py), torch threads from
  the per-process reports (process_stats.py).
  The launcher's own versions stay under launcher_versions; a run whose workers reported
  nothing (it failed before loading a model) keeps the launcher's versions, says so in
  versions_source, and has None for threads and hostname, which only a worker can tell."""
  reported = worker_facts.decode(counters)
  launcher = versions()
  worker_versions = {k: worker_facts.single(reported.get(k))
                     for k in ("python", "apache-beam", "torch", "cuda")}
  threads = worker_facts.single({str(p["intra_op_threads"]): 1 for p in processes
                                 if p.get("intra_op_threads") is not None})
  hosts = sorted(reported.get("hostname", {}))
  flags = worker_facts.single(reported.get("cpu_flags"))
  return {
      "cpu_model": worker_facts.single(reported.get("cpu_model")),
      "cpu_flags": flags,
      # what a bf16 run ran on; `emulated` is a CPU without bf16 instructions
      "bf16": bf16_support(flags.split(",")) if flags and not flags.startswith("mixed:") else None,
      "versions": {**launcher, **{k: v for k, v in worker_versions.items() if v}},
      "versions_source": "workers" if reported else "launcher (no worker reported)",
      "launcher_versions": launcher,
      "torch_threads": int(threads) if threads and threads.isdigit() else threads,
      "hostname": hosts[0] if len(hosts) == 1 else (f"{len(hosts)} workers" if hosts else None),
      "worker_hostnames": hosts,
      "worker_facts": reported,
  }


def build(*, run_id: str, benchmark: str, started: str, wall_time_s: float,
          raw_metrics: dict[str, Any] | None, metadata: dict[str, Any],
          error: str | None = None, job: dict[str, Any] | None = None,
          status: str | None = None, partial: dict[str, int] | None = None,
          share_clock: tuple[int, str] | None = None,
          agreement: dict[str, Any] | None = None) -> dict[str, Any]:
  """The record. `job`: a Dataflow job's own figures (dataflow.job_figures); `status`
  overrides the succeeded/failed verdict ('cancelled'); `partial`: counts the workers of an
  interrupted or failed run reported before it stopped (Beam's metrics never arrived);
  `share_clock`: (epoch ms, what it is) the worker share is counted from; `agreement`: the
  launcher's check of the run's optimization against none (agreement.py)."""
  raw = raw_metrics or {"counters": {}, "distributions": {}}
  metadata = dict(metadata)
  metrics = beam_metrics.summarize(raw)
  metrics.update(partial or {})
  counters = beam_metrics.kit_counters(raw)
  histogram = latency_histogram.parse_counters(counters)
  percentiles = latency_histogram.consistent_percentiles(
      histogram, PERCENTILES, count=metrics["num_batches"],
      mean=metrics["mean_inference_batch_latency_micro_secs"],
      low=metrics["min_inference_batch_latency_micro_secs"],
      high=metrics["max_inference_batch_latency_micro_secs"])
  metric_notes = {}  # metric name: why it is None
  for q, (value_us, note) in percentiles.items():
    metrics[f"batch_latency_p{q}_ms"] = value_us / 1000 if value_us is not None else None
    if note:
      metric_notes[f"batch_latency_p{q}_ms"] = note
  load_s = (metrics["mean_load_model_latency_milli_secs"] or 0) / 1000
  n = metrics["num_inferences"]
  metrics["wall_time_s"] = wall_time_s  # launch to finish (older records repeat it as
  # launch_to_finish_s; report.cost still reads that name)
  metrics["throughput_per_s"] = n / wall_time_s if wall_time_s > 0 else None
  # Model load happens once per worker process; excluding it isolates steady-state inference.
  steady = wall_time_s - load_s
  metrics["throughput_per_s_excl_model_load"] = n / steady if steady > 0 else None
  processes = process_stats.read(raw)
  metrics["steady_throughput_per_s"] = process_stats.steady_throughput(processes)
  # One worker's share of the job, whole: from the launcher's start to the last batch's end.
  share = process_stats.worker_share(processes, share_clock[0] if share_clock else None)
  metrics["worker_share_s"] = share["seconds"] if share else None
  for part in process_stats.SHARE_PARTS:
    metrics[f"worker_share_{part}"] = share["parts"][part] if share else None
  if share:
    metadata["worker_share_from"] = share_clock[1]
    metadata["worker_share_process"] = share["process"]
  optimize = [p["optimize_end_ms"] - p["model_load_end_ms"] for p in processes
              if "optimize_end_ms" in p and "model_load_end_ms" in p]
  metrics["optimize_s"] = max(optimize) / 1000 if optimize else None
  ran = _single(counters, "optimization_ran_")
  if ran != "unknown":  # what the workers applied; else what was asked (nothing loaded)
    metadata["optimization"] = ran
  if metrics["optimize_s"]:
    metric_notes["mean_load_model_latency_milli_secs"] = (
        f"Beam's load time includes the {metadata['optimization']} optimization "
        f"({metrics['optimize_s']:.1f} s at most per process: optimize_s)")
  agreement = agreement or {}
  for name in ("agreement", "max_logit_diff"):
    metrics[name] = agreement.get(name)
  if agreement.get("note"):
    metric_notes["agreement"] = agreement["note"]
  if agreement:
    metadata["agreement_check"] = {k: v for k, v in agreement.items()
                                   if k not in ("agreement", "max_logit_diff", "note")}
  if metadata.get("runner") == "DataflowRunner":
    job_metrics(metrics, job, metadata)
  figures, basis = cost.cost_benchmark_metrics(metrics, metadata, cost.load_prices())
  metrics.update(figures)
  metric_notes["estimated_cost_usd"] = basis
  gpu = gpu_section(raw)
  metrics["gpu_utilization_mean_pct"] = gpu.get("utilization_mean_pct")
  if error is None and ((job or {}).get("stream") or {}).get("shortfall"):
    error = job["stream"]["shortfall"]  # a streaming job drained before its items were done
  if error is None and n == 0:  # nothing was measured: never publish zeros as a result
    error = f"no inferences ran ({metrics['dead_lettered']} inputs dead-lettered)"
  status = status or ("failed" if error else "succeeded")
  # Counts the workers reported before a run stopped or failed: not Beam's final metrics.
  metrics["partial"] = status == "cancelled" or partial is not None
  return {
      "schema_version": SCHEMA_VERSION,
      "run_id": run_id,
      "benchmark": benchmark,
      "timestamp": started,
      "status": status,
      "error": error,
      "metrics": metrics,
      "gpu": gpu,
      "latency_histogram": {str(k): v for k, v in sorted(histogram.items())},
      "metric_notes": metric_notes,
      "metadata": {
          **metadata,
          "device_used": device_used(counters),
          # Where Beam's metrics were really reported; publishers name them after
          # metadata.inference_step, so the two must agree.
          "inference_metric_steps": beam_metrics.beam_steps(raw),
          "weights": weights_used(counters),
          "processes_loaded_model": sum(1 for p in processes if p.get("model_loads")),
          "worker_processes": processes,
          **worker_metadata(counters, processes),
          **git_state(),
          "launcher_hostname": socket.gethostname(),
      },
      "publish": {},
  }
