"""The SDK worker processes' log entries as the launcher shows them. Beam's logging service
prints each as a whole LogEntry proto (`str(entry)`, a dozen fields on one line); shown here as
one line with its message only, and the warnings every worker gives at start, which say nothing
about the run, are dropped."""
from __future__ import annotations

import logging
import re

_MESSAGE = re.compile(r'message: "(.*?)"(?: log_location|$)', re.M)
# Every SDK worker says these at start, here and on Dataflow alike: the kit's pipelines need no
# main session, no semi-persistent directory, and its own options are read by its DoFns.
EXPECTED = ("No session file found", "Discarding unparseable args",
            "No semi_persistent_directory found")


class WorkerLogLines(logging.Filter):
  """On the root handlers while a local run's workers run: `where` names them in each line."""

  def __init__(self, where: str = "SDK worker"):
    super().__init__()
    self.where = where

  def filter(self, record: logging.LogRecord) -> bool:
    # Beam's two logging services: the FnApiRunner's (an EXTERNAL pool) and the local job
    # service's (multi_processing workers, 'Worker: <entry>')
    if record.module not in ("worker_handlers", "local_job_service"):
      return True
    found = _MESSAGE.search(record.getMessage())
    if not found:
      return True
    text = found.group(1)
    if text.startswith(EXPECTED):
      return False
    record.msg, record.args = f"{self.where}: %s", (text[:500],)
    return True
