"""Applies an optimization (optimizations.py says which exist and what they need) to a loaded
model: the result is a module Beam's handler calls as it called the model. Where the model sits
(its parameters' device) decides the device the rules are checked for: a CUDA model takes the GPU
precisions (a cast to fp16/bf16), a CPU model the CPU optimizations (bf16 as autocast)."""
from __future__ import annotations

import contextlib
import warnings
from typing import Any, Callable

import torch

from pipelines.worker import optimizations
from pipelines.worker.optimizations import NONE, OptimizationUnavailable, unavailable


class Optimized(torch.nn.Module):
  """The optimized model, called as the original was: float inputs cast to the model's
  precision where it was cast, inputs converted to channels_last where asked, bf16 autocast
  around the call (CPU), outputs handed back in float32."""

  def __init__(self, inner: Any, channels_last: bool = False, bf16: bool = False,
               cast: torch.dtype | None = None):
    super().__init__()
    self.inner = inner
    self.channels_last = channels_last
    self.bf16 = bf16
    self.cast = cast

  def forward(self, *args, **kwargs):
    if self.cast is not None:
      args = tuple(_cast(a, self.cast) for a in args)
      kwargs = {k: _cast(v, self.cast) for k, v in kwargs.items()}
    if self.channels_last:
      args = tuple(a.contiguous(memory_format=torch.channels_last) for a in args)
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16
                else contextlib.nullcontext())
    with autocast:
      out = self.inner(*args, **kwargs)
    if not self.bf16 and self.cast is None:
      return out
    if isinstance(out, torch.Tensor):
      return out.float()
    out["logits"] = out["logits"].float()  # transformers' outputs and traced dicts alike
    return out


def _cast(value: Any, dtype: torch.dtype) -> Any:
  """Float tensors in the model's precision; token ids and masks stay as they are."""
  if isinstance(value, torch.Tensor) and value.is_floating_point():
    return value.to(dtype)
  return value


def device_kind(model: torch.nn.Module) -> str:
  """'GPU' for a model whose weights are on CUDA, else 'CPU' (tasks.DEVICES' names)."""
  for tensor in (*model.parameters(), *model.buffers()):
    return "GPU" if tensor.device.type == "cuda" else "CPU"
  return "CPU"


Call = tuple[tuple, dict]  # (args, kwargs) of one model call


@contextlib.contextmanager
def _jit_deprecation_quiet():
  """Silences torch 2.x's FutureWarnings that torch.jit.trace/freeze/optimize_for_inference are
  deprecated (optimizations.py says why freeze still uses them), which every freeze run would
  print; any other warning still shows."""
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated",
                            category=FutureWarning)
    yield


def apply(model: torch.nn.Module, name: str, task: str, examples: list[Call],
          calibration: Callable[[], list[Call]] | None = None) -> torch.nn.Module:
  """The model optimized by `name`. `examples`: representative calls; freeze traces the first,
  compile's warm-up makes them all, so every code path the run takes (BERT: a batch with and
  one without padding) is compiled at load, not in a measured batch. `calibration`: the int8
  calibration calls of a task whose int8 is static (images). Raises OptimizationUnavailable
  with its reason."""
  device = device_kind(model)
  capability = optimizations.cuda_capability() if device == "GPU" else None
  reason = unavailable(name, task, device=device, capability=capability)
  if reason:
    raise OptimizationUnavailable(reason)
  args, kwargs = examples[0]
  model.eval()
  with torch.no_grad():
    if name == NONE:
      return model
    channels_last = name.endswith("channels_last")
    if channels_last:
      model = model.to(memory_format=torch.channels_last)
    if name == "channels_last":
      return Optimized(model, channels_last=True)
    if name.startswith("fp16") or (name.startswith("bf16") and device == "GPU"):
      dtype = torch.float16 if name.startswith("fp16") else torch.bfloat16
      return Optimized(model.to(dtype), channels_last=channels_last, cast=dtype)
    if name.startswith("bf16"):  # the CPU's: autocast, weights kept in float32
      return Optimized(model, channels_last=channels_last, bf16=True)
    if name == "freeze":
      with _jit_deprecation_quiet():
        traced = torch.jit.trace(model, args or None, example_kwarg_inputs=kwargs or None,
                                 strict=False, check_trace=False)
        return Optimized(torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval())))
    if name == "compile":
      import torch._inductor.config as inductor
      import torch.fx.experimental._config as fx_config
      inductor.freezing = True  # weights as constants: folded and prepacked for oneDNN
      # no guard that two sizes stay equal because the warm-up's were (batch 16 of 16 tokens)
      fx_config.use_duck_shape = False
      # dynamic: batch sizes and sentence lengths vary; one graph for all, compiled now
      compiled = torch.compile(model, dynamic=True)
      for call_args, call_kwargs in examples:
        compiled(*call_args, **call_kwargs)
      return Optimized(compiled)
    # int8
    torch.backends.quantized.engine = "x86"
    if calibration is None:  # transformers: dynamic quantization of the Linear layers
      return Optimized(torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear},
                                                              dtype=torch.qint8))
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    prepared = prepare_fx(model, get_default_qconfig_mapping("x86"), args)
    for call_args, call_kwargs in calibration():
      prepared(*call_args, **call_kwargs)
    return Optimized(convert_fx(prepared))
