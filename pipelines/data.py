"""Deterministic local datasets in the seed's input formats (`make data`).

images: JPEGs of varied sizes and aspect ratios (decode and resize cost is real), listed one
absolute path per line like the OpenImages 50k list. scenes: the same, with shapes drawn on them
for object detection (synthetic_scenes.py). sentences: one English-like sentence of
varied length per line, words drawn from the bert uncased vocab, like sentences_50k.txt.

A benchmark generates only its task's list (`--benchmark NAME`: the task's input_file) at the
count its run takes; `make data` alone, every list at the largest local default (or --items).
What the new items would take on disk is estimated first, and past the free disk nothing is
generated: one `error:` line, exit 2.
"""
from __future__ import annotations

import argparse
import logging
import os
import pathlib
import random
import shutil
import sys
from typing import Callable, Iterable

from PIL import Image

from pipelines import cli_types
from pipelines.worker.synthetic_images import DATASET_SEED, dataset_image
from pipelines.worker.synthetic_scenes import dataset_scene

SEED = DATASET_SEED  # the sentences' generator too
# Bytes one item adds: its JPEG (the first 504 of each generator, 42 rounds of the 12 image
# sizes, average 248.0 KB per image and 117.7 KB per scene; rounded up) and its list line.
FILE_BYTES = {"images.txt": 250_000, "scenes.txt": 120_000, "sentences.txt": 0}
SENTENCE_LINE_BYTES = 128  # 124.9 on average
KEEP_FREE_BYTES = 2_000_000_000  # generation never takes the disk below this


def _lines_in(listing: pathlib.Path) -> int:
  try:
    with open(listing, "rb") as f:
      return sum(1 for _ in f)
  except FileNotFoundError:
    return 0


def _write_list(listing: pathlib.Path, lines: list[str]) -> None:
  """Replaces the list in one step: a benchmark starting meanwhile reads the old or the new
  list, never a half-written one. An unchanged list is left as it is (same inode and mtime)."""
  text = "\n".join(lines) + "\n"
  try:
    if listing.read_text() == text:
      return
  except FileNotFoundError:
    pass
  tmp = listing.with_name(f".{listing.name}.{os.getpid()}.tmp")
  tmp.write_text(text)
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


def counts(items: int | str | None, benchmarks: Iterable[str] = (),
           profile_names: Iterable[str] = ()) -> dict[str, int]:
  """Per input list (a task's input_file), the items to have: for the named benchmarks, the most
  any of their runs takes (N, N=share: its own share under each profile, or its local default);
  with none named, every list at the most any benchmark takes."""
  from pipelines import matrix, profiles
  every = matrix.load()
  unknown = [name for name in benchmarks if name not in every]
  if unknown:
    raise ValueError(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(every)}")
  chosen = [every[name] for name in benchmarks]
  shaped = [profiles.get(p).apply(b) for b in chosen or every.values()
            for p in (profile_names or [profiles.DEFAULT])]
  out: dict[str, int] = {}
  for bench in shaped:
    listing = bench.task_spec.input_file
    out[listing] = max(out.get(listing, 0), bench.files_for(items))
  if not chosen:
    return {listing: max(out.values()) for listing in sorted(FILE_BYTES)}
  return dict(sorted(out.items()))


def needed_bytes(folder: pathlib.Path, listing: str, count: int) -> tuple[int, int]:
  """(items to generate, bytes they and the rewritten list take) to bring `listing` to `count`."""
  new = max(0, count - _lines_in(folder / listing))
  name = listing.removesuffix(".txt")
  if listing == "sentences.txt":
    line = SENTENCE_LINE_BYTES
  else:  # the absolute path of a file, as the list holds it
    line = len(str(folder.resolve() / name / f"{name[:-1]}_00000.jpg")) + 1
  # the new list is written beside the old one before it replaces it
  return new, new * FILE_BYTES[listing] + (count * line if new else 0)


def free_bytes(folder: pathlib.Path) -> int:
  existing = folder.resolve()
  while not existing.exists():
    existing = existing.parent
  return shutil.disk_usage(existing).free


def size_text(n: float) -> str:
  for unit, scale in (("GB", 1e9), ("MB", 1e6)):
    if n >= scale:
      return f"{n / scale:.1f} {unit}"
  return f"{n / 1e3:.0f} kB"


def check_disk(folder: pathlib.Path, wanted: dict[str, int], why: str) -> list[str]:
  """What will be generated, one line per list with new items; refuses past the free disk."""
  plans = {listing: needed_bytes(folder, listing, count) for listing, count in wanted.items()}
  plans = {listing: plan for listing, plan in plans.items() if plan[0]}
  total = sum(size for _, size in plans.values())
  free = free_bytes(folder)
  if total > free - KEEP_FREE_BYTES:
    parts = [f"{new:,} more {listing.removesuffix('.txt')}"
             + (f" ({size_text(size)})" if len(plans) > 1 else "")
             for listing, (new, size) in plans.items()]
    raise DiskTooSmall(
        f"{why}: {', '.join(parts)} would take about {size_text(total)}, and {folder}/ has "
        f"{size_text(free)} free ({size_text(KEEP_FREE_BYTES)} of it kept free): nothing "
        "generated; ask for fewer items (N=) or free some disk")
  return [f"{folder}/{listing}: {new:,} more {listing.removesuffix('.txt')} for {why}, about "
          f"{size_text(size)} ({size_text(free)} free)"
          for listing, (new, size) in plans.items()]


class DiskTooSmall(Exception):
  pass


def generate(folder: pathlib.Path, wanted: dict[str, int], vocab: pathlib.Path) -> None:
  writers = {"images.txt": lambda n: write_images(folder, n),
             "scenes.txt": lambda n: write_scenes(folder, n),
             "sentences.txt": lambda n: write_sentences(folder, n, vocab)}
  for listing, count in wanted.items():
    logging.info("%s", writers[listing](count))


def describe(items: int | str | None, benchmarks: list[str]) -> str:
  if not benchmarks:
    return f"every benchmark at {f'N={items}' if items else 'the largest local default'}"
  default = "its local default" if len(benchmarks) == 1 else "their local defaults"
  return f"{', '.join(benchmarks)} at {f'N={items}' if items else default}"


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description="Generate the local benchmark datasets.")
  parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("data"))
  parser.add_argument("--items", type=cli_types.items, default=None,
                      help="items per run (default: the benchmark's local default); `share`: "
                           "one Dataflow worker's share")
  parser.add_argument("--benchmark", action="append", default=[],
                      help="only the input list this benchmark's task reads, at the count its "
                           "run takes (repeatable; default: every list, at the largest count)")
  parser.add_argument("--profile", action="append", default=[],
                      help="the profiles whose runs the data is for (N=share depends on it)")
  parser.add_argument("--vocab", type=pathlib.Path,
                      default=pathlib.Path("models") / "bert-uncased-vocab.txt")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  try:
    wanted = counts(args.items, args.benchmark, args.profile)
    for line in check_disk(args.out, wanted, describe(args.items, args.benchmark)):
      logging.info("%s", line)
  except (ValueError, DiskTooSmall) as e:  # an unknown name (ProfileError too), the disk
    print(f"error: data: {e}", file=sys.stderr)
    return 2
  generate(args.out, wanted, args.vocab)
  return 0


if __name__ == "__main__":
  sys.exit(main())
