"""What was published where: one small JSON file per run beside the records
(`<results>/ledger/<run id>.json`), so publishers only ever read records.

    {target name ("influxdb", "bigquery"): {
        "status": "ok" | "failed",   # "ok" once ANY attempt delivered the run to this target
        "target", "at", "error",     # of the latest attempt (error None when it succeeded)
        "last_attempt": "ok" | "failed",
        "attempts": [{"status", "target", "at", "error"}, ...]}}   # every attempt, oldest first

A delivery counts for the target it went to: "target" describes the server (URL without
credentials, database / dataset), so a run delivered only to a server since replaced in .env
is sent to the new one. A version 1 record kept these outcomes inside itself: they are read as
the first attempts (Record.legacy_publish).
"""
from __future__ import annotations

import json
import pathlib
import re
from typing import Any

from pipelines.record.schema import RUN_ID, Record
from pipelines.record.store import write_atomically


def path(root: pathlib.Path, run_id: str) -> pathlib.Path:
  if not RUN_ID.fullmatch(run_id):  # the record loader refuses such ids already
    raise ValueError(f"run id {run_id[:80]!r} cannot name a file")
  return root / "ledger" / f"{run_id}.json"


def _scrub(text: str | None) -> str | None:
  """Credentials written inside a URL ('://user:pw@host', up to the last '@', or a URL without
  a scheme after 'at '), as outcomes written before they were redacted may hold them."""
  if not text:
    return text
  return re.sub(r"\bat \S*@", "at ", re.sub(r"://\S*@", "://", str(text)))


def _read(root: pathlib.Path, run_id: str) -> dict[str, Any]:
  try:
    data = json.loads(path(root, run_id).read_text())
  except (OSError, ValueError):
    return {}
  return data if isinstance(data, dict) else {}


def _attempts_in(entry: Any) -> list[dict[str, Any]]:
  if not isinstance(entry, dict):
    return []
  found = entry.get("attempts") or [entry]
  return [{"status": a.get("status"), "target": _scrub(a.get("target")), "at": a.get("at"),
           "error": _scrub(a.get("error"))} for a in found if isinstance(a, dict)]


def attempts(root: pathlib.Path, record: Record, name: str) -> list[dict[str, Any]]:
  """Every attempt to publish the run to target `name`, oldest first."""
  return (_attempts_in(record.legacy_publish.get(name))
          + _attempts_in(_read(root, record.run_id).get(name)))


def is_published(root: pathlib.Path, record: Record, name: str,
                 target: str | None = None) -> bool:
  """True once any attempt delivered the run to target `name` (to the server described by
  `target`, when given)."""
  return _delivered(attempts(root, record, name), target)


def _delivered(history: list[dict[str, Any]], target: str | None) -> bool:
  return any(a["status"] == "ok" and (target is None or a["target"] == _scrub(target))
             for a in history)


def record_attempt(root: pathlib.Path, record: Record, name: str,
                   attempt: dict[str, Any]) -> dict[str, Any]:
  """Adds one attempt ({status, target, at, error}) to the run's ledger; returns the target's
  entry (entries())."""
  ledger = _read(root, record.run_id)
  own = _attempts_in(ledger.get(name)) + [attempt]  # a v1 record's stay in the record
  ledger[name] = _entry(own, own)
  write_atomically(path(root, record.run_id), json.dumps(ledger, indent=2, sort_keys=True) + "\n")
  return entries(root, record)[name]


def _entry(history: list[dict[str, Any]], kept: list[dict[str, Any]]) -> dict[str, Any]:
  """A target's entry: delivered or not (any attempt to the latest one's server), the latest
  attempt, and `kept`, the attempts listed."""
  last = history[-1]
  return {"status": "ok" if _delivered(history, last["target"]) else "failed",
          "target": last["target"], "at": last["at"], "error": last["error"],
          "last_attempt": last["status"], "attempts": kept}


def entries(root: pathlib.Path, record: Record) -> dict[str, dict[str, Any]]:
  """Each target's entry over every attempt, oldest first (a version 1 record's own, then the
  ledger's)."""
  names = sorted({*record.legacy_publish, *_read(root, record.run_id)})
  found = {name: attempts(root, record, name) for name in names}
  return {name: _entry(history, history) for name, history in found.items() if history}
