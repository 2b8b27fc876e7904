"""GPU telemetry sampled inside the worker process that holds the model.

A background thread reads one sample per interval (200 ms by default) through a narrow seam,
`read_sample`, which is NVML in production and an injected function in tests. Samples are
drained into Beam distributions by the model handler (Beam metrics can only be reported from
inside a bundle), so they reach the run record on every runner without Cloud Monitoring; the
handler keeps only those taken once the process's first batch is done (its steady window).

NVML's utilization is the share of time a kernel ran, however little of the GPU it used; where
the GPU has GPM (Hopper and newer), each sample also carries SM activity over the interval,
the share of the streaming multiprocessors' cycles that were busy.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Callable, Optional

SAMPLE_INTERVAL_S = 0.2


@dataclasses.dataclass(frozen=True)
class GpuSample:
  utilization_pct: int
  memory_used_mib: int
  power_w: Optional[int]  # None where the board does not report power
  at_ms: int = 0  # when it was taken, epoch ms
  sm_active_pct: Optional[float] = None  # GPM's SM activity over the interval; None: no GPM


ReadSample = Callable[[], GpuSample]


def nvml_reader(device_index: int = 0) -> Optional[ReadSample]:
  """A sampling function backed by NVML, or None where there is no NVML or no GPU."""
  try:
    import pynvml
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
  except Exception as e:  # noqa: BLE001 - no driver, no library, no device: telemetry is off
    logging.info("GPU telemetry unavailable: %s", e)
    return None

  sm_activity = _gpm_sm_activity(pynvml, handle)

  def read() -> GpuSample:
    utilization = pynvml.nvmlDeviceGetUtilizationRates(handle)
    memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
    try:
      power_w: Optional[int] = pynvml.nvmlDeviceGetPowerUsage(handle) // 1000
    except pynvml.NVMLError:
      power_w = None
    return GpuSample(int(utilization.gpu), int(memory.used // (1 << 20)), power_w,
                     sm_active_pct=sm_activity() if sm_activity else None)

  return read


def _gpm_sm_activity(pynvml, handle) -> Optional[Callable[[], Optional[float]]]:
  """SM activity (%) between one call and the next, from NVML GPM samples; None where the
  GPU or driver has no GPM."""
  try:
    if not pynvml.nvmlGpmQueryDeviceSupport(handle).isSupportedDevice:
      return None
    samples = [pynvml.nvmlGpmSampleAlloc(), pynvml.nvmlGpmSampleAlloc()]
    pynvml.nvmlGpmSampleGet(handle, samples[0])
  except Exception as e:  # noqa: BLE001 - an older driver or GPU: no SM activity, no failure
    logging.info("GPU SM activity unavailable (NVML GPM): %s", e)
    return None

  def read() -> Optional[float]:
    try:
      pynvml.nvmlGpmSampleGet(handle, samples[1])
      request = pynvml.c_nvmlGpmMetricsGet_t()
      request.version = pynvml.NVML_GPM_METRICS_GET_VERSION
      request.numMetrics = 1
      request.sample1, request.sample2 = samples[0], samples[1]
      request.metrics[0].metricId = pynvml.NVML_GPM_METRIC_SM_UTIL
      pynvml.nvmlGpmMetricsGet(request)
      samples.reverse()  # this sample starts the next interval
      return float(request.metrics[0].value)
    except Exception:  # noqa: BLE001 - one lost reading, never the run
      return None
  return read


class GpuSampler:
  """Samples at a fixed rate on a daemon thread until stopped; never raises into the caller."""

  def __init__(self, read_sample: ReadSample, interval_s: float = SAMPLE_INTERVAL_S):
    self._read_sample = read_sample
    self._interval_s = interval_s
    self._samples: list[GpuSample] = []
    self._lock = threading.Lock()
    self._stop = threading.Event()
    self._thread: Optional[threading.Thread] = None
    self.errors = 0

  def start(self) -> "GpuSampler":
    if self._thread is None:
      self._thread = threading.Thread(target=self._loop, name="gpu-telemetry", daemon=True)
      self._thread.start()
    return self

  def _loop(self) -> None:
    while not self._stop.is_set():
      try:
        sample = self._read_sample()
      except Exception:  # noqa: BLE001 - a failed read loses one sample, never the run
        self.errors += 1
      else:
        stamped = dataclasses.replace(sample, at_ms=int(time.time() * 1000))  # taken now
        with self._lock:
          self._samples.append(stamped)
      self._stop.wait(self._interval_s)

  def stop(self) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join(timeout=5 * self._interval_s + 1)

  def drain(self) -> list[GpuSample]:
    """Returns and forgets the samples taken since the last drain."""
    with self._lock:
      samples, self._samples = self._samples, []
    return samples

  @property
  def running(self) -> bool:
    return self._thread is not None and self._thread.is_alive()
