"""Run profiles: how a benchmark of the matrix is run (`--profile`, Makefile PROFILE).

  tuned  the kit's own settings (the default): a fixed batch (the matrix's local.batch_size as
         min and max), the matrix's worker layout, the models baked into the worker image, the
         RunInference step label `RunInference`, the matrix's BERT batching (padded or length).
  beam   Apache Beam's benchmark suite as Beam runs it: Beam's batching (adaptive for ResNet,
         batch size 1 for BERT, sentences in the order they come: no length sort), Beam's step
         label `PyTorchRunInference` (so the metric names
         are Beam's), Dataflow's default layout (one SDK process per vCPU, torch's default pool
         of all vCPUs in each), Beam's gs:// model paths and worker counts on Dataflow.

Every setting lives in the matrix file's `[profiles.<name>]` tables (infra/benchmarks.toml,
with the Beam source file and lines of each value); this module only reads and applies them.
"""
from __future__ import annotations

import dataclasses
import tomllib
from typing import Any

from pipelines import matrix
from pipelines.layout import Layout, LayoutError
from pipelines.worker import vocab
from pipelines.worker.tasks import TASKS
from pipelines.worker.vocab import OPTIMIZATIONS

DEFAULT = vocab.DEFAULT_PROFILE
VCPUS = "vcpus"  # layout: processes = threads = the machine type's vCPUs (Dataflow's default)
_BATCH_KEYS = ("min_batch_size", "max_batch_size")
SERVICE = "service"  # harness_threads: Dataflow's service chooses
SENTENCE_BATCHINGS = vocab.SENTENCE_BATCHINGS
BENCHMARK_KEYS = {"model_state_dict_path", "dataflow", "inference_step", "batching",
                  "sentence_batching"}


def _batch_bounds(batching: Any) -> bool:
  return (isinstance(batching, dict) and bool(batching) and not set(batching) - set(_BATCH_KEYS)
          and all(type(v) is int and v >= 1 for v in batching.values()))


class ProfileError(matrix.MatrixError):
  pass


@dataclasses.dataclass(frozen=True)
class Profile:
  name: str
  inference_step: str = vocab.DEFAULT_INFERENCE_STEP
  layout: str | None = None  # None: the matrix's; "vcpus"; or PxT
  batching: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)  # by task
  sentence_batching: str | None = None  # None: the matrix's; padded, length or max_length
  # per benchmark: model_state_dict_path, dataflow shape, and where one of Beam's examples
  # differs from the others: inference_step, batching, sentence_batching
  benchmarks: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
  # Bundles one SDK process runs at once on Dataflow (--number_of_worker_harness_threads);
  # None leaves it to the service (see the matrix's [profiles.tuned] for why the kit pins 1).
  harness_threads: int | None = 1
  # A CPU optimization every run of the profile uses (beam: none, as Beam's suite); None: the
  # matrix's per benchmark, or OPTIMIZE=.
  optimization: str | None = None
  decode: str | None = None  # images: cpu or device (beam: cpu); None: the matrix's
  pin_memory: bool = True  # GPU runs: batches copied through pinned memory (beam: Beam's .to)

  def decode_for(self, bench: matrix.Benchmark) -> str:
    """Where the profile decodes the benchmark's images: its own (beam: cpu), else the
    matrix's."""
    return self.decode or bench.decode

  def layout_for(self, bench: matrix.Benchmark) -> Layout:
    if self.layout is None:
      return bench.layout
    if self.layout == VCPUS:
      return Layout(bench.machine.vcpus, bench.machine.vcpus)
    return Layout.parse(self.layout)

  def inference_step_for(self, bench: matrix.Benchmark) -> str:
    """The RunInference step label (Beam's metric names are composed from it)."""
    return self.benchmarks.get(bench.name, {}).get("inference_step") or self.inference_step

  def optimization_for(self, bench: matrix.Benchmark) -> str:
    """The CPU optimization the profile runs the benchmark with: its own (beam: none), else
    the matrix's."""
    return self.optimization or bench.optimization

  def batching_for(self, bench: matrix.Benchmark,
                   batch_size: int | None = None) -> dict[str, int]:
    """min/max batch size for RunInference: an explicit batch size wins, then the profile's
    batching for the task, then the matrix's fixed local batch size."""
    if batch_size:
      return {"min_batch_size": batch_size, "max_batch_size": batch_size}
    if "batching" in self.benchmarks.get(bench.name, {}):
      return dict(self.benchmarks[bench.name]["batching"])
    if bench.task in self.batching:
      return dict(self.batching[bench.task])
    return {"min_batch_size": bench.local_batch_size, "max_batch_size": bench.local_batch_size}

  def sentence_batching_for(self, bench: matrix.Benchmark, explicit: str | None = None) -> str:
    """How sentences are batched (padded: to the batch's longest, in arrival order; length:
    similar lengths together; max_length: every sentence padded to the tokenizer's maximum, as
    Beam's sentiment example does): an explicit --batching wins (in any profile, like
    --batch-size and --layout; the record says which ran), then the profile's for the
    benchmark, then the profile's, then the matrix's; a task without the chosen mode runs its
    default."""
    chosen = (explicit or self.benchmarks.get(bench.name, {}).get("sentence_batching")
              or self.sentence_batching or bench.batching)
    batchings = bench.task_spec.batchings
    return chosen if chosen in batchings else batchings[0]

  def length_aware(self, bench: matrix.Benchmark, explicit: str | None = None) -> bool:
    """Whether sentences are sorted by length before batching (sentence_batching_for)."""
    return self.sentence_batching_for(bench, explicit) == "length"

  def apply(self, bench: matrix.Benchmark) -> matrix.Benchmark:
    """The benchmark with the profile's Dataflow shape overrides."""
    overrides = self.benchmarks.get(bench.name, {}).get("dataflow", {})
    if not overrides:
      return bench
    shape = dict(overrides)
    if "experiments" in shape:
      shape["experiments"] = tuple(shape["experiments"])
    return dataclasses.replace(bench, dataflow=dataclasses.replace(bench.dataflow, **shape))

  def dataflow_values(self, bench: matrix.Benchmark) -> dict[str, str]:
    """Pipeline values the profile sets on Dataflow (Beam's gs:// model path)."""
    entry = self.benchmarks.get(bench.name, {})
    return {k: entry[k] for k in ("model_state_dict_path",) if k in entry}


def load(path=None) -> dict[str, Profile]:
  """The profiles of the matrix file; `tuned` exists even where the file names none."""
  with open(path or matrix.matrix_path(), "rb") as f:
    raw = tomllib.load(f).get("profiles", {})
  out = {DEFAULT: Profile(DEFAULT)}
  shape_fields = {f.name for f in dataclasses.fields(matrix.DataflowShape)}
  for name, entry in raw.items():
    where = f"profiles.{name}"
    unknown = set(entry) - {"inference_step", "layout", "batching", "sentence_batching",
                            "benchmarks", "harness_threads", "optimization", "decode",
                            "pin_memory"}
    if unknown:
      raise ProfileError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    layout = entry.get("layout")
    if layout not in (None, VCPUS):
      try:
        Layout.parse(layout)
      except LayoutError as e:
        raise ProfileError(f"{where}: {e}") from None
    threads = entry.get("harness_threads", 1)
    if threads != SERVICE and (type(threads) is not int or threads < 1):
      raise ProfileError(f"{where}.harness_threads: a whole number from 1, or \"{SERVICE}\"")
    if entry.get("optimization", "none") not in OPTIMIZATIONS:
      raise ProfileError(f"{where}.optimization: one of {', '.join(OPTIMIZATIONS)}")
    if entry.get("decode", "cpu") not in vocab.DECODERS:
      raise ProfileError(f"{where}.decode: one of {', '.join(vocab.DECODERS)}")
    if not isinstance(entry.get("pin_memory", True), bool):
      raise ProfileError(f"{where}.pin_memory: true or false")
    if entry.get("sentence_batching", "padded") not in SENTENCE_BATCHINGS:
      raise ProfileError(f"{where}.sentence_batching: one of {', '.join(SENTENCE_BATCHINGS)}")
    for task, batching in entry.get("batching", {}).items():
      if task not in TASKS or not _batch_bounds(batching):
        raise ProfileError(f"{where}.batching.{task}: a task with min_batch_size and/or "
                           "max_batch_size")
    for bench, settings in entry.get("benchmarks", {}).items():
      bad = ((set(settings) - BENCHMARK_KEYS)
             | (set(settings.get("dataflow", {})) - shape_fields))
      if bad:
        raise ProfileError(f"{where}.benchmarks.{bench}: unknown key(s) "
                           f"{', '.join(sorted(bad))}")
      if "batching" in settings and not _batch_bounds(settings["batching"]):
        raise ProfileError(f"{where}.benchmarks.{bench}.batching: min_batch_size and/or "
                           "max_batch_size")
      if settings.get("sentence_batching", "padded") not in SENTENCE_BATCHINGS:
        raise ProfileError(f"{where}.benchmarks.{bench}.sentence_batching: one of "
                           f"{', '.join(SENTENCE_BATCHINGS)}")
    step = entry.get("inference_step", vocab.DEFAULT_INFERENCE_STEP)
    out[name] = Profile(name=name, inference_step=step,
                        layout=layout, batching=entry.get("batching", {}),
                        sentence_batching=entry.get("sentence_batching"),
                        benchmarks=entry.get("benchmarks", {}),
                        harness_threads=None if threads == SERVICE else threads,
                        optimization=entry.get("optimization"), decode=entry.get("decode"),
                        pin_memory=entry.get("pin_memory", True))
  return out


def get(name: str | None) -> Profile:
  profiles = load()
  name = name or DEFAULT
  if name not in profiles:
    raise ProfileError(f"unknown profile '{name}'; known: {', '.join(profiles)}")
  return profiles[name]


if __name__ == "__main__":
  # `python -m pipelines.profiles names` is how the Makefile lists the profiles.
  import sys
  if sys.argv[1:] != ["names"]:
    raise SystemExit("usage: python -m pipelines.profiles names")
  try:
    print(" ".join(load()))
  except matrix.MatrixError as e:
    raise SystemExit(f"error: {matrix.matrix_path()}: {e}") from None
