"""Worker side of the live progress (the launcher's side is pipelines/progress.py): each SDK
process keeps its cumulative tally (items, batches, dead letters, and what it loaded: the
device and the weights) in one small file of the folder the launcher names in
BENCH_PROGRESS_DIR; an interrupted run's record is built from those tallies. Where the variable
is unset (Dataflow workers) reporting does nothing."""
from __future__ import annotations

import json
import os
import pathlib
import threading
import uuid

ENV_VAR = "BENCH_PROGRESS_DIR"
TALLIES = ("items", "batches", "dead_lettered")


class ProgressReporter:
  """Worker side: this process's cumulative tally in one small file of the folder."""

  def __init__(self, folder: str | os.PathLike):
    self.folder = pathlib.Path(folder)
    self.path = self.folder / f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    self.tally = dict.fromkeys(TALLIES, 0)
    self.loaded_facts: dict[str, str] = {}
    self._lock = threading.Lock()

  @property
  def count(self) -> int:
    return self.tally["items"]

  def add(self, n: int) -> None:
    """One batch of n items inferred."""
    self._update(items=n, batches=1)

  def add_dead(self, n: int = 1) -> None:
    self._update(dead_lettered=n)

  def loaded(self, **facts: str) -> None:
    """What this process loaded (device_used, weights): said by a record whose run stopped
    before Beam's metrics came."""
    with self._lock:
      self.loaded_facts.update(facts)
    self._update()

  def _update(self, **increments: int) -> None:
    with self._lock:  # SDK worker threads of one process share this reporter
      for name, n in increments.items():
        self.tally[name] += n
      tmp = self.path.with_name(self.path.name + ".tmp")
      try:
        tmp.write_text(json.dumps({**self.tally, "loaded": self.loaded_facts}))
        os.replace(tmp, self.path)  # readers see the old or the new tally, never half of one
      except OSError:  # the launcher removed the folder (run over) or it is not writable
        pass


class _NoReporter:
  count = 0

  def add(self, n: int) -> None:
    pass

  def add_dead(self, n: int = 1) -> None:
    pass

  def loaded(self, **facts: str) -> None:
    pass


_reporters: dict[str, ProgressReporter] = {}
_reporters_lock = threading.Lock()


def reporter() -> ProgressReporter | _NoReporter:
  """This process's reporter for the folder the launcher named, or a no-op without one.
  Looked up per call (a dict read) so one process can serve several runs one after another."""
  folder = os.environ.get(ENV_VAR)
  if not folder:
    return _NoReporter()
  with _reporters_lock:
    if folder not in _reporters:
      _reporters[folder] = ProgressReporter(folder)
    return _reporters[folder]
