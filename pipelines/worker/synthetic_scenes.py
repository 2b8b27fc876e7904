"""Synthetic scenes for object detection (`make data`'s scenes, pipelines/data.py): a plain or
noisy background with a few filled rectangles and ellipses of distinct colours drawn on it, so
a detector has edges and regions to propose boxes on (OpenImages photos stand in elsewhere).
Deterministic: scene i is the same picture on every machine."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from pipelines.worker.synthetic_images import IMAGE_SIZES

SCENE_SEED = 5678  # scene i of the dataset: seed SCENE_SEED + i
# Saturated, well-separated colours: no two shapes of a scene share one.
COLOURS = ((220, 30, 30), (30, 160, 40), (30, 60, 220), (240, 200, 20), (200, 40, 200),
           (20, 200, 210), (250, 130, 10), (120, 70, 20), (250, 250, 250), (20, 20, 20))
MIN_SHAPES, MAX_SHAPES = 2, 5


def scene(seed: int, index: int) -> Image.Image:
  """One scene of IMAGE_SIZES[index % ...]: background, then MIN..MAX_SHAPES shapes, each
  between a tenth and a half of the image's sides."""
  rng = np.random.default_rng(seed)
  width, height = IMAGE_SIZES[index % len(IMAGE_SIZES)]
  background = rng.integers(60, 200, 3)
  pixels = np.broadcast_to(background, (height, width, 3)).astype(np.float32)
  if rng.random() < 0.5:  # noisy: compresses like a photo; otherwise plain
    pixels = pixels + rng.normal(0, 15, (height, width, 3))
  image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
  draw = ImageDraw.Draw(image)
  count = int(rng.integers(MIN_SHAPES, MAX_SHAPES + 1))
  for colour in rng.choice(len(COLOURS), count, replace=False):
    w = int(rng.integers(width // 10, width // 2))
    h = int(rng.integers(height // 10, height // 2))
    x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
    shape = draw.rectangle if rng.random() < 0.5 else draw.ellipse
    shape((x, y, x + w, y + h), fill=COLOURS[colour])
  return image


def dataset_scene(index: int) -> Image.Image:
  return scene(SCENE_SEED + index, index)
