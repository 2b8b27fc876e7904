"""Deterministic local datasets in the seed's input formats (`make data`).

images: JPEGs of varied sizes and aspect ratios (decode and resize cost is real), listed one
absolute path per line like the OpenImages 50k list. scenes: the same, with shapes drawn on them
for object detection (synthetic_scenes.py). sentences: one English-like sentence of
varied length per line, words drawn from the bert uncased vocab, like sentences_50k.txt.
"""
from __future__ import annotations

import argparse
import logging
import os
import pathlib
import random
from typing import Callable

from PIL import Image

from pipelines import cli_types
from pipelines.worker.synthetic_images import DATASET_SEED, dataset_image
from pipelines.worker.synthetic_scenes import dataset_scene

SEED = DATASET_SEED  # the sentences' generator too


def _lines_in(listing: pathlib.Path) -> int:
  try:
    with open(listing, "rb") as f:
      return sum(1 for _ in f)
  except FileNotFoundError:
    return 0


def _write_list(listing: pathlib.Path, lines: list[str]) -> None:
  """Replaces the list in one step: a benchmark starting meanwhile reads the old or the new
  list, never a half-written one."""
  tmp = listing.with_name(f".{listing.name}.{os.getpid()}.tmp")
  tmp.write_text("\n".join(lines) + "\n")
  os.replace(tmp, listing)


def write_images(folder: pathlib.Path, count: int) -> pathlib.Path:
  """Writes `count` images (keeping ones already there) and the list file; returns the list.
  Lists only grow: a `make data N=8` after N=32 keeps 32, so it cannot shrink the input of a
  benchmark another shell is starting (the generators are deterministic, so the first N
  items are the same whatever the count)."""
  return _write_jpegs(folder, "images", "image", dataset_image, count)


def write_scenes(folder: pathlib.Path, count: int) -> pathlib.Path:
  """The object detection inputs, as write_images writes its: scenes/scene_NNNNN.jpg and
  scenes.txt."""
  return _write_jpegs(folder, "scenes", "scene", dataset_scene, count)


def _write_jpegs(folder: pathlib.Path, name: str, stem: str,
                 make: Callable[[int], Image.Image], count: int) -> pathlib.Path:
  count = max(count, _lines_in(folder / f"{name}.txt"))
  files = folder / name
  files.mkdir(parents=True, exist_ok=True)
  paths = []
  for i in range(count):
    path = files / f"{stem}_{i:05d}.jpg"
    if not path.exists():
      tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
      make(i).save(tmp, format="JPEG", quality=90)
      os.replace(tmp, path)
    paths.append(str(path.resolve()))
  listing = folder / f"{name}.txt"
  _write_list(listing, paths)
  return listing


def _words(vocab_path: pathlib.Path) -> list[str]:
  tokens = vocab_path.read_text(encoding="utf-8").split("\n")
  return [t for t in tokens if t.isalpha() and t.isascii() and len(t) > 1]


def write_sentences(folder: pathlib.Path, count: int, vocab_path: pathlib.Path) -> pathlib.Path:
  count = max(count, _lines_in(folder / "sentences.txt"))  # lists only grow (see write_images)
  rng = random.Random(SEED)
  words = _words(vocab_path)
  lines = []
  for _ in range(count):
    length = rng.choice((4, 6, 8, 10, 12, 15, 18, 22, 28, 35))
    sentence = " ".join(rng.choice(words) for _ in range(length))
    lines.append(sentence[0].upper() + sentence[1:] + ".")
  listing = folder / "sentences.txt"
  folder.mkdir(parents=True, exist_ok=True)
  _write_list(listing, lines)
  return listing


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description="Generate the local benchmark datasets.")
  parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("data"))
  parser.add_argument("--items", type=cli_types.items, default=None,
                      help="items per dataset (default: the largest local profile in the "
                           "matrix); `share`: the largest Dataflow worker's share")
  parser.add_argument("--vocab", type=pathlib.Path,
                      default=pathlib.Path("models") / "bert-uncased-vocab.txt")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  from pipelines import matrix
  benchmarks = matrix.load().values()
  items = (max(b.share_items for b in benchmarks) if args.items == cli_types.SHARE
           else args.items or max(b.local_items for b in benchmarks))
  logging.info("%s", write_images(args.out, items))
  logging.info("%s", write_scenes(args.out, items))
  logging.info("%s", write_sentences(args.out, items, args.vocab))


if __name__ == "__main__":
  main()
