"""The local results store: one JSON file per run under results/records/ (the source of truth;
publishing only ever copies from it)."""
from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Iterator

DEFAULT_DIR = pathlib.Path("results")


def _records_dir(root: pathlib.Path) -> pathlib.Path:
  return root / "records"


def path_for(record: dict[str, Any], root: pathlib.Path = DEFAULT_DIR) -> pathlib.Path:
  stamp = record["timestamp"].replace(":", "").replace("-", "")[:15]
  return _records_dir(root) / f"{stamp}_{record['benchmark']}_{record['run_id']}.json"


def save(record: dict[str, Any], root: pathlib.Path = DEFAULT_DIR) -> pathlib.Path:
  """Writes atomically (a crash never leaves half a record) and returns the path."""
  path = path_for(record, root)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(".json.tmp")
  tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
  os.replace(tmp, path)
  return path


def load_all(root: pathlib.Path = DEFAULT_DIR) -> list[dict[str, Any]]:
  """Every record, oldest first."""
  return sorted(_iter(root), key=lambda r: (r["timestamp"], r["run_id"]))


def _iter(root: pathlib.Path) -> Iterator[dict[str, Any]]:
  folder = _records_dir(root)
  if folder.is_dir():
    for path in folder.glob("*.json"):
      yield json.loads(path.read_text())


def find(run_id: str, root: pathlib.Path = DEFAULT_DIR) -> dict[str, Any]:
  matches = [r for r in _iter(root) if r["run_id"].startswith(run_id)]
  if len(matches) != 1:
    raise KeyError(f"run id '{run_id}' matches {len(matches)} records in {root}")
  return matches[0]
