"""Synthetic photo-like images: the generator behind `make data`'s images (pipelines/data.py)
and the int8 calibration set the workers draw from it (optimized_model.py), with seeds the
dataset never uses, so a calibration image is never an item being measured."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

# (width, height) pairs in the range OpenImages has: landscape, portrait, square, small, large.
IMAGE_SIZES = ((1024, 768), (768, 1024), (1024, 683), (640, 480), (480, 640), (800, 800),
               (1280, 720), (500, 375), (333, 500), (1024, 1024), (300, 225), (1600, 1200))
DATASET_SEED = 1234  # image i of the dataset: seed DATASET_SEED + i
CALIBRATION_SEED = 900_000_000  # far past any dataset index
CALIBRATION_IMAGES = 16


def image(seed: int, index: int) -> Image.Image:
  """Smooth gradients plus noise: compresses like a photo, not like a flat color."""
  rng = np.random.default_rng(seed)
  width, height = IMAGE_SIZES[index % len(IMAGE_SIZES)]
  y, x = np.mgrid[0:height, 0:width].astype(np.float32)
  channels = []
  for _ in range(3):
    fx, fy, phase = rng.uniform(0.002, 0.03), rng.uniform(0.002, 0.03), rng.uniform(0, 6.3)
    channels.append(127 + 100 * np.sin(fx * x + fy * y + phase))
  pixels = np.stack(channels, axis=-1) + rng.normal(0, 12, (height, width, 3))
  return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def dataset_image(index: int) -> Image.Image:
  return image(DATASET_SEED + index, index)


def calibration_jpegs(count: int = CALIBRATION_IMAGES) -> list[bytes]:
  """JPEG bytes of the calibration images, encoded as the dataset's are."""
  out = []
  for i in range(count):
    buffer = io.BytesIO()
    image(CALIBRATION_SEED + i, i).save(buffer, format="JPEG", quality=90)
    out.append(buffer.getvalue())
  return out
