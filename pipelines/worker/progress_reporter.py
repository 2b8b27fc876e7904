"""Worker side of the live progress (the launcher's side is pipelines/progress.py): each SDK
process keeps its cumulative item count in one small file of the folder the launcher names in
BENCH_PROGRESS_DIR; where the variable is unset (Dataflow workers) reporting does nothing."""
from __future__ import annotations

import os
import pathlib
import threading
import uuid

ENV_VAR = "BENCH_PROGRESS_DIR"


class ProgressReporter:
  """Worker side: this process's cumulative item count in one small file of the folder."""

  def __init__(self, folder: str | os.PathLike):
    self.folder = pathlib.Path(folder)
    self.path = self.folder / f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    self.count = 0
    self._lock = threading.Lock()

  def add(self, n: int) -> None:
    with self._lock:  # SDK worker threads of one process share this reporter
      self.count += n
      tmp = self.path.with_name(self.path.name + ".tmp")
      try:
        tmp.write_text(str(self.count))
        os.replace(tmp, self.path)  # readers see the old or the new count, never half of one
      except OSError:  # the launcher removed the folder (run over) or it is not writable
        pass


class _NoReporter:
  count = 0

  def add(self, n: int) -> None:
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
