"""The pre-flight checks a run's plan is resolved through (plan.resolve): the device, the
input list (read once, here), the model files, the worker image and the Dataflow settings. Each
returns what it found for the plan, or raises PlanError with one line; none creates anything.
`make doctor` asks the same checks (check_local).
"""
from __future__ import annotations

import logging
import os
import pathlib
import re
from typing import Any

from pipelines import dataflow, matrix, profiles
from pipelines.cli_types import SHARE
from pipelines.layout import Layout
from pipelines.text_lines import split_lines
from pipelines.worker import models
from pipelines.worker.tokenizer_files import VOCAB_FILE

_BINARY_SNIFF_BYTES = 64 * 1024


class PlanError(RuntimeError):
  """Something is wrong before anything runs: one clear line, exit code 2."""


def local_input(bench: matrix.Benchmark, asked,
                model_files: dict[str, str] | None = None) -> dict[str, Any]:
  """A local run's input lines (read once, here) and model files."""
  check_device(bench)
  default_source = not asked.input
  if asked.input and "://" in asked.input:  # pathlib would also mangle gs://b into gs:/b
    raise PlanError(f"{asked.input} is not a local file: a local run reads its input list from "
                    "this machine (copy it here, or run on Dataflow: RUNNER=DataflowRunner)")
  source = (pathlib.Path(asked.input) if asked.input
            else asked.data_dir / bench.task_spec.input_file)
  lines = read_input_lines(source, default_source)
  items = len(lines) if asked.input and not asked.items else bench.items_for(asked.items)
  distinct = min(items, bench.distinct_items or items)
  if len(lines) < distinct:
    raise PlanError(f"{source} has {len(lines)} items, {distinct} requested"
                    + (f": run `make data N={asked.items}`" if default_source else ""))
  repeats = -(-items // len(lines[:distinct])) if distinct < items else 1
  return {"items": items, "input": str(source), "input_repeats": repeats,
          "input_lines": tuple((lines[:distinct] * repeats)[:items]),
          "worker_share": bench.worker_share() if asked.items == SHARE else None,
          "model_files": tuple((model_files or local_model_files(bench, asked.models_dir)).items())}


def in_image(bench: matrix.Benchmark, asked, optimization: str) -> dict[str, Any]:
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
                                          optimization=(optimization, bench.task,
                                                        bench.device))
  except worker_container.ContainerError as e:
    raise PlanError(str(e)) from None
  local = local_input(bench, asked, model_files=files)
  root = input_files_root(local["input_lines"]) if bench.task_spec.reads_files else None
  for mounted in (asked.results_dir.resolve(), root):
    if mounted and ":" in str(mounted):  # `-v SRC:DST:MODE` would split the name
      raise PlanError(f"IN_IMAGE=1 mounts {mounted} into the container, and a ':' in its name "
                      "cannot be mounted: use a folder without one")
  try:  # the agreement check runs here, on this machine's copies of the baked models
    check_files = tuple(local_model_files(bench, asked.models_dir).items())
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
  if models.uses_vocab(bench.model):
    files["vocab_path"] = f"{dataflow.MODELS_IN_IMAGE}/{VOCAB_FILE}"
  return files


def dataflow_run(bench: matrix.Benchmark, profile: profiles.Profile, layout: Layout,
                 asked) -> dict[str, Any]:
  cloud = dataflow.settings()
  if bench.streaming and not re.fullmatch(r"projects/[^/]+/subscriptions/[^/]+",
                                          cloud["PUBSUB_SUBSCRIPTION"]):
    raise PlanError(f"{bench.name} is a streaming job on Dataflow, reading its items from "
                    "Pub/Sub as Beam's does: set PUBSUB_SUBSCRIPTION=projects/P/subscriptions/S "
                    "(in .env): the launcher publishes the input's lines to its topic")
  if asked.items:
    logging.warning("N/--items applies to local runs; Dataflow runs the whole input")
  layout.dataflow_experiments(bench.machine.vcpus)  # LayoutError for what Dataflow cannot run
  try:
    image = dataflow.pinned_image(bench, cloud, asked.dry_run)
  except dataflow.ImageNotPushed as e:
    raise PlanError(str(e)) from None
  files = image_model_files(bench)
  files.update(profile.dataflow_values(bench))  # e.g. Beam's gs:// model path
  return {"items": items_requested(bench, asked.input), "input": asked.input or bench.dataset_input,
          "model_files": tuple(files.items()), "cloud": tuple(cloud.items()), "image": image}


def check_device(bench: matrix.Benchmark) -> None:
  """A GPU benchmark needs CUDA here: Beam's handler would silently fall back to the CPU."""
  from pipelines.worker.handler import DeviceUnavailableError, require_device
  try:
    require_device(bench.device)
  except DeviceUnavailableError as e:
    raise PlanError(str(e)) from None


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
  if models.uses_vocab(bench.model):
    files["vocab_path"] = models_dir / VOCAB_FILE
  # read by the workers beside the state dict (captioning.tokenizer_folder), not passed
  beside = [models_dir / name for name in models.files_beside(bench.model)]
  for path in [*files.values(), *beside]:
    if not path.exists():
      raise PlanError(f"{path} does not exist: run `make models` first")
  return {k: str(v.resolve()) for k, v in files.items()}
