"""Progress on long work: a live bar for local benchmark runs, fed by the workers, and a steady
status line while waiting on a Dataflow job.

Beam metrics are only readable once a run ends, so the workers report through a side channel:
  * the launcher (`ProgressDisplay`, around p.run()/wait_until_finish()) creates an empty folder
    and puts its path in the environment variable BENCH_PROGRESS_DIR *before* the pipeline runs.
    In-process SDK workers see it directly; the FnApiRunner's multi-processing workers are
    started with a copy of the launcher's environment, so they inherit it;
  * in every worker process, `reporter()` returns one `ProgressReporter` per folder, and the
    model handler calls `.add(len(batch))` after each batch (the dead-letter step calls
    `.add_dead()` per dead letter): one atomic rewrite (write a temp file, rename) of
    `<folder>/<pid>-<token>` holding the process's cumulative tally as JSON
    (`{"items": .., "batches": .., "dead_lettered": ..}`);
  * the launcher's display thread sums those files every 0.5 s into a tqdm bar (items done of
    total, rate, ETA) on a terminal, or a plain line every 30 s in logs; it ends on the exact sum.
    An interrupted run's record takes its partial counts from the same files (`totals`): Beam's
    own metrics are lost with a run that never finishes.
Where the variable is unset (Dataflow workers, tests that do not ask) `.add` does nothing.
"""
from __future__ import annotations

import io
import json
import os
import pathlib
import shutil
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Optional, TextIO

from pipelines import interrupts
from pipelines.worker.progress_reporter import ENV_VAR, TALLIES, reporter  # noqa: F401

POLL_S = 0.5
PLAIN_EVERY_S = 30.0
# A local run whose workers report nothing for this long fails, naming them, rather than wait
# forever (model loads and CPU compiles take minutes, never this long without a batch).
STALL_VAR, DEFAULT_STALL_S = "BENCH_STALL_S", 600.0
STOPPED_S = 10.0  # an SDK worker process stopped (SIGSTOP, a debugger) this long is stalled
STALL_CHECK_S = 2.0


def read_tallies(folder: str | os.PathLike) -> dict[str, dict[str, int]]:
  """The tally each reporter wrote, by file name (`<pid>-<token>`); a bare number is an item
  count."""
  tallies = {}
  try:
    entries = list(os.scandir(folder))
  except OSError:
    return tallies
  for entry in entries:
    if entry.name.endswith(".tmp"):
      continue
    try:
      value = json.loads(pathlib.Path(entry.path).read_text() or "0")
    except (OSError, ValueError):
      continue  # replaced between listing and reading: the next poll gets it
    tally = value if isinstance(value, dict) else {"items": value}
    tallies[entry.name] = {name: int(tally.get(name) or 0) for name in TALLIES}
    if isinstance(tally.get("loaded"), dict):
      tallies[entry.name]["loaded"] = tally["loaded"]
  return tallies


def read_counts(folder: str | os.PathLike) -> dict[str, int]:
  """The item count each reporter wrote, by file name (`<pid>-<token>`)."""
  return {name: tally["items"] for name, tally in read_tallies(folder).items()}


def sum_tallies(folder: str | os.PathLike) -> dict[str, Any]:
  """The processes' tallies summed, and what they loaded (one value, or `mixed:a,b`)."""
  tallies = read_tallies(folder).values()
  out: dict[str, Any] = {name: sum(t[name] for t in tallies) for name in TALLIES}
  said: dict[str, set[str]] = {}
  for tally in tallies:
    for fact, value in (tally.get("loaded") or {}).items():
      said.setdefault(fact, set()).add(str(value))
  out["loaded"] = {fact: values.pop() if len(values) == 1 else "mixed:" + ",".join(
      sorted(values)) for fact, values in said.items()}
  return out


class ProgressDisplay:
  """Launcher side: sets BENCH_PROGRESS_DIR, polls the workers' files on a thread and shows the
  sum. Context manager, or start()/stop(). `interactive` defaults to stream.isatty()."""

  def __init__(self, total: int, description: str = "", unit: str = "item", *,
               stream: TextIO | None = None, interactive: bool | None = None,
               folder: str | os.PathLike | None = None, poll_s: float = POLL_S,
               plain_every_s: float = PLAIN_EVERY_S, stall_s: float | None = None):
    self.total = total
    self.description = description
    self.unit = unit
    self.stream = stream or sys.stderr
    self.interactive = (_isatty(self.stream) if interactive is None else interactive)
    self._own_folder = folder is None
    self.folder = pathlib.Path(folder) if folder else None
    self.poll_s = poll_s
    self.plain_every_s = plain_every_s
    self.done = 0
    self._progress = 0  # items, batches and dead letters: any change is progress
    self.totals: dict[str, Any] | None = None  # the workers' final tallies, once stopped
    self._bar = None
    self._stop = threading.Event()
    self._thread: Optional[threading.Thread] = None
    self._previous_env: Optional[str] = None
    self._started = 0.0
    self._last_plain = 0.0
    self._stalls = StallWatch(stall_s) if stall_s else None

  def start(self) -> "ProgressDisplay":
    if self._thread is not None:
      return self
    if self.folder is None:
      self.folder = pathlib.Path(tempfile.mkdtemp(prefix="bench-progress-"))
    self.folder.mkdir(parents=True, exist_ok=True)
    self._previous_env = os.environ.get(ENV_VAR)
    os.environ[ENV_VAR] = str(self.folder)  # before p.run(): worker processes inherit it
    self._started = self._last_plain = time.monotonic()
    if self.interactive:
      from tqdm import tqdm
      size = _terminal_size(self.stream)  # some ptys report 0x0, which would hide the bar
      sized = {} if size.columns and size.lines else {"ncols": 80, "nrows": 24}
      self._bar = tqdm(total=self.total, desc=self.description, unit=self.unit,
                       file=self.stream, dynamic_ncols=not sized, leave=True, **sized)
    self._thread = threading.Thread(target=self._loop, name="bench-progress", daemon=True)
    self._thread.start()
    return self

  def _loop(self) -> None:
    while not self._stop.wait(self.poll_s):
      self._refresh()
      if not self.interactive and time.monotonic() - self._last_plain >= self.plain_every_s:
        self._last_plain = time.monotonic()
        print(self.plain_line(), file=self.stream, flush=True)
      if self._stalls and (reason := self._stalls.check(self._progress)):
        interrupts.stall(reason)  # the run fails with this reason, its workers stopped
        self._stalls = None

  def _refresh(self) -> None:
    tallies = read_tallies(self.folder).values()
    self._progress = sum(t["items"] + t["batches"] + t["dead_lettered"] for t in tallies)
    done = sum(t["items"] for t in tallies)
    if self._bar is not None and done != self._bar.n:
      self._bar.update(done - self._bar.n)
    self.done = done

  def plain_line(self) -> str:
    elapsed = time.monotonic() - self._started
    rate = self.done / elapsed if elapsed > 0 else 0.0
    left = (f", ETA {duration((self.total - self.done) / rate)}"
            if rate > 0 and self.total > self.done else "")
    pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
    return (f"{self.description + ': ' if self.description else ''}{self.done}/{self.total} "
            f"{self.unit}s{pct}, {rate:.2f} {self.unit}s/s{left}")

  def stop(self) -> None:
    if self._thread is None:
      return
    self._stop.set()
    self._thread.join()
    self._thread = None
    self._refresh()  # the final, exact count
    self.totals = sum_tallies(self.folder)
    if self._bar is not None:
      self._bar.close()
      self._bar = None
    if self._previous_env is None:
      os.environ.pop(ENV_VAR, None)
    else:
      os.environ[ENV_VAR] = self._previous_env
    if self._own_folder and self.folder is not None:
      shutil.rmtree(self.folder, ignore_errors=True)
      self.folder = None

  def __enter__(self) -> "ProgressDisplay":
    return self.start()

  def __exit__(self, *exc) -> None:
    self.stop()


class _NoDisplay:
  totals = None

  def start(self) -> "_NoDisplay":
    return self

  def stop(self) -> None:
    pass


def for_launch(local: bool, total: int, description: str) -> ProgressDisplay | _NoDisplay:
  """What the launcher wraps around a run: the live display for local runs, watching for a
  stall, nothing on Dataflow (see JobStatus)."""
  if not (local and total):
    return _NoDisplay()
  return ProgressDisplay(total, description, stall_s=stall_s())


def stall_s(env=os.environ) -> float:
  """BENCH_STALL_S, seconds without progress before a local run fails (default 600)."""
  text = env.get(STALL_VAR, "").strip()
  try:
    value = float(text) if text else DEFAULT_STALL_S
  except ValueError:
    value = -1.0
  if not 1 <= value < float("inf"):
    print(f"warning: {STALL_VAR}={text!r} is not a number of seconds from 1: using "
          f"{DEFAULT_STALL_S:.0f}", file=sys.stderr)
    return DEFAULT_STALL_S
  return value


class StallWatch:
  """Says why a local run is stalled, or None: an SDK worker process stopped (state T) for
  STOPPED_S, or no progress from any for `stall_s`."""

  def __init__(self, stall_s: float, clock: Callable[[], float] = time.monotonic):
    self.stall_s = stall_s
    self.clock = clock
    self._last_progress: tuple[int, float] | None = None
    self._stopped_since: dict[int, float] = {}
    self._checked = 0.0

  def check(self, progress: int) -> str | None:
    now = self.clock()
    if self._last_progress is None or self._last_progress[0] != progress:
      self._last_progress = (progress, now)
    if now - self._checked < STALL_CHECK_S:
      return None
    self._checked = now
    workers = {pid: interrupts.state(pid) for pid in interrupts.sdk_workers()}
    for pid, state in workers.items():
      if state in ("T", "t"):
        since = self._stopped_since.setdefault(pid, now)
        if now - since >= STOPPED_S:
          return (f"SDK worker process {pid} is stopped (state {state}): no progress for "
                  f"{now - self._last_progress[1]:.0f} s")
      else:
        self._stopped_since.pop(pid, None)
    if now - self._last_progress[1] >= self.stall_s:
      named = ", ".join(f"{pid} (state {state})" for pid, state in sorted(workers.items()))
      return (f"no SDK worker process made progress for {self.stall_s:.0f} s ({STALL_VAR})"
              + (f": processes {named}" if named else ""))
    return None


def step(index: int, count: int, name: str) -> str:
  """`[2/4] resnet152`: which step of a multi-benchmark command is running."""
  return f"[{index}/{count}] {name}"


def duration(seconds: float) -> str:
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _terminal_size(stream: TextIO) -> os.terminal_size:
  try:
    return os.get_terminal_size(stream.fileno())
  except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
    return os.terminal_size((0, 0))


def _isatty(stream: TextIO) -> bool:
  try:
    return stream.isatty()
  except (AttributeError, ValueError):
    return False
