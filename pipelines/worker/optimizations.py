"""Inference optimizations (`OPTIMIZE=`, `--optimization`): their names and what a machine
needs to run them. optimized_model.py applies them where the worker loads its model
(handler.BenchmarkModelHandler), so they run in the image and on Dataflow exactly as locally.

  none           the model as loaded
  channels_last  ResNets: model and input tensors in NHWC memory format (oneDNN's preferred, and
                 cuDNN's for tensor-core convolutions)
  freeze         torch.jit.trace, then torch.jit.optimize_for_inference (freeze + oneDNN
                 fusions: conv-bn folding, conv-add-relu): the TorchScript route; torch.jit is
                 in maintenance in torch 2.x, but still the one that needs no compiler
  compile        torch.compile, inductor's CPU backend with weight freezing, compiled at load
                 (a warm-up call) so the compile time is the load's, not the first batch's
  bf16           CPU: torch.autocast to bfloat16 (native where the CPU has avx512_bf16/amx_bf16,
                 emulated otherwise: the record says which); GPU: model and float inputs cast to
                 bfloat16 (compute capability 8.0 or newer: Ampere and later)
  fp16           GPU only: model and float inputs cast to float16 (tensor cores from Volta on,
                 a T4 included)
  fp16_channels_last, bf16_channels_last
                 ResNets: the precision and channels_last together
  int8           BERT: dynamic quantization of the Linear layers; ResNets: static post-training
                 quantization (FX graph mode, x86 backend), calibrated on synthetic images that
                 are never the measured items (synthetic_images.calibration_jpegs)

Exact transforms (none, channels_last, freeze, compile) change float rounding only; bf16, fp16
and int8 are lossy (outputs are handed back in float32). The launcher's agreement check
(pipelines/agreement.py) measures either against none.
"""
from __future__ import annotations

import shutil
from typing import Callable, Sequence

from pipelines.worker.vocab import OPTIMIZATIONS

NONE = "none"
NAMES = OPTIMIZATIONS  # every name (vocab.py); the rules of each below
EXACT = (NONE, "channels_last", "freeze", "compile")
IMAGE_ONLY = ("channels_last", "fp16_channels_last", "bf16_channels_last")
GPU_ONLY = ("fp16", "fp16_channels_last")
CPU_ONLY = ("freeze", "compile", "int8")  # written for the CPU's backends (oneDNN, fbgemm)
BF16 = ("bf16", "bf16_channels_last")
BF16_MIN_CAPABILITY = (8, 0)  # bfloat16 tensor cores: Ampere (A100, L4, A10) and later
# Tasks whose model runs as loaded only, and why the others cannot apply.
NONE_ONLY = {
    "object_detection": "torchvision's detection models take a list of images and run "
                        "data-dependent steps (proposals, NMS), so only none runs",
    "image_captioning": "its model is BLIP's beam-search generate (a loop whose length depends "
                        "on the tokens it picks) followed by CLIP: no optimization here is "
                        "written for it, so it runs as loaded (none)",
    "text_generation": "its model is a vLLM server process (Beam's VLLMCompletionsModelHandler) "
                       "the worker sends requests to: there is no torch module in the worker "
                       "to optimize, and vLLM applies its own kernels and CUDA graphs, so only "
                       "none runs",
}
# The CPU flags that decide what bf16 and int8 run on (recorded with every optimized run).
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
CXX_COMPILERS = ("g++", "c++", "clang++")


class OptimizationUnavailable(RuntimeError):
  """The optimization cannot run here (its one-line reason)."""


def cpu_flags(cpuinfo: str | None = None) -> list[str]:
  """The CPU_FLAGS this CPU has (from /proc/cpuinfo's first `flags` line)."""
  if cpuinfo is None:
    try:
      with open("/proc/cpuinfo") as f:
        cpuinfo = f.read()
    except OSError:
      return []
  line = next((line for line in cpuinfo.splitlines() if line.startswith("flags")), "")
  have = set(line.partition(":")[2].split())
  return [flag for flag in CPU_FLAGS if flag in have]


def bf16_support(flags: Sequence[str]) -> str:
  """'native (avx512_bf16)' or 'emulated (no avx512_bf16/amx_bf16)'."""
  native = [f for f in NATIVE_BF16_FLAGS if f in flags]
  return f"native ({','.join(native)})" if native else (
      f"emulated (no {'/'.join(NATIVE_BF16_FLAGS)})")


def unavailable(name: str, task: str, which: Callable[[str], str | None] = shutil.which,
                device: str = "CPU", capability: tuple[int, int] | None = None) -> str | None:
  """Why `name` cannot run for `task` on this machine (None: it can). `device`: the run's
  (tasks.DEVICES); `capability`: the GPU's CUDA compute capability where known (the worker
  passes cuda_capability()'s; None: not checked)."""
  if name not in NAMES:
    return f"unknown optimization '{name}'; known: {', '.join(NAMES)}"
  if name != NONE and task in NONE_ONLY:
    return f"{name} is not available for {task}: {NONE_ONLY[task]}"
  if name in IMAGE_ONLY and task != "image_classification":
    return (f"{name} changes the memory format of image tensors (the ResNets); {task} has no "
            "image tensors")
  if name in GPU_ONLY and device != "GPU":
    return "fp16 is a GPU precision; a CPU run has bf16"
  if name in CPU_ONLY and device == "GPU":
    return (f"{name} is a CPU optimization; a GPU run has channels_last, fp16, bf16 and their "
            "channels_last variants")
  if (name in BF16 and device == "GPU" and capability is not None
      and tuple(capability) < BF16_MIN_CAPABILITY):
    return (f"bf16 needs a GPU of compute capability {'.'.join(map(str, BF16_MIN_CAPABILITY))} "
            f"or newer (Ampere and later); this one's is {'.'.join(map(str, capability))} "
            "(a T4 is 7.5): fp16 runs here")
  if name == "compile" and not any(which(c) for c in CXX_COMPILERS):
    return ("torch.compile's inductor CPU backend builds C++ kernels, and no C++ compiler "
            f"({', '.join(CXX_COMPILERS)}) is on PATH here")
  if name == "int8" and not ({"x86", "fbgemm"} & set(quantized_engines())):
    return (f"int8 needs torch's x86/fbgemm quantized engine; this torch has "
            f"{', '.join(quantized_engines())}")
  return None


def cuda_capability() -> tuple[int, int] | None:
  """The current CUDA device's compute capability, (7, 5) for a T4; None without CUDA. A
  function of its own so a test on a machine without a GPU can replace it."""
  import torch
  if not torch.cuda.is_available():
    return None
  return tuple(torch.cuda.get_device_capability())


def quantized_engines() -> list[str]:
  import torch  # here, not above: the matrix and the Makefile read NAMES without torch
  return list(torch.backends.quantized.supported_engines)
