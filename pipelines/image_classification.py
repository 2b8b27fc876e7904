"""Image classification: path -> decoded, resized, normalized tensor -> ResNet -> top-1 class."""
from __future__ import annotations

import io
import json
from typing import Any

import apache_beam as beam
import torch
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.pytorch_inference import PytorchModelHandlerTensor
from PIL import Image, UnidentifiedImageError

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


class BadImage(ValueError):
  """An input that cannot become a model input; the message is the dead-letter reason."""


def preprocess(data: bytes, max_pixels: int | None = None) -> torch.Tensor:
  """JPEG/PNG bytes -> normalized 3x224x224 float tensor (shared with the plain loop).
  Raises BadImage with a readable reason for anything that is not a usable image."""
  try:
    image = Image.open(io.BytesIO(data))  # reads the header only
  except Image.DecompressionBombError as e:
    raise BadImage(f"image too large: {e}") from None
  except (UnidentifiedImageError, OSError):
    raise BadImage(f"not an image file ({len(data)} bytes Pillow cannot identify)") from None
  width, height = image.size
  if max_pixels and width * height > max_pixels:
    raise BadImage(f"image too large: {width}x{height} is {width * height / 1e6:.0f} megapixels,"
                   f" the limit is {max_pixels / 1e6:g} (--max_image_pixels)")
  try:
    image = image.convert("RGB")  # forces the full decode: a truncated file fails here
  except (OSError, SyntaxError, ValueError) as e:
    raise BadImage(f"corrupt or truncated {image.format} image: {e}") from None
  return _transform()(image)


class DecodeImage(beam.DoFn):
  """path -> (path, tensor); unreadable or corrupt images go to the dead-letter output."""

  def __init__(self, max_pixels: int | None = None):
    self._max_pixels = max_pixels

  def process(self, line: str):
    path = line.strip()
    if not path:
      yield dead_letter.tagged(line, "decode", "empty line: no image path")
      return
    try:
      data = read_bytes(path)
    except FileNotFoundError:
      yield dead_letter.tagged(path, "decode", "file not found")
      return
    except Exception as e:  # noqa: BLE001 - any unreadable path is dead-lettered
      yield beam.pvalue.TaggedOutput(dead_letter.TAG,
                                     dead_letter.from_exception(path, "decode", e))
      return
    try:
      yield path, preprocess(data, self._max_pixels)
    except BadImage as e:
      yield dead_letter.tagged(path, "decode", str(e))
    except Exception as e:  # noqa: BLE001 - any bad file is dead-lettered, the run goes on
      yield beam.pvalue.TaggedOutput(dead_letter.TAG,
                                     dead_letter.from_exception(path, "decode", e))


def parse_lines(lines: beam.PCollection, max_pixels: int | None = None):
  """-> (PCollection of (path, tensor), PCollection of dead-letter records)."""
  parsed = lines | "DecodeImages" >> beam.ParDo(DecodeImage(max_pixels)).with_outputs(
      dead_letter.TAG, main="images")
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
    # JSON lines: unambiguous for paths holding commas, quotes or tabs.
    yield json.dumps({"input": path, "class": top1(result.inference)})
