"""Image classification's inference function (PytorchModelHandlerTensor's `inference_fn`), in
both decode modes (`--decode`): `cpu` batches the tensors the parse step decoded with PIL,
`device` decodes the batch's encoded files on the model's device (device_decode.py). Either way
the logits come back to the CPU in one copy per batch, and an item whose batched decode failed
comes back as a dead_letter.Failed inference, which the task's format step dead-letters."""
from __future__ import annotations

import functools
from typing import Any, Iterable, Optional, Sequence

import torch
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import PredictionResult
from apache_beam.ml.inference.pytorch_inference import PytorchModelHandlerTensor

from pipelines.worker import dead_letter, device_decode, vocab
from pipelines.worker.beam_metrics import KIT_NAMESPACE
from pipelines.worker.vocab import DECODERS


def inference_fn(decode: str, pin_memory: bool = False):
  """The inference function for `--decode`; `pin_memory`: a CUDA model's cpu-decoded batch is
  copied through pinned host memory, asynchronously."""
  if decode not in DECODERS:
    raise ValueError(f"unknown decode '{decode}'; known: {', '.join(DECODERS)}")
  return functools.partial(infer, decode=decode, pin_memory=pin_memory)


def infer(batch: Sequence[torch.Tensor], model: torch.nn.Module, device: torch.device | str,
          inference_args: Optional[dict[str, Any]] = None, model_id: Optional[str] = None, *,
          decode: str = "cpu", pin_memory: bool = False) -> Iterable[PredictionResult]:
  """One PredictionResult per element, in order: the logits row (float32, on the CPU), or for
  an item that could not be decoded a dead_letter.Failed holding the reason."""
  device = model_device(model, device)
  if decode == "device":
    inputs, failed = device_decode.decode_batch(batch, device)
    Metrics.counter(KIT_NAMESPACE, f"{vocab.DECODED_ON}{device.type}").inc()
  else:
    inputs, failed = to_device(torch.stack(list(batch)), device, pin_memory), {}
    Metrics.counter(KIT_NAMESPACE, vocab.DECODED_WITH_PIL).inc()
  with torch.no_grad():
    logits = model(inputs, **(inference_args or {})) if len(inputs) else None
  rows = iter(logits.float().cpu() if logits is not None else ())  # one copy for the batch
  return [PredictionResult(example, dead_letter.Failed("decode", failed[i]) if i in failed
                           else next(rows), model_id)
          for i, example in enumerate(batch)]


def model_device(model: Any, fallback: torch.device | str) -> torch.device:
  """Where the model's weights are (Beam's handler falls back to the CPU where CUDA is not
  usable): decoding goes there and nowhere else; `fallback` for a model without any (a frozen
  TorchScript module)."""
  if isinstance(model, torch.nn.Module):
    for tensor in (*model.parameters(), *model.buffers()):
      return tensor.device
  return torch.device(fallback)


def to_device(batch: torch.Tensor, device: torch.device, pin_memory: bool) -> torch.Tensor:
  """The batch on the model's device; on CUDA through pinned memory when asked (an
  asynchronous copy, which the model's kernels queue behind on the same stream)."""
  if device.type != "cuda":
    return batch
  if pin_memory:
    return batch.pin_memory().to(device, non_blocking=True)
  return batch.to(device)


class EncodedImagesHandler(PytorchModelHandlerTensor):
  """Beam's tensor handler for batches of encoded files (1-D uint8 tensors). Beam's
  get_num_bytes adds up element_size() over each tensor's elements, one Python object per
  byte: 0.16 s for a 100 kB JPEG, which alone would cap a worker near 6 images/s."""

  def get_num_bytes(self, batch: Sequence[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in batch)
