"""What a finished Dataflow job reports about itself: its processing window and its metered
resources (the bounds and metrics Beam's own cost benchmark uses)."""

import datetime
import logging
import re
from typing import Any, Mapping

from pipelines.dataflow.watch import job_messages

RESOURCE_METRICS = ("TotalVcpuTime", "TotalMemoryUsage", "TotalPdUsage", "TotalSsdUsage",
                    "TotalGpuTime", "TotalStreamingDataProcessed")
# Beam's cost benchmark (apache_beam/testing/load_tests/dataflow_cost_benchmark.py) bounds a
# job's work with these two job messages.
WORKERS_STARTED = re.compile(r"All workers have finished the startup processes and began to "
                             r"receive work requests")
WORKERS_STOPPING = re.compile(r"Stopping worker pool")


def _utc(t) -> datetime.datetime | None:
  if not t:
    return None
  return t if t.tzinfo else t.replace(tzinfo=datetime.timezone.utc)


def job_window(job, messages: list) -> dict[str, Any]:
  """The job's own processing window, in the service's clock:
    start: the time of the job message 'All workers have finished the startup processes and
           began to receive work requests' (the first one, over all worker pools);
    end:   the time of the last 'Stopping worker pool' message.
  These are the bounds Beam's Dataflow cost benchmark uses: worker VM start-up and the
  launcher's staging and polling are outside, everything the workers do with the data is in.
  Without those messages (they are the service's, not guaranteed), the window falls back to
  the job's startTime to its final currentStateTime, which includes worker start-up: the
  record says which bounds it used (job_window_source)."""
  started = [_utc(m.time) for m in messages if WORKERS_STARTED.search(m.message_text or "")]
  stopping = [_utc(m.time) for m in messages if WORKERS_STOPPING.search(m.message_text or "")]
  if started and stopping and max(stopping) > min(started):
    start, end, source = min(started), max(stopping), "worker messages"
  else:
    start, end = _utc(job.start_time or job.create_time), _utc(job.current_state_time)
    source = "job start to final state"
  seconds = (end - start).total_seconds() if start and end and end > start else None
  return {"job_window_s": seconds, "job_window_source": source if seconds else None,
          "job_window_start": start.isoformat() if seconds else None,
          "job_window_end": end.isoformat() if seconds else None}


def resource_usage(result) -> dict[str, float]:
  """Dataflow's resource metrics (origin dataflow/v1b3, no step), read the way Beam's cost
  benchmark reads them: TotalVcpuTime (vCPU-s), TotalMemoryUsage (MB-s), TotalPdUsage and
  TotalSsdUsage (GB-s), TotalGpuTime (GPU-s), TotalStreamingDataProcessed (GB)."""
  usage = {}
  for entry in result.metrics().all_metrics():
    key = entry.key
    if key.step == "" and key.metric.namespace == "dataflow/v1b3" \
        and key.metric.name in RESOURCE_METRICS:
      usage[key.metric.name] = float(entry.committed or 0.0)
  return usage


def job_figures(result, job, s: Mapping[str, str]) -> dict[str, Any]:
  """What the finished job says about itself: its window, its resource usage, its times."""
  try:
    messages = job_messages(result, s)
  except Exception as e:  # noqa: BLE001 - the window then falls back to the job's times
    logging.warning("job messages unreadable (%s): window from the job's own times", e)
    messages = []
  figures = job_window(job, messages)
  try:
    figures["resources"] = resource_usage(result)
  except Exception as e:  # noqa: BLE001
    logging.warning("resource metrics unreadable (%s): no job-based cost", e)
    figures["resources"] = {}
  figures["job_state"] = job.current_state.name
  figures["job_create_time"] = _utc(job.create_time).isoformat() if job.create_time else None
  return figures
