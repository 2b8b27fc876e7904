"""Where a benchmark runs: one small object per runner behind one interface. A runner takes
a resolved RunPlan (plan.py) and never changes it; what it learns while running (the local run
folder, the Dataflow job's id and figures, the container's memory) lives in its Launch, and
its `facts` reach the record's metadata.

  prepare(plan) -> Launch                the run's folder and private input copy (local), Beam
                                         flags, pipeline values, the engine
  execute(pipeline, launch) -> raw metrics runs the job and waits for it (Ctrl-C/SIGTERM stop it:
                                         interrupts.Cancelled or dataflow.JobCancelled)
  discard(launch)                        removes what prepare created (a run that never ran, or
                                         an interrupted one)

launch.py composes them into one call: plan in, outcome out.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import shutil
from typing import Any

import apache_beam as beam

from pipelines import dataflow, interrupts, worker_container, worker_logs
from pipelines.dataflow import feed
from pipelines.plan import DATAFLOW, LOCAL, RunPlan
from pipelines.worker import beam_metrics
from pipelines.worker.progress_reporter import ENV_VAR as PROGRESS_DIR_VAR


@dataclasses.dataclass
class Launch:
  """A runner's working state for one run (the plan itself stays frozen)."""
  values: dict[str, str]  # pipeline options: input, output, model paths
  beam_args: list[str]
  facts: dict[str, Any]  # what the runner learns (engine, job id, container memory): metadata
  engine: Any = None  # a Beam runner object, or None to let Beam pick from --runner
  run_dir: pathlib.Path | None = None  # local runs: created by prepare, removed by discard
  cloud: dict[str, str] = dataclasses.field(default_factory=dict)  # Dataflow settings
  job: dict[str, Any] | None = None  # Dataflow: what the finished job reported (window, usage)
  container: Any = None  # IN_IMAGE=1: the worker_container.WorkerContainer
  stream_input: str | None = None  # a streaming Dataflow job: the list the launcher publishes


class LocalRun:
  """The DirectRunner's batch engine on this machine, on generated data and local models."""
  name = LOCAL

  def prepare(self, plan: RunPlan) -> Launch:
    # The run's folder is created only now, with every check passed. Its input is a private
    # copy, so a `make data` in another shell cannot change what this run reads.
    run_dir = plan.results_dir / "runs" / plan.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    input_path = run_dir / "input.txt"
    input_path.write_bytes(b"\n".join(plan.input_lines) + b"\n")
    values = {"input": str(input_path.resolve()), "output": str((run_dir / "output").resolve()),
              **dict(plan.model_files)}
    # the copy the workers read (the plan's input is the list as given)
    return Launch(values=values, beam_args=plan.layout.local_beam_args(),
                  facts={"engine": "FnApiRunner", "input_copy": values["input"]},
                  engine=local_engine(), run_dir=run_dir)

  def execute(self, p: beam.Pipeline, launch: Launch) -> dict[str, Any]:
    """Runs the pipeline here; SIGINT/SIGTERM stop it and its SDK worker processes
    (interrupts.Cancelled), a worker process that dies fails it (interrupts.WorkerDied)."""
    return self._run_watched(p)

  @staticmethod
  def _run_watched(p: beam.Pipeline, where: str = "SDK worker") -> dict[str, Any]:
    lines = worker_logs.WorkerLogLines(where)  # the workers' log entries, one line each
    handlers = logging.getLogger().handlers
    for handler in handlers:
      handler.addFilter(lines)
    try:
      with interrupts.LocalWatch() as watch:
        try:
          result = p.run()
          result.wait_until_finish()
        except BaseException as e:  # noqa: BLE001 - the watch says what really happened
          outcome = watch.outcome(e)
          if outcome is e:
            raise
          raise outcome from None
        if (outcome := watch.outcome(None)) is not None:
          raise outcome  # a signal Beam swallowed: the run did not finish as asked
    finally:
      for handler in handlers:
        handler.removeFilter(lines)
    return beam_metrics.query(result)

  def discard(self, launch: Launch) -> None:
    if launch.run_dir is not None:
      shutil.rmtree(launch.run_dir, ignore_errors=True)


class InImageRun(LocalRun):
  """A local run whose SDK workers run inside the benchmark's worker image, as one Dataflow
  worker of the matrix's machine type (worker_container.py says how and why): the launcher
  and the FnApiRunner stay on this machine, the P SDK processes, their Beam, torch and models
  are the image's."""

  def prepare(self, plan: RunPlan) -> Launch:
    launch = super().prepare(plan)
    machine = plan.bench.machine
    port = worker_container.free_port()
    launch.engine = WorkerPoolEngine(f"localhost:{port}")
    # The workers' logs reach the launcher as whole log protos: warnings and errors only.
    launch.beam_args = [*plan.layout.in_image_beam_args(),
                        "--default_sdk_harness_log_level=WARNING"]
    limits = worker_container.Limits.of(machine)
    mounts = [(launch.run_dir.resolve(), "rw")]
    if plan.task.reads_files:  # the input list names image files: their folder, read-only
      mounts.append((plan.input_files_root, "ro"))
    launch.container = worker_container.WorkerContainer(
        plan.image, f"bench-{plan.run_id}", limits, port, mounts, env={},
        gpu=plan.bench.device == "GPU")
    launch.facts["engine"] = "FnApiRunner (EXTERNAL: the image's worker pool)"
    return launch

  def execute(self, p: beam.Pipeline, launch: Launch) -> dict[str, Any]:
    """Starts the image's worker pool under the machine type's limits, runs the pipeline on it,
    reads the container's peak memory, and removes the container whatever happened. An SDK
    process ended by the OOM killer fails the run with worker_container.OutOfMemory."""
    container = launch.container
    progress = os.environ.get(PROGRESS_DIR_VAR)
    if progress:  # the workers' tallies for the live display and an interrupted run's record
      container.mounts.append((pathlib.Path(progress).resolve(), "rw"))
      container.env[PROGRESS_DIR_VAR] = str(pathlib.Path(progress).resolve())
    try:
      container.start()
      try:
        raw = self._run_watched(p, "SDK worker (in the image)")
      except Exception as e:
        memory = launch.facts["container_memory"] = container.memory()
        if memory.get("oom_kills"):
          raise worker_container.OutOfMemory(
              f"the OOM killer ended an SDK worker process in the "
              f"{container.limits.machine_type} container ({container.limits.memory_mib} MiB, "
              f"peak {memory.get('peak_memory_mib')} MiB): the layout's model copies do not "
              "fit; use fewer processes") from None
        raise e
      launch.facts["container_memory"] = container.memory()
      return raw
    finally:
      container.stop()


class DataflowRun:
  """Google Cloud Dataflow: the matrix's worker shape, the baked image, the full dataset."""
  name = DATAFLOW

  def prepare(self, plan: RunPlan) -> Launch:
    bench, cloud = plan.bench, dict(plan.cloud)
    job_name = dataflow.job_name(bench, plan.run_id)
    values = {"input": plan.input,
              "output": dataflow.output_prefix(bench, cloud, plan.run_id),
              **dict(plan.model_files)}
    beam_args = dataflow.worker_args(bench, cloud, job_name, plan.layout, plan.image,
                                     plan.profile.harness_threads)
    if plan.dry_run:
      beam_args.append("--dry_run=True")
    facts = {"engine": "Dataflow", "job_name": job_name,
             "image_digest": dataflow.image_digest(bench, cloud)}
    return Launch(values=values, beam_args=beam_args, facts=facts, cloud=cloud,
                  stream_input=plan.input if plan.streaming else None)

  def execute(self, p: beam.Pipeline, launch: Launch) -> dict[str, Any]:
    """Submits the job, waits for it (Ctrl-C or SIGTERM cancels it: dataflow.JobCancelled),
    then reads Beam's metrics and the job's own figures (window, resource usage). A streaming
    job's items are published to its subscription first, and it is drained once they are all
    done (dataflow/feed.py)."""
    fed, drain_when = None, None
    if launch.stream_input:
      timeout_s = feed.stream_timeout_s()  # a bad value stops the run before anything is sent
      lines = feed.read_lines(launch.stream_input, p.options)
      fed = feed.feed(launch.cloud["PUBSUB_SUBSCRIPTION"], lines)
      launch.facts["items_published"] = fed["published"]
    result = dataflow.submit(p, launch.cloud, launch.facts["job_name"])
    launch.facts.update(dataflow.launched_metadata(result, launch.cloud))
    if fed:
      drain_when = feed.DrainWhenDone(fed["published"], timeout_s)
    job = dataflow.watch(result, launch.cloud, drain_when)
    raw = beam_metrics.query(result)
    launch.job = dataflow.job_figures(result, job, launch.cloud)
    if drain_when:
      shortfall = drain_when.shortfall(raw)
      launch.job["stream"] = {**fed, **drain_when.as_record(), "shortfall": shortfall}
    return raw

  def discard(self, launch: Launch) -> None:
    pass


def for_runner(plan: RunPlan) -> LocalRun | DataflowRun:
  if plan.in_image:
    return InImageRun()
  return {LOCAL: LocalRun, DATAFLOW: DataflowRun}[plan.runner]()


def local_engine():
  """The DirectRunner's batch engine, chosen explicitly: Beam's DirectRunner first tries to
  download and start Prism, so what it runs on would depend on network access. Benchmarks need
  one engine everywhere; this is the FnApiRunner the DirectRunner uses for batch."""
  from apache_beam.runners.portability.fn_api_runner import fn_runner
  return fn_runner.FnApiRunner()


class WorkerPoolEngine(beam.runners.runner.PipelineRunner):
  """The FnApiRunner with a worker image's pool (host:port) as its SDK workers. It also gives
  those workers the job's pipeline options through the provision service, as Dataflow and
  Beam's portable runner do (the image's boot hands them to sdk_worker_main: log level,
  experiments); the FnApiRunner's own workers never need them and get none."""

  def __init__(self, worker_pool: str):
    self.worker_pool = worker_pool

  def run_pipeline(self, pipeline, options):
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle
    from apache_beam.transforms import environments
    info = beam_provision_api_pb2.ProvisionInfo(
        retrieval_token="unused-retrieval-token",
        pipeline_options=JobServiceHandle.encode_pipeline_options(options.get_all_options()))
    engine = fn_runner.FnApiRunner(
        default_environment=environments.ExternalEnvironment(self.worker_pool),
        provision_info=fn_runner.ExtendedProvisionInfo(info))
    return engine.run_pipeline(pipeline, options)
