"""One plan per run, resolved once.

  Overrides   what a user or a command asks for (the command line, Make variables, a sweep point)
  resolve()   matrix entry + profile + machine type + overrides -> a frozen RunPlan, after every
              pre-flight check (runner, results store, layout and memory, device, input, model
              files, Dataflow settings and image digests); a failed check raises PlanError with
              one line, and nothing has been created
  RunPlan     everything a runner needs and the record says about what ran (`as_record()`)

Runners (runners.py) take a RunPlan and never change it; `make doctor` reports by calling the
same checks (`check_local`).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import re
from typing import Any

from pipelines import dataflow, matrix, profiles, results_store, run_record
from pipelines.cli_types import SHARE
from pipelines.layout import Layout, LayoutError
from pipelines.worker import models, optimizations
from pipelines.worker.tasks import Task
from pipelines.worker.tokenizer_files import VOCAB_FILE

LOCAL = "DirectRunner"
DATAFLOW = "DataflowRunner"
RUNNERS = (LOCAL, DATAFLOW)
_BINARY_SNIFF_BYTES = 64 * 1024


class PlanError(RuntimeError):
  """Something is wrong before anything runs: one clear line, exit code 2."""


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
  batching: str | None = None  # language modeling: padded or length
  dry_run: bool = False
  data_dir: pathlib.Path = pathlib.Path("data")
  models_dir: pathlib.Path = pathlib.Path("models")
  results_dir: pathlib.Path = results_store.DEFAULT_DIR
  beam_args: tuple[str, ...] = ()  # Beam's own flags, passed through untouched
  in_image: bool = False  # local: the SDK workers run in the benchmark's pushed worker image
  optimization: str | None = None  # a CPU optimization (optimizations.NAMES); None: the profile's


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
  length_aware: bool
  items: int | None  # items asked for (None: a gs:// input on Dataflow, not read here)
  input: str  # the input list as given (local path or gs://)
  model_files: tuple[tuple[str, str], ...]  # (pipeline option, path) for the state dict, vocab
  results_dir: pathlib.Path
  beam_args: tuple[str, ...]
  input_lines: tuple[bytes, ...] = ()  # local runs: the lines to run, read once here
  cloud: tuple[tuple[str, str], ...] = ()  # Dataflow settings
  image: str | None = None  # Dataflow, IN_IMAGE=1: image@sha256:... (a tag only in a dry run)
  in_image: bool = False  # local: the SDK workers run in `image` (runners.InImageRun)
  image_versions: tuple[tuple[str, str], ...] = ()  # IN_IMAGE=1: Python, Beam, torch in the image
  input_files_root: pathlib.Path | None = None  # IN_IMAGE=1: the folder the input files are in
  worker_share: dict[str, int] | None = None  # N=share: items, dataset items, Dataflow workers
  optimization: str = "none"  # applied where the workers load the model (optimizations.py)
  optimization_override: bool = False  # OPTIMIZE= asked for another than the profile's choice
  # local runs: this machine's model files, which the agreement check loads (agreement.py)
  check_model_files: tuple[tuple[str, str], ...] | None = None
  sentence_batching: str = "padded"  # padded, length or max_length (profiles.py)

  @property
  def inference_step(self) -> str:
    return self.profile.inference_step_for(self.bench)

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
  def task(self) -> Task:
    return self.bench.task_spec

  @property
  def batching(self) -> dict[str, int]:
    return {k: v for k, v in (("min_batch_size", self.min_batch_size),
                              ("max_batch_size", self.max_batch_size)) if v is not None}

  @property
  def fixed_batch_size(self) -> int | None:
    return self.max_batch_size if self.min_batch_size == self.max_batch_size else None

  @property
  def local(self) -> bool:
    return self.runner == LOCAL

  def as_record(self) -> dict[str, Any]:
    """The plan as plain data, whole (the record's `plan`): what was asked and resolved."""
    return {"benchmark": self.bench.name, "task": self.bench.task, "model": self.bench.model,
            "device": self.bench.device, "profile": self.profile.name,
            "inference_step": self.inference_step, "runner": self.runner,
            "dry_run": self.dry_run, "layout": str(self.layout),
            "batching": self.batching, "length_aware_batching": self.length_aware,
            "sentence_batching": self.sentence_batching, "source": self.source,
            "items": self.items, "input": self.input, "model_files": dict(self.model_files),
            "results_dir": str(self.results_dir), "beam_args": list(self.beam_args),
            "machine_type": (self.bench.machine.name if self.in_image else
                             "local" if self.local else self.bench.dataflow.machine_type),
            "image": self.image, "in_image": self.in_image,
            "worker_share": self.worker_share, "optimization": self.optimization,
            "optimization_override": self.optimization_override}


def resolve(o: Overrides, run_id: str | None = None) -> RunPlan:
  """The one place a run's settings are decided and checked (see the module's docstring)."""
  profile = profiles.get(o.profile)
  bench = profile.apply(matrix.get(o.benchmark))
  if o.runner not in RUNNERS:
    raise PlanError(f"unknown runner '{o.runner}': use DirectRunner (local) or DataflowRunner")
  if o.dry_run and o.runner != DATAFLOW:
    raise PlanError("DRY_RUN builds a Dataflow job: use it with RUNNER=DataflowRunner")
  if o.in_image and o.runner != LOCAL:
    raise PlanError("IN_IMAGE=1 is for local runs: Dataflow always runs the worker image")
  if not o.dry_run:
    results_store.check_writable(o.results_dir)  # before any work, not after it
  layout = o.layout or profile.layout_for(bench)
  bench.check_memory(layout)  # copies that cannot fit never start
  batching = profile.batching_for(bench, o.batch_size)
  optimization = _optimization(bench, profile, o)
  override = optimization != profile.optimization_for(bench)
  common = dict(run_id=run_id or run_record.new_run_id(), bench=bench, profile=profile,
                optimization=optimization, optimization_override=override, runner=o.runner,
                dry_run=o.dry_run, layout=layout,
                min_batch_size=batching.get("min_batch_size"),
                max_batch_size=batching.get("max_batch_size"),
                length_aware=profile.length_aware(bench, o.batching),
                sentence_batching=profile.sentence_batching_for(bench, o.batching),
                results_dir=o.results_dir, beam_args=tuple(o.beam_args))
  if o.runner == LOCAL and o.in_image:
    return RunPlan(**common, **_in_image(bench, o, optimization))
  if o.runner == LOCAL:
    reason = optimizations.unavailable(optimization, bench.task)
    if reason:
      raise PlanError(f"OPTIMIZE={optimization}: {reason}")
    local = _local(bench, o)
    return RunPlan(**common, **local, check_model_files=local["model_files"])
  return RunPlan(**common, **_dataflow(bench, profile, layout, o))


def _optimization(bench: matrix.Benchmark, profile: profiles.Profile, o: Overrides) -> str:
  """The run's CPU optimization: OPTIMIZE=, else the profile's (beam: none), else the
  matrix's; refused where it cannot apply wherever the run goes (the machine's own abilities,
  a compiler for compile, are checked where the workers run)."""
  if o.optimization and profile.optimization and o.optimization != profile.optimization:
    raise PlanError(f"PROFILE={profile.name} runs the model with optimization "
                    f"{profile.optimization}, as Beam's suite does: OPTIMIZE= is for the "
                    f"tuned profile")
  name = o.optimization or profile.optimization_for(bench)
  if name != optimizations.NONE and bench.device == "GPU":
    raise PlanError(f"OPTIMIZE={name}: the kit's optimizations are CPU ones; {bench.name} runs "
                    "on a GPU")
  reason = optimizations.unavailable(name, bench.task, which=lambda compiler: compiler)
  if reason:  # what no machine can run (the compiler is checked where the workers are)
    raise PlanError(f"OPTIMIZE={name}: {reason}")
  return name


def _local(bench: matrix.Benchmark, o: Overrides,
           model_files: dict[str, str] | None = None) -> dict[str, Any]:
  check_device(bench)
  default_source = not o.input
  if o.input and "://" in o.input:  # pathlib would also mangle gs://b into gs:/b
    raise PlanError(f"{o.input} is not a local file: a local run reads its input list from this "
                    "machine (copy it here, or run on Dataflow: RUNNER=DataflowRunner)")
  source = pathlib.Path(o.input) if o.input else o.data_dir / bench.task_spec.input_file
  lines = read_input_lines(source, default_source)
  items = len(lines) if o.input and not o.items else bench.items_for(o.items)
  if len(lines) < items:
    raise PlanError(f"{source} has {len(lines)} items, {items} requested"
                    + (f": run `make data N={o.items}`" if default_source else ""))
  return {"items": items, "input": str(source), "input_lines": tuple(lines[:items]),
          "worker_share": bench.worker_share() if o.items == SHARE else None,
          "model_files": tuple((model_files or local_model_files(bench, o.models_dir)).items())}


def _in_image(bench: matrix.Benchmark, o: Overrides, optimization: str) -> dict[str, Any]:
  """A local run whose workers are the benchmark's worker image, pushed (`make push`) and
  pinned by digest, checked before launch: its models and worker modules are there."""
  from pipelines import worker_container
  fields = dataflow.read_digest(dataflow.digest_file(bench))
  if fields is None:
    raise PlanError(f"IN_IMAGE=1 runs the image `make push` recorded in "
                    f"{dataflow.digest_file(bench)}, and there is none: run `make image-"
                    f"{bench.image} push REGISTRY=...` first")
  image = f"{fields['image'].rsplit(':', 1)[0]}@{fields['digest']}"
  files = image_model_files(bench)
  modules = ["pipelines.worker.pipeline", bench.task_spec.module]
  try:
    worker_container.pull(image)
    beside = [f"{dataflow.MODELS_IN_IMAGE}/{name}" for name in models.files_beside(bench.model)]
    versions = worker_container.preflight(image, [*files.values(), *beside], modules,
                                          gpu=bench.device == "GPU",
                                          optimization=(optimization, bench.task))
  except worker_container.ContainerError as e:
    raise PlanError(str(e)) from None
  local = _local(bench, o, model_files=files)
  root = input_files_root(local["input_lines"]) if bench.task_spec.reads_files else None
  for mounted in (o.results_dir.resolve(), root):
    if mounted and ":" in str(mounted):  # `-v SRC:DST:MODE` would split the name
      raise PlanError(f"IN_IMAGE=1 mounts {mounted} into the container, and a ':' in its name "
                      "cannot be mounted: use a folder without one")
  try:  # the agreement check runs here, on this machine's copies of the baked models
    check_files = tuple(local_model_files(bench, o.models_dir).items())
  except PlanError:
    check_files = None
  return {**local, "image": image, "in_image": True, "check_model_files": check_files,
          "image_versions": tuple(sorted(versions.items())), "input_files_root": root}


def input_files_root(lines: tuple[bytes, ...]) -> pathlib.Path | None:
  """The deepest folder holding every input file (mounted read-only into the worker image)."""
  folders = {os.path.dirname(os.path.normpath(line.decode("utf-8", "replace")))
             for line in lines if line.startswith(b"/")}
  if not folders:
    return None
  root = pathlib.Path(os.path.commonpath(sorted(folders)))
  if root == pathlib.Path("/"):
    raise PlanError("IN_IMAGE=1 mounts the folder holding the input files read-only, and these "
                    "files have only / in common: put them under one folder")
  return root


def image_model_files(bench: matrix.Benchmark) -> dict[str, str]:
  """The model files as baked into the worker images."""
  files = {"model_state_dict_path": str(models.model_path(
      bench.model, pathlib.PurePosixPath(dataflow.MODELS_IN_IMAGE)))}
  if bench.task_spec.needs_vocab:
    files["vocab_path"] = f"{dataflow.MODELS_IN_IMAGE}/{VOCAB_FILE}"
  return files


def _dataflow(bench: matrix.Benchmark, profile: profiles.Profile, layout: Layout,
              o: Overrides) -> dict[str, Any]:
  cloud = dataflow.settings()
  if bench.streaming and not re.fullmatch(r"projects/[^/]+/subscriptions/[^/]+",
                                          cloud["PUBSUB_SUBSCRIPTION"]):
    raise PlanError(f"{bench.name} is a streaming job on Dataflow, reading its items from "
                    "Pub/Sub as Beam's does: set PUBSUB_SUBSCRIPTION=projects/P/subscriptions/S "
                    "(in .env): the launcher publishes the input's lines to its topic")
  if o.items:
    logging.warning("N/--items applies to local runs; Dataflow runs the whole input")
  layout.dataflow_experiments(bench.machine.vcpus)  # LayoutError for what Dataflow cannot run
  try:
    image = dataflow.pinned_image(bench, cloud, o.dry_run)
  except dataflow.ImageNotPushed as e:
    raise PlanError(str(e)) from None
  files = image_model_files(bench)
  files.update(profile.dataflow_values(bench))  # e.g. Beam's gs:// model path
  return {"items": items_requested(bench, o.input), "input": o.input or bench.dataset_input,
          "model_files": tuple(files.items()), "cloud": tuple(cloud.items()), "image": image}


def check_device(bench: matrix.Benchmark) -> None:
  """A GPU benchmark needs CUDA here: Beam's handler would silently fall back to the CPU."""
  from pipelines.worker.handler import DeviceUnavailableError, require_device
  try:
    require_device(bench.device)
  except DeviceUnavailableError as e:
    raise PlanError(str(e)) from None


def check_local(name: str, data_dir: pathlib.Path, models_dir: pathlib.Path,
                results_dir: pathlib.Path, items: int | None = None) -> str | None:
  """Why benchmark `name` cannot run here locally (None: it can), by the very checks a launch
  makes: what `make doctor` reports."""
  try:
    resolve(Overrides(name, items=items, data_dir=data_dir, models_dir=models_dir,
                      results_dir=results_dir), run_id="doctor")
  except (PlanError, matrix.MatrixError, LayoutError, results_store.NotWritable) as e:
    return str(e)
  return None


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
    raise PlanError(f"{source} does not exist{hint}")
  if source.is_dir():
    raise PlanError(f"{source} is a directory; --input/INPUT takes a text file with one image "
                    "path or sentence per line")
  try:
    data = source.read_bytes()
  except OSError as e:
    raise PlanError(f"{source} cannot be read: {e.strerror}") from None
  if b"\0" in data[:_BINARY_SNIFF_BYTES]:
    raise PlanError(f"{source} is a binary file, not a text list (one image path or sentence "
                    "per line)")
  return split_lines(data)


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


def local_model_files(bench: matrix.Benchmark, models_dir: pathlib.Path) -> dict[str, str]:
  state_dict = models.model_path(bench.model, models_dir)
  files = {"model_state_dict_path": state_dict}
  if bench.task_spec.needs_vocab:
    files["vocab_path"] = models_dir / VOCAB_FILE
  # read by the workers beside the state dict (captioning.tokenizer_folder), not passed
  beside = [models_dir / name for name in models.files_beside(bench.model)]
  for path in [*files.values(), *beside]:
    if not path.exists():
      raise PlanError(f"{path} does not exist: run `make models` first")
  return {k: str(v.resolve()) for k, v in files.items()}
