"""Image classification: path -> decoded, resized, normalized tensor -> ResNet -> top-1 class."""
from __future__ import annotations

import io
import json
import os
import stat
from typing import Any, Callable

import apache_beam as beam
import numpy as np
import torch
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.pytorch_inference import PytorchModelHandlerTensor
from PIL import Image, ImageOps, UnidentifiedImageError

from pipelines.worker import dead_letter, optimized_model, synthetic_images
from pipelines.worker.architectures import build_architecture

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE, CROP = 256, 224  # the short side is resized to RESIZE, then the centre CROP is taken
# Pillow modes holding 16-bit greys (PNG, TIFF): convert("RGB") clips them at 255.
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_NOT_REGULAR = {stat.S_IFDIR: "directory", stat.S_IFIFO: "fifo",
                stat.S_IFCHR: "character device", stat.S_IFBLK: "block device",
                stat.S_IFSOCK: "socket"}

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


class BadImage(ValueError):
  """An input that cannot become a model input; the message is the dead-letter reason."""


def read_bytes(path: str, max_bytes: int | None = None) -> bytes:
  """The file's bytes, reading at most max_bytes + 1 of them (BadImage beyond max_bytes).
  A local path must be a regular file: a FIFO would block the open, /dev/zero never ends."""
  if FileSystems.get_scheme(path) is not None:  # gs:// and other Beam filesystems
    with FileSystems.open(path) as f:
      data = f.read(max_bytes + 1) if max_bytes else f.read()
    if max_bytes and len(data) > max_bytes:
      raise BadImage(f"file too large: over {max_bytes} bytes (--max_image_bytes)")
    return data
  _require_regular(os.stat(path).st_mode)  # FileNotFoundError is the caller's
  # O_NONBLOCK: a file swapped for a FIFO after the stat still cannot block the open.
  with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
    info = os.fstat(f.fileno())
    _require_regular(info.st_mode)
    if max_bytes and info.st_size > max_bytes:
      raise BadImage(f"file too large: {info.st_size} bytes, the limit is {max_bytes} "
                     "(--max_image_bytes)")
    data = f.read(max_bytes + 1) if max_bytes else f.read()
  if max_bytes and len(data) > max_bytes:  # it grew while being read
    raise BadImage(f"file too large: over {max_bytes} bytes (--max_image_bytes)")
  return data


def _require_regular(mode: int) -> None:
  if not stat.S_ISREG(mode):
    raise BadImage(f"not a regular file ({_NOT_REGULAR.get(stat.S_IFMT(mode), 'special file')})")


def resized_size(width: int, height: int, short_side: int = RESIZE) -> tuple[int, int]:
  """The size transforms.Resize(short_side) gives an image (torchvision's arithmetic)."""
  short, long = sorted((width, height))
  new_long = int(short_side * long / short)
  return (short_side, new_long) if width <= height else (new_long, short_side)


def _to_rgb(image: Image.Image) -> Image.Image:
  """Decodes to 8-bit RGB: EXIF orientation applied (as a photo viewer shows it), 16-bit
  greys scaled 0..65535 -> 0..255 (Pillow's convert would clip them at 255)."""
  ImageOps.exif_transpose(image, in_place=True)
  if image.mode in SIXTEEN_BIT_MODES:
    values = np.asarray(image).astype(np.int64).clip(0, 65535)
    image = Image.fromarray(((values + 128) // 257).astype(np.uint8), "L")
  return image.convert("RGB")


def preprocess(data: bytes, max_pixels: int | None = None) -> torch.Tensor:
  """JPEG/PNG bytes -> normalized 3x224x224 float tensor (shared with the plain loop).
  Raises BadImage with a readable reason for anything that is not a usable image."""
  return _transform()(decode(data, max_pixels))


def decode(data: bytes, max_pixels: int | None = None, short_side: int | None = RESIZE,
           crop: int = CROP) -> Image.Image:
  """JPEG/PNG bytes -> 8-bit RGB image, refused (BadImage) before the full decode when it has
  more than max_pixels as stored or once its short side is resized to short_side (None: the
  model only scales images down, as object detection's letterbox does)."""
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
  new_width, new_height = (resized_size(width, height, short_side) if short_side
                           else (width, height))
  if max_pixels and new_width * new_height > max_pixels:  # a 1x30000 strip resizes to 7.7 GP
    raise BadImage(f"aspect ratio too extreme: {width}x{height} resizes to {new_width}x"
                   f"{new_height} ({new_width * new_height / 1e6:.0f} megapixels) before the "
                   f"{crop}x{crop} crop, the limit is {max_pixels / 1e6:g} (--max_image_pixels)")
  try:
    return _to_rgb(image)  # forces the full decode: a truncated file fails here
  except (OSError, SyntaxError, ValueError) as e:
    raise BadImage(f"corrupt or truncated {image.format} image: {e}") from None


class DecodeImage(beam.DoFn):
  """path -> (path, example); unreadable or corrupt images go to the dead-letter output.
  The example is to_example(bytes, max_pixels): preprocess's tensor unless a task gives its own
  (raising BadImage for what it cannot use)."""

  def __init__(self, max_pixels: int | None = None, max_bytes: int | None = None,
               to_example: Callable[[bytes, int | None], Any] | None = None):
    self._max_pixels = max_pixels
    self._max_bytes = max_bytes
    self._to_example = to_example or preprocess

  def process(self, line: str):
    path = line.strip()
    if not path:
      yield dead_letter.tagged(line, "decode", "empty line: no image path")
      return
    try:
      data = read_bytes(path, self._max_bytes)
    except FileNotFoundError:
      yield dead_letter.tagged(path, "decode", "file not found")
      return
    except BadImage as e:
      yield dead_letter.tagged(path, "decode", str(e))
      return
    except Exception as e:  # noqa: BLE001 - any unreadable path is dead-lettered
      yield beam.pvalue.TaggedOutput(dead_letter.TAG,
                                     dead_letter.from_exception(path, "decode", e))
      return
    try:
      yield path, self._to_example(data, self._max_pixels)
    except BadImage as e:
      yield dead_letter.tagged(path, "decode", str(e))
    except Exception as e:  # noqa: BLE001 - any bad file is dead-lettered, the run goes on
      yield beam.pvalue.TaggedOutput(dead_letter.TAG,
                                     dead_letter.from_exception(path, "decode", e))


def parse_lines(lines: beam.PCollection, max_pixels: int | None = None,
                max_bytes: int | None = None, to_example=None):
  """-> (PCollection of (path, example), PCollection of dead-letter records)."""
  parsed = lines | "DecodeImages" >> beam.ParDo(
      DecodeImage(max_pixels, max_bytes, to_example)).with_outputs(dead_letter.TAG, main="images")
  return parsed.images, parsed[dead_letter.TAG]


def parse(lines: beam.PCollection, opts):
  """The task's parse step (pipelines/worker/tasks.py): image paths -> (path, tensor)."""
  return parse_lines(lines, opts.max_image_pixels, opts.max_image_bytes)


def format_prediction(opts) -> beam.DoFn:
  return FormatPrediction()


def model_handler(state_dict_path: str, architecture: str, device: str,
                  batching: dict[str, Any], opts=None) -> PytorchModelHandlerTensor:
  return PytorchModelHandlerTensor(
      state_dict_path=state_dict_path,
      model_class=build_architecture,
      model_params={"architecture": architecture},
      device=device,
      **batching)


def optimize(model: torch.nn.Module, name: str, batch_size: int) -> torch.nn.Module:
  """The task's optimization step (optimized_model.py): traced and compiled on batches of
  zeros (a trace records operations, not values); int8 calibrated on synthetic images, never
  on the items being measured (made only when int8 asks for them)."""
  # A full batch and a small one: inductor's convolutions guard on the batch size (>= 16),
  # and a bundle's last batch is smaller.
  examples = [((torch.zeros(size, 3, CROP, CROP),), {}) for size in sorted({max(2, batch_size), 2})]

  def calibration():
    images = [preprocess(jpeg) for jpeg in synthetic_images.calibration_jpegs()]
    return [((torch.stack(images[i:i + 8]),), {}) for i in range(0, len(images), 8)]
  return optimized_model.apply(model, name, "image_classification", examples, calibration)


def example_from_line(line: bytes, opts) -> torch.Tensor:
  """One input line as the model's input, as the pipeline makes it (agreement.py); raises
  for a line the pipeline would dead-letter."""
  return preprocess(read_bytes(line.decode("utf-8").strip(), opts.max_image_bytes),
                    opts.max_image_pixels)


def prediction_logits(model: torch.nn.Module, examples: list[torch.Tensor]) -> torch.Tensor:
  """[batch, classes]: the logits the top-1 prediction is taken from (agreement.py)."""
  with torch.no_grad():
    return model(torch.stack(examples)).float()


def top1(logits: torch.Tensor) -> int:
  return int(torch.argmax(logits).item())


class FormatPrediction(beam.DoFn):
  def process(self, keyed: tuple[str, Any]):
    path, result = keyed
    # JSON lines: unambiguous for paths holding commas, quotes or tabs.
    yield json.dumps({"input": path, "class": top1(result.inference)})
