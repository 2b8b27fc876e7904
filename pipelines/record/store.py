"""The local results store: one JSON file per run under results/records/ (the source of truth;
publishing only ever reads it), the sweeps and the plans beside it. Records are read through
the one loader (upgrade.py, then schema.problem): a reader never meets a record it would crash
on or misread."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import re
import sys
import tempfile
from typing import Any, Iterator

from pipelines import sweep_results
from pipelines.record import schema, upgrade
from pipelines.record.schema import Record

DEFAULT_DIR = pathlib.Path("results")


def _records_dir(root: pathlib.Path) -> pathlib.Path:
  return root / "records"


def path_for(record: Record, root: pathlib.Path = DEFAULT_DIR) -> pathlib.Path:
  """records/<start time>_<benchmark>_<run id>.json; names that are not one plain path
  component are refused (a record read from elsewhere can hold anything)."""
  for name, value, pattern in (("run_id", record.run_id, schema.RUN_ID),
                               ("benchmark", record.benchmark, schema.BENCHMARK)):
    if not pattern.fullmatch(value):
      raise ValueError(f"{name} {schema.shown(value[:80])} cannot name a record file")
  stamp = re.sub(r"[^0-9T]", "", record.timestamp)[:15]
  return _records_dir(root) / f"{stamp}_{record.benchmark}_{record.run_id}.json"


class NotWritable(OSError):
  """The results store cannot take a record."""


def save(record: Record, root: pathlib.Path = DEFAULT_DIR) -> pathlib.Path:
  """Writes atomically (a crash or a full disk never leaves half a record, nor a temp file)
  and returns the path."""
  path = path_for(record, root)
  write_atomically(path, json.dumps(record.to_dict(), indent=2, sort_keys=True) + "\n")
  return path


def write_atomically(path: pathlib.Path, text: str) -> None:
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


def save_or_fallback(record: Record, root: pathlib.Path = DEFAULT_DIR) -> Saved:
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
    print(json.dumps(record.to_dict(), indent=2, sort_keys=True), file=sys.stderr)
    return Saved(None, ok=False, message=f"{problem}, nor to {fallback_root}; "
                 "the record's full JSON is printed above")


def load_all(root: pathlib.Path = DEFAULT_DIR) -> list[Record]:
  """Every readable record, oldest first; each other file gets one line on stderr."""
  return sorted((r for _, r in _iter(root) if r is not None),
                key=lambda r: (r.timestamp, r.run_id))


_warned: set[tuple[pathlib.Path, str]] = set()


def _read(path: pathlib.Path) -> tuple[Record | None, str | None]:
  """(record, None), or (None, why it is skipped)."""
  if path.name.startswith("."):
    return None, "a hidden file, not a run record"
  try:
    text = path.read_text()
  except (OSError, UnicodeDecodeError) as e:
    return None, f"unreadable ({getattr(e, 'strerror', None) or e})"
  if not text.strip():
    return None, "empty file"
  try:
    data = upgrade.upgrade(json.loads(text))
  except (json.JSONDecodeError, RecursionError) as e:
    return None, f"not valid JSON, truncated or damaged ({e})"
  problem = schema.problem(data)
  return (None, problem) if problem else (schema.from_dict(data), None)


def _iter(root: pathlib.Path) -> Iterator[tuple[pathlib.Path, Record | None]]:
  """(path, record) per record file; record None for one that was skipped."""
  folder = _records_dir(root)
  if not folder.is_dir():
    return
  for path in sorted(folder.glob("*.json")):
    record, why = _read(path)
    if why and (path, why) not in _warned:
      _warned.add((path, why))  # once per process, however often the store is read
      print(f"{schema.shown(path)}: {why}; skipped", file=sys.stderr)
    yield path, record


class UnknownRun(KeyError):
  def __str__(self) -> str:
    return str(self.args[0])


def find(run_id: str, root: pathlib.Path = DEFAULT_DIR) -> Record:
  found = list(_iter(root))
  matches = [r for _, r in found if r is not None and r.run_id.startswith(run_id)]
  if len(matches) == 1:
    return matches[0]
  if matches:
    raise UnknownRun(f"run id '{schema.shown(run_id)}' matches {len(matches)} records in "
                     f"{_records_dir(root)}: give more of it")
  skipped = [path for path, r in found if r is None and run_id in path.name]
  raise UnknownRun(f"no run {schema.shown(run_id)} in {_records_dir(root)}"
                   + (f" ({skipped[0].name} was skipped, see above)" if skipped else ""))


def latest_sweeps(root: pathlib.Path = DEFAULT_DIR) -> dict[str, dict[str, Any]]:
  """The newest sweep of each benchmark (`make sweep` writes results/sweeps/<bench>-<time>.json);
  a file that is not a sweep, or holds what the report cannot show, gets one line on stderr
  and is skipped."""
  found: dict[str, dict[str, Any]] = {}
  for _, sweep in _json_files(root / "sweeps", "sweep", sweep_results.problem):
    found[sweep["benchmark"]] = sweep  # names sort by time within a benchmark
  return found


def plans(root: pathlib.Path = DEFAULT_DIR) -> dict[str, dict[str, Any]]:
  """The newest `make plan` of each benchmark (results/plans/<bench>.json); a file that is not a
  plan gets one line on stderr and is skipped."""
  return {plan["benchmark"]: plan for path, plan in _json_files(root / "plans", "plan",
                                                                 _plan_problem)
          if not path.name.endswith("-check.json")}  # make plan-check's result


def _plan_problem(plan: Any) -> str | None:
  if not isinstance(plan, dict) or not isinstance(plan.get("benchmark"), str):
    return "not a plan (no benchmark)"
  rows = plan.get("rows")
  if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
    return "rows is not a list of objects"
  numbers = [r.get(k) for r in rows for k in ("job_s", "cost_usd")]
  numbers += list((plan.get("constants") or {}).values())
  if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
             and v >= 0 for v in numbers):
    return "a job time, cost or constant is not a finite number"
  return None


def _json_files(folder: pathlib.Path, what: str, problem) -> Iterator[tuple[pathlib.Path, Any]]:
  for path in sorted(folder.glob("*.json")):
    try:
      data = json.loads(path.read_text())
      why = problem(data)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
      why = f"{type(e).__name__}: {e}"
    if why:
      print(f"{schema.shown(path)}: not a readable {what} ({why}); skipped", file=sys.stderr)
      continue
    yield path, data
