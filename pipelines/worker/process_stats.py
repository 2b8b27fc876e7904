"""Per SDK worker process facts, as Beam metrics named `process/<host>:<pid>/<fact>`, and how
the run record reads them back.

Workers report: model loads, torch intra-/inter-op threads, peak RSS, and each batch's end time
and size. From those the record gets the layout that really ran (how many distinct processes
loaded a model, their threads and memory) and the steady-state throughput: for each process,
the items of its batches after the first divided by the time from its first batch's end to its
last batch's end; summed over processes. That excludes process start-up, model load and the
first batch's warm-up, and includes everything else the process does between batches
(reading, decoding, batching, writing).
"""
from __future__ import annotations

import os
import resource
import socket
import time
from typing import Any

from apache_beam.metrics import Metrics

from pipelines.worker.beam_metrics import KIT_NAMESPACE

PREFIX = "process/"


def process_id() -> str:
  return f"{socket.gethostname()}:{os.getpid()}"  # per call: worker processes are forked


def name(fact: str) -> str:
  return f"{PREFIX}{process_id()}/{fact}"


def peak_rss_mib() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # KiB on Linux


def threads() -> list[tuple[str, int]]:
  import torch
  return [(name("intra_op_threads"), torch.get_num_threads()),
          (name("inter_op_threads"), torch.get_num_interop_threads())]


def report_batch(items: int, first_batch: bool) -> None:
  Metrics.distribution(KIT_NAMESPACE, name("batch_end_ms")).update(int(time.time() * 1000))
  Metrics.distribution(KIT_NAMESPACE, name("peak_rss_mib")).update(peak_rss_mib())
  if not first_batch:
    Metrics.counter(KIT_NAMESPACE, name("items_after_first_batch")).inc(items)


def read(raw: dict[str, Any]) -> list[dict[str, Any]]:
  """One entry per process that reported, from a pipeline's raw metrics."""
  processes: dict[str, dict[str, Any]] = {}

  def entry(metric: str) -> tuple[dict[str, Any], str] | None:
    if not metric.startswith(PREFIX):
      return None
    process, _, fact = metric[len(PREFIX):].rpartition("/")
    return processes.setdefault(process, {"process": process}), fact

  for (namespace, metric), value in raw["counters"].items():
    if namespace == KIT_NAMESPACE and (found := entry(metric)):
      found[0][found[1]] = value
  for (namespace, metric), dist in raw["distributions"].items():
    if namespace == KIT_NAMESPACE and (found := entry(metric)):
      process, fact = found
      if fact == "batch_end_ms":
        process["batches"] = dist["count"]
        process["steady_window_s"] = (dist["max"] - dist["min"]) / 1000
      else:
        process[fact] = dist["max"]
  return sorted(processes.values(), key=lambda p: p["process"])


def steady_throughput(processes: list[dict[str, Any]]) -> float | None:
  """Items per second summed over processes, start-up and first batch excluded; None when a
  process ran fewer than two batches (no steady state to measure)."""
  rates = []
  for p in processes:
    window, items = p.get("steady_window_s"), p.get("items_after_first_batch", 0)
    if not window or not items:
      return None
    rates.append(items / window)
  return sum(rates) if rates else None
