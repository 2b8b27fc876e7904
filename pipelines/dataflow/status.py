"""While a Dataflow job runs: a steady status line (dataflow.watch feeds it every poll)."""
from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

from pipelines import progress


class JobStatus:
  """While a Dataflow job runs (dataflow.watch feeds it every poll): the console URL first,
  then a line with the job's state and elapsed time at every change of state and at least
  every `interval_s`, and the final state with the URL again."""

  def __init__(self, console_url: str, *, interval_s: float = 30.0,
               stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic):
    self.console_url = console_url
    self.interval_s = interval_s
    self.stream = stream or sys.stderr
    self.clock = clock
    self.started = clock()
    self._shown: tuple[str, float] | None = None  # (what, when) of the last line
    self._print(f"Dataflow job: {console_url}")

  def update(self, state: object, note: str = "") -> None:
    """A poll's answer: a state (Beam's PipelineState or 'JOB_STATE_RUNNING'), with a note
    such as why the status was unavailable."""
    shown = _state_name(state) + (f" ({note})" if note else "")
    now = self.clock()
    if self._shown and self._shown[0] == shown and now - self._shown[1] < self.interval_s:
      return
    self._shown = (shown, now)
    self._print(f"Dataflow job {shown}, {progress.duration(now - self.started)} elapsed")

  def finish(self, state: object) -> None:
    self._print(f"Dataflow job {_state_name(state)} after "
                f"{progress.duration(self.clock() - self.started)}: {self.console_url}")

  def _print(self, line: str) -> None:
    print(line, file=self.stream, flush=True)


def _state_name(state: object) -> str:
  name = str(getattr(state, "name", state) or "UNKNOWN")
  return name.removeprefix("PipelineState.").removeprefix("JOB_STATE_")
