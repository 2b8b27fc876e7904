"""`make doctor`: one screen saying what this machine and checkout can do, and what is missing.

Python and the venv; model files and their weights kind; data sizes; CUDA and NVML; which
benchmarks can run here and why not; publishing targets (reachable or not, 1 s timeout);
Dataflow settings; pushed image digests. Offline-safe, secrets redacted, always exits 0.
Whether a benchmark can run is decided by the launch's own checks (plan.check_local).

Over 300 lines on purpose: one screen, one module; each section is a small function of its own
that only reads and formats, and splitting them apart would scatter the screen's layout.
"""
from __future__ import annotations

import importlib.metadata
import os
import pathlib
import sys
import threading
import time
from typing import Callable, Mapping

from pipelines import matrix, plan
from pipelines.matrix import REPO_ROOT
from pipelines.publish import settings
from pipelines.worker import tasks

PROBE_TIMEOUT_S = 1.0
PACKAGES = ("apache-beam", "torch", "torchvision", "transformers", "tqdm", "influxdb-client",
            "google-cloud-bigquery")
SECRET_VARS = ("INFLUXDB_TOKEN", "INFLUXDB_PASSWORD")
WIDTH = 12


def _row(label: str, text: str) -> str:
  return f"{label:<{WIDTH}}{text}"


def _more(text: str) -> str:
  return " " * WIDTH + text


# --- environment -------------------------------------------------------------------------------

def read_dotenv(path: pathlib.Path) -> dict[str, str]:
  """KEY=value lines of .env, as the Makefile reads them (no quotes, no expansion)."""
  values = {}
  if path.exists():
    for line in path.read_text().splitlines():
      key, sep, value = line.partition("=")
      if sep and key.strip().isidentifier() and not line.lstrip().startswith("#"):
        values[key.strip()] = value.strip()
  return values


def effective_env(root: pathlib.Path, env: Mapping[str, str] = os.environ) -> dict[str, str]:
  """The settings a `make` command would see: .env, with the environment on top (make exports
  .env's variables, so under make both agree)."""
  return {**read_dotenv(root / ".env"), **env}


def redact_url(url: str) -> str:
  """http://user:pw@host -> http://***@host (the publishers' own parser finds the credentials,
  whatever characters they hold)."""
  return settings.redact_url(url)


def secrets_in(env: Mapping[str, str]) -> list[str]:
  """Every value the screen must never show."""
  found = [env.get(name, "") for name in SECRET_VARS]
  for name in ("INFLUXDB_URL", "BIGQUERY_EMULATOR_URL"):
    url = env.get(name, "").strip()
    found += settings.written_secrets(url) + [settings.split_credentials(url)[1]]
  return sorted({s for s in found if len(s) >= 3}, key=len, reverse=True)


# --- sections ----------------------------------------------------------------------------------

def python_section(root: pathlib.Path) -> list[str]:
  in_venv = sys.prefix != sys.base_prefix
  version = "%d.%d.%d" % sys.version_info[:3]
  wanted = (root / ".python-version").read_text().strip() if (
      root / ".python-version").exists() else None
  note = "" if not wanted or version.startswith(wanted + ".") else (
      f"  (worker images use {wanted}: set PYTHON=python{wanted})")
  lines = [_row("Python", f"{version} at {sys.executable}{note}")]
  if in_venv:
    venv = pathlib.Path(sys.prefix)
    steps = [f"{name} {'done' if (venv / marker).exists() else 'not done'}"
             for name, marker in (("make setup", ".base"), ("test extras", ".test"))]
    lines.append(_row("venv", f"{venv} ({', '.join(steps)})"))
  else:
    lines.append(_row("venv", "none: this is the system Python (make setup creates .venv)"))
  versions = []
  for package in PACKAGES:
    try:
      versions.append(f"{package} {importlib.metadata.version(package)}")
    except importlib.metadata.PackageNotFoundError:
      versions.append(f"{package} MISSING")
  lines.append(_row("packages", ", ".join(versions)))
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
  for name in sorted({t.input_file for t in tasks.BY_NAME.values()}):
    path = root / "data" / name
    sizes[name] = sum(1 for line in path.open() if line.strip()) if path.exists() else None
  return sizes


def files_section(models: Mapping[str, str | None], sizes: Mapping[str, int | None]) -> list[str]:
  present = [f"{name} ({desc})" for name, desc in models.items() if desc]
  missing = [name for name, desc in models.items() if not desc]
  lines = [_row("models", "; ".join(present) if present else "none under models/")]
  if missing:
    lines.append(_more(f"missing: {', '.join(missing)} (make models)"))
  lines.append(_row("data", "; ".join(
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
  return [_row("OPTIMIZE=", text)]


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
    lines.append(_row("benchmarks" if i == 0 else "", text))
  return lines


def _probe(url: str) -> str:
  """'reachable (HTTP 204, 3 ms)' or 'unreachable (why)'; never the URL itself (it may hold
  credentials)."""
  import requests
  start = time.perf_counter()
  try:
    response = requests.get(url, timeout=PROBE_TIMEOUT_S, allow_redirects=False)
  except requests.Timeout:
    return f"unreachable (no answer within {PROBE_TIMEOUT_S:g} s)"
  except requests.ConnectionError:
    return "unreachable (connection refused or host not found)"
  except Exception as e:  # noqa: BLE001
    return f"unreachable ({type(e).__name__})"
  ms = (time.perf_counter() - start) * 1000
  return f"reachable (HTTP {response.status_code}, {ms:.0f} ms)"


def probe_all(urls: Mapping[str, str], budget_s: float = PROBE_TIMEOUT_S + 1.0) -> dict[str, str]:
  """Probes in parallel on daemon threads; whatever has not answered within the budget (DNS
  lookups have no timeout of their own) is reported as such."""
  results: dict[str, str] = {}

  def run(key: str, url: str) -> None:
    results[key] = _probe(url)

  threads = [threading.Thread(target=run, args=item, daemon=True) for item in urls.items()]
  for thread in threads:
    thread.start()
  deadline = time.monotonic() + budget_s
  for thread in threads:
    thread.join(max(0.0, deadline - time.monotonic()))
  return {key: results.get(key, f"unreachable (no answer within {budget_s:g} s)")
          for key in urls}


def publishing_section(env: Mapping[str, str],
                       probe: Callable[[Mapping[str, str]], dict[str, str]] = probe_all
                       ) -> list[str]:
  described: dict[str, str] = {}
  urls: dict[str, str] = {}
  try:
    influx = settings.influx(env)
  except settings.SettingsError as e:
    described["influx"] = f"InfluxDB misconfigured: {e}"
  else:
    if influx is None:
      described["influx"] = "InfluxDB not configured (INFLUXDB_URL unset)"
    else:
      where = influx.bucket and f"bucket {influx.bucket}" or f"db {influx.db}"
      extras = [where] + [f"{label} set (hidden)" for label, value in
                          (("token", influx.token), ("password", influx.password)) if value]
      described["influx"] = (f"InfluxDB {influx.api} at {redact_url(influx.url)} "
                             f"({', '.join(extras)})")
      urls["influx"] = influx.url + "/ping"
  try:
    bigquery = settings.bigquery(env)
  except settings.SettingsError as e:
    described["bigquery"] = f"BigQuery misconfigured: {e}"
  else:
    if bigquery is None:
      described["bigquery"] = "BigQuery not configured (BIGQUERY_DATASET unset)"
    else:
      endpoint = bigquery.emulator_url or "https://bigquery.googleapis.com"
      described["bigquery"] = (f"BigQuery {bigquery.project}.{bigquery.dataset} at "
                               f"{redact_url(endpoint)}")
      urls["bigquery"] = endpoint
  reach = probe(urls) if urls else {}
  lines = []
  for i, (key, text) in enumerate(described.items()):
    if key in reach:
      text += f": {reach[key]}"
    lines.append(_row("publishing" if i == 0 else "", text))
  return lines


def dataflow_section(env: Mapping[str, str], root: pathlib.Path) -> list[str]:
  from pipelines import dataflow
  missing = [name for name in dataflow.REQUIRED if not env.get(name, "").strip()]
  shown = [f"{name}={redact_url(env[name].strip())}"
           for name in (*dataflow.REQUIRED, "IMAGE_TAG", "OUTPUT_LOCATION", "SUBNETWORK")
           if env.get(name, "").strip()]
  if env.get("SERVICE_ACCOUNT", "").strip():
    shown.append("SERVICE_ACCOUNT set")
  if missing:
    status = (f"missing {', '.join(missing)}: RUNNER=DataflowRunner refuses to launch "
              "(set them in .env, see .env.example)")
  else:
    try:  # the launch's own checks (a malformed gs:// location, ...)
      dataflow.settings(env)
      status = "settings complete for RUNNER=DataflowRunner"
    except dataflow.SettingsMissing as e:
      status = f"RUNNER=DataflowRunner refuses to launch: {e}"
  lines = [_row("Dataflow", status)]
  if shown:
    lines.append(_more(", ".join(shown)))
  digests = [f"{variant}: {text}" for variant, text in image_digests(env, root).items()]
  lines.append(_row("images", "; ".join(digests)
                    + ("" if all("@sha256:" in d for d in digests) else " (make images push)")))
  return lines


def image_digests(env: Mapping[str, str], root: pathlib.Path) -> dict[str, str]:
  """Per worker image, what `make push` recorded where a launch reads it (BENCH_BUILD_DIR or
  build/): the pushed reference, or why a launch could not use it. A digest recorded for
  another tag or registry than the settings' is stale (a launch refuses it)."""
  from pipelines import dataflow
  wanted = None  # without REGISTRY (or a tag) no reference to compare with
  try:
    if env.get("REGISTRY", "").strip():
      tag = env.get("IMAGE_TAG", "").strip() or dataflow.default_image_tag()
      wanted = {"REGISTRY": env["REGISTRY"].strip(), "IMAGE_TAG": tag}
  except dataflow.SettingsMissing:
    pass
  out = {}
  used = {b.image for b in matrix.load().values()}  # the images the matrix's benchmarks run
  for variant in [v for v in dataflow.IMAGE_NAMES if v in used]:
    path = dataflow.digest_dir(env, root) / f"image-{variant}.digest"
    fields = dataflow.read_digest(path)
    if fields is None:
      out[variant] = "unreadable digest file" if path.exists() else "not pushed"
    elif wanted and fields["image"] != dataflow.image_ref(variant, wanted):
      out[variant] = (f"stale: pushed {fields['image']}, the settings launch "
                      f"{dataflow.image_ref(variant, wanted)}")
    else:
      out[variant] = f"{fields['image']}@{fields['digest']}"
  return out


# --- the screen ----------------------------------------------------------------------------------

def screen(root: pathlib.Path = REPO_ROOT, env: Mapping[str, str] | None = None,
           probe: Callable[[Mapping[str, str]], dict[str, str]] = probe_all) -> str:
  env = effective_env(root, os.environ if env is None else env)
  lines = [f"beam-bench doctor: {root}"
           + ("" if (root / ".env").exists() else " (no .env: local runs, no publishing)")]

  def section(build: Callable[[], list[str]], label: str) -> None:
    try:
      lines.extend(build())
    except Exception as e:  # noqa: BLE001 - a broken section is shown, never fatal
      lines.append(_row(label, f"could not check ({type(e).__name__}: {e})"))

  section(lambda: python_section(root), "Python")
  models: dict[str, str | None] = {}
  sizes: dict[str, int | None] = {}
  try:
    models, sizes = model_files(root), data_sizes(root)
  except Exception as e:  # noqa: BLE001
    lines.append(_row("models", f"could not check ({type(e).__name__}: {e})"))
  else:
    lines.extend(files_section(models, sizes))
  gpu = gpu_status()
  lines.append(_row("CUDA", str(gpu["cuda_text"])))
  lines.append(_row("NVML", str(gpu["nvml_text"])))
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


if __name__ == "__main__":
  sys.exit(main())
