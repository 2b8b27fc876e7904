"""Batched decode on the model's device (device_decode.decode_batch), here on the CPU: it gives
the cpu path's (PIL's) pixels for every format and orientation, differs from PIL's resize by at
most one 8-bit level, and a bad file in a batch costs only itself."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.worker import device_decode, images, synthetic_images
from pipelines.worker.tasks import image_classification

# One 8-bit level after normalization, at the smallest ImageNet std (0.224): 1 / 255 / 0.224.
ONE_LEVEL = 1 / 255 / min(device_decode.IMAGENET_STD)


def encoded(image: Image.Image, fmt: str = "JPEG", **save) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, format=fmt, **save)
  return buffer.getvalue()


def photo(width: int = 320, height: int = 256, seed: int = 5) -> Image.Image:
  """A photo-like image whose short side is already 256: both paths' resize is then the
  identity, so what is compared is the decode alone, exactly."""
  return synthetic_images.image(seed, 0).resize((width, height))


def png16(pixels: np.ndarray) -> bytes:
  """A 16-bit PNG, grey ([H, W]) or RGB ([H, W, 3]), written by hand: Pillow writes no 16-bit
  colour PNG."""
  height, width = pixels.shape[:2]
  colour_type = 0 if pixels.ndim == 2 else 2
  raw = b"".join(b"\0" + row.astype(">u2").tobytes() for row in pixels)

  def chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data)))
  header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
          + chunk(b"IEND", b""))


def cpu_path(datas: list[bytes]) -> torch.Tensor:
  return torch.stack([image_classification.preprocess(d) for d in datas])


def corrupt_in_the_middle(jpeg: bytes) -> bytes:
  """A second SOF marker in the scan data: the header is whole and the end-of-image marker is
  there, so only a full decode finds it."""
  middle = len(jpeg) // 2
  return jpeg[:middle] + b"\xff\xc0\x00\x11" + jpeg[middle + 4:]


def test_every_format_decodes_to_the_cpu_paths_pixels():
  rng = np.random.default_rng(3)
  rgb = photo()
  formats = {
      "jpeg": encoded(rgb, quality=90),
      "grey jpeg": encoded(rgb.convert("L"), quality=90),
      "cmyk jpeg": encoded(rgb.convert("CMYK"), quality=90),
      "png": encoded(rgb, "PNG"),
      "rgba png": encoded(rgb.convert("RGBA"), "PNG"),
      "grey png": encoded(rgb.convert("L"), "PNG"),
      "grey+alpha png": encoded(rgb.convert("LA"), "PNG"),
      "palette png": encoded(rgb.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
      "16-bit grey png": png16(rng.integers(0, 65536, (256, 320), dtype=np.uint16)),
      "16-bit rgb png": png16(rng.integers(0, 65536, (256, 320, 3), dtype=np.uint16)),
      "16-bit grey tiff": encoded(Image.fromarray(
          rng.integers(0, 65536, (256, 320), dtype=np.uint16)), "TIFF"),
      "bmp": encoded(rgb, "BMP"),
  }
  batch, failed = device_decode.decode_batch(list(formats.values()), "cpu")
  assert failed == {}
  for name, got, want in zip(formats, batch, cpu_path(list(formats.values()))):
    assert torch.equal(got, want), name


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_the_cpu_path_applies_it(orientation):
  """nvjpeg ignores EXIF (torchvision applies it on its CPU decoder only): the orientation is
  read from the header and turned on the device, for JPEGs and PNGs alike."""
  exif = Image.Exif()
  exif[0x0112] = orientation
  stored = [encoded(photo(), quality=90, exif=exif.tobytes()),
            encoded(photo(), "PNG", exif=exif.tobytes())]
  batch, failed = device_decode.decode_batch(stored, "cpu")
  assert failed == {}
  assert torch.equal(batch, cpu_path(stored))
  assert device_decode.jpeg_header(device_decode.as_tensor(stored[0])) == (320 * 256, orientation)


def test_resize_is_within_one_level_of_pils_on_the_dataset_images():
  """torchvision's antialiased bilinear resize of uint8 tensors against PIL's (the cpu path's).
  Measured on the 12 dataset sizes (333x500 to 1600x1200, JPEG quality 90), CPU: max |diff| after
  normalization 0.01751 (one 8-bit level at std 0.224), on 0.23% of the values, mean 3.9e-05; the
  1024x1024 image is identical. On CUDA torchvision resizes uint8 through float and rounds: the
  same bound measured on the CPU that way."""
  datas = [encoded(synthetic_images.dataset_image(i), quality=90) for i in range(12)]
  batch, failed = device_decode.decode_batch(datas, "cpu")
  assert failed == {}
  diff = (batch - cpu_path(datas)).abs()
  assert diff.max().item() <= ONE_LEVEL + 1e-6
  assert (diff > 1e-6).float().mean().item() < 0.01  # almost every value identical
  assert diff.mean().item() < 1e-4


def test_a_bad_file_in_a_batch_costs_only_itself():
  good = [encoded(synthetic_images.dataset_image(i), quality=90) for i in range(3)]
  batch = [good[0], corrupt_in_the_middle(good[1]), good[2], b"not an image at all",
           encoded(photo(), "PNG")[:3000], device_decode.as_tensor(good[1])]
  decoded, failed = device_decode.decode_batch(batch, "cpu")
  assert failed == {
      1: "corrupt or truncated JPEG image: Invalid JPEG file structure: two SOF markers",
      3: "not an image file (19 bytes Pillow cannot identify)",  # the cpu path's reason
      4: "corrupt or truncated PNG image: Out of bound read in decode_png. Probably, the input "
         "image is corrupted"}
  # the others, in order (bytes or tensors alike)
  want = cpu_path([good[0], good[2], good[1]])
  assert decoded.shape == want.shape
  assert (decoded - want).abs().max().item() <= ONE_LEVEL + 1e-6


def test_a_batch_where_nothing_decodes_is_empty_and_says_why_as_the_cpu_path():
  decoded, failed = device_decode.decode_batch([b"\xff\xd8\xffnope", b"nope"], "cpu")
  assert decoded.shape == (0, 3, 224, 224)
  assert failed == {0: "corrupt or truncated JPEG image: its header is cut short or damaged "
                       "(7 bytes)",
                    1: "not an image file (4 bytes Pillow cannot identify)"}


def test_the_parse_steps_checks_refuse_a_truncated_file_without_decoding_it():
  jpeg = encoded(synthetic_images.dataset_image(0), quality=90)
  png = encoded(photo(), "PNG")
  assert image_classification.encoded(jpeg).dtype == torch.uint8
  assert bytes(image_classification.encoded(corrupt_in_the_middle(jpeg)).numpy()) == (
      corrupt_in_the_middle(jpeg))  # only a full decode finds this one
  with pytest.raises(images.BadImage, match=r"^corrupt or truncated JPEG image: no end-of-image "):
    image_classification.encoded(jpeg[:len(jpeg) // 2])
  with pytest.raises(images.BadImage, match=r"^corrupt or truncated PNG image: no IEND chunk"):
    image_classification.encoded(png[:len(png) - 20])
  padded = jpeg + b"\0" * 100  # bytes after the end-of-image marker are allowed, as PIL allows
  assert len(image_classification.encoded(padded)) == len(padded)
  # An EXIF thumbnail is a whole JPEG inside the header: its end-of-image marker is not the
  # image's.
  exif = Image.Exif()
  exif[0x0112] = 6
  with_thumbnail = encoded(synthetic_images.dataset_image(1), quality=90, exif=exif.tobytes())
  scan = with_thumbnail.index(b"\xff\xda")
  thumbnail = encoded(photo(64, 48))
  spliced = (with_thumbnail[:2] + b"\xff\xe1" + struct.pack(">H", len(thumbnail) + 2) + thumbnail
             + with_thumbnail[2:])
  assert spliced.index(b"\xff\xd9") < spliced.index(b"\xff\xda", scan)
  with pytest.raises(images.BadImage, match="no end-of-image marker"):
    image_classification.encoded(spliced[:len(spliced) - 5000])


def test_on_cuda_one_decode_at_a_time_between_two_stream_drains(monkeypatch):
  """The CUDA path's ordering, with the decoder and the stream stood in for (no GPU here): the
  caller's stream drained before nvjpeg writes (pytorch/vision PR #9606) and after, under the
  process's lock, and the decode asked for the model's device."""
  import torchvision.io
  events = []

  class Stream:
    def synchronize(self):
      events.append(("sync", device_decode._CUDA_LOCK.locked()))

  def decode_jpeg(tensors, mode, device):
    events.append(("decode", device_decode._CUDA_LOCK.locked(), str(device), len(tensors)))
    return [torch.zeros(3, 256, 320, dtype=torch.uint8) for _ in tensors]

  monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: Stream())
  monkeypatch.setattr(torchvision.io, "decode_jpeg", decode_jpeg)
  jpeg = device_decode.as_tensor(encoded(photo()))
  images_out = device_decode._decode_jpegs([jpeg, jpeg], torch.device("cuda"))
  assert len(images_out) == 2
  assert events == [("sync", True), ("decode", True, "cuda", 2), ("sync", True)]
  assert not device_decode._CUDA_LOCK.locked()


def test_on_cuda_a_jpeg_nvjpeg_refuses_is_read_by_the_cpu_decoder(monkeypatch):
  """nvjpeg refuses what libjpeg-turbo reads (CMYK, arithmetic coding, on some versions): such a
  JPEG is decoded on the CPU and moved, so both devices dead-letter the same files; a file
  neither reads is dead-lettered with the CPU decoder's reason."""
  import torchvision.io
  real = torchvision.io.decode_jpeg
  cmyk = device_decode.as_tensor(encoded(photo().convert("CMYK"), quality=90))
  rgb = device_decode.as_tensor(encoded(photo(), quality=90))
  bad = device_decode.as_tensor(corrupt_in_the_middle(encoded(photo(), quality=90)))
  calls = []

  def decode_jpeg(tensors, mode, device):
    calls.append((str(device), len(tensors)))
    if str(device) == "cuda" and any(t is cmyk or t is bad for t in tensors):
      raise RuntimeError("decode_jpegs_cuda, somewhere.cpp:1, nvjpeg says no")
    return real(tensors, mode=mode, device="cpu")

  monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: type(
      "Stream", (), {"synchronize": lambda self: None})())
  monkeypatch.setattr(torchvision.io, "decode_jpeg", decode_jpeg)
  monkeypatch.setattr(device_decode, "_moved", lambda image, device: image)
  out = device_decode._decode_jpegs([rgb, cmyk, bad], torch.device("cuda"))
  assert calls == [("cuda", 3), ("cuda", 1), ("cuda", 1), ("cpu", 1), ("cuda", 1), ("cpu", 1)]
  assert torch.equal(out[1], real(cmyk, mode=torchvision.io.ImageReadMode.RGB))
  assert out[2] == "corrupt or truncated JPEG image: Invalid JPEG file structure: two SOF markers"


def test_large_images_are_decoded_a_few_at_a_time(monkeypatch):
  """A decode call holds at most PIXELS_PER_DECODE decoded pixels; the batch is the same."""
  datas = [encoded(synthetic_images.dataset_image(i), quality=90) for i in range(4)]
  whole, _ = device_decode.decode_batch(datas, "cpu")
  sizes = []
  real = device_decode._decode_jpeg_call
  monkeypatch.setattr(device_decode, "_decode_jpeg_call",
                      lambda tensors, device: sizes.append(len(tensors)) or real(tensors, device))
  monkeypatch.setattr(device_decode, "PIXELS_PER_DECODE", 1024 * 768 * 2)
  chunked, failed = device_decode.decode_batch(datas, "cpu")
  # 1024x768, 768x1024 | 1024x683, 640x480
  assert sizes == [2, 2] and failed == {} and torch.equal(chunked, whole)
