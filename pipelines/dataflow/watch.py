"""Submitting a Dataflow job (bounded by DATAFLOW_SUBMIT_TIMEOUT_S, default 300) and watching it
to its end: DATAFLOW_POLL_S between polls (default 10), DATAFLOW_API_RETRIES failed polls in a
row before giving up (default 5); Ctrl-C or SIGTERM cancels the job."""

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Mapping

from pipelines.dataflow.settings import CONSOLE_URL
from pipelines.dataflow.status import JobStatus


def launched_metadata(result, s: Mapping[str, str]) -> dict[str, Any]:
  job_id = result.job_id()
  url = CONSOLE_URL.format(region=s["REGION"], job_id=job_id, project=s["PROJECT"])
  return {"job_id": job_id, "console_url": url}  # watch() prints the URL


# --- watching a launched job -----------------------------------------------------------------
# The launcher polls the job itself instead of Beam's wait_until_finish: Beam's wait never
# cancels the job on Ctrl-C (its polling thread is a daemon; the job runs on, billed), and its
# get_job retries for minutes when the API is unreachable. Polls go through the gapic clients of
# Beam's own DataflowApplicationClient (same endpoint, credentials and transport as the launch),
# each with a timeout and no client-side retry: the retries are the loop's, and bounded.

API_TIMEOUT_S = 30
RUNNING_STATES = ("JOB_STATE_UNKNOWN", "JOB_STATE_QUEUED", "JOB_STATE_PENDING",
                  "JOB_STATE_RUNNING", "JOB_STATE_RESOURCE_CLEANING_UP", "JOB_STATE_DRAINING")


class JobError(RuntimeError):
  """The job did not finish DONE; the message names the job and its console URL."""


class JobFailed(JobError):
  pass


class JobUnreachable(JobError):
  pass


class JobCancelled(JobError):
  """The launcher was interrupted (Ctrl-C, SIGTERM) and asked Dataflow to cancel the job."""

  def __init__(self, message: str, signal_name: str = "SIGINT"):
    super().__init__(message)
    self.signal_name = signal_name


class Interrupted(BaseException):
  """SIGTERM while a job runs, raised in the main thread like KeyboardInterrupt for SIGINT."""


def api_errors() -> tuple[type[BaseException], ...]:
  """What a call to an unreachable or failing API raises (HTTP errors, refused or dropped
  connections, timeouts); anything else is a bug and is not retried."""
  import requests
  from google.api_core import exceptions as api_exceptions
  from google.auth import exceptions as auth_exceptions
  return (api_exceptions.GoogleAPICallError, api_exceptions.RetryError,
          requests.exceptions.RequestException, auth_exceptions.TransportError, OSError)


def status_interval_s(env: Mapping[str, str] = os.environ) -> float:
  """Seconds between the job's state lines on the console (DATAFLOW_STATUS_S, default 30)."""
  return float(env.get("DATAFLOW_STATUS_S", "30"))


def poll_settings(env: Mapping[str, str] = os.environ) -> tuple[float, int]:
  return float(env.get("DATAFLOW_POLL_S") or 10), int(env.get("DATAFLOW_API_RETRIES") or 5)


def _client(result):
  return result._runner.dataflow_client  # Beam's DataflowApplicationClient for this launch


def _get_job(result, s: Mapping[str, str]):
  from google.cloud import dataflow as api  # the gapic types Beam's client uses
  request = api.GetJobRequest(project_id=s["PROJECT"], location=s["REGION"],
                              job_id=result.job_id())
  return _client(result)._jobs_client.get_job(request=request, retry=None,
                                              timeout=API_TIMEOUT_S)


def job_messages(result, s: Mapping[str, str]) -> list:
  from google.cloud import dataflow as api  # the gapic types Beam's client uses
  request = api.ListJobMessagesRequest(
      project_id=s["PROJECT"], location=s["REGION"], job_id=result.job_id(),
      minimum_importance=api.JobMessageImportance.JOB_MESSAGE_DEBUG)
  return list(_client(result)._messages_client.list_job_messages(
      request=request, retry=None, timeout=API_TIMEOUT_S))


def cancel(result, s: Mapping[str, str], attempts: int = 3) -> str | None:
  """Asks Dataflow to cancel the job (jobs.update, requestedState JOB_STATE_CANCELLED).
  Returns None once the request is accepted, else why it was not."""
  return _request_state(result, s, "JOB_STATE_CANCELLED", attempts)


def drain(result, s: Mapping[str, str], attempts: int = 3) -> str | None:
  """Asks Dataflow to drain a streaming job (requestedState JOB_STATE_DRAINED): its sources
  stop, what it holds is finished, then it ends DRAINED. None once accepted, else why not."""
  return _request_state(result, s, "JOB_STATE_DRAINED", attempts)


def _request_state(result, s: Mapping[str, str], state: str, attempts: int) -> str | None:
  from google.cloud import dataflow as api  # the gapic types Beam's client uses
  request = api.UpdateJobRequest(
      project_id=s["PROJECT"], location=s["REGION"], job_id=result.job_id(),
      job=api.Job(requested_state=api.JobState[state]))
  why = None
  for attempt in range(attempts):
    try:
      _client(result)._jobs_client.update_job(request=request, retry=None,
                                              timeout=API_TIMEOUT_S)
      return None
    except api_errors() as e:  # reported, and the job's URL with it
      why = f"{type(e).__name__}: {e}"
      time.sleep(min(2 ** attempt, 5))
  return why


def console_url(result, s: Mapping[str, str]) -> str:
  return CONSOLE_URL.format(region=s["REGION"], job_id=result.job_id(), project=s["PROJECT"])


class _StopRequest:
  """Set by SIGINT or SIGTERM while a job runs. The poll loop checks it between API calls, so
  the interrupt never lands inside the API client's own code (a KeyboardInterrupt raised there
  can leave a request half done and the cancel that follows hanging)."""

  def __init__(self):
    self.event = threading.Event()
    self.signal_name = ""

  def handler(self, signum, frame):
    self.signal_name = signal.Signals(signum).name
    self.event.set()

  def wait(self, seconds: float) -> None:
    """Sleeps up to `seconds`; raises Interrupted as soon as a stop is requested."""
    if self.event.wait(seconds):
      raise Interrupted(self.signal_name)


def watch(result, s: Mapping[str, str], drain_when: Callable[[Any], str | None] | None = None):
  """Waits for the launched job to end; returns its final Job once DONE, or DRAINED for a
  streaming job: given `drain_when`, it is asked at each poll while the job runs, and the job
  is drained as soon as it gives a reason.

  Ctrl-C (SIGINT) or SIGTERM while waiting cancels the job, prints
  `cancelled Dataflow job <id> (<console url>)` and raises JobCancelled. A FAILED (or otherwise
  not DONE) job raises JobFailed with its error message; an API that does not answer
  DATAFLOW_API_RETRIES polls in a row (backing off) raises JobUnreachable. Both keep the job id
  and console URL in their message."""
  poll_s, retries = poll_settings()
  url = console_url(result, s)
  with stop_requests() as stop:  # a second Ctrl-C while cancelling is not a traceback
    try:
      return _wait(result, s, poll_s, retries, url, stop,
                   JobStatus(url, interval_s=status_interval_s()), drain_when)
    except (KeyboardInterrupt, Interrupted) as e:
      what = "SIGINT" if isinstance(e, KeyboardInterrupt) else str(e)
      why = cancel(result, s)
      if why is None:
        print(f"cancelled Dataflow job {result.job_id()} ({url})", flush=True)
        raise JobCancelled(f"interrupted by {what}: cancelled Dataflow job {result.job_id()} "
                           f"({url})", what) from None
      print(f"could not cancel Dataflow job {result.job_id()}: {why}; cancel it at {url}",
            file=sys.stderr, flush=True)
      raise JobCancelled(f"interrupted by {what}; the cancel request failed ({why}): the "
                         f"job may still be running: {url}", what) from None


def threading_main() -> bool:
  return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def stop_requests():
  """Inside, SIGINT and SIGTERM set the yielded _StopRequest instead of interrupting (main
  thread only; elsewhere nothing is installed and the request never comes)."""
  stop = _StopRequest()
  previous = {}
  if threading_main():
    previous = {signum: signal.signal(signum, stop.handler)
                for signum in (signal.SIGINT, signal.SIGTERM)}
  try:
    yield stop
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)


def _wait(result, s: Mapping[str, str], poll_s: float, retries: int, url: str,
          stop: _StopRequest, status: JobStatus,
          drain_when: Callable[[Any], str | None] | None = None):
  failures, state, unreachable = 0, "JOB_STATE_UNKNOWN", api_errors()
  drained = False
  while True:
    try:
      job = _get_job(result, s)
      failures = 0
    except unreachable as e:  # counted; bounded below
      failures += 1
      logging.warning("Dataflow API did not answer (%d/%d): %s: %s", failures, retries,
                      type(e).__name__, e)
      status.update(state, f"status unavailable: {type(e).__name__}")
      if failures >= retries:
        raise JobUnreachable(
            f"the Dataflow API did not answer {failures} polls in a row ({type(e).__name__}: "
            f"{e}); job {result.job_id()} may still be running: check or cancel it at "
            f"{url}") from None
      stop.wait(min(poll_s * 2 ** (failures - 1), 60))
      continue
    state = job.current_state.name
    if state in RUNNING_STATES:
      status.update(state)
      if drain_when and not drained and state == "JOB_STATE_RUNNING":
        drained = _drain_if(result, s, drain_when, url)
    else:
      status.finish(state)
      result._job = job  # Beam's result (state, metrics caching) sees the final job
      # DRAINED ends a streaming job well, whoever drained it (the record counts its items).
      if state == "JOB_STATE_DONE" or (drain_when and state == "JOB_STATE_DRAINED"):
        return job
      raise JobFailed(f"Dataflow job {result.job_id()} ended {state}: "
                      f"{_error_text(result, s)} ({url})")
    stop.wait(poll_s)


def _drain_if(result, s: Mapping[str, str], drain_when: Callable[[Any], str | None],
              url: str) -> bool:
  """Drains the job when drain_when gives a reason; True once the drain was accepted."""
  reason = drain_when(result)
  if reason is None:
    return False
  why = drain(result, s)
  if why is not None:  # asked again at the next poll
    logging.warning("could not drain Dataflow job %s (%s): retrying", result.job_id(), why)
    return False
  print(f"draining Dataflow job {result.job_id()}: {reason} ({url})", file=sys.stderr,
        flush=True)
  return True


def _error_text(result, s: Mapping[str, str]) -> str:
  """The job's most telling error message (a traceback first, as Beam ranks them)."""
  try:
    errors = [m.message_text for m in job_messages(result, s)
              if m.message_importance.name == "JOB_MESSAGE_ERROR"]
  except Exception as e:  # noqa: BLE001
    return f"no error message (messages unreadable: {type(e).__name__})"
  if not errors:
    return "no error message from the service"
  tracebacks = [m for m in errors if "Traceback" in m]
  text = (tracebacks or errors)[-1]
  return text.strip().splitlines()[-1] if text.strip() else text
