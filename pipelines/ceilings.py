"""The ceilings of an image classification run: what each stage of its work does alone on the
same hardware and limits, and so the best the run could reach (a launcher post-run step, like
the agreement check; run for GPU benchmarks and DECODE=device runs, locally).

  model    a synthetic batch already on the model's device, the run's model, batch size,
           optimization (precision, memory format), timed after warm-up
  decode   the run's decoder: PIL on the worker's vCPUs (one process per SDK process, each
           single-threaded, at once), or the batched decoder on the model's device
           (device_decode.decode_batch: nvjpeg on a GPU)

Stages on one device share it: their per-item times add (decode and inference on one GPU:
1 / (1/decode + 1/model)); stages on different devices overlap, and the slower one bounds the
run. The run's ceiling is its slowest device; efficiency_vs_ceiling = steady items/s / ceiling
says whether a faster GPU (or more vCPUs) would help.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
import os
import time
from typing import Any, Callable

import torch

from pipelines import agreement
from pipelines.worker import models
from pipelines.worker.tasks import image_classification
from pipelines.worker.tasks.image_classification import CROP

MIN_SECONDS = 1.0  # each stage timed at least this long (and at least MIN_ROUNDS rounds)
MIN_ROUNDS = 3
WARM_UP = 2


@dataclasses.dataclass(frozen=True)
class Stage:
  name: str  # model, decode
  device: str  # where it runs: cpu or cuda
  items_per_s: float
  detail: str  # what was timed, in words


def ceiling(stages: list[Stage]) -> tuple[float, str]:
  """(the run's ceiling, items/s; the device that bounds it): stages on one device add their
  per-item times, devices work side by side."""
  per_device: dict[str, float] = {}
  for stage in stages:
    per_device[stage.device] = per_device.get(stage.device, 0.0) + 1 / stage.items_per_s
  bound = max(per_device, key=per_device.get)
  return 1 / per_device[bound], bound


def words(stages: list[Stage], steady: float | None) -> str:
  """'decode-bound: 2 vCPUs decode 210 images/s; the GPU infers 3,119' (and how close the run
  came)."""
  rate, bound = ceiling(stages)
  on_bound = [s for s in stages if s.device == bound]
  kind = ("+".join(s.name for s in on_bound) if len(on_bound) > 1 else on_bound[0].name)
  said = "; ".join(f"{s.detail} {s.items_per_s:,.0f} images/s" for s in stages)
  run = f"; the run reached {steady / rate:.0%} of {rate:,.0f}" if steady else ""
  return f"{kind}-bound: {said}{run}"


def _timed(step: Callable[[], int], synchronize: Callable[[], None]) -> float:
  """Items/s of `step` (which returns the items it did), after WARM_UP calls."""
  for _ in range(WARM_UP):
    step()
  synchronize()
  items, rounds, start = 0, 0, time.perf_counter()
  while rounds < MIN_ROUNDS or time.perf_counter() - start < MIN_SECONDS:
    items += step()
    rounds += 1
  synchronize()
  return items / (time.perf_counter() - start)


def _synchronize(device: torch.device) -> Callable[[], None]:
  return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def model_stage(plan, device: torch.device, batch: int, threads: int) -> Stage:
  """The run's model alone, on a synthetic batch resident on `device`."""
  files = dict(plan.check_model_files or ())
  model = models.load_model(files["model_state_dict_path"], plan.bench.model).to(device)
  model = plan.task.optimize(model, plan.optimization, batch)
  images = torch.randn(batch, 3, CROP, CROP, device=device)
  torch.set_num_threads(threads)

  def step() -> int:
    with torch.no_grad():
      model(images)
    return batch
  where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{threads} vCPUs"
  return Stage("model", device.type, _timed(step, _synchronize(device)),
               f"{where} infer{'s' if device.type == 'cuda' else ''} "
               f"({plan.optimization}, batch {batch})")


def _pil_rate(datas: list[bytes], seconds: float) -> float:
  """Items/s of PIL's decode + the run's preprocessing in this process, single-threaded."""
  torch.set_num_threads(1)
  done, start = 0, time.perf_counter()
  while done < len(datas) or time.perf_counter() - start < seconds:
    image_classification.preprocess(datas[done % len(datas)])
    done += 1
  return done / (time.perf_counter() - start)


def cpu_decode_stage(datas: list[bytes], processes: int) -> Stage:
  """PIL decode on `processes` single-threaded processes at once (the SDK processes of one
  worker), their rates summed."""
  # spawned, not forked: the launcher may hold CUDA (the decode check ran on the GPU)
  with concurrent.futures.ProcessPoolExecutor(
      processes, mp_context=multiprocessing.get_context("spawn")) as pool:
    rates = list(pool.map(_pil_rate, [datas] * processes, [MIN_SECONDS] * processes))
  return Stage("decode", "cpu", sum(rates),
               f"{processes} vCPU{'s' if processes > 1 else ''} decode (PIL)")


def device_decode_stage(datas: list[bytes], device: torch.device, batch: int) -> Stage:
  """The batched decoder on `device` (device_decode.decode_batch) on the run's batch size."""
  from pipelines.worker import device_decode
  tensors = [device_decode.as_tensor(d) for d in datas]  # as the pipeline's batches hold them
  chunk = (tensors * (1 + batch // len(tensors)))[:batch]

  def step() -> int:
    decoded, _ = device_decode.decode_batch(chunk, device)
    return len(decoded)
  where = torch.cuda.get_device_name(device) if device.type == "cuda" else "the CPU"
  return Stage("decode", device.type, _timed(step, _synchronize(device)),
               f"{where} decodes (batched, on the device)")


def measure(plan, datas: list[bytes], steady: float | None = None) -> dict[str, Any]:
  """The run's stages and ceiling, as the record keeps them (metadata.ceilings); `steady`:
  the run's steady items/s, said against the ceiling in words."""
  device = agreement.model_device(plan)
  vcpus = plan.bench.machine.vcpus
  processes = min(plan.layout.processes, vcpus)
  batch = plan.max_batch_size or plan.bench.local_batch_size
  previous = torch.get_num_threads()
  try:
    stages = [device_decode_stage(datas, device, batch) if plan.decode == "device"
              else cpu_decode_stage(datas, processes),
              model_stage(plan, device, batch, threads=vcpus if device.type == "cpu" else 1)]
  finally:
    torch.set_num_threads(previous)
  rate, bound = ceiling(stages)
  return {"stages": [dataclasses.asdict(s) for s in stages], "ceiling_items_per_s": rate,
          "bound_by": bound, "in_words": words(stages, steady),
          "cpus": len(os.sched_getaffinity(0))}
