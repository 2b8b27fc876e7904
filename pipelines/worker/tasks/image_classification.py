"""Image classification: path -> decoded, resized, normalized tensor -> ResNet -> top-1 class."""
from __future__ import annotations

import json
from typing import Any

import apache_beam as beam
import torch
from apache_beam.ml.inference.pytorch_inference import PytorchModelHandlerTensor

from pipelines.worker import images, optimized_model, synthetic_images
from pipelines.worker.architectures import build_architecture
from pipelines.worker.tasks.base import Task

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE, CROP = 256, 224  # the short side is resized to RESIZE, then the centre CROP is taken

_TRANSFORM = None


def _transform():
  global _TRANSFORM
  if _TRANSFORM is None:
    from torchvision import transforms
    _TRANSFORM = transforms.Compose([
        transforms.Resize(RESIZE),
        transforms.CenterCrop(CROP),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
  return _TRANSFORM


def preprocess(data: bytes, max_pixels: int | None = None) -> torch.Tensor:
  """JPEG/PNG bytes -> normalized 3x224x224 float tensor. Raises images.BadImage with a
  readable reason for anything that is not a usable image."""
  return _transform()(images.decode(data, max_pixels, short_side=RESIZE, crop=CROP))


def top1(logits: torch.Tensor) -> int:
  return int(torch.argmax(logits).item())


class FormatPrediction(beam.DoFn):
  def process(self, keyed: tuple[str, Any]):
    path, result = keyed
    # JSON lines: unambiguous for paths holding commas, quotes or tabs.
    yield json.dumps({"input": path, "class": top1(result.inference)})


class ImageClassification(Task):
  input_file = "images.txt"
  reads_files = True
  decoders = ("cpu", "device")

  def parse(self, lines: beam.PCollection, opts):
    """Image paths -> (path, tensor)."""
    return images.parse_lines(lines, preprocess, opts)

  def model_handler(self, state_dict_path: str, architecture: str, device: str,
                    batching: dict[str, Any], opts=None) -> PytorchModelHandlerTensor:
    return PytorchModelHandlerTensor(
        state_dict_path=state_dict_path,
        model_class=build_architecture,
        model_params={"architecture": architecture},
        device=device,
        **batching)

  def format_prediction(self, opts) -> beam.DoFn:
    return FormatPrediction()

  def optimize(self, model: torch.nn.Module, name: str, batch_size: int) -> torch.nn.Module:
    """Traced and compiled on batches of zeros (a trace records operations, not values); int8
    calibrated on synthetic images, never on the items being measured (made only when int8
    asks for them)."""
    # A full batch and a small one: inductor's convolutions guard on the batch size (>= 16),
    # and a bundle's last batch is smaller.
    examples = [((torch.zeros(size, 3, CROP, CROP),), {})
                for size in sorted({max(2, batch_size), 2})]

    def calibration():
      tensors = [preprocess(jpeg) for jpeg in synthetic_images.calibration_jpegs()]
      return [((torch.stack(tensors[i:i + 8]),), {}) for i in range(0, len(tensors), 8)]
    return optimized_model.apply(model, name, self.name, examples, calibration)

  def example_from_line(self, line: bytes, opts) -> torch.Tensor:
    return images.example_from_line(line, preprocess, opts)

  def prediction_logits(self, model: torch.nn.Module, examples: list[torch.Tensor],
                        device) -> torch.Tensor:
    """[batch, classes]: the logits the top-1 prediction is taken from."""
    with torch.no_grad():
      return model(torch.stack(examples).to(device)).float()


TASK = ImageClassification()
