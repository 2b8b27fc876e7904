"""GPU telemetry through the narrow sampling seam (NVML itself needs a GPU: see the note in
pipelines/worker/gpu_telemetry.py and the device check script)."""
import itertools
import time

import torch

from pipelines.worker import gpu_telemetry
from tests.conftest import run_pipeline

_counter = itertools.count()


def fake_reader():
  """A sampling function in the shape nvml_reader returns: utilization cycles 40..59%."""
  def read():
    k = next(_counter)
    return gpu_telemetry.GpuSample(utilization_pct=40 + k % 20, memory_used_mib=1000 + k,
                                   power_w=70)
  return read


def test_samples_reach_the_run_record_through_beam_metrics(tmp_path, models_dir, data_dir):
  paths = (data_dir / "images.txt").read_text().split()[:8]
  out = run_pipeline(tmp_path, paths, task="image_classification", architecture="resnet18",
                     models_dir=models_dir, batch_size=1, telemetry_reader=fake_reader,
                     beam_args=("--gpu_sample_s=0.01",))
  gpu = out["record"].gpu
  assert gpu["telemetry"] == "available"
  assert gpu["samples"] > 0
  assert 40 <= gpu["utilization_mean_pct"] <= 59
  assert 40 <= gpu["utilization_max_pct"] <= 59
  assert gpu["memory_max_mib"] >= 1000
  assert gpu["power_mean_w"] == 70
  assert out["record"].metrics["gpu_utilization_mean_pct"] == gpu["utilization_mean_pct"]


def test_no_nvml_means_unavailable_and_no_sampler(tmp_path, models_dir, data_dir):
  paths = (data_dir / "images.txt").read_text().split()[:2]
  out = run_pipeline(tmp_path, paths, task="image_classification", architecture="resnet18",
                     models_dir=models_dir, batch_size=2, telemetry_reader=lambda: None)
  assert out["record"].gpu == {"telemetry": "unavailable"}
  assert out["record"].status == "succeeded"


def test_nvml_reader_matches_the_machine():
  reader = gpu_telemetry.nvml_reader()
  if not torch.cuda.is_available():
    assert reader is None  # no driver: telemetry is off, not an exception
  else:  # a GPU machine: the real NVML path returns a sane sample
    sample = reader()
    assert 0 <= sample.utilization_pct <= 100 and sample.memory_used_mib > 0


def test_sampler_lifecycle_and_drain():
  sampler = gpu_telemetry.GpuSampler(lambda: gpu_telemetry.GpuSample(50, 10, None), 0.005)
  assert not sampler.running
  sampler.start()
  time.sleep(0.1)
  first = sampler.drain()
  assert len(first) >= 3 and all(s.utilization_pct == 50 for s in first)
  sampler.stop()
  assert not sampler.running
  sampler.drain()
  time.sleep(0.03)
  assert sampler.drain() == []  # nothing is sampled after stop


def test_a_failing_read_loses_a_sample_not_the_run():
  calls = itertools.count()

  def flaky():
    if next(calls) % 2:
      raise RuntimeError("NVML_ERROR_GPU_IS_LOST")
    return gpu_telemetry.GpuSample(10, 1, None)

  sampler = gpu_telemetry.GpuSampler(flaky, 0.005).start()
  time.sleep(0.1)
  sampler.stop()
  assert sampler.errors > 0 and len(sampler.drain()) > 0
