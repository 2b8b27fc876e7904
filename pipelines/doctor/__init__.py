"""`make doctor`: one screen saying what this machine and checkout can do, and what is missing.

Python and the venv; model files and their weights kind; data sizes; CUDA and NVML; which
benchmarks can run here and why not (machine.py); publishing targets, reachable or not, 1 s
timeout (publishing.py); Dataflow settings and pushed image digests (dataflow_check.py).
Offline, secrets redacted, always exits 0. Each section only reads and formats; this module lays
out the screen.
"""
from __future__ import annotations

import os
import pathlib
import time
from typing import Callable, Mapping

from pipelines.doctor.dataflow_check import dataflow_section, image_digests  # noqa: F401
from pipelines.doctor.env import effective_env, read_dotenv, redact_url, secrets_in  # noqa: F401
from pipelines.doctor.machine import (
  benchmarks_section,
  data_sizes,
  files_section,
  gpu_status,
  model_files,
  optimizations_section,
  python_section,
)
from pipelines.doctor.publishing import Answer, probe_all, publishing_section
from pipelines.doctor.text import WIDTH, row  # noqa: F401
from pipelines.matrix import REPO_ROOT


def screen(root: pathlib.Path = REPO_ROOT, env: Mapping[str, str] | None = None,
           probe: Callable[[Mapping[str, str]], dict[str, Answer]] = probe_all) -> str:
  env = effective_env(root, os.environ if env is None else env)
  lines = [f"beam-bench doctor: {root}"
           + ("" if (root / ".env").exists() else " (no .env: local runs, no publishing)")]

  def section(build: Callable[[], list[str]], label: str) -> None:
    try:
      lines.extend(build())
    except Exception as e:  # noqa: BLE001 - a broken section is shown, never fatal
      lines.append(row(label, f"could not check ({type(e).__name__}: {e})"))

  section(lambda: python_section(root), "Python")
  models: dict[str, str | None] = {}
  sizes: dict[str, int | None] = {}
  try:
    models, sizes = model_files(root), data_sizes(root)
  except Exception as e:  # noqa: BLE001
    lines.append(row("models", f"could not check ({type(e).__name__}: {e})"))
  else:
    lines.extend(files_section(models, sizes))
  gpu = gpu_status()
  lines.append(row("CUDA", str(gpu["cuda_text"])))
  lines.append(row("NVML", str(gpu["nvml_text"])))
  section(optimizations_section, "OPTIMIZE=")
  section(lambda: benchmarks_section(root, sizes), "benchmarks")
  section(lambda: publishing_section(env, probe), "publishing")
  section(lambda: dataflow_section(env, root), "Dataflow")
  text = "\n".join(lines)
  for secret in secrets_in(env):  # the last guard: no secret leaves, whatever a message held
    text = text.replace(secret, "***")
  return text


def main(argv: list[str] | None = None) -> int:
  start = time.perf_counter()
  try:
    print(screen())
  except Exception as e:  # noqa: BLE001 - the doctor always exits 0
    print(f"doctor: could not finish: {type(e).__name__}")
  print(f"(checked in {time.perf_counter() - start:.1f} s)")
  return 0
