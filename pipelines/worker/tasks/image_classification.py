"""Image classification: path -> decoded, resized, normalized tensor -> ResNet -> top-1 class.

`--decode cpu` decodes each image with PIL in the parse step; `--decode device` checks each file
there (everything but the decode) and hands its bytes on, to be decoded in the model's batch on
the model's device (image_inference.py, device_decode.py)."""
from __future__ import annotations

import json
from typing import Any

import apache_beam as beam
import torch
from apache_beam.ml.inference.pytorch_inference import PytorchModelHandlerTensor

from pipelines.worker import (
  dead_letter,
  device_decode,
  image_inference,
  images,
  optimized_model,
  synthetic_images,
  vocab,
)
from pipelines.worker.architectures import build_architecture
from pipelines.worker.device_decode import CROP, IMAGENET_MEAN, IMAGENET_STD, RESIZE
from pipelines.worker.tasks.base import Task

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


def encoded(data: bytes, max_pixels: int | None = None) -> torch.Tensor:
  """JPEG/PNG bytes -> the same bytes as a 1-D uint8 tensor, for --decode device, after every
  check preprocess makes short of decoding (images.inspect) and a cheap one that catches a
  truncated JPEG or PNG (images.require_complete). Raises images.BadImage as preprocess does."""
  image = images.inspect(data, max_pixels, short_side=RESIZE, crop=CROP)
  images.require_complete(data, image.format)
  return device_decode.as_tensor(data)


def _decode(opts) -> str:
  return getattr(opts, "decode", None) or "cpu"


def top1(logits: torch.Tensor) -> int:
  return int(torch.argmax(logits).item())


class FormatPrediction(beam.DoFn):
  def process(self, keyed: tuple[str, Any]):
    path, result = keyed
    if isinstance(result.inference, dead_letter.Failed):  # its batched decode failed
      yield dead_letter.after_batching(path, result.inference)
      return
    # JSON lines: unambiguous for paths holding commas, quotes or tabs.
    yield json.dumps({"input": path, "class": top1(result.inference)})


class ImageClassification(Task):
  input_file = "images.txt"
  reads_files = True
  decoders = vocab.DECODERS

  def parse(self, lines: beam.PCollection, opts):
    """Image paths -> (path, normalized tensor), or with --decode device (path, file bytes)."""
    return images.parse_lines(lines, self._to_example(opts), opts)

  def model_handler(self, state_dict_path: str, architecture: str, device: str,
                    batching: dict[str, Any], opts=None) -> PytorchModelHandlerTensor:
    decode = _decode(opts)
    handler = (image_inference.EncodedImagesHandler if decode == "device"
               else PytorchModelHandlerTensor)
    return handler(
        state_dict_path=state_dict_path,
        model_class=build_architecture,
        model_params={"architecture": architecture},
        device=device,
        inference_fn=image_inference.inference_fn(
            decode, pin_memory=bool(getattr(opts, "pin_memory", False))),
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
    """The parse step's example: with --decode device the file's bytes (decoded in
    prediction_logits, as the pipeline decodes them in its batch)."""
    return images.example_from_line(line, self._to_example(opts), opts)

  def prediction_logits(self, model: torch.nn.Module, examples: list[torch.Tensor],
                        device) -> torch.Tensor:
    """[batch, classes]: the logits the top-1 prediction is taken from. Encoded files (1-D
    uint8, --decode device) are decoded on `device` first; one that fails raises."""
    if examples and examples[0].dim() == 1 and examples[0].dtype == torch.uint8:
      inputs, failed = device_decode.decode_batch(examples, device)
      if failed:
        raise images.BadImage("; ".join(f"item {i}: {why}" for i, why in failed.items()))
    else:
      inputs = torch.stack(examples).to(device)
    with torch.no_grad():
      return model(inputs).float()

  def _to_example(self, opts):
    return encoded if _decode(opts) == "device" else preprocess


TASK = ImageClassification()
