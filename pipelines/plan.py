"""One plan per run, resolved once: the one carrier from the command line to the record.

  Overrides   what a user or a command asks for (the command line, Make variables, a sweep point)
  resolve()   matrix entry + profile + machine type + overrides -> a frozen RunPlan, after every
              pre-flight check (preflight.py: runner, results store, layout and memory, device,
              input, model files, Dataflow settings and image digests); a failed check raises
              PlanError with one line, and nothing has been created
  RunPlan     everything a runner needs; `as_record()` is the record's `plan`, whole

Runners (runners.py) take a RunPlan and never change it; `make doctor` reports by calling the
same checks (`check_local`).
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

from pipelines import matrix, profiles, worker_container
from pipelines.layout import Layout, LayoutError
from pipelines.preflight import PlanError, dataflow_run, in_image, local_input
from pipelines.record import build, store
from pipelines.worker import optimizations, vocab
from pipelines.worker.gpu_telemetry import SAMPLE_INTERVAL_S

LOCAL = "DirectRunner"
DATAFLOW = "DataflowRunner"
RUNNERS = (LOCAL, DATAFLOW)


@dataclasses.dataclass(frozen=True)
class Overrides:
  """What may be asked of a run beyond the matrix and the profile; None keeps their value."""
  benchmark: str
  runner: str = LOCAL
  profile: str = profiles.DEFAULT
  items: int | str | None = None  # a count, or "share": one Dataflow worker's share
  batch_size: int | None = None
  input: str | None = None
  layout: Layout | None = None
  batching: str | None = None  # the sentence tasks: padded or length
  dry_run: bool = False
  data_dir: pathlib.Path = pathlib.Path("data")
  models_dir: pathlib.Path = pathlib.Path("models")
  results_dir: pathlib.Path = store.DEFAULT_DIR
  beam_args: tuple[str, ...] = ()  # Beam's own flags, passed through untouched
  in_image: bool = False  # local: the SDK workers run in the benchmark's pushed worker image
  optimization: str | None = None  # a CPU optimization (optimizations.NAMES); None: the profile's
  gpu_sample_s: float | None = None  # NVML sampling interval; 0: off; None: the default
  decode: str | None = None  # image classification: cpu or device (vocab.DECODERS)


@dataclasses.dataclass(frozen=True)
class RunPlan:
  run_id: str
  bench: matrix.Benchmark  # the matrix entry with the profile's Dataflow shape applied
  profile: profiles.Profile
  runner: str
  dry_run: bool
  layout: Layout
  min_batch_size: int | None
  max_batch_size: int | None
  sentence_batching: str  # padded, length or max_length (profiles.py)
  items: int | None  # items asked for (None: a gs:// input on Dataflow, not read here)
  input: str  # the input list as given (local path or gs://)
  model_files: tuple[tuple[str, str], ...]  # (pipeline option, path) for the state dict, vocab
  results_dir: pathlib.Path
  beam_args: tuple[str, ...]
  optimization: str  # applied where the workers load the model (optimizations.py)
  overrides: tuple[tuple[str, Any], ...]  # settings asked beyond the profile's (comparable.py)
  gpu_sample_s: float
  decode: str  # where images are decoded: cpu (PIL, per item) or device (batched, on the model's)
  pin_memory: bool  # a GPU run's batches reach the device through pinned memory, non-blocking
  input_lines: tuple[bytes, ...] = ()  # local runs: the lines to run, read once here
  input_repeats: int = 1  # local runs of a fast benchmark: how often its distinct items repeat
  cloud: tuple[tuple[str, str], ...] = ()  # Dataflow settings
  image: str | None = None  # Dataflow, IN_IMAGE=1: image@sha256:... (a tag only in a dry run)
  in_image: bool = False  # local: the SDK workers run in `image` (runners.InImageRun)
  image_versions: tuple[tuple[str, str], ...] = ()  # IN_IMAGE=1: Python, Beam, torch in the image
  input_files_root: pathlib.Path | None = None  # IN_IMAGE=1: the folder the input files are in
  worker_share: dict[str, int] | None = None  # N=share: items, dataset items, Dataflow workers
  # local runs: this machine's model files, which the agreement check loads (agreement.py)
  check_model_files: tuple[tuple[str, str], ...] | None = None

  @property
  def inference_step(self) -> str:
    return self.profile.inference_step_for(self.bench)

  @property
  def local(self) -> bool:
    return self.runner == LOCAL

  @property
  def streaming(self) -> bool:
    """The job reads Pub/Sub as a streaming job: only on Dataflow, for a streaming benchmark."""
    return self.bench.streaming and not self.local

  @property
  def source(self) -> str:
    """Where the items come from, as the record says it."""
    if not self.bench.streaming:
      return "bounded"
    return "pubsub (streaming)" if self.streaming else "bounded (streaming on Dataflow)"

  @property
  def task(self):
    return self.bench.task_spec

  @property
  def length_aware(self) -> bool:
    return self.sentence_batching == "length"

  @property
  def batching(self) -> dict[str, int]:
    return {k: v for k, v in (("min_batch_size", self.min_batch_size),
                              ("max_batch_size", self.max_batch_size)) if v is not None}

  @property
  def fixed_batch_size(self) -> int | None:
    return self.max_batch_size if self.min_batch_size == self.max_batch_size else None

  @property
  def harness_threads(self) -> int | None:
    """Bundles one SDK process runs at once: 1 locally (the FnApiRunner's way); on Dataflow the
    profile's pin, or None where the service chooses."""
    return 1 if self.local else self.profile.harness_threads

  @property
  def machine_type(self) -> str:
    """Where the run's workers ran: this machine, one worker of the benchmark's machine type
    (IN_IMAGE=1), or the benchmark's Dataflow workers."""
    if self.in_image:
      return self.bench.machine.name
    return "local" if self.local else self.bench.dataflow.machine_type

  def as_record(self) -> dict[str, Any]:
    """The plan as plain data, whole (the record's `plan`): what was asked and resolved."""
    bench, layout, shape = self.bench, self.layout, self.bench.dataflow
    cloud = not self.local
    return {
        "run_id": self.run_id, "benchmark": bench.name, "task": bench.task,
        "model": bench.model, "device": bench.device, "profile": self.profile.name,
        "inference_step": self.inference_step, "runner": self.runner, "dry_run": self.dry_run,
        "layout": str(layout), "processes": layout.processes, "threads": layout.threads,
        "interop_threads": layout.interop_threads, "harness_threads": self.harness_threads,
        "batching": self.batching, "batch_size": self.fixed_batch_size,
        "sentence_batching": self.sentence_batching, "source": self.source,
        "items": self.items, "input": self.input, "input_repeats": self.input_repeats,
        "model_files": dict(self.model_files),
        "results_dir": str(self.results_dir), "beam_args": list(self.beam_args),
        "optimization": self.optimization, "overrides": dict(self.overrides),
        "gpu_sample_s": self.gpu_sample_s, "worker_share": self.worker_share,
        "decode": self.decode, "pin_memory": self.pin_memory,
        # where it ran
        "machine_type": self.machine_type, "workers": shape.num_workers if cloud else 1,
        "accelerator": shape.accelerator if cloud else None,
        "accelerator_count": shape.accelerator_count if cloud else 0,
        "disk_size_gb": shape.disk_size_gb if cloud else None,
        "region": dict(self.cloud).get("REGION"), "image": self.image,
        "in_image": self.in_image, "image_versions": dict(self.image_versions),
        "container": (worker_container.Limits.of(bench.machine).as_dict()
                      if self.in_image else None),
        # the benchmark's Dataflow worker (what a local run's cost is priced as) and series
        "dataflow": {"machine_type": shape.machine_type, "workers": shape.worker_range,
                     "num_workers": shape.num_workers, "max_num_workers": shape.max_num_workers,
                     "autoscaling_algorithm": shape.autoscaling_algorithm,
                     "disk_size_gb": shape.disk_size_gb, "accelerator": shape.accelerator,
                     "accelerator_count": shape.accelerator_count,
                     "experiments": list(shape.experiments)},
        "series": {"influx_measurement": bench.influx_measurement,
                   "bigquery_table": bench.bigquery_table},
    }


def resolve(asked: Overrides, run_id: str | None = None) -> RunPlan:
  """The one place a run's settings are decided and checked (see the module's docstring)."""
  profile = profiles.get(asked.profile)
  bench = profile.apply(matrix.get(asked.benchmark))
  _refuse_what_cannot_run(asked, bench)
  if not asked.dry_run:
    store.check_writable(asked.results_dir)  # before any work, not after it
  layout = asked.layout or profile.layout_for(bench)
  bench.check_memory(layout)  # copies that cannot fit never start
  batching = profile.batching_for(bench, asked.batch_size)
  optimization = _optimization(bench, profile, asked)
  sentence_batching = profile.sentence_batching_for(bench, asked.batching)
  sample_s = SAMPLE_INTERVAL_S if asked.gpu_sample_s is None else asked.gpu_sample_s
  decode = _decode(bench, profile, asked)
  common = dict(run_id=run_id or build.new_run_id(), bench=bench, profile=profile,
                optimization=optimization, runner=asked.runner, dry_run=asked.dry_run,
                layout=layout, min_batch_size=batching.get("min_batch_size"),
                max_batch_size=batching.get("max_batch_size"),
                sentence_batching=sentence_batching, results_dir=asked.results_dir,
                beam_args=tuple(asked.beam_args), gpu_sample_s=sample_s, decode=decode,
                pin_memory=bench.device == "GPU" and profile.pin_memory)
  if asked.runner == LOCAL and asked.in_image:
    found = in_image(bench, asked, optimization)
  elif asked.runner == LOCAL:
    reason = optimizations.unavailable(optimization, bench.task, device=bench.device)
    if reason:
      raise PlanError(f"OPTIMIZE={optimization}: {reason}")
    found = local_input(bench, asked)
    found["check_model_files"] = found["model_files"]
  else:
    found = dataflow_run(bench, profile, layout, asked)
  beyond = _overrides(bench, profile, asked, layout, batching, optimization, sentence_batching,
                      found.get("items"), decode)
  return RunPlan(**common, **found, overrides=beyond)


def _refuse_what_cannot_run(asked: Overrides, bench: matrix.Benchmark) -> None:
  if asked.runner not in RUNNERS:
    raise PlanError(f"unknown runner '{asked.runner}': use DirectRunner (local) or "
                    "DataflowRunner")
  if asked.dry_run and asked.runner != DATAFLOW:
    raise PlanError("DRY_RUN builds a Dataflow job: use it with RUNNER=DataflowRunner")
  if asked.in_image and asked.runner != LOCAL:
    raise PlanError("IN_IMAGE=1 is for local runs: Dataflow always runs the worker image")
  if asked.batching and asked.batching not in bench.task_spec.batchings:
    raise PlanError(f"BATCHING={asked.batching}: {bench.name}'s task {bench.task} batches its "
                    f"items one way ({', '.join(bench.task_spec.batchings)})")
  if asked.gpu_sample_s is not None and not 0 <= asked.gpu_sample_s <= 60:
    raise PlanError(f"the GPU sampling interval must be 0 (off) to 60 s, not "
                    f"{asked.gpu_sample_s}")


def _overrides(bench: matrix.Benchmark, profile: profiles.Profile, asked: Overrides,
               layout: Layout, batching: dict[str, int], optimization: str,
               sentence_batching: str, items: int | None,
               decode: str) -> tuple[tuple[str, Any], ...]:
  """The settings this run asked that differ from what its profile would have chosen: an
  experiment, kept apart from the profile's series and groups (record/comparable.py)."""
  local_items = asked.runner == LOCAL and asked.items is not None and items != bench.local_items
  differs = {"optimization": optimization != profile.optimization_for(bench) and optimization,
             "batch_size": batching != profile.batching_for(bench) and asked.batch_size,
             "layout": layout != profile.layout_for(bench) and str(layout),
             "batching": (sentence_batching != profile.sentence_batching_for(bench)
                          and sentence_batching),
             "input": bool(asked.input) and "custom",
             "decode": decode != profile.decode_for(bench) and decode,
             "items": local_items and asked.items}  # local runs only: Dataflow runs them all
  return tuple((k, v) for k, v in differs.items() if v)


def _decode(bench: matrix.Benchmark, profile: profiles.Profile, asked: Overrides) -> str:
  """Where the run decodes its images: DECODE=, else the profile's (beam: cpu, Beam's way),
  else the matrix's; device only for a task that decodes on the model's device."""
  if asked.decode and profile.decode and asked.decode != profile.decode:
    raise PlanError(f"PROFILE={profile.name} decodes on the {profile.decode}, as Beam's suite "
                    "does: DECODE= is for the tuned profile")
  decode = asked.decode or profile.decode_for(bench)
  if decode not in vocab.DECODERS:
    raise PlanError(f"DECODE={decode}: one of {', '.join(vocab.DECODERS)}")
  if decode not in bench.task_spec.decoders:
    raise PlanError(f"DECODE={decode}: {bench.name}'s task {bench.task} decodes "
                    f"{' or '.join(bench.task_spec.decoders)} only")
  return decode


def _optimization(bench: matrix.Benchmark, profile: profiles.Profile, asked: Overrides) -> str:
  """The run's optimization: OPTIMIZE=, else the profile's (beam: none), else the matrix's;
  refused where it cannot apply wherever the run goes: the task, the device, the GPU's compute
  capability (this machine's for a local run, the accelerator's on Dataflow); a compiler for
  compile is checked where the workers run."""
  if asked.optimization and profile.optimization and asked.optimization != profile.optimization:
    raise PlanError(f"PROFILE={profile.name} runs the model with optimization "
                    f"{profile.optimization}, as Beam's suite does: OPTIMIZE= is for the "
                    f"tuned profile")
  name = asked.optimization or profile.optimization_for(bench)
  capability = None
  if bench.device == "GPU":
    capability = (optimizations.cuda_capability() if asked.runner == LOCAL
                  else bench.dataflow_capability)
  reason = optimizations.unavailable(name, bench.task, which=lambda compiler: compiler,
                                     device=bench.device, capability=capability)
  if reason:  # what no machine can run (the compiler is checked where the workers are)
    raise PlanError(f"OPTIMIZE={name}: {reason}")
  return name


def check_local(name: str, data_dir: pathlib.Path, models_dir: pathlib.Path,
                results_dir: pathlib.Path, items: int | None = None) -> str | None:
  """Why benchmark `name` cannot run here locally (None: it can), by the very checks a launch
  makes: what `make doctor` reports."""
  try:
    resolve(Overrides(name, items=items, data_dir=data_dir, models_dir=models_dir,
                      results_dir=results_dir), run_id="doctor")
  except (PlanError, matrix.MatrixError, LayoutError, store.NotWritable) as e:
    return str(e)
  return None

