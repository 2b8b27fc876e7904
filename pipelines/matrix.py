"""The benchmark matrix: reads infra/benchmarks.toml, the single source of truth."""
from __future__ import annotations

import dataclasses
import os
import pathlib
import tomllib
from typing import Any

from pipelines.cli_types import SHARE
from pipelines.layout import Layout, LayoutError, check_memory
from pipelines.record.schema import BENCHMARK as BENCHMARK_NAME
from pipelines.worker import tasks
from pipelines.worker.vocab import DECODERS, DEVICES, OPTIMIZATIONS

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
MATRIX_PATH = REPO_ROOT / "infra" / "benchmarks.toml"


def matrix_path() -> pathlib.Path:
  """The matrix file: BENCHMARK_MATRIX points at another (the tests' small models use it)."""
  return pathlib.Path(os.environ.get("BENCHMARK_MATRIX") or MATRIX_PATH)

# One worker image per benchmark family, so a ResNet job does not pull bert-large's 1.3 GB:
# a benchmark's `image` names one; the Dockerfile is docker/Dockerfile.<cpu|gpu>.
# vLLM's image is its own family (docker/Dockerfile.vllm: vLLM and its CUDA stack, never in
# `make setup`).
IMAGE_NAMES = {"cpu-resnet": "beam-bench-cpu-resnet", "cpu-bert": "beam-bench-cpu-bert",
               "cpu-captioning": "beam-bench-cpu-captioning", "gpu": "beam-bench-gpu",
               "vllm-gpu": "beam-bench-vllm-gpu"}


@dataclasses.dataclass(frozen=True)
class DataflowShape:
  machine_type: str
  num_workers: int
  autoscaling_algorithm: str
  disk_size_gb: int
  accelerator: str | None = None
  accelerator_count: int = 0
  experiments: tuple[str, ...] = ()
  # THROUGHPUT_BASED autoscaling's ceiling (Beam's sentiment jobs: 20 to 250); None: no
  # autoscaling range, num_workers throughout
  max_num_workers: int | None = None
  # the accelerator's CUDA compute capability ([accelerators] in the matrix file)
  accelerator_capability: tuple[int, int] | None = None

  @property
  def worker_range(self) -> str:
    """'75', or '20..250' where autoscaling may add workers."""
    if self.max_num_workers and self.max_num_workers != self.num_workers:
      return f"{self.num_workers}..{self.max_num_workers}"
    return str(self.num_workers)


@dataclasses.dataclass(frozen=True)
class MachineType:
  name: str
  vcpus: int
  memory_gb: float
  reserved_gb: float  # kept for the OS and Dataflow's worker harness
  layout: Layout  # the default worker layout on this machine type


@dataclasses.dataclass(frozen=True)
class Benchmark:
  name: str
  task: str
  model: str
  dataset: str
  dataset_input: str
  dataset_items: int
  device: str
  image: str
  bigquery_table: str
  influx_measurement: str
  dataflow: DataflowShape
  local_items: int
  local_batch_size: int
  machine: MachineType
  layout: Layout  # the benchmark's own, or its machine type's default
  process_memory_mib: float  # peak RSS of one SDK process holding this model
  batching: str = "padded"  # language modeling: padded, or length (similar lengths together)
  optimization: str = "none"  # the tuned profile's optimization (optimizations.py)
  decode: str = "cpu"  # image classification: where the tuned profile decodes (vocab.DECODERS)
  # A fast benchmark's local run repeats its input list past this many distinct items (a
  # GPU's steady state needs thousands; generating them would take minutes and GBs); None:
  # every item distinct.
  distinct_items: int | None = None
  # Beam runs it as a streaming job reading Pub/Sub; a local run reads the same items as a
  # bounded source (the record's `source` says so)
  streaming: bool = False

  def check_memory(self, layout: Layout) -> None:
    check_memory(layout, self.process_memory_mib, self.machine.name, self.machine.memory_gb,
                 self.machine.reserved_gb, self.model)

  @property
  def task_spec(self) -> tasks.Task:
    """What differs by task: input list, vocab, batching modes, the worker's steps."""
    return tasks.get(self.task)

  @property
  def share_items(self) -> int:
    """The items one Dataflow worker gets: the dataset divided by the worker count (Beam's
    BERT jobs: 50,000 / 250 = 200 sentences; its ResNet jobs: 50,000 / 75 = 667 images). An
    autoscaled job divides by the workers it starts with, the most one worker can get."""
    return -(-self.dataset_items // self.dataflow.num_workers)

  def worker_share(self) -> dict[str, int]:
    """What N=share means for this benchmark (recorded with the runs it sized)."""
    return {"items": self.share_items, "dataset_items": self.dataset_items,
            "num_workers": self.dataflow.num_workers}

  def items_for(self, asked: int | str | None) -> int:
    """The items a local run takes for N: a count, `share`, or None (the matrix's local count)."""
    return self.share_items if asked == SHARE else asked or self.local_items

  @property
  def dataflow_capability(self) -> tuple[int, int] | None:
    """The CUDA compute capability of the benchmark's Dataflow accelerator (a T4: 7.5)."""
    return self.dataflow.accelerator_capability

  def files_for(self, asked: int | str | None) -> int:
    """The distinct input items a local run of N needs (`make data` generates them)."""
    items = self.items_for(asked)
    return min(items, self.distinct_items) if self.distinct_items else items

  @property
  def needs_gpu(self) -> bool:
    return self.device == "GPU"


class MatrixError(ValueError):
  pass


def _require(table: dict[str, Any], key: str, where: str) -> Any:
  if key not in table:
    raise MatrixError(f"{where}: missing key '{key}' in {matrix_path().name}")
  return table[key]


def load(path: pathlib.Path | None = None) -> dict[str, Benchmark]:
  """Returns the benchmarks by name, validated."""
  path = path or matrix_path()
  with open(path, "rb") as f:
    raw = tomllib.load(f)
  shared_dataflow = raw.get("dataflow", {})
  datasets = raw.get("datasets", {})
  machines = {name: MachineType(name=name, vcpus=int(_require(m, "vcpus", name)),
                                memory_gb=float(_require(m, "memory_gb", name)),
                                reserved_gb=float(_require(m, "reserved_gb", name)),
                                layout=_layout(_require(m, "layout", name), name))
              for name, m in raw.get("machine_types", {}).items()}
  memory = raw.get("process_memory_mib", {})
  capabilities = {name: tuple(int(p) for p in str(value).split("."))
                  for name, value in raw.get("accelerators", {}).items()}
  benchmarks: dict[str, Benchmark] = {}
  for name, entry in _require(raw, "benchmarks", "matrix").items():
    where = f"benchmarks.{name}"
    if not BENCHMARK_NAME.fullmatch(name):  # it names make targets, record files, series
      raise MatrixError(f"{where}: a benchmark's name is letters, digits, '.', '_' and '-', "
                        "at most 64, starting with a letter or digit")
    dataset_name = _require(entry, "dataset", where)
    if dataset_name not in datasets:
      raise MatrixError(f"{where}: unknown dataset '{dataset_name}'")
    dataset = datasets[dataset_name]
    task = _require(entry, "task", where)
    if task not in tasks.names() or task not in dataset.get("tasks", [dataset.get("task")]):
      raise MatrixError(f"{where}: task '{task}' invalid or does not match its dataset")
    device = _require(entry, "device", where)
    if device not in DEVICES:
      raise MatrixError(f"{where}: device must be one of {DEVICES}, got '{device}'")
    dataflow = {**shared_dataflow, **entry.get("dataflow", {})}
    dataflow["experiments"] = tuple(dataflow.get("experiments", ()))
    if dataflow.get("accelerator"):
      if dataflow["accelerator"] not in capabilities:
        raise MatrixError(f"{where}: accelerator '{dataflow['accelerator']}' has no "
                          "[accelerators] entry (its compute capability)")
      dataflow["accelerator_capability"] = capabilities[dataflow["accelerator"]]
    unknown_shape = set(dataflow) - {f.name for f in dataclasses.fields(DataflowShape)}
    if unknown_shape:
      raise MatrixError(f"{where}.dataflow: unknown key(s) {', '.join(sorted(unknown_shape))}")
    if dataflow.get("max_num_workers") and dataflow["max_num_workers"] < dataflow["num_workers"]:
      raise MatrixError(f"{where}.dataflow: max_num_workers below num_workers")
    local = _require(entry, "local", where)
    machine_name = dataflow["machine_type"]
    if machine_name not in machines:
      raise MatrixError(f"{where}: machine type '{machine_name}' has no [machine_types] entry")
    machine = machines[machine_name]
    image = _require(entry, "image", where)
    if image not in IMAGE_NAMES:
      raise MatrixError(f"{where}: unknown image '{image}'; known: "
                        f"{', '.join(sorted(IMAGE_NAMES))}")
    optimization = entry.get("optimization", "none")
    if optimization not in OPTIMIZATIONS:
      raise MatrixError(f"{where}: unknown optimization '{optimization}'; known: "
                        f"{', '.join(OPTIMIZATIONS)}")
    decode = entry.get("decode", "cpu")
    if decode not in DECODERS:
      raise MatrixError(f"{where}: unknown decode '{decode}'; known: {', '.join(DECODERS)}")
    model = _require(entry, "model", where)
    if model not in memory:
      raise MatrixError(f"{where}: model '{model}' has no [process_memory_mib] entry")
    benchmarks[name] = Benchmark(
        name=name,
        task=task,
        model=model,
        dataset=dataset_name,
        dataset_input=dataset["input"],
        dataset_items=dataset["items"],
        device=device,
        image=image,
        bigquery_table=_require(entry, "bigquery_table", where),
        influx_measurement=_require(entry, "influx_measurement", where),
        dataflow=DataflowShape(**dataflow),
        local_items=int(_require(local, "items", where + ".local")),
        local_batch_size=int(_require(local, "batch_size", where + ".local")),
        machine=machine,
        layout=_layout(entry["layout"], where) if "layout" in entry else machine.layout,
        process_memory_mib=float(memory[model]),
        batching=entry.get("batching", "padded"),
        optimization=optimization,
        decode=decode,
        distinct_items=int(local["distinct"]) if "distinct" in local else None,
        streaming=bool(entry.get("streaming", False)),
    )
  return benchmarks


def _layout(text: str, where: str) -> Layout:
  try:
    return Layout.parse(text)
  except LayoutError as e:
    raise MatrixError(f"{where}: {e}") from None


def get(name: str) -> Benchmark:
  benchmarks = load()
  if name not in benchmarks:
    raise MatrixError(f"unknown benchmark '{name}'; known: {', '.join(benchmarks)}")
  return benchmarks[name]


# Families whose models only their image builds: vLLM's Gemma (5 GB, served by vLLM on a GPU) is
# never written by a plain `make models`.
IMAGE_ONLY_MODELS = ("vllm-gpu",)


def models(image: str | None = None) -> list[str]:
  """The distinct models the matrix uses (what `make models` builds, IMAGE_ONLY_MODELS' left
  out), or those one worker image (the matrix's `image`: cpu-resnet, cpu-bert, gpu, ...) must
  bake."""
  return sorted({b.model for b in load().values()
                 if image == b.image or (image is None and b.image not in IMAGE_ONLY_MODELS)})


if __name__ == "__main__":
  # `python -m pipelines.matrix names` is how the Makefile lists benchmarks.
  import sys
  what = sys.argv[1] if len(sys.argv) > 1 else "names"
  try:
    benchmarks = load()
  except MatrixError as e:
    raise SystemExit(f"error: {matrix_path()}: {e}") from None
  if what == "names":
    print(" ".join(benchmarks))
  elif what == "images":
    print(" ".join(sorted({b.image for b in benchmarks.values()})))
  elif what == "models":
    print(" ".join(models(sys.argv[2] if len(sys.argv) > 2 else None)))
  else:
    raise SystemExit("usage: python -m pipelines.matrix names | images | models [IMAGE]")
