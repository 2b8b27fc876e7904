"""Batched image decode on the model's device (`--decode device`): a batch of encoded files ->
the classification models' normalized input, without the per-image PIL decode on the worker's
CPU that left a T4 93-99% idle. JPEGs decode with nvjpeg on CUDA (torchvision's CPU decoder on a
CPU device), PNGs with torchvision on the CPU, anything else with Pillow as the cpu path does;
then resize (short side 256), centre crop (224), scale and normalize run on the device.

The pipeline (image_inference.py), the launcher's agreement check, its GPU-decoder ceiling
measurement and perf's plain loop all call decode_batch.
"""
from __future__ import annotations

import re
import threading
import warnings
from typing import Sequence

import numpy as np
import torch

from pipelines.worker import images

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE, CROP = 256, 224  # the short side is resized to RESIZE, then the centre CROP is taken
# Decoded pixels one decode call may hold (RGB: 3 bytes each, 300 MB): bounds the device memory
# a batch of large images takes before each is resized down.
PIXELS_PER_DECODE = 100_000_000

# torchvision 0.29 deprecates its decoders for TorchCodec, warning at every call.
warnings.filterwarnings("ignore", message=r"The image decoding and encoding capabilities of "
                        "TorchVision are deprecated", category=DeprecationWarning)

# torchvision's CUDA JPEG decoder is not safe to share (pytorch/vision issue #8587: its nvjpeg
# paths corrupted data across threads; PR #9606: decode_jpeg(device="cuda") allocates its output
# on the caller's stream, then writes it from a private stream that never waits for the caller's,
# so it can overwrite memory that queued kernels still read). One GPU decode at a time per
# process, with the current stream drained before it and again after it.
_CUDA_LOCK = threading.Lock()
_JPEG = b"\xff\xd8\xff"
_PNG = b"\x89PNG\r\n\x1a\n"
# EXIF orientation -> the tensor ops of Pillow's ImageOps.exif_transpose, on [C, H, W].
_ORIENT = {
    2: lambda x: x.flip(-1),
    3: lambda x: x.flip(-2, -1),
    4: lambda x: x.flip(-2),
    5: lambda x: x.transpose(-2, -1),
    6: lambda x: torch.rot90(x, -1, (-2, -1)),
    7: lambda x: x.transpose(-2, -1).flip(-2, -1),
    8: lambda x: torch.rot90(x, 1, (-2, -1)),
}


def as_tensor(data: torch.Tensor | bytes) -> torch.Tensor:
  """A file's bytes as the 1-D uint8 CPU tensor the decoders take (a copy of bytes)."""
  if isinstance(data, torch.Tensor):
    return data
  return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def decode_batch(datas: Sequence[torch.Tensor | bytes], device: torch.device | str
                 ) -> tuple[torch.Tensor, dict[int, str]]:
  """The normalized [n_ok, 3, 224, 224] float32 batch, on `device`, of the items that decoded
  (in order), and {index: reason} for those that did not. A batch whose decode raises is
  decoded again item by item, so one bad file costs only itself."""
  device = torch.device(device)
  tensors = [as_tensor(d) for d in datas]
  crops: dict[int, torch.Tensor] = {}
  failed: dict[int, str] = {}
  headers: dict[int, tuple[int, int]] = {}  # JPEG index: (pixels, EXIF orientation)
  for i, tensor in enumerate(tensors):
    if _starts_with(tensor, _JPEG):
      try:
        headers[i] = jpeg_header(tensor)
      except images.BadImage as e:
        failed[i] = str(e)
      except Exception as e:  # noqa: BLE001 - this item's dead letter
        failed[i] = _reason("JPEG", e)
  for chunk in _chunks(headers, PIXELS_PER_DECODE):
    for i, image in zip(chunk, _decode_jpegs([tensors[i] for i in chunk], device)):
      if isinstance(image, str):
        failed[i] = image
      else:
        crops[i] = _resized_crop(oriented(image, headers[i][1]))
  for i, tensor in enumerate(tensors):
    if i in failed or i in headers:
      continue
    try:
      crops[i] = _resized_crop(_decode_on_cpu(tensor).to(device))
    except images.BadImage as e:
      failed[i] = str(e)
    except Exception as e:  # noqa: BLE001 - any bad file is this item's dead letter
      failed[i] = _reason("PNG", e)
  return _normalized([crops[i] for i in sorted(crops)], device), dict(sorted(failed.items()))


def _resized_crop(image: torch.Tensor) -> torch.Tensor:
  """Resize(256) then CenterCrop(224), per image (their sizes differ); uint8 in and out,
  rounded, as PIL's resize is."""
  from torchvision.transforms.v2 import functional as F
  return F.center_crop(F.resize(image, [RESIZE], antialias=True), [CROP, CROP])


def _normalized(crops: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
  """8-bit crops -> the model's input, as the cpu path's ToTensor and Normalize(ImageNet)."""
  if not crops:
    return torch.empty(0, 3, CROP, CROP, device=device)
  batch = torch.stack(list(crops)).float().div_(255)
  mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
  std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
  return batch.sub_(mean).div_(std)


def jpeg_header(data: torch.Tensor) -> tuple[int, int]:
  """(pixels, EXIF orientation 1-8) from a JPEG's header, read by Pillow as the cpu path reads
  it, without decoding: nvjpeg ignores the orientation (torchvision applies it on its CPU
  decoder only), so it is applied on the device after the decode. BadImage with the cpu path's
  reason for a header Pillow cannot read."""
  with images.inspect(data.numpy().tobytes(), max_pixels=None, short_side=None) as image:
    return image.width * image.height, int(image.getexif().get(0x0112, 1) or 1)


def _chunks(pixels: dict[int, tuple[int, int]], budget: int) -> list[list[int]]:
  """The JPEGs' indexes in order, cut where one decode call would hold more than `budget`
  decoded pixels: a batch of 64 photos is one call, 64 images of 50 megapixels (allowed by
  --max_image_pixels) would take 9.6 GB decoded at once."""
  chunks: list[list[int]] = [[]]
  held = 0
  for i, (count, _) in pixels.items():
    if chunks[-1] and held + count > budget:
      chunks.append([])
      held = 0
    chunks[-1].append(i)
    held += count
  return [chunk for chunk in chunks if chunk]


def oriented(image: torch.Tensor, orientation: int) -> torch.Tensor:
  """[C, H, W] turned as a photo viewer shows it (Pillow's exif_transpose)."""
  turn = _ORIENT.get(orientation)
  return turn(image).contiguous() if turn else image


def _starts_with(data: torch.Tensor, signature: bytes) -> bool:
  head = data[:len(signature)]
  return len(head) == len(signature) and bytes(head.tolist()) == signature


def _decode_jpegs(tensors: list[torch.Tensor], device: torch.device
                  ) -> list[torch.Tensor | str]:
  """Decoded 8-bit RGB JPEGs on `device`, or the reason one failed: the batch in one call, and
  only if that raises (torchvision returns no partial results), one call per item; on CUDA a
  JPEG nvjpeg refuses gets torchvision's CPU decoder (libjpeg-turbo, the cpu path's) before it
  is given up, so the two devices decode and refuse the same files."""
  if not tensors:
    return []
  try:
    return list(_decode_jpeg_call(tensors, device))
  except Exception:  # noqa: BLE001 - found again, item by item, below
    pass
  out: list[torch.Tensor | str] = []
  for tensor in tensors:
    try:
      out.append(_decode_jpeg_call([tensor], device)[0])
      continue
    except Exception as e:  # noqa: BLE001 - this item's dead letter, unless the CPU reads it
      reason = _reason("JPEG", e)
    if device.type == "cuda":
      try:
        out.append(_moved(_decode_jpeg_call([tensor], torch.device("cpu"))[0], device))
        continue
      except Exception as e:  # noqa: BLE001 - this item's dead letter
        reason = _reason("JPEG", e)
    out.append(reason)
  return out


def _moved(image: torch.Tensor, device: torch.device) -> torch.Tensor:
  """image on device (a function of its own: the tests, without CUDA, stand in for it)."""
  return image.to(device)


def _decode_jpeg_call(tensors: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
  from torchvision.io import ImageReadMode, decode_jpeg
  if device.type != "cuda":
    return decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device)
  with _CUDA_LOCK:  # see _CUDA_LOCK: pytorch/vision #8587, #9606
    torch.cuda.current_stream(device).synchronize()
    out = decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device)
    torch.cuda.current_stream(device).synchronize()
  return out


def _decode_on_cpu(data: torch.Tensor) -> torch.Tensor:
  """A non-JPEG file as 8-bit RGB [3, H, W] on the CPU with the cpu path's semantics: PNGs by
  torchvision (EXIF orientation applied; 16-bit greys scaled 0..65535 -> 0..255 as
  images._to_rgb does, 16-bit colour channels keeping their high byte as Pillow's 16-bit
  colour modes do), other formats (TIFF, BMP, GIF, ...) by Pillow, as the cpu path decodes
  them (images.decode)."""
  if not _starts_with(data, _PNG):  # raises BadImage with the cpu path's reason
    image = images.decode(data.numpy().tobytes(), max_pixels=None, short_side=None)
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()
  from torchvision.io import ImageReadMode, decode_image
  # RGB mode: greys, palettes and alpha converted as Pillow's convert("RGB") converts them.
  image = decode_image(data, mode=ImageReadMode.RGB, apply_exif_orientation=True)
  if image.dtype == torch.uint16:  # a 16-bit PNG; IHDR, always first, says grey or colour
    wide = image.to(torch.int32)
    image = ((wide + 128) // 257 if int(data[25]) == 0 else wide >> 8).to(torch.uint8)
  return image


def _reason(kind: str, error: BaseException) -> str:
  """A dead-letter reason from a decoder's error: its first line, without torchvision's
  source location."""
  lines = str(error).strip().splitlines()
  text = re.sub(r"^[^,]*, \S+:\d+, ", "", lines[0]) if lines else type(error).__name__
  return f"corrupt or truncated {kind} image: {text}"
