"""Reading and decoding the image tasks' input files, the same way for every image task: a path
-> its bytes (bounded, regular files only) -> 8-bit RGB, or a dead letter saying why not."""
from __future__ import annotations

import io
import os
import stat
from typing import Any, Callable

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from PIL import Image, ImageOps, UnidentifiedImageError

from pipelines.worker import dead_letter

# Pillow modes holding 16-bit greys (PNG, TIFF): convert("RGB") clips them at 255.
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_NOT_REGULAR = {stat.S_IFDIR: "directory", stat.S_IFIFO: "fifo",
                stat.S_IFCHR: "character device", stat.S_IFBLK: "block device",
                stat.S_IFSOCK: "socket"}
# The signatures of the formats the image tasks read: a file that starts with one but that
# Pillow cannot open is that format, cut short or damaged, not "not an image".
_SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"),
               (b"GIF89a", "GIF"), (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))


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


def resized_size(width: int, height: int, short_side: int) -> tuple[int, int]:
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


def _unopenable(data: bytes) -> BadImage:
  """Why Pillow could not open the bytes. Image.open reads the header only, and a header cut
  short (a JPEG truncated before its scan data: its tables are the first few hundred bytes) or
  damaged fails every format plugin alike (IndexError, struct.error, 'Truncated File Read'),
  which Pillow reports as 'cannot identify': the file's signature tells those apart from
  files that are no image at all."""
  claimed = next((name for signature, name in _SIGNATURES if data.startswith(signature)), None)
  if claimed:
    return BadImage(f"corrupt or truncated {claimed} image: its header is cut short or damaged "
                    f"({len(data)} bytes)")
  return BadImage(f"not an image file ({len(data)} bytes Pillow cannot identify)")


def inspect(data: bytes, max_pixels: int | None, short_side: int | None,
            crop: int | None = None) -> Image.Image:
  """Every check decode makes before the full decode, from the header alone: the image opened
  (not decoded), or BadImage when it has more than max_pixels as stored or once its short side
  is resized to short_side (None: the model only scales images down, as object detection's
  letterbox does) before a crop x crop centre crop."""
  try:
    image = Image.open(io.BytesIO(data))  # reads the header only
  except Image.DecompressionBombError as e:
    raise BadImage(f"image too large: {e}") from None
  except (UnidentifiedImageError, OSError):
    raise _unopenable(data) from None
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
  return image


def decode(data: bytes, max_pixels: int | None, short_side: int | None,
           crop: int | None = None) -> Image.Image:
  """JPEG/PNG bytes -> 8-bit RGB image, refused (BadImage) as inspect refuses before the full
  decode."""
  image = inspect(data, max_pixels, short_side, crop)
  try:
    return _to_rgb(image)  # forces the full decode: a truncated file fails here
  except (OSError, SyntaxError, ValueError) as e:
    raise BadImage(f"corrupt or truncated {image.format} image: {e}") from None


def require_complete(data: bytes, image_format: str | None) -> None:
  """A check that catches a truncated JPEG or PNG without decoding it (BadImage), for a path
  that decodes later, in a batch (device_decode.py): a JPEG's end-of-image marker must follow
  the start of its scan (entropy-coded data never holds one: a 0xFF byte there is stuffed), a
  PNG must hold its IEND chunk. Other formats are not checked here."""
  if image_format == "JPEG":
    scan = _jpeg_scan_start(data)
    if scan is None:
      raise BadImage(f"corrupt or truncated JPEG image: no start of scan after its header "
                     f"({len(data)} bytes)")
    if data.rfind(b"\xff\xd9") < scan:
      raise BadImage(f"corrupt or truncated JPEG image: no end-of-image marker after its scan "
                     f"data ({len(data)} bytes)")
  elif image_format == "PNG" and data.rfind(b"IEND") < 0:
    raise BadImage(f"corrupt or truncated PNG image: no IEND chunk ({len(data)} bytes)")


def _jpeg_scan_start(data: bytes) -> int | None:
  """The offset of a JPEG's first start-of-scan marker, walking its header's segments (so an
  EXIF thumbnail's markers, inside APP1, are skipped); None if the walk breaks off."""
  i = 2
  while i + 4 <= len(data):
    if data[i] != 0xFF:
      return None
    marker = data[i + 1]
    if marker == 0xFF:  # fill byte before a marker
      i += 1
    elif marker == 0xDA:
      return i
    elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
      i += 2
    else:
      i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
  return None


class DecodeImage(beam.DoFn):
  """path -> (path, example); unreadable or corrupt images go to the dead-letter output.
  The example is to_example(bytes, max_pixels), the task's (raising BadImage for what it cannot
  use)."""

  def __init__(self, to_example: Callable[[bytes, int | None], Any],
               max_pixels: int | None = None, max_bytes: int | None = None):
    self._to_example = to_example
    self._max_pixels = max_pixels
    self._max_bytes = max_bytes

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


def parse_lines(lines: beam.PCollection, to_example: Callable[[bytes, int | None], Any], opts):
  """Image paths -> (PCollection of (path, example), PCollection of dead-letter records), within
  the run's --max_image_pixels and --max_image_bytes."""
  parsed = lines | "DecodeImages" >> beam.ParDo(DecodeImage(
      to_example, opts.max_image_pixels, opts.max_image_bytes)).with_outputs(
          dead_letter.TAG, main="images")
  return parsed.images, parsed[dead_letter.TAG]


def example_from_line(line: bytes, to_example: Callable[[bytes, int | None], Any], opts) -> Any:
  """One input line as the model's input, as DecodeImage makes it; raises for a line the
  pipeline would dead-letter."""
  data = read_bytes(line.decode("utf-8").strip(), opts.max_image_bytes)
  return to_example(data, opts.max_image_pixels)
