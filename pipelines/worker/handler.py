"""BenchmarkModelHandler: the one wrapper every benchmark's Beam model handler goes through.

It delegates everything to Beam's handler (so Beam's own BeamML_PyTorch metrics stay as they
are) and adds what a trustworthy benchmark needs, all as Beam metrics in namespace `BenchmarkKit`:
  * refuses to load a GPU benchmark where CUDA is unusable (Beam silently falls back to CPU);
  * counts the device the model actually sits on and the weights kind it was loaded with, and
    says both at once to the launcher's live progress (progress_reporter.py);
  * records each batch's latency in a histogram (latency_histogram.py) for percentiles;
  * samples GPU telemetry while the model is loaded (gpu_telemetry.py);
  * sets the worker layout's torch threads before the model loads, and reports per SDK process
    (`process/<host>:<pid>/...`) its threads, peak RSS and steady-state window (process_stats.py);
  * applies the run's optimization (a CPU one, or a GPU precision) to the loaded model
    (optimized_model.py), timed apart from the load, and counts which one ran.
"""
from __future__ import annotations

import collections
import functools
import logging
import threading
import time
import uuid
import weakref
from typing import Any, Callable, Iterable, Optional, Sequence

import torch
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler

from pipelines.worker import (
  gpu_telemetry,
  latency_histogram,
  optimizations,
  process_stats,
  vocab,
  worker_facts,
)
from pipelines.worker.beam_metrics import KIT_NAMESPACE
from pipelines.worker.model_files import read_meta
from pipelines.worker.progress_reporter import reporter as progress_reporter
from pipelines.worker.threads import apply_threads

# Kept per worker process and per pipeline (the handler's token, shared by all its copies), not
# per handler copy: Beam shares one loaded model among the DoFn instances of a process and only
# the one that loaded it runs load_model, so any copy's next batch reports what is pending.
_lock = threading.Lock()
_pending_counters: dict[str, list[str]] = collections.defaultdict(list)
_samplers: dict[str, list[gpu_telemetry.GpuSampler]] = collections.defaultdict(list)
_pending_distributions: dict[str, list[tuple[str, int]]] = collections.defaultdict(list)
_batches_seen: dict[str, int] = collections.defaultdict(int)
_steady_from_ms: dict[str, int] = {}  # when this process's first batch ended
# _device_of's answer as the record names it (record/facts.py device_used).
_RECORD_DEVICE = {"cuda": "GPU", "cpu": "CPU"}


class DeviceUnavailableError(RuntimeError):
  """A GPU benchmark was asked to run where no usable CUDA device exists."""


def cuda_usable() -> bool:
  if not torch.cuda.is_available():
    return False
  try:
    torch.empty(1, device="cuda")
    return True
  except Exception:  # noqa: BLE001 - a driver that reports CUDA but cannot allocate
    return False


def require_device(device: str) -> None:
  if device == "GPU" and not cuda_usable():
    raise DeviceUnavailableError(
        "this benchmark needs a CUDA GPU, but torch.cuda.is_available() is "
        f"{torch.cuda.is_available()} here; refusing to record CPU numbers under a GPU name")


class BenchmarkModelHandler(ModelHandler):

  def __init__(self, base: ModelHandler, *, device: str, state_dict_path: str,
               telemetry_reader: Callable[[], Optional[gpu_telemetry.ReadSample]] = (
                   gpu_telemetry.nvml_reader),
               telemetry_interval_s: float = gpu_telemetry.SAMPLE_INTERVAL_S,
               threads: int | None = None, interop_threads: int | None = None,
               optimization: str = optimizations.NONE,
               optimize: Callable[[Any, str], Any] | None = None, window_ms: int = 0):
    self._base = base
    self._window_ms = window_ms  # process_stats' steady windows (0: none)
    self._optimization = optimization
    self._optimize = optimize  # the task's optimize(model, name): optimized_model.apply
    self._threads = threads
    self._interop_threads = interop_threads
    self._device = device
    self._state_dict_path = state_dict_path
    self._telemetry_reader = telemetry_reader
    self._telemetry_interval_s = telemetry_interval_s
    self._env_vars = getattr(base, "_env_vars", {})
    self._token = uuid.uuid4().hex  # identifies this pipeline's handler in every worker

  def load_model(self) -> Any:
    require_device(self._device)
    apply_threads(self._threads, self._interop_threads)
    load_started_ms = process_stats.now_ms()
    model = self._base.load_model()
    load_ended_ms = process_stats.now_ms()
    used = _device_of(model)  # before optimizing: a frozen TorchScript module has no parameters
    param_bytes = _param_bytes(model)
    if self._optimization != optimizations.NONE:
      model = self._optimize(model, self._optimization)
    optimized_ms = process_stats.now_ms()
    meta = read_meta(self._state_dict_path)
    # Said now, before Beam's metrics: a run stopped before they arrive still says what it
    # loaded (the record's device_used and weights).
    progress_reporter().loaded(device_used=_RECORD_DEVICE.get(used, used),
                               weights=meta.weights if meta else "unknown")
    # Beam calls load_model from DoFn.setup, where metrics are not reported; keep the counters
    # until the next batch, as Beam does for its own load metrics.
    with _lock:
      _pending_counters[self._token] += [f"{vocab.LOADED_ON}{used}",
                                         f"{vocab.WEIGHTS}{meta.weights if meta else 'unknown'}",
                                         process_stats.name("model_loads"),
                                         f"{vocab.OPTIMIZATION_RAN}{self._optimization}"]
      _pending_distributions[self._token] += process_stats.threads()
      _pending_distributions[self._token] += process_stats.load_times(
          load_started_ms, load_ended_ms, optimized_ms)
      # The loaded model's true size: Beam's model_byte_size is a process-memory delta.
      _pending_distributions[self._token].append(("model_param_bytes", param_bytes))
    logging.info("Model %s loaded on %s (%s weights, optimization %s: %.1f s)",
                 self._state_dict_path, used, meta.weights if meta else "unknown",
                 self._optimization, (optimized_ms - load_ended_ms) / 1000)
    # This worker's versions and hostname (worker_facts.py); its threads are per process above.
    with _lock:
      _pending_counters[self._token] += worker_facts.counter_names()
    reader = self._telemetry_reader()
    if reader is not None:
      sampler = gpu_telemetry.GpuSampler(reader, self._telemetry_interval_s).start()
      with _lock:
        _samplers[self._token].append(sampler)
      weakref.finalize(model, _retire, self._token, sampler)  # sampling stops with the model
    return model

  def run_inference(self, batch: Sequence[Any], model: Any,
                    inference_args: Optional[dict[str, Any]] = None) -> Iterable[Any]:
    start = time.perf_counter_ns()
    results = list(self._base.run_inference(batch, model, inference_args))
    latency_us = (time.perf_counter_ns() - start) / 1000
    Metrics.counter(KIT_NAMESPACE, latency_histogram.counter_name(latency_us)).inc()
    with _lock:
      _batches_seen[self._token] += 1
      first_batch = _batches_seen[self._token] == 1
      if first_batch:  # GPU samples count from here: this process's steady window
        _steady_from_ms[self._token] = process_stats.now_ms()
    process_stats.report_batch(len(batch), first_batch, self._window_ms)
    self._report_pending()
    progress_reporter().add(len(batch))  # live progress for the launcher (pipelines/progress.py)
    return results

  def _report_pending(self) -> None:
    with _lock:
      counters = _pending_counters.pop(self._token, [])
      distributions = _pending_distributions.pop(self._token, [])
      steady_from = _steady_from_ms.get(self._token, float("inf"))
      samples = [sample for sampler in _samplers.get(self._token, ())
                 for sample in sampler.drain() if sample.at_ms >= steady_from]
    for name in counters:
      Metrics.counter(KIT_NAMESPACE, name).inc()
    for name, value in distributions:
      Metrics.distribution(KIT_NAMESPACE, name).update(value)
    for sample in samples:
      Metrics.distribution(KIT_NAMESPACE, "gpu_utilization_pct").update(sample.utilization_pct)
      Metrics.distribution(KIT_NAMESPACE, "gpu_memory_used_mib").update(sample.memory_used_mib)
      if sample.power_w is not None:
        Metrics.distribution(KIT_NAMESPACE, "gpu_power_w").update(sample.power_w)
      if sample.sm_active_pct is not None:  # NVML GPM: Hopper and newer
        Metrics.distribution(KIT_NAMESPACE, "gpu_sm_active_pct").update(
            round(sample.sm_active_pct))


# ModelHandler's methods that build a new handler around this one: inherited, never forwarded
# (forwarding would wrap Beam's handler and leave this one out).
NOT_FORWARDED = ("with_preprocess_fn", "with_postprocess_fn", "with_no_batching")


def public_methods(cls: type) -> set[str]:
  return {name for name in dir(cls) if not name.startswith("_") and callable(getattr(cls, name))}


def _forwarder(name: str):
  @functools.wraps(getattr(ModelHandler, name))
  def forward(self, *args, **kwargs):
    return getattr(self._base, name)(*args, **kwargs)
  return forward


# Everything else is Beam's handler's business: every ModelHandler method this class does not
# define itself goes to the wrapped handler, so a method a Beam release adds is forwarded too,
# not answered with ModelHandler's default (as override_metrics was when they were listed by hand).
FORWARDED = tuple(sorted(public_methods(ModelHandler) - set(vars(BenchmarkModelHandler))
                         - set(NOT_FORWARDED)))
for _name in FORWARDED:
  setattr(BenchmarkModelHandler, _name, _forwarder(_name))


def _retire(token: str, sampler: gpu_telemetry.GpuSampler) -> None:
  sampler.stop()
  with _lock:
    if sampler in _samplers.get(token, ()):
      _samplers[token].remove(sampler)


def _device_of(model: Any) -> str:
  """'cuda' or 'cpu': where the model's parameters actually are; a model served by another
  process (vLLM) has none here, so it is where that server runs: the GPU its benchmark
  requires (require_device checked it before the load)."""
  if not isinstance(model, torch.nn.Module):
    return "cuda" if cuda_usable() else "unknown"
  try:
    return next(model.parameters()).device.type
  except (AttributeError, StopIteration):
    return "unknown"


def _param_bytes(model: Any) -> int:
  """The loaded model's parameter and buffer bytes (0 for a model served by another process)."""
  if not isinstance(model, torch.nn.Module):
    return 0
  return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
