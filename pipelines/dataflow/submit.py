"""Submitting a Dataflow job: staging to TEMP_LOCATION, then jobs.create, bounded by
DATAFLOW_SUBMIT_TIMEOUT_S (default 300), with a line every SUBMIT_NOTE_EVERY_S; Ctrl-C or
SIGTERM meanwhile is a JobCancelled naming the job to look for."""
from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any, Mapping

from pipelines import progress
from pipelines.dataflow.watch import (
  Interrupted,
  JobCancelled,
  JobError,
  status_interval_s,
  stop_requests,
)

# --- submitting: staging to TEMP_LOCATION, then jobs.create ----------------------------------
# Beam's staging retries an unreachable storage endpoint for minutes without a word, and a
# Ctrl-C there ends in a traceback. p.run() therefore runs on a thread: the launcher says what
# it waits for, gives up after DATAFLOW_SUBMIT_TIMEOUT_S, and turns a signal into JobCancelled.

SUBMIT_NOTE_EVERY_S = 10  # or DATAFLOW_STATUS_S when that is shorter


class SubmitTimeout(JobError):
  """Staging or job creation did not finish in time; nothing is watched."""


def submit_timeout_s(env: Mapping[str, str] = os.environ) -> float:
  return float(env.get("DATAFLOW_SUBMIT_TIMEOUT_S") or 300)


def submit(p, s: Mapping[str, str], job_name: str):
  """p.run() for a Dataflow pipeline, bounded, with a line every SUBMIT_NOTE_EVERY_S."""
  done = threading.Event()
  outcome: dict[str, Any] = {}

  def run() -> None:
    try:
      outcome["result"] = p.run()
    except BaseException as e:  # noqa: BLE001 - handed to the launcher's thread
      outcome["error"] = e
    finally:
      done.set()

  limit, start = submit_timeout_s(), time.monotonic()
  where = f"staging job {job_name} to {s['TEMP_LOCATION']} and submitting it"
  with stop_requests() as stop:
    threading.Thread(target=run, name="dataflow-submit", daemon=True).start()
    while not done.is_set():
      elapsed = time.monotonic() - start
      if elapsed >= limit:
        raise SubmitTimeout(
            f"{where} did not finish in {limit:.0f} s (DATAFLOW_SUBMIT_TIMEOUT_S): is the "
            f"storage endpoint reachable? Nothing was watched; if job {job_name} appears in "
            "the console, cancel it there")
      try:
        stop.wait(min(SUBMIT_NOTE_EVERY_S, status_interval_s(), limit - elapsed))
      except Interrupted:
        raise JobCancelled(f"interrupted by {stop.signal_name} while {where}: no job was "
                           f"watched; if job {job_name} appears in the console, cancel it "
                           "there", stop.signal_name) from None
      if not done.is_set():
        print(f"{where}: {progress.duration(time.monotonic() - start)} elapsed",
              file=sys.stderr, flush=True)
  if "error" in outcome:
    raise outcome["error"]
  return outcome["result"]
