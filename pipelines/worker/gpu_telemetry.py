"""GPU telemetry sampled inside the worker process that holds the model.

A background thread reads one sample per interval through a narrow seam, `read_sample`, which is
NVML in production and an injected function in tests. Samples are drained into Beam
distributions by the model handler (Beam metrics can only be reported from inside a bundle), so
they reach the run record on every runner without Cloud Monitoring.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Callable, Optional

SAMPLE_INTERVAL_S = 1.0


@dataclasses.dataclass(frozen=True)
class GpuSample:
  utilization_pct: int
  memory_used_mib: int
  power_w: Optional[int]  # None where the board does not report power


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

  def read() -> GpuSample:
    utilization = pynvml.nvmlDeviceGetUtilizationRates(handle)
    memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
    try:
      power_w: Optional[int] = pynvml.nvmlDeviceGetPowerUsage(handle) // 1000
    except pynvml.NVMLError:
      power_w = None
    return GpuSample(int(utilization.gpu), int(memory.used // (1 << 20)), power_w)

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
        with self._lock:
          self._samples.append(sample)
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
