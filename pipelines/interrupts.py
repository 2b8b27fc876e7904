"""Local runs that are interrupted, and SDK worker processes that die.

Ctrl-C (SIGINT) or SIGTERM while the FnApiRunner runs: the launcher stops the SDK worker
processes itself (Beam would wait for them to finish their bundles), the run ends with
Cancelled, and the launcher records it as 'cancelled' with what the workers reported so far
(progress.py) and exits 128 + the signal (130, 143). A second signal while stopping is ignored.

An SDK worker process that dies by itself (OOM killer, `kill -9`) fails the run with WorkerDied,
which names its exit signal when Beam saw it exit, instead of gRPC's "Channel closed
prematurely".

Both end in one line of their own: Beam's error logs and thread tracebacks during the run are
held, and shown at the end only when they explain the outcome (a failure of Beam's own), not
for an interrupt or a dead worker, whose echoes they are.
"""
from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import re
import signal
import threading
import time

SDK_WORKER = "apache_beam.runners.worker.sdk_worker_main"
# What Beam's SubprocessSdkWorker raises in its thread when a worker's `sh -c` exits.
_WORKER_EXIT = re.compile(r"Worker subprocess exited with return code (-?\d+)")


class Cancelled(RuntimeError):
  """The run was interrupted by a signal; its worker processes were stopped."""

  def __init__(self, signal_name: str, detail: str = ""):
    super().__init__(f"interrupted by {signal_name}" + (f": {detail}" if detail else ""))
    self.signal_name = signal_name


class WorkerDied(RuntimeError):
  """An SDK worker process died while the run needed it."""


class WorkerStalled(RuntimeError):
  """An SDK worker process made no progress for a bound (stopped, hung): the run failed
  rather than wait forever (progress.StallWatch decides)."""


class Stopped(BaseException):
  """SIGINT or SIGTERM during a step stopped by raising (`stoppable`): not an Exception, so
  nothing on the way catches it as a failure."""

  def __init__(self, signal_name: str):
    super().__init__(signal_name)
    self.signal_name = signal_name


@contextlib.contextmanager
def stoppable():
  """For the block's length, SIGINT and SIGTERM raise Stopped in the main thread (SIGTERM
  would otherwise end the process on the spot, before anything is written)."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return

  def stop(signum, frame):
    raise Stopped(signal.Signals(signum).name)
  previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
  try:
    yield
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)


class _Stop(BaseException):
  """Raised in the main thread by the signal handler (not an Exception: nothing catches it as
  a failed element)."""


def exit_code(signal_name: str) -> int:
  return 128 + signal.Signals[signal_name]


def describe_exit(code: int) -> str:
  """'killed by SIGKILL' for -9 (the process itself) or 137 (its `sh -c`, 128 + 9)."""
  signum = -code if code < 0 else code - 128 if code > 128 else None
  try:
    return f"killed by {signal.Signals(signum).name}" if signum else f"exit code {code}"
  except ValueError:
    return f"exit code {code}"


def _parents() -> dict[int, int]:
  parents = {}
  for entry in pathlib.Path("/proc").iterdir():
    if entry.name.isdigit():
      try:
        parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
      except (OSError, ValueError, IndexError):
        pass  # gone meanwhile
  return parents


def _cmdline(pid: int) -> str:
  try:
    return pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
  except OSError:
    return ""


def state(pid: int) -> str | None:
  """The process's state letter (R, S, D, T stopped, t traced, Z), None once it is gone."""
  try:
    return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
  except (OSError, IndexError):
    return None


def alive(pid: int) -> bool:
  """Running (a zombie has finished: only its parent's wait is left)."""
  return state(pid) not in (None, "Z")


def sdk_workers(root: int | None = None) -> list[int]:
  """The pids of `root`'s (default: this process's) descendants that run Beam's SDK worker:
  each `sh -c` Beam starts and the Python process under it."""
  parents = _parents()
  found, frontier = set(), {root or os.getpid()}
  while frontier:
    frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
    found |= frontier
  return sorted(pid for pid in found if SDK_WORKER in _cmdline(pid))


def stop_workers(pids: list[int], grace_s: float = 5.0) -> None:
  """SIGTERM, then SIGKILL for any still running after `grace_s`."""
  for sig in (signal.SIGTERM, signal.SIGKILL):
    for pid in pids:
      try:
        os.kill(pid, sig)
      except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
      time.sleep(0.05)
    pids = [pid for pid in pids if alive(pid)]
    if not pids:
      return


class _HeldErrors(logging.Filter):
  """On the root handlers: keeps Beam's ERROR records back."""

  def __init__(self):
    super().__init__()
    self.records: list[logging.LogRecord] = []

  def filter(self, record: logging.LogRecord) -> bool:
    if record.name.startswith("apache_beam") and record.levelno >= logging.ERROR:
      self.records.append(record)
      return False
    return True


_watching: "LocalWatch | None" = None  # the local run under way in this process


def stall(reason: str) -> bool:
  """From any thread: fails the local run being watched with WorkerStalled(reason), its worker
  processes stopped. False where no run is watched (nothing is done)."""
  watch = _watching
  if watch is None or watch.signal_name or watch.stall_reason:
    return False
  watch.stall_reason = reason
  os.kill(os.getpid(), signal.SIGUSR1)  # handled in the main thread by the watch
  return True


class LocalWatch:
  """Around a local p.run(): turns SIGINT/SIGTERM into a stop (workers stopped, then _Stop in
  the main thread), and a stall (SIGUSR1 from `stall`) into a failure; collects the exit codes
  Beam's worker threads report, and holds Beam's error output until the outcome is known."""

  def __init__(self):
    self.signal_name: str | None = None
    self.stall_reason: str | None = None
    self.worker_exits: list[int] = []
    self.explained = False  # the outcome is a Cancelled or WorkerDied: Beam's echoes dropped
    self._previous: dict[int, object] = {}
    self._previous_hook = None
    self._held = _HeldErrors()
    self._held_threads: list = []
    self._handlers: list[logging.Handler] = []

  def __enter__(self) -> "LocalWatch":
    global _watching
    if threading.current_thread() is threading.main_thread():
      self._previous = {s: signal.signal(s, self._on_signal)
                        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
      _watching = self
    self._previous_hook = threading.excepthook
    threading.excepthook = self._on_thread_error
    self._handlers = list(logging.getLogger().handlers)
    for handler in self._handlers:
      handler.addFilter(self._held)
    return self

  def __exit__(self, *exc) -> None:
    global _watching
    _watching = None if _watching is self else _watching
    threading.excepthook = self._previous_hook
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    for handler in self._handlers:
      handler.removeFilter(self._held)
    if not self.explained:
      for record in self._held.records:
        logging.getLogger(record.name).handle(record)
      for args in self._held_threads:
        self._previous_hook(args)

  def _on_signal(self, signum, frame) -> None:
    if signum == signal.SIGUSR1:
      if not self.stall_reason or self.signal_name:
        return  # not ours to act on, or already stopping
      stop_workers(sdk_workers())
      raise _Stop("stalled")
    if self.signal_name:
      return  # already stopping
    self.signal_name = signal.Signals(signum).name
    stop_workers(sdk_workers())
    raise _Stop(self.signal_name)

  def _on_thread_error(self, args) -> None:
    found = _WORKER_EXIT.search(str(args.exc_value))
    if found and args.thread is not None and args.thread.name == "run_worker":
      self.worker_exits.append(int(found.group(1)))  # said once, in the run's error
      return
    self._held_threads.append(args)

  def outcome(self, error: BaseException | None) -> BaseException | None:
    """What the launcher should see for a run that ended with `error` (None: it finished)."""
    result = self._outcome(error)
    self.explained = isinstance(result, (Cancelled, WorkerDied, WorkerStalled))
    return result

  def _outcome(self, error: BaseException | None) -> BaseException | None:
    if self.stall_reason:
      return WorkerStalled(self.stall_reason)
    if self.signal_name:
      return Cancelled(self.signal_name, "the run and its SDK worker processes were stopped")
    if error is None:
      return None
    died = [code for code in self.worker_exits if code != 0]
    beam_says = (str(error).strip().splitlines() or [type(error).__name__])[-1]
    if died:  # the first is the cause; the others lost their runner with it
      others = (f"; {len(died) - 1} more ended after it "
                f"({', '.join(describe_exit(code) for code in died[1:])})" if died[1:] else "")
      return WorkerDied(f"an SDK worker process died ({describe_exit(died[0])}){others}; the "
                        f"run stopped (Beam: {beam_says[:200]})")
    if "Channel closed prematurely" in str(error):
      return WorkerDied(f"an SDK worker process died (exit status unknown); the run stopped "
                        f"(Beam: {beam_says[:200]})")
    return error
