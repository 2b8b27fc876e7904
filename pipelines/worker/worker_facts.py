"""What the workers are: versions (the torch build string, CUDA), hostname, CPU model and the
CPU flags optimizations depend on. (Their torch threads are per process: process_stats.py
reports them.)

Reported by each worker process when it loads its model (handler.BenchmarkModelHandler), as
Beam counters in the kit's namespace whose names carry the fact, since Beam metrics carry
numbers only: `worker__<key>__<value>` with the value escaped to the characters every runner
accepts in a metric name ([A-Za-z0-9.-]; anything else, '_' included, becomes _xx hex). The
counter's value is the number of model loads that reported it. record/facts.py decodes them, so a
record describes the machines that ran the model, not the launcher's.
"""
from __future__ import annotations

import os
import platform
import re
import socket

PREFIX = "worker__"
_SAFE = re.compile(r"[A-Za-z0-9.-]")
_ESCAPE = re.compile(r"_([0-9a-f]{2})")


def escape(value: str) -> str:
  return "".join(c if _SAFE.fullmatch(c) else "".join(f"_{b:02x}" for b in c.encode())
                 for c in value)


def unescape(text: str) -> str:
  return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text).encode("latin-1").decode(
      "utf-8", "replace")


def facts() -> dict[str, str]:
  """This process's facts (called on the worker, after the model is loaded)."""
  import apache_beam
  import torch

  from pipelines.worker.optimizations import cpu_flags
  return {"torch": torch.__version__, "cuda": torch.version.cuda or "none",
          "hostname": socket.gethostname(),
          "python": platform.python_version(), "apache-beam": apache_beam.__version__,
          # what bf16 and int8 run on (optimizations.CPU_FLAGS present), and the CPU's name
          "cpu_flags": ",".join(cpu_flags()) or "none", "cpu_model": cpu_model(),
          # the CPUs it may run on (`taskset -c 0,1` or a container's limit: a worker's vCPUs)
          "cpus": str(len(os.sched_getaffinity(0))), "gpu": gpu_name(torch)}


def gpu_name(torch) -> str:
  """The CUDA device the process would use, by name ('none' without one)."""
  try:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
  except Exception:  # noqa: BLE001 - a driver that reports CUDA but cannot name it
    return "unknown"


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      return next((line.partition(":")[2].strip() for line in f
                   if line.startswith("model name")), "unknown")
  except OSError:
    return "unknown"


def counter_names(found: dict[str, str] | None = None) -> list[str]:
  return [f"{PREFIX}{key}__{escape(value)}" for key, value in (found or facts()).items()]


def decode(counters: dict[str, int]) -> dict[str, dict[str, int]]:
  """{'torch': {'2.14.1+cu128': 4}, 'hostname': {...}, ...} from the kit's counters."""
  out: dict[str, dict[str, int]] = {}
  for name, count in counters.items():
    if not name.startswith(PREFIX) or not count:
      continue
    key, _, value = name[len(PREFIX):].partition("__")
    seen = out.setdefault(key, {})
    seen[unescape(value)] = seen.get(unescape(value), 0) + count
  return out


def single(values: dict[str, int] | None) -> str | None:
  """The one value all workers reported; 'mixed:a,b' when they differ; None when none did."""
  if not values:
    return None
  return next(iter(values)) if len(values) == 1 else "mixed:" + ",".join(sorted(values))
