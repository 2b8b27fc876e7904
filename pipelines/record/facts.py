"""The facts a record states about what ran, beside its numbers: the launcher's versions and git
state, and what the workers reported about themselves (device, weights, versions, hosts,
threads; pipelines/worker/worker_facts.py, process_stats.py)."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from typing import Any

from pipelines.matrix import REPO_ROOT
from pipelines.worker import vocab, worker_facts
from pipelines.worker.optimizations import bf16_support

VERSIONED_PACKAGES = ("apache-beam", "torch", "torchvision", "transformers", "numpy", "pillow")


def versions() -> dict[str, str]:
  found = {"python": platform.python_version()}
  for package in VERSIONED_PACKAGES:
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


def single(counters: dict[str, int], prefix: str) -> str:
  """'cuda' from {'model_loaded_on_cuda': 1}; 'mixed' if several, 'unknown' if none."""
  seen = sorted(name[len(prefix):] for name, value in counters.items()
                if name.startswith(prefix) and value)
  if not seen:
    return "unknown"
  return seen[0] if len(seen) == 1 else "mixed:" + ",".join(seen)


def device_used(counters: dict[str, int]) -> str:
  return {"cuda": "GPU", "cpu": "CPU"}.get(d := single(counters, vocab.LOADED_ON), d)


def weights_used(counters: dict[str, int]) -> str:
  return single(counters, vocab.WEIGHTS)


def decoded(counters: dict[str, int]) -> str | None:
  """Where the workers decoded their images: 'cpu' (PIL), 'device (cuda)', 'device (cpu)';
  None for a task that decodes none."""
  if counters.get(vocab.DECODED_WITH_PIL):
    return "cpu"
  on = single(counters, vocab.DECODED_ON)
  return None if on == "unknown" else f"device ({on})"


def workers(counters: dict[str, int], processes: list[dict[str, Any]]) -> dict[str, Any]:
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
      # the CPUs each worker process could use (taskset, a container limit) and its GPU
      "cpus": worker_facts.single(reported.get("cpus")),
      "gpu_name": worker_facts.single(reported.get("gpu")),
      "launcher_cpus": len(os.sched_getaffinity(0)),
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
