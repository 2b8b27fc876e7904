"""A GPU benchmark must never record CPU numbers under a GPU name."""
import subprocess
import sys

import pytest
import torch

from pipelines.matrix import REPO_ROOT
from pipelines.worker import handler, process_stats, worker_facts
from pipelines.worker.tasks import image_classification


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_benchmark_refuses_on_a_cpu_machine(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "pipelines.run", "resnet152-gpu", "--results-dir", str(tmp_path)],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert "needs a CUDA GPU" in result.stderr
  assert "refusing to record CPU numbers under a GPU name" in result.stderr
  assert not (tmp_path / "records").exists()  # no record, not even a failed one


def test_worker_side_load_refuses_gpu_without_cuda(monkeypatch, models_dir):
  # The same guard runs on the worker (Dataflow), where Beam would otherwise fall back to CPU.
  monkeypatch.setattr(handler, "cuda_usable", lambda: False)
  base = image_classification.TASK.model_handler(str(models_dir / "resnet18.pth"), "resnet18",
                                            "GPU", {})
  wrapped = handler.BenchmarkModelHandler(base, device="GPU",
                                          state_dict_path=str(models_dir / "resnet18.pth"))
  with pytest.raises(handler.DeviceUnavailableError, match="needs a CUDA GPU"):
    wrapped.load_model()


def test_cpu_benchmark_loads_on_cpu(models_dir):
  path = str(models_dir / "resnet18.pth")
  wrapped = handler.BenchmarkModelHandler(
      image_classification.TASK.model_handler(path, "resnet18", "CPU", {}), device="CPU",
      state_dict_path=path, telemetry_reader=lambda: None)
  model = wrapped.load_model()
  assert next(model.parameters()).device.type == "cpu"
  pending = handler._pending_counters[wrapped._token]
  assert pending[:2] == ["model_loaded_on_cpu", "model_weights_random"]
  assert set(worker_facts.counter_names()) <= set(pending)  # versions, threads, host
  assert process_stats.name("model_loads") in pending  # this process loaded a model
