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

from pipelines.worker import vocab
from pipelines.worker.beam_metrics import KIT_NAMESPACE

PREFIX = vocab.PROCESS


def process_id() -> str:
  return f"{socket.gethostname()}:{os.getpid()}"  # per call: worker processes are forked


def name(fact: str) -> str:
  return f"{PREFIX}{process_id()}/{fact}"


def process_started_ms(pid: int | str = "self") -> int:
  """When a process started, in epoch milliseconds, from the kernel's own record (10 ms
  resolution): includes the interpreter's start and every import, which a timer started in
  Python would miss."""
  ticks = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[19])
  boot = next(int(line.split()[1]) for line in open("/proc/stat") if line.startswith("btime"))
  return int((boot + ticks / os.sysconf("SC_CLK_TCK")) * 1000)


def now_ms() -> int:
  return int(time.time() * 1000)


def load_times(started_ms: int, ended_ms: int, optimized_ms: int) -> list[tuple[str, int]]:
  """The timeline facts a process reports once its model is loaded and optimized (the share's
  parts)."""
  return [(name("process_started_ms"), process_started_ms()),
          (name("model_load_start_ms"), started_ms), (name("model_load_end_ms"), ended_ms),
          (name("optimize_end_ms"), optimized_ms)]


def peak_rss_mib() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # KiB on Linux


def threads() -> list[tuple[str, int]]:
  import torch
  return [(name("intra_op_threads"), torch.get_num_threads()),
          (name("inter_op_threads"), torch.get_num_interop_threads())]


def report_batch(items: int, first_batch: bool, window_ms: int = 0) -> None:
  """A batch of `items` ended now; with `window_ms`, its items also count in the time window
  it ended in (steady_windows reads them)."""
  now = int(time.time() * 1000)
  Metrics.distribution(KIT_NAMESPACE, name("batch_end_ms")).update(now)
  Metrics.distribution(KIT_NAMESPACE, name("peak_rss_mib")).update(peak_rss_mib())
  if not first_batch:
    Metrics.counter(KIT_NAMESPACE, name("items_after_first_batch")).inc(items)
    if window_ms:
      Metrics.counter(KIT_NAMESPACE, f"{vocab.WINDOW}{window_ms}/{now // window_ms}").inc(items)


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
        process["first_batch_end_ms"], process["last_batch_end_ms"] = dist["min"], dist["max"]
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


SHARE_PARTS = ("launch_s", "process_start_s", "model_load_s", "optimize_s", "first_batch_s",
               "steady_s")


def worker_share(processes: list[dict[str, Any]], launcher_started_ms: int | None
                 ) -> dict[str, Any] | None:
  """What one worker's share of the job cost, from the launcher's start to its last batch's
  end, and where that time went along the process that finished last:
    launch_s         launcher start -> that SDK process started (imports, plan, pipeline
                     build, container and pool start; 0 where the launcher runs the work)
    process_start_s  its start -> model load begins (Python, Beam and torch imports, harness)
    model_load_s     the model load
    optimize_s       the CPU optimization after it (OPTIMIZE=: trace, compile, calibration; 0
                     for none)
    first_batch_s    optimization end -> first batch end (reading, decoding, warm-up)
    steady_s         first batch end -> last batch end
  None when no process reported its timeline (older workers, a failed run)."""
  timed = [p for p in processes if "last_batch_end_ms" in p and "model_load_end_ms" in p
           and "process_started_ms" in p]
  if launcher_started_ms is None or not timed:
    return None
  last = max(timed, key=lambda p: p["last_batch_end_ms"])
  started = max(last["process_started_ms"], launcher_started_ms)
  marks = [launcher_started_ms, started, last["model_load_start_ms"], last["model_load_end_ms"],
           last.get("optimize_end_ms", last["model_load_end_ms"]), last["first_batch_end_ms"],
           last["last_batch_end_ms"]]
  parts = {part: max(0, b - a) / 1000 for part, a, b in zip(SHARE_PARTS, marks, marks[1:])}
  return {"seconds": (last["last_batch_end_ms"] - launcher_started_ms) / 1000,
          "parts": parts, "process": last["process"]}


# A steady state is stable when its last STABLE_WINDOWS windows are within STABLE_SPREAD of each
# other (Triton perf_analyzer's rule); a window spans at least WINDOW_BATCHES batch intervals.
STABLE_WINDOWS, STABLE_SPREAD, WINDOW_BATCHES = 3, 0.10, 5


def steady_windows(raw: dict[str, Any], processes: list[dict[str, Any]]) -> dict[str, Any]:
  """The items/s of the time windows in which every process was past its first batch and not
  yet done, and whether the last STABLE_WINDOWS agree: {windows: [items/s...], window_s,
  items_per_s (over those windows), spread, stable (None: too few windows), why}."""
  counts: dict[int, int] = {}
  window_ms = 0
  for (namespace, metric), value in raw["counters"].items():
    if namespace == KIT_NAMESPACE and metric.startswith(vocab.WINDOW):
      size, bucket = metric[len(vocab.WINDOW):].split("/")
      window_ms = int(size)
      counts[int(bucket)] = counts.get(int(bucket), 0) + value
  timed = [p for p in processes if p.get("batches", 0) >= 2]
  if not timed or len(timed) != len(processes):
    return {"windows": [], "stable": None,
            "why": "a process ran fewer than two batches: no steady state (raise N)"}
  if not window_ms:
    return {"windows": [], "stable": None, "why": "no windows reported (a Dataflow run)"}
  start = max(p["first_batch_end_ms"] for p in timed)  # every process past its first batch
  end = min(p["last_batch_end_ms"] for p in timed)  # and none done yet
  intervals = [p["steady_window_s"] * 1000 / (p["batches"] - 1) for p in timed]
  buckets = max(1, -(-int(WINDOW_BATCHES * max(intervals)) // window_ms))
  first = start // window_ms + 1  # whole buckets only
  last = end // window_ms - 1
  windows = [sum(counts.get(b, 0) for b in range(w, w + buckets)) / (buckets * window_ms / 1000)
             for w in range(first, last - buckets + 2, buckets)]
  out = {"windows": [round(w, 3) for w in windows], "window_s": buckets * window_ms / 1000}
  if len(windows) < STABLE_WINDOWS:
    return {**out, "stable": None, "why": f"{len(windows)} whole window(s) of "
            f"{out['window_s']:g} s with every process steady: too short to judge (raise N)"}
  tail = windows[-STABLE_WINDOWS:]
  spread = max(tail) / min(tail) - 1 if min(tail) > 0 else float("inf")
  stable = spread <= STABLE_SPREAD
  return {**out, "items_per_s": sum(windows) / len(windows), "spread": spread,
          "stable": stable, "why": (f"the last {STABLE_WINDOWS} windows are within "
                                    f"{spread:.0%}" + ("" if stable else
                                                       f", more than {STABLE_SPREAD:.0%}"))}
