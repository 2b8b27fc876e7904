"""The doctor's rows about this machine and checkout: Python and the venv, model files and their
weights kind, data sizes, CUDA and NVML, what OPTIMIZE= can run, and which benchmarks can run
here and why not (decided by the launch's own checks, plan.check_local)."""
from __future__ import annotations

import importlib.metadata
import pathlib
import sys
from typing import Mapping

from pipelines import matrix, plan
from pipelines.doctor.text import more, row
from pipelines.worker import tasks

PACKAGES = ("apache-beam", "torch", "torchvision", "transformers", "tqdm", "influxdb-client",
            "google-cloud-bigquery")


def python_section(root: pathlib.Path) -> list[str]:
  in_venv = sys.prefix != sys.base_prefix
  version = "%d.%d.%d" % sys.version_info[:3]
  wanted = (root / ".python-version").read_text().strip() if (
      root / ".python-version").exists() else None
  note = "" if not wanted or version.startswith(wanted + ".") else (
      f"  (worker images use {wanted}: set PYTHON=python{wanted})")
  lines = [row("Python", f"{version} at {sys.executable}{note}")]
  if in_venv:
    venv = pathlib.Path(sys.prefix)
    steps = [f"{name} {'done' if (venv / marker).exists() else 'not done'}"
             for name, marker in (("make setup", ".base"), ("test extras", ".test"))]
    lines.append(row("venv", f"{venv} ({', '.join(steps)})"))
  else:
    lines.append(row("venv", "none: this is the system Python (make setup creates .venv)"))
  versions = []
  for package in PACKAGES:
    try:
      versions.append(f"{package} {importlib.metadata.version(package)}")
    except importlib.metadata.PackageNotFoundError:
      versions.append(f"{package} MISSING")
  lines.append(row("packages", ", ".join(versions)))
  return lines


def model_files(root: pathlib.Path) -> dict[str, str | None]:
  """Per model of the matrix (and the vocab): a description, or None when missing."""
  from pipelines.worker import models, tokenizer_files
  out: dict[str, str | None] = {}
  for name in matrix.models():
    path = root / "models" / f"{name}.pth"
    if not path.exists():
      out[name] = None
      continue
    meta = models.read_meta(str(path))
    out[name] = (f"{path.stat().st_size / 1e6:.0f} MB, "
                 f"{meta.weights + ' weights' if meta else 'weights unknown (no sidecar)'}")
  vocab = root / "models" / tokenizer_files.VOCAB_FILE
  out[tokenizer_files.VOCAB_FILE] = "present" if vocab.exists() else None
  return out


def data_sizes(root: pathlib.Path) -> dict[str, int | None]:
  sizes: dict[str, int | None] = {}
  for name in sorted({tasks.get(t).input_file for t in tasks.names()}):
    path = root / "data" / name
    sizes[name] = sum(1 for line in path.open() if line.strip()) if path.exists() else None
  return sizes


def files_section(models: Mapping[str, str | None], sizes: Mapping[str, int | None]) -> list[str]:
  present = [f"{name} ({desc})" for name, desc in models.items() if desc]
  missing = [name for name, desc in models.items() if not desc]
  lines = [row("models", "; ".join(present) if present else "none under models/")]
  if missing:
    lines.append(more(f"missing: {', '.join(missing)} (make models)"))
  lines.append(row("data", "; ".join(
      f"data/{name}: {n} items" if n is not None else f"data/{name}: missing (make data)"
      for name, n in sizes.items())))
  return lines


def gpu_status() -> dict[str, str | bool]:
  status: dict[str, str | bool] = {}
  try:
    import torch

    from pipelines.worker.handler import cuda_usable
    status["cuda"] = cuda_usable()
    if status["cuda"]:
      status["cuda_text"] = (f"usable: {torch.cuda.get_device_name(0)} (CUDA "
                             f"{torch.version.cuda}, {torch.cuda.device_count()} device(s))")
    elif torch.cuda.is_available():
      status["cuda_text"] = "reported but not usable (allocation fails)"
    else:
      status["cuda_text"] = (f"not available (torch {torch.__version__}, "
                             f"built for CUDA {torch.version.cuda or 'none'})")
  except Exception as e:  # noqa: BLE001 - the screen reports, it never stops
    status["cuda"], status["cuda_text"] = False, f"unknown ({type(e).__name__}: {e})"
  try:
    import pynvml
    pynvml.nvmlInit()
    try:
      handle = pynvml.nvmlDeviceGetHandleByIndex(0)
      name = pynvml.nvmlDeviceGetName(handle)
      name = name.decode() if isinstance(name, bytes) else name
      status["nvml_text"] = (f"ok: {name}, driver {_text(pynvml.nvmlSystemGetDriverVersion())}, "
                             f"{pynvml.nvmlDeviceGetCount()} device(s): GPU telemetry on")
    finally:
      pynvml.nvmlShutdown()
  except Exception as e:  # noqa: BLE001
    status["nvml_text"] = f"unavailable ({type(e).__name__}): GPU telemetry off"
  return status


def optimizations_section() -> list[str]:
  """What OPTIMIZE= can run on this machine (optimizations.py's own checks)."""
  from pipelines.worker import optimizations
  flags = optimizations.cpu_flags()
  blocked = {name: optimizations.unavailable(name, "image_classification")
             for name in optimizations.NAMES}
  usable = [name for name, why in blocked.items() if not why]
  text = (f"{', '.join(usable)}; bf16 {optimizations.bf16_support(flags)}"
          + "".join(f"; {name}: {why}" for name, why in blocked.items() if why))
  return [row("OPTIMIZE=", text)]


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def benchmarks_section(root: pathlib.Path, sizes: Mapping[str, int | None]) -> list[str]:
  """Whether each benchmark can run here, by the checks a local launch makes (plan.py)."""
  lines = []
  for i, bench in enumerate(matrix.load().values()):
    have = sizes.get(bench.task_spec.input_file)
    fewer = bool(have) and have < bench.local_items
    why = plan.check_local(bench.name, root / "data", root / "models", root / "results",
                           items=have if fewer else None)
    limit = (f" with N<={have} (default {bench.local_items} items: make data for all)"
             if fewer else "")
    text = f"{bench.name:<14} " + (f"cannot run: {why}" if why else f"ready{limit}")
    lines.append(row("benchmarks" if i == 0 else "", text))
  return lines
