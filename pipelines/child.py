"""One run in a fresh process: the one way every command built on runs starts one (bench-all,
sweep, perf, compare-profiles, plan-check, gpu-check). A fresh process is what a user (or a
Dataflow worker) pays for, start-up included, and points never share a warmed-up process,
loaded libraries or torch's thread pools.

  record = child.run(overrides)      the parent: gets the child's record back
  python -m pipelines.child RUN_ID   the child: reads the Overrides as JSON on stdin, resolves
                                     and runs them as `python -m pipelines.run` would

The child's output is kept back (`quiet`, the default: a sweep's or perf's own lines are the
story) and shown only if the run never started, or passes through (`quiet=False`: bench-all).
Ctrl-C or SIGTERM to the parent reaches the child, which stops its run and writes its record;
the parent waits for that, then raises Interrupted with it, so a command keeps what finished
and passes the signal on.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading

from pipelines.layout import Layout
from pipelines.plan import Overrides
from pipelines.record import build, store
from pipelines.record.schema import Record

_PATHS = ("data_dir", "models_dir", "results_dir")
EXIT_REFUSED = 2


class NotStarted(RuntimeError):
  """The run was refused before it started, or wrote no record (its one line is the message)."""


class TimedOut(RuntimeError):
  """The child ran past its time limit and was stopped (`record`: what it saved, if any)."""

  def __init__(self, seconds: float, record: Record | None):
    super().__init__(f"ran past its limit of {seconds:.0f} s and was stopped")
    self.record = record


class Interrupted(RuntimeError):
  """The command got SIGINT or SIGTERM during a child's run; `record` is what the child saved
  (None if it stopped before it had one)."""

  def __init__(self, signal_name: str, record: Record | None):
    super().__init__(f"interrupted by {signal_name}")
    self.signal_name = signal_name
    self.record = record

  @property
  def exit_code(self) -> int:
    return 128 + signal.Signals[self.signal_name]


def to_json(asked: Overrides) -> str:
  fields = dataclasses.asdict(asked)
  fields.update({k: str(fields[k]) for k in _PATHS},
                layout=str(asked.layout) if asked.layout else None, beam_args=list(asked.beam_args))
  return json.dumps(fields)


def from_json(text: str) -> Overrides:
  fields = json.loads(text)
  fields.update({k: pathlib.Path(fields[k]) for k in _PATHS},
                layout=Layout.parse(fields["layout"]) if fields["layout"] else None,
                beam_args=tuple(fields["beam_args"]))
  return Overrides(**fields)


def run(asked: Overrides, quiet: bool = True, timeout_s: float | None = None) -> Record | None:
  """Runs `asked` in a child process and returns its record, found by the run id given to it
  (None for a Dataflow dry run, which records nothing). Past `timeout_s` the child gets
  SIGTERM (it stops its run and records it), then SIGKILL 30 s later: TimedOut."""
  run_id = build.new_run_id()
  # Its own process group, so a last-resort kill takes its SDK worker processes with it; the
  # signals a terminal sends this group reach it through `forward`.
  child = subprocess.Popen([sys.executable, "-m", "pipelines.child", run_id],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE if quiet else None,
                           stderr=subprocess.PIPE if quiet else None, text=True,
                           start_new_session=True)
  stopped: list[str] = []

  def forward(signum, frame):  # the child stops its run and writes its record; we wait for it
    if not stopped:
      stopped.append(signal.Signals(signum).name)
      child.send_signal(signum)
  handlers = {}
  if threading.current_thread() is threading.main_thread():
    handlers = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
  timed_out = False
  try:
    try:
      out, err = child.communicate(to_json(asked), timeout=timeout_s)
    except subprocess.TimeoutExpired:
      timed_out = True
      child.terminate()
      try:
        out, err = child.communicate(timeout=30)
      except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        out, err = child.communicate()
  finally:
    for signum, handler in handlers.items():
      signal.signal(signum, handler)
  try:
    record = store.find(run_id, asked.results_dir)
  except store.UnknownRun:
    record = None
  if timed_out:
    raise TimedOut(timeout_s, record)
  name = stopped[0] if stopped else _signal_of(child.returncode)
  if name:
    raise Interrupted(name, record)
  if record is None and child.returncode == 0 and asked.dry_run:
    return None
  if record is None:
    lines = [line for line in (err or "").splitlines() if line.startswith("error:")]
    why = lines[-1] if lines else ((out or "") + (err or "")).strip()[-2000:]
    raise NotStarted(why or f"exit code {child.returncode}")
  return record


def _signal_of(code: int) -> str | None:
  """SIGINT/SIGTERM when the child ended by one (or said so with 128 + it)."""
  for sig in (signal.SIGINT, signal.SIGTERM):
    if code in (-sig, 128 + sig):
      return sig.name
  return None


def main(argv: list[str]) -> int:
  from pipelines import run as run_command
  run_command.quiet_logging()
  return run_command.run_and_exit_code(from_json(sys.stdin.read()), run_id=argv[0])


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
