"""Where a benchmark runs: one small object per runner behind one interface.

  prepare(bench, args, run_id, layout) -> Plan   everything a run needs before any work:
                                         inputs, model paths, Beam flags, the engine, the metadata.
                                         Raises LaunchError (nothing was created) on bad input.
  execute(pipeline, plan) -> raw metrics runs the job and waits for it (Ctrl-C/SIGTERM stop it:
                                         interrupts.Cancelled or dataflow.JobCancelled).
  discard(plan)                          removes what prepare created, for a run that never ran.

The launcher (run.py) composes them: prepare, build the pipeline, execute, record, publish.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import pathlib
import shutil
from typing import Any

import apache_beam as beam

from pipelines import dataflow, interrupts, matrix
from pipelines.layout import Layout
from pipelines.worker import beam_metrics
from pipelines.worker.models import VOCAB_FILE

_BINARY_SNIFF_BYTES = 64 * 1024


class LaunchError(RuntimeError):
  """Something is wrong before anything runs: a clear message, exit code 2."""


@dataclasses.dataclass
class Plan:
  values: dict[str, str]  # pipeline options: input, output, model paths
  beam_args: list[str]
  metadata: dict[str, Any]
  engine: Any = None  # a Beam runner object, or None to let Beam pick from --runner
  run_dir: pathlib.Path | None = None  # local runs: created by prepare, removed by discard
  cloud: dict[str, str] = dataclasses.field(default_factory=dict)  # Dataflow settings
  job: dict[str, Any] | None = None  # Dataflow: what the finished job reported (window, usage)


def split_lines(data: bytes) -> list[bytes]:
  """Lines as Beam's text reader splits them: on \\n and \\r\\n only (not on U+2028, form
  feeds or other characters str.splitlines() treats as line ends)."""
  lines = data.split(b"\n")
  if lines and lines[-1] == b"":
    lines.pop()
  return [line[:-1] if line.endswith(b"\r") else line for line in lines]


def read_input_lines(source: pathlib.Path, default_source: bool) -> list[bytes]:
  """The input list's lines as bytes: each line is decoded (or dead-lettered) by the pipeline,
  so one undecodable line costs one item, not the run."""
  hint = ": run `make data` first" if default_source else ""
  if not source.exists():
    raise LaunchError(f"{source} does not exist{hint}")
  if source.is_dir():
    raise LaunchError(f"{source} is a directory; --input/INPUT takes a text file with one "
                      "image path or sentence per line")
  try:
    data = source.read_bytes()
  except OSError as e:
    raise LaunchError(f"{source} cannot be read: {e.strerror}") from None
  if b"\0" in data[:_BINARY_SNIFF_BYTES]:
    raise LaunchError(f"{source} is a binary file, not a text list (one image path or "
                      "sentence per line)")
  return split_lines(data)


class LocalRun:
  """The DirectRunner's batch engine on this machine, on generated data and local models."""
  name = "DirectRunner"

  def prepare(self, bench: matrix.Benchmark, args: argparse.Namespace, run_id: str,
              layout: Layout) -> Plan:
    from pipelines.worker.handler import require_device
    require_device(bench.device)  # fail before any work, not after a CPU fallback
    default_source = not args.input
    if args.input and "://" in args.input:  # pathlib would also mangle gs://b into gs:/b
      raise LaunchError(f"{args.input} is not a local file: a local run reads its input list "
                        "from this machine (copy it here, or run on Dataflow: "
                        "RUNNER=DataflowRunner)")
    source = (pathlib.Path(args.input) if args.input
              else args.data_dir / bench.task_spec.input_file)
    lines = read_input_lines(source, default_source)
    items = args.items or (len(lines) if args.input else bench.local_items)
    if len(lines) < items:
      raise LaunchError(f"{source} has {len(lines)} items, {items} requested"
                        + (f": run `make data N={items}`" if default_source else ""))
    model_files = local_model_files(bench, args.models_dir)
    # Only now, with every check passed, does the run get a folder. Its input is a private
    # copy, so a `make data` in another shell cannot change what this run reads.
    run_dir = args.results_dir / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    input_path = run_dir / "input.txt"
    input_path.write_bytes(b"\n".join(lines[:items]) + b"\n")
    values = {"input": str(input_path.resolve()), "output": str((run_dir / "output").resolve()),
              **model_files}
    metadata = {"engine": "FnApiRunner", "items_requested": items, "machine_type": "local",
                "num_workers": 1, "accelerator": None}
    return Plan(values=values, beam_args=layout.local_beam_args(), metadata=metadata,
                engine=local_engine(), run_dir=run_dir)

  def execute(self, p: beam.Pipeline, plan: Plan) -> dict[str, Any]:
    """Runs the pipeline here; SIGINT/SIGTERM stop it and its SDK worker processes
    (interrupts.Cancelled), a worker process that dies fails it (interrupts.WorkerDied)."""
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
    return beam_metrics.query(result)

  def discard(self, plan: Plan) -> None:
    if plan.run_dir is not None:
      shutil.rmtree(plan.run_dir, ignore_errors=True)


class DataflowRun:
  """Google Cloud Dataflow: the matrix's worker shape, the baked image, the full dataset."""
  name = "DataflowRunner"

  def __init__(self, dry_run: bool = False):
    self.dry_run = dry_run

  def prepare(self, bench: matrix.Benchmark, args: argparse.Namespace, run_id: str,
              layout: Layout) -> Plan:
    cloud = dataflow.settings()
    if args.items:
      logging.warning("N/--items applies to local runs; Dataflow runs the whole input")
    try:
      image = dataflow.pinned_image(bench, cloud, self.dry_run)
    except dataflow.ImageNotPushed as e:
      raise LaunchError(str(e)) from None
    values = dataflow.pipeline_values(bench, cloud, run_id, args.input)
    beam_args = dataflow.worker_args(bench, cloud, dataflow.job_name(bench, run_id), layout,
                                     image)
    if self.dry_run:
      beam_args.append("--dry_run=True")
    metadata = {"engine": "Dataflow", "items_requested": items_requested(bench, args.input),
                "job_name": dataflow.job_name(bench, run_id),
                "machine_type": bench.dataflow.machine_type,
                "num_workers": bench.dataflow.num_workers,
                "accelerator": bench.dataflow.accelerator,
                "accelerator_count": bench.dataflow.accelerator_count,
                "disk_size_gb": bench.dataflow.disk_size_gb, "region": cloud["REGION"],
                "image": image, "image_digest": dataflow.image_digest(bench, cloud)}
    return Plan(values=values, beam_args=beam_args, metadata=metadata, cloud=cloud)

  def execute(self, p: beam.Pipeline, plan: Plan) -> dict[str, Any]:
    """Submits the job, waits for it (Ctrl-C or SIGTERM cancels it: dataflow.JobCancelled),
    then reads Beam's metrics and the job's own figures (window, resource usage)."""
    result = dataflow.submit(p, plan.cloud, plan.metadata["job_name"])
    plan.metadata.update(dataflow.launched_metadata(result, plan.cloud))
    job = dataflow.watch(result, plan.cloud)
    raw = beam_metrics.query(result)
    plan.job = dataflow.job_figures(result, job, plan.cloud)
    return raw

  def discard(self, plan: Plan) -> None:
    pass


def items_requested(bench: matrix.Benchmark, input_override: str | None) -> int | None:
  """The items a Dataflow run is asked to process: the matrix dataset's size; with INPUT= a
  local list's line count; None for an INPUT= in the cloud (gs://...), which the launcher does
  not read (num_inferences then says what ran)."""
  if not input_override:
    return bench.dataset_items
  path = pathlib.Path(input_override)
  if "://" in input_override or not path.is_file():
    return None
  return len(split_lines(path.read_bytes()))


def for_runner(runner: str, dry_run: bool = False) -> LocalRun | DataflowRun:
  if runner == LocalRun.name:
    if dry_run:
      raise LaunchError("DRY_RUN builds a Dataflow job: use it with RUNNER=DataflowRunner")
    return LocalRun()
  if runner == DataflowRun.name:
    return DataflowRun(dry_run)
  raise LaunchError(f"unknown runner '{runner}': use DirectRunner (local) or DataflowRunner")


def local_model_files(bench: matrix.Benchmark, models_dir: pathlib.Path) -> dict[str, str]:
  state_dict = models_dir / f"{bench.model}.pth"
  files = {"model_state_dict_path": state_dict}
  if bench.task_spec.needs_vocab:
    files["vocab_path"] = models_dir / VOCAB_FILE
  for path in files.values():
    if not path.exists():
      raise LaunchError(f"{path} does not exist: run `make models` first")
  return {k: str(v.resolve()) for k, v in files.items()}


def local_engine():
  """The DirectRunner's batch engine, chosen explicitly: Beam's DirectRunner first tries to
  download and start Prism, so what it runs on would depend on network access. Benchmarks need
  one engine everywhere; this is the FnApiRunner the DirectRunner uses for batch."""
  from apache_beam.runners.portability.fn_api_runner import fn_runner
  return fn_runner.FnApiRunner()
