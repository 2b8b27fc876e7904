"""GPU precisions (fp16, bf16 and their channels_last variants): what each device can run, the
refusal a T4 worker gives bf16 at load, and the cast a CUDA model gets (run here on the CPU's
kernels, the model standing as if on a GPU)."""
from __future__ import annotations

import pytest
import torch

from pipelines.worker import optimizations, optimized_model
from pipelines.worker.models import build_architecture


@pytest.mark.parametrize("name,task,device,capability,reason", [
    ("fp16", "image_classification", "CPU", None,
     "fp16 is a GPU precision; a CPU run has bf16"),
    ("fp16_channels_last", "image_classification", "CPU", None,
     "fp16 is a GPU precision; a CPU run has bf16"),
    ("fp16", "image_classification", "GPU", (7, 5), None),
    ("fp16_channels_last", "image_classification", "GPU", (7, 5), None),
    ("fp16", "sentiment_classification", "GPU", None, None),
    ("fp16_channels_last", "language_modeling", "GPU", None,
     "fp16_channels_last changes the memory format of image tensors (the ResNets); "
     "language_modeling has no image tensors"),
    ("bf16_channels_last", "image_classification", "CPU", None, None),  # autocast, NHWC
    ("bf16", "image_classification", "GPU", (8, 0), None),
    ("bf16_channels_last", "image_classification", "GPU", (9, 0), None),
    ("bf16", "image_classification", "GPU", None, None),  # the GPU unknown: the worker checks
    ("bf16", "image_classification", "GPU", (7, 5),
     "bf16 needs a GPU of compute capability 8.0 or newer (Ampere and later); this one's is 7.5 "
     "(a T4 is 7.5): fp16 runs here"),
    ("bf16_channels_last", "image_classification", "GPU", (7, 0),
     "bf16 needs a GPU of compute capability 8.0 or newer (Ampere and later); this one's is 7.0 "
     "(a T4 is 7.5): fp16 runs here"),
    ("channels_last", "image_classification", "GPU", (7, 5), None),
    ("freeze", "image_classification", "GPU", None,
     "freeze is a CPU optimization; a GPU run has channels_last, fp16, bf16 and their "
     "channels_last variants"),
    ("compile", "image_classification", "GPU", None,
     "compile is a CPU optimization; a GPU run has channels_last, fp16, bf16 and their "
     "channels_last variants"),
    ("int8", "language_modeling", "GPU", None,
     "int8 is a CPU optimization; a GPU run has channels_last, fp16, bf16 and their "
     "channels_last variants"),
    ("fp16", "object_detection", "GPU", None,
     "fp16 is not available for object_detection: " + optimizations.NONE_ONLY["object_detection"]),
])
def test_what_each_device_can_run(name, task, device, capability, reason):
  assert optimizations.unavailable(name, task, device=device, capability=capability) == reason


def test_the_default_device_is_the_cpu():
  """The callers that pass no device (the launcher's CPU checks) get the CPU's rules."""
  assert optimizations.unavailable("fp16", "image_classification") == (
      "fp16 is a GPU precision; a CPU run has bf16")
  assert optimizations.unavailable("freeze", "image_classification") is None


def test_a_t4_worker_refuses_bf16_when_it_loads_the_model(monkeypatch, models_dir):
  """The capability is the worker's to read (the launcher may not know the card): a T4's 7.5
  refuses bf16 with one line at load, never running the model in another precision."""
  from pipelines.worker import handler, optimized_model
  from pipelines.worker.tasks import image_classification
  monkeypatch.setattr(optimizations, "cuda_capability", lambda: (7, 5))  # a T4
  monkeypatch.setattr(optimized_model, "device_kind", lambda model: "GPU")
  path = str(models_dir / "resnet18.pth")
  task = image_classification.TASK
  wrapped = handler.BenchmarkModelHandler(
      task.model_handler(path, "resnet18", "CPU", {}), device="CPU", state_dict_path=path,
      telemetry_reader=lambda: None, optimization="bf16_channels_last",
      optimize=lambda model, name: task.optimize(model, name, batch_size=2))
  with pytest.raises(optimizations.OptimizationUnavailable) as refused:
    wrapped.load_model()
  assert str(refused.value) == (
      "bf16 needs a GPU of compute capability 8.0 or newer (Ampere and later); this one's is "
      "7.5 (a T4 is 7.5): fp16 runs here")


@pytest.mark.parametrize("name,dtype", [("fp16", torch.float16),
                                        ("fp16_channels_last", torch.float16),
                                        ("bf16", torch.bfloat16),
                                        ("bf16_channels_last", torch.bfloat16)])
def test_a_gpu_precision_casts_the_model_and_its_inputs(monkeypatch, name, dtype):
  """What a CUDA model gets, run here on the CPU's kernels: weights and float inputs in the
  precision (no autocast), channels_last where named, logits handed back in float32."""
  monkeypatch.setattr(optimizations, "cuda_capability", lambda: (8, 0))
  monkeypatch.setattr(optimized_model, "device_kind", lambda model: "GPU")
  torch.manual_seed(0)
  model = build_architecture("resnet18").eval()
  images = torch.randn(2, 3, 224, 224)
  with torch.no_grad():
    want = model(images)
  seen = []
  model.conv1.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
  optimized = optimized_model.apply(model, name, "image_classification",
                                    [((torch.zeros(2, 3, 224, 224),), {})])
  assert isinstance(optimized, optimized_model.Optimized) and not optimized.bf16
  assert {p.dtype for p in optimized.parameters()} == {dtype}
  with torch.no_grad():
    got = optimized(images)
  assert got.dtype == torch.float32
  assert seen[0].dtype == dtype
  assert seen[0].is_contiguous(memory_format=torch.channels_last) == name.endswith(
      "channels_last")
  assert (got - want).abs().max().item() < 0.1  # lossy: a precision, not a transform


def test_bf16_channels_last_on_the_cpu_is_autocast_in_nhwc():
  model = build_architecture("resnet18").eval()
  optimized = optimized_model.apply(model, "bf16_channels_last", "image_classification",
                                    [((torch.zeros(2, 3, 224, 224),), {})])
  assert optimized.bf16 and optimized.channels_last and optimized.cast is None
  assert {p.dtype for p in optimized.parameters()} == {torch.float32}
  with torch.no_grad():
    assert optimized(torch.randn(1, 3, 224, 224)).dtype == torch.float32
