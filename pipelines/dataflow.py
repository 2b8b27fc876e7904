"""Dataflow launch: the matrix's worker shape, the baked worker image, watching the job (and
cancelling it on Ctrl-C/SIGTERM), the figures the job itself reports, and dry runs.

Settings come from the environment (`.env` or Make variables): PROJECT, REGION, TEMP_LOCATION
and REGISTRY are required; IMAGE_TAG (default: the git sha), OUTPUT_LOCATION, SERVICE_ACCOUNT,
SUBNETWORK are optional. Models and the vocab are baked into the images under MODELS_IN_IMAGE.
Watching: DATAFLOW_POLL_S (seconds between job polls, default 10) and DATAFLOW_API_RETRIES
(consecutive failed polls before the launcher gives up, default 5). Submitting (staging the job
to TEMP_LOCATION, then creating it) is bounded by DATAFLOW_SUBMIT_TIMEOUT_S (default 300).
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import pathlib
import re
import signal
import sys
import threading
import time
from typing import Any, Mapping

from pipelines import matrix, progress, run_record
from pipelines.layout import ONE_SDK_PROCESS, Layout
from pipelines.matrix import IMAGE_NAMES, REPO_ROOT
from pipelines.worker.models import VOCAB_FILE

REQUIRED = ("PROJECT", "REGION", "TEMP_LOCATION", "REGISTRY")
MODELS_IN_IMAGE = "/opt/models"
CONSOLE_URL = "https://console.cloud.google.com/dataflow/jobs/{region}/{job_id}?project={project}"


class SettingsMissing(ValueError):
  pass


def settings(env: Mapping[str, str] = os.environ) -> dict[str, str]:
  missing = [name for name in REQUIRED if not env.get(name, "").strip()]
  if missing:
    raise SettingsMissing(
        f"RUNNER=DataflowRunner needs {', '.join(missing)}: set them in .env "
        "(copy .env.example) or on the make command line")
  values = {name: env[name].strip() for name in REQUIRED}
  values["IMAGE_TAG"] = env.get("IMAGE_TAG", "").strip() or default_image_tag()
  values["OUTPUT_LOCATION"] = (env.get("OUTPUT_LOCATION", "").strip()
                               or values["TEMP_LOCATION"].rstrip("/") + "/bench-outputs")
  for optional in ("SERVICE_ACCOUNT", "SUBNETWORK"):
    values[optional] = env.get(optional, "").strip()
  return values


def default_image_tag() -> str:
  """The tag `make image-*` gives: the first 12 characters of the git sha."""
  sha = run_record.git_state()["git_sha"]
  if sha == "unknown":
    raise SettingsMissing("IMAGE_TAG is not set and there is no git sha to default to")
  return sha[:12]


def image_uri(bench: matrix.Benchmark, s: Mapping[str, str]) -> str:
  return image_ref(bench.image, s)


def image_ref(variant: str, s: Mapping[str, str]) -> str:
  """The tagged reference of one worker image (cpu-resnet, cpu-bert, gpu) under settings `s`."""
  return f"{s['REGISTRY'].rstrip('/')}/{IMAGE_NAMES[variant]}:{s['IMAGE_TAG']}"


def service_options(bench: matrix.Benchmark) -> list[str]:
  """GPU workers: the accelerator and Dataflow's driver install. `install-nvidia-driver:5xx` is
  the string Beam's own T4 benchmarks use (.github/workflows/load-tests-pipeline-options/
  beam_Inference_Python_Benchmarks_Dataflow_Pytorch_Imagenet_Classification_Resnet_152_Tesla_
  T4_GPU.txt): a 5xx-series driver, which the image's CUDA 12.x wheels need (>= 525.60.13)."""
  if not bench.dataflow.accelerator:
    return []
  return [f"worker_accelerator=type:{bench.dataflow.accelerator};"
          f"count:{bench.dataflow.accelerator_count};install-nvidia-driver:5xx"]


def worker_args(bench: matrix.Benchmark, s: Mapping[str, str], job_name: str,
                layout: Layout, image: str | None = None) -> list[str]:
  """Every Dataflow flag that comes from the matrix, the worker layout and the settings
  (`image`: the reference to launch, by digest; default the tagged one)."""
  shape = bench.dataflow
  args = [
      "--runner=DataflowRunner", f"--project={s['PROJECT']}", f"--region={s['REGION']}",
      f"--temp_location={s['TEMP_LOCATION']}", f"--job_name={job_name}",
      f"--machine_type={shape.machine_type}", f"--num_workers={shape.num_workers}",
      f"--max_num_workers={shape.num_workers}",
      f"--autoscaling_algorithm={shape.autoscaling_algorithm}",
      f"--disk_size_gb={shape.disk_size_gb}",
      f"--sdk_container_image={image or image_uri(bench, s)}", "--sdk_location=container",
  ]
  args += [f"--dataflow_service_options={o}" for o in service_options(bench)]
  experiments = [*shape.experiments, *layout.dataflow_experiments(bench.machine.vcpus)]
  args += [f"--experiments={e}" for e in dict.fromkeys(experiments)]
  if s.get("SERVICE_ACCOUNT"):
    args.append(f"--service_account_email={s['SERVICE_ACCOUNT']}")
  if s.get("SUBNETWORK"):
    args.append(f"--subnetwork={s['SUBNETWORK']}")
  return args


def pipeline_values(bench: matrix.Benchmark, s: Mapping[str, str], run_id: str,
                    input_override: str | None) -> dict[str, str]:
  values = {"input": input_override or bench.dataset_input,
            "output": f"{s['OUTPUT_LOCATION'].rstrip('/')}/{bench.name}/{run_id}",
            "model_state_dict_path": f"{MODELS_IN_IMAGE}/{bench.model}.pth"}
  if bench.task_spec.needs_vocab:
    values["vocab_path"] = f"{MODELS_IN_IMAGE}/{VOCAB_FILE}"
  return values


def job_name(bench: matrix.Benchmark, run_id: str) -> str:
  return f"beam-bench-{bench.name}-{run_id}".lower()


DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")


class ImageNotPushed(RuntimeError):
  """A real launch needs the image pushed for this tag (`make push`): exit 2, nothing submitted."""


def digest_dir(env: Mapping[str, str] = os.environ,
               root: pathlib.Path = REPO_ROOT) -> pathlib.Path:
  """Where `make push` leaves build/image-<variant>.digest (BENCH_BUILD_DIR overrides it)."""
  return pathlib.Path(env.get("BENCH_BUILD_DIR") or root / "build")


def digest_file(bench: matrix.Benchmark) -> pathlib.Path:
  return digest_dir() / f"image-{bench.image}.digest"


def write_digest(path: pathlib.Path, image: str, digest_text: str) -> str:
  """Records what `make push` pushed: the tagged reference and its sha256 digest (taken from
  `docker inspect`'s repo@sha256:... or buildah's --digestfile). Returns the digest."""
  found = DIGEST_RE.search(digest_text)
  if not found:
    raise ValueError(f"no sha256 digest in {digest_text!r}")
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(f"image={image}\ndigest={found.group(0)}\n")
  return found.group(0)


def read_digest(path: pathlib.Path) -> dict[str, str] | None:
  if not path.exists():
    return None
  fields = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
  if not DIGEST_RE.fullmatch(fields.get("digest", "")) or not fields.get("image"):
    return None
  return fields


def image_digest(bench: matrix.Benchmark, s: Mapping[str, str] | None = None) -> str | None:
  """The digest `make push` recorded for this image variant and, given the settings, for this
  very tag (a digest recorded for another tag or registry is stale: None)."""
  fields = read_digest(digest_file(bench))
  if fields is None or (s is not None and fields["image"] != image_uri(bench, s)):
    return None
  return fields["digest"]


def pinned_image(bench: matrix.Benchmark, s: Mapping[str, str], dry_run: bool) -> str:
  """The image a launch uses: name@sha256:... for the tag `make push` pushed. A real launch
  without a digest for this tag is refused (ImageNotPushed) before anything is submitted; a dry
  run only warns and describes the job with the tag."""
  tagged = image_uri(bench, s)
  digest = image_digest(bench, s)
  if digest:
    return f"{tagged.rsplit(':', 1)[0]}@{digest}"
  fields = read_digest(digest_file(bench))
  why = (f"{digest_file(bench)} records {fields['image']}, not {tagged}" if fields
         else f"{digest_file(bench)} does not exist")
  if dry_run:
    logging.warning("image %s has no pushed digest (%s): the dry run uses the tag; a real "
                    "launch would be refused until `make push`", tagged, why)
    return tagged
  raise ImageNotPushed(f"image {tagged} was never pushed ({why}): run `make image-{bench.image} "
                       f"push IMAGE_TAG={s['IMAGE_TAG']}` first; nothing was submitted")


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
RESOURCE_METRICS = ("TotalVcpuTime", "TotalMemoryUsage", "TotalPdUsage", "TotalSsdUsage",
                    "TotalGpuTime", "TotalStreamingDataProcessed")
# Beam's cost benchmark (apache_beam/testing/load_tests/dataflow_cost_benchmark.py) bounds a
# job's work with these two job messages.
WORKERS_STARTED = re.compile(r"All workers have finished the startup processes and began to "
                             r"receive work requests")
WORKERS_STOPPING = re.compile(r"Stopping worker pool")
RUNNING_STATES = ("JOB_STATE_UNKNOWN", "JOB_STATE_QUEUED", "JOB_STATE_PENDING",
                  "JOB_STATE_RUNNING", "JOB_STATE_RESOURCE_CLEANING_UP")


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
  from google.cloud import dataflow as api  # the gapic types Beam's client uses
  request = api.UpdateJobRequest(
      project_id=s["PROJECT"], location=s["REGION"], job_id=result.job_id(),
      job=api.Job(requested_state=api.JobState.JOB_STATE_CANCELLED))
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

  stop = _StopRequest()
  previous = {}
  if threading_main():
    previous = {signum: signal.signal(signum, stop.handler)
                for signum in (signal.SIGINT, signal.SIGTERM)}
  limit, start = submit_timeout_s(), time.monotonic()
  where = f"staging job {job_name} to {s['TEMP_LOCATION']} and submitting it"
  try:
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
        print(f"{where}: {progress._duration(time.monotonic() - start)} elapsed",
              file=sys.stderr, flush=True)
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)
  if "error" in outcome:
    raise outcome["error"]
  return outcome["result"]


def watch(result, s: Mapping[str, str]):
  """Waits for the launched job to end; returns its final Job once DONE.

  Ctrl-C (SIGINT) or SIGTERM while waiting cancels the job, prints
  `cancelled Dataflow job <id> (<console url>)` and raises JobCancelled. A FAILED (or otherwise
  not DONE) job raises JobFailed with its error message; an API that does not answer
  DATAFLOW_API_RETRIES polls in a row (backing off) raises JobUnreachable. Both keep the job id
  and console URL in their message."""
  poll_s, retries = poll_settings()
  url = console_url(result, s)
  stop = _StopRequest()
  previous = {}
  if threading_main():
    previous = {signum: signal.signal(signum, stop.handler)
                for signum in (signal.SIGINT, signal.SIGTERM)}
  try:
    return _wait(result, s, poll_s, retries, url, stop,
                 progress.JobStatus(url, interval_s=status_interval_s()))
  except (KeyboardInterrupt, Interrupted) as e:
    what = "SIGINT" if isinstance(e, KeyboardInterrupt) else str(e)
    why = cancel(result, s)
    if why is None:
      print(f"cancelled Dataflow job {result.job_id()} ({url})", flush=True)
      raise JobCancelled(f"interrupted by {what}: cancelled Dataflow job {result.job_id()} "
                         f"({url})", what) from None
    print(f"could not cancel Dataflow job {result.job_id()}: {why}; cancel it at {url}",
          file=sys.stderr, flush=True)
    raise JobCancelled(f"interrupted by {what}; the cancel request failed ({why}): the job "
                       f"may still be running: {url}", what) from None
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)


def threading_main() -> bool:
  return threading.current_thread() is threading.main_thread()


def _wait(result, s: Mapping[str, str], poll_s: float, retries: int, url: str,
          stop: _StopRequest, status: progress.JobStatus):
  failures, state, unreachable = 0, "JOB_STATE_UNKNOWN", api_errors()
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
    else:
      status.finish(state)
      result._job = job  # Beam's result (state, metrics caching) sees the final job
      if state == "JOB_STATE_DONE":
        return job
      raise JobFailed(f"Dataflow job {result.job_id()} ended {state}: "
                      f"{_error_text(result, s)} ({url})")
    stop.wait(poll_s)


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


# --- dry runs ---------------------------------------------------------------------------------

def job_description(result, options, bench: matrix.Benchmark) -> dict[str, Any]:
  """What Dataflow would receive, built offline from a dry run's job."""
  from apache_beam.runners.dataflow.internal import apiclient
  job = result.job
  environment = apiclient.Environment(
      packages=[], options=options, environment_version="dry-run",
      proto_pipeline_staged_url="dry-run://pipeline.pb", proto_pipeline=job.proto_pipeline).proto
  env_json = json.loads(type(environment).to_json(environment, use_integers_for_enums=False))
  components = job.proto_pipeline.components
  experiments = env_json.get("experiments", [])
  all_options = options.get_all_options()
  return {
      "benchmark": bench.name,
      # What each worker machine runs: SDK processes (Dataflow's default is one per vCPU) and
      # the torch threads every process sets before loading its model.
      "layout": {"layout": all_options["layout"],
                 "sdk_processes_per_worker": 1 if ONE_SDK_PROCESS in experiments
                 else bench.machine.vcpus,
                 "torch_threads": all_options["torch_threads"],
                 "torch_interop_threads": all_options["torch_interop_threads"]},
      "job_name": job.proto.name,
      "worker_pools": env_json.get("workerPools", []),
      "service_options": env_json.get("serviceOptions", []),
      "experiments": experiments,
      "container_images": sorted({_container_image(e) for e in components.environments.values()}
                                 - {None}),
      "transforms": sorted(t.unique_name for t in components.transforms.values()
                           if not t.subtransforms),
      "pipeline_options": {k: v for k, v in all_options.items()
                           if v is not None and k in benchmark_option_names()},
  }


def benchmark_option_names() -> tuple[str, ...]:
  """Every option BenchmarkOptions defines, read from its own parser: the dry-run job carries
  them all, including ones added later."""
  from pipelines.worker.options import BenchmarkOptions
  parser = argparse.ArgumentParser()
  BenchmarkOptions._add_argparse_args(parser)  # noqa: SLF001 - the call Beam makes
  return tuple(vars(parser.parse_args([])))


def _container_image(environment) -> str | None:
  from apache_beam.portability.api import beam_runner_api_pb2
  if environment.urn != "beam:env:docker:v1":
    return None
  payload = beam_runner_api_pb2.DockerPayload.FromString(environment.payload)
  return payload.container_image


def write_job(description: dict[str, Any], out_dir: pathlib.Path) -> pathlib.Path:
  out_dir.mkdir(parents=True, exist_ok=True)
  path = out_dir / f"{description['benchmark']}.json"
  path.write_text(json.dumps(description, indent=2, sort_keys=True) + "\n")
  return path


if __name__ == "__main__":
  # `make push`: python -m pipelines.dataflow record-digest <file> <image:tag> <digest text>
  if len(sys.argv) != 5 or sys.argv[1] != "record-digest":
    raise SystemExit("usage: python -m pipelines.dataflow record-digest FILE IMAGE:TAG DIGEST")
  try:
    pushed = write_digest(pathlib.Path(sys.argv[2]), sys.argv[3], sys.argv[4])
  except ValueError as e:
    raise SystemExit(f"error: {sys.argv[3]}: {e}") from None
  print(f"pushed {sys.argv[3]} ({pushed}): recorded in {sys.argv[2]}")
