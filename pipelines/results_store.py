"""The local results store: one JSON file per run under results/records/ (the source of truth;
publishing only ever copies from it)."""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import sys
import tempfile
from typing import Any, Iterator

DEFAULT_DIR = pathlib.Path("results")


def _records_dir(root: pathlib.Path) -> pathlib.Path:
  return root / "records"


def path_for(record: dict[str, Any], root: pathlib.Path = DEFAULT_DIR) -> pathlib.Path:
  stamp = record["timestamp"].replace(":", "").replace("-", "")[:15]
  return _records_dir(root) / f"{stamp}_{record['benchmark']}_{record['run_id']}.json"


class NotWritable(OSError):
  """The results store cannot take a record."""


def save(record: dict[str, Any], root: pathlib.Path = DEFAULT_DIR) -> pathlib.Path:
  """Writes atomically (a crash or a full disk never leaves half a record, nor a temp file)
  and returns the path."""
  path = path_for(record, root)
  _write_atomically(path, json.dumps(record, indent=2, sort_keys=True) + "\n")
  return path


def _write_atomically(path: pathlib.Path, text: str) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(path.suffix + ".tmp")
  try:
    with open(tmp, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())  # a full disk shows here, not after the rename
    os.replace(tmp, path)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise


def check_writable(root: pathlib.Path = DEFAULT_DIR) -> None:
  """Raises NotWritable (one line) unless a record can be written under `root` now. Creates
  nothing: it probes the records folder, or the nearest folder above it that exists."""
  folder = _records_dir(root)
  probe_dir = next(d for d in (folder, *folder.absolute().parents) if d.exists())
  try:
    if not probe_dir.is_dir():
      raise NotADirectoryError(20, "not a directory")
    with tempfile.NamedTemporaryFile(dir=probe_dir, prefix=".probe-") as f:
      f.write(b"x" * 4096)
      f.flush()
      os.fsync(f.fileno())
  except OSError as e:
    raise NotWritable(f"the results store {folder} is not writable ({e.strerror}): "
                      "free space or fix its permissions, or set RESULTS=<folder>") from None


@dataclasses.dataclass
class Saved:
  path: pathlib.Path | None
  ok: bool  # saved where it belongs
  message: str = ""


def save_or_fallback(record: dict[str, Any], root: pathlib.Path = DEFAULT_DIR) -> Saved:
  """Saves the record; when the store fails (read-only, disk full) the record goes to the temp
  folder instead, and as the last resort its full JSON goes to stderr. A finished run's
  numbers are never lost."""
  try:
    return Saved(save(record, root), ok=True)
  except OSError as e:
    problem = f"could not write the run record to {_records_dir(root)} ({e.strerror or e})"
  fallback_root = pathlib.Path(tempfile.gettempdir()) / "beam-bench-results"
  try:
    path = save(record, fallback_root)
    return Saved(path, ok=False, message=f"{problem}; saved it to {path} instead "
                 f"(copy it to {_records_dir(root)}/ to keep it)")
  except OSError:
    print(json.dumps(record, indent=2, sort_keys=True), file=sys.stderr)
    return Saved(None, ok=False, message=f"{problem}, nor to {fallback_root}; "
                 "the record's full JSON is printed above")


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
