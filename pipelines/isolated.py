"""One run in a fresh process, for commands where isolation is the point (`make sweep`: points
must not share a warmed-up process, loaded libraries or torch's thread pools).

  record = isolated.run(overrides)     the caller: resolves nothing itself, gets the record back
  python -m pipelines.isolated RUN_ID  the child: reads the Overrides as JSON on stdin, resolves
                                       and launches them as `python -m pipelines.run` would

The child's output passes through; its one-line refusals and exit codes are run.py's.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import subprocess
import sys
from typing import Any

from pipelines import results_store, run_record
from pipelines.layout import Layout
from pipelines.plan import Overrides

_PATHS = ("data_dir", "models_dir", "results_dir")


class NotStarted(RuntimeError):
  """The run was refused before it started (its one line is in the message)."""


def to_json(o: Overrides) -> str:
  fields = dataclasses.asdict(o)
  fields.update({k: str(fields[k]) for k in _PATHS},
                layout=str(o.layout) if o.layout else None, beam_args=list(o.beam_args))
  return json.dumps(fields)


def from_json(text: str) -> Overrides:
  fields = json.loads(text)
  fields.update({k: pathlib.Path(fields[k]) for k in _PATHS},
                layout=Layout.parse(fields["layout"]) if fields["layout"] else None,
                beam_args=tuple(fields["beam_args"]))
  return Overrides(**fields)


def run(o: Overrides, capture: bool = True) -> dict[str, Any]:
  """Runs `o` in a child process and returns its record, found by the run id given to it."""
  run_id = run_record.new_run_id()
  done = subprocess.run([sys.executable, "-m", "pipelines.isolated", run_id], input=to_json(o),
                        capture_output=capture, text=True)
  try:
    return results_store.find(run_id, o.results_dir)
  except results_store.UnknownRun:
    why = (done.stderr or "").strip()[-2000:] if capture else f"exit code {done.returncode}"
    raise NotStarted(why or f"exit code {done.returncode}") from None


def main(argv: list[str]) -> int:
  from pipelines import run as run_command
  run_command.quiet_logging()
  o = from_json(sys.stdin.read())
  try:
    record = run_command.run_overrides(o, run_id=argv[0])
  except run_command.REFUSALS as e:
    print(f"error: {o.benchmark}: {e}", file=sys.stderr)
    return 2
  except run_command.RecordNotSaved as e:
    print(f"error: {o.benchmark}: {e}", file=sys.stderr)
    return 1
  return run_command.exit_code(record)


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
