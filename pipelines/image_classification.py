"""Image classification: path -> decoded, resized, normalized tensor -> ResNet -> top-1 class."""
from __future__ import annotations

import io
from typing import Any

import apache_beam as beam
import torch
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.pytorch_inference import PytorchModelHandlerTensor
from PIL import Image

from pipelines import dead_letter
from pipelines.models import build_architecture

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_TRANSFORM = None


def _transform():
  global _TRANSFORM
  if _TRANSFORM is None:
    from torchvision import transforms
    _TRANSFORM = transforms.Compose([
        transforms.Resize(256),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
  return _TRANSFORM


def read_bytes(path: str) -> bytes:
  with FileSystems.open(path) as f:
    return f.read()


def preprocess(data: bytes) -> torch.Tensor:
  """JPEG/PNG bytes -> normalized 3x224x224 float tensor (shared with the plain loop)."""
  image = Image.open(io.BytesIO(data))
  image = image.convert("RGB")  # forces the full decode: a truncated file fails here
  return _transform()(image)


class DecodeImage(beam.DoFn):
  """path -> (path, tensor); unreadable or corrupt images go to the dead-letter output."""

  def process(self, line: str):
    path = line.strip()
    if not path:
      yield dead_letter.tagged(line, "decode", "empty line: no image path")
      return
    try:
      yield path, preprocess(read_bytes(path))
    except Exception as e:  # noqa: BLE001 - any bad file is dead-lettered, the run goes on
      yield beam.pvalue.TaggedOutput(dead_letter.TAG,
                                     dead_letter.from_exception(path, "decode", e))


def parse_lines(lines: beam.PCollection):
  """-> (PCollection of (path, tensor), PCollection of dead-letter records)."""
  # Reshuffle spreads the (cheap) paths across workers before the expensive decode/inference.
  parsed = (lines
            | "Distribute" >> beam.Reshuffle()
            | "DecodeImages" >> beam.ParDo(DecodeImage()).with_outputs(
                dead_letter.TAG, main="images"))
  return parsed.images, parsed[dead_letter.TAG]


def model_handler(state_dict_path: str, architecture: str, device: str,
                  batching: dict[str, Any]) -> PytorchModelHandlerTensor:
  return PytorchModelHandlerTensor(
      state_dict_path=state_dict_path,
      model_class=build_architecture,
      model_params={"architecture": architecture},
      device=device,
      **batching)


def top1(logits: torch.Tensor) -> int:
  return int(torch.argmax(logits).item())


class FormatPrediction(beam.DoFn):
  def process(self, keyed: tuple[str, Any]):
    path, result = keyed
    yield f"{path},{top1(result.inference)}"
