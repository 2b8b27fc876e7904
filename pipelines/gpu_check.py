"""`make gpu-check`: the checks only a GPU machine can make, in one run.

1. NVML: the sampler reads real utilization while a CUDA kernel loop runs.
2. resnet152-gpu runs on CUDA and its record says device GPU with telemetry.
3. Efficiency of the Beam pipeline versus a plain CUDA loop (same model, data, batch size).
4. Telemetry overhead: the same pipeline with the sampler off.
5. Every other GPU benchmark of the matrix (faster-rcnn-gpu) runs on CUDA, a few items each.
Prints one JSON summary (also written to $OUT/gpu_check.json when OUT is set).
"""
from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import sys
import time

import torch

from pipelines import child, matrix, perf, profiles
from pipelines.layout import Layout
from pipelines.plan import Overrides
from pipelines.worker import gpu_telemetry
from pipelines.worker.handler import cuda_usable


def nvml_under_load(seconds: float = 3.0) -> dict:
  reader = gpu_telemetry.nvml_reader()
  if reader is None:
    return {"ok": False, "why": "NVML unavailable"}
  sampler = gpu_telemetry.GpuSampler(reader, interval_s=0.2).start()
  a = torch.randn(8192, 8192, device="cuda")
  end = time.monotonic() + seconds
  while time.monotonic() < end:
    a = (a @ a).tanh_()
  torch.cuda.synchronize()
  sampler.stop()
  samples = sampler.drain()
  peak = max((s.utilization_pct for s in samples), default=0)
  return {"ok": peak > 50, "samples": len(samples), "peak_utilization_pct": peak,
          "max_memory_mib": max((s.memory_used_mib for s in samples), default=0)}


PARALLEL_DECODE_LAYOUTS = ("1x2", "2x1")


def launched(asked: Overrides):
  """One pipeline run's record, in a fresh process (child.py). A run that did not succeed, or
  too short for a steady state, ends the check with one line naming it and its record (no
  figure is computed from None)."""
  try:
    record = child.run(asked)
  except child.NotStarted as e:
    raise SystemExit(f"error: gpu-check: {asked.benchmark} did not start: {e}") from None
  what = f"error: gpu-check: {asked.benchmark} run {record.run_id}"
  if not record.succeeded:
    raise SystemExit(f"{what} {record.status}: {record.error or 'no error recorded'}")
  if record.metrics.get("steady_throughput_per_s") is None:
    raise SystemExit(f"{what}: too few batches per process for a steady state")
  return record


def in_image(name: str, items: int, results: pathlib.Path) -> dict:
  """The same benchmark with its SDK workers in the pushed GPU image (IN_IMAGE=1), where `make
  image-gpu push` recorded one and a container CLI is here; otherwise why not."""
  from pipelines import dataflow, worker_container
  bench = matrix.get(name)
  if dataflow.read_digest(dataflow.digest_file(bench)) is None:
    return {"ran": False, "why": f"no pushed image ({dataflow.digest_file(bench)}): "
                                 "make image-gpu push REGISTRY=..."}
  try:
    worker_container.cli()
  except worker_container.ContainerError as e:
    return {"ran": False, "why": str(e)}
  try:  # a failed in-image run is reported beside the other checks, not instead of them
    record = launched(Overrides(name, items=items, in_image=True, results_dir=results))
  except SystemExit as e:
    return {"ran": False, "why": f"the in-image run failed (exit {e.code}): see its line above"}
  return {"ran": True, "image": record.plan["image"], "device_used": record.device_used,
          "versions": record.metadata["versions"], "steady_items_per_s":
          record.metrics["steady_throughput_per_s"],
          "container_memory": record.metadata.get("container_memory")}


def main() -> int:
  if not cuda_usable():
    print("error: gpu-check needs a CUDA GPU", file=sys.stderr)
    return 2
  bench = matrix.get("resnet152-gpu")
  items = bench.local_items
  lines = (pathlib.Path("data") / bench.task_spec.input_file).read_text().splitlines()[:items]
  plain = perf.plain_loop(bench, lines, bench.local_batch_size, pathlib.Path("models"),
                          length_aware=profiles.get(profiles.DEFAULT).length_aware(bench))
  results = pathlib.Path("results/gpu-check")
  record = launched(Overrides(bench.name, items=items, results_dir=results))
  quiet = launched(Overrides(bench.name, items=items, results_dir=results / "no-telemetry",
                             gpu_sample_s=0))
  beam = record.metrics["steady_throughput_per_s"]
  beam_quiet = quiet.metrics["steady_throughput_per_s"]
  # Decode in parallel with inference: two SDK processes share the GPU, so one decodes on its
  # vCPU while the other's batch runs (a T4 worker has 2 vCPUs; one process decodes serially).
  layouts = {}
  for layout in PARALLEL_DECODE_LAYOUTS:
    run = launched(Overrides(bench.name, items=items, layout=Layout.parse(layout),
                             results_dir=results / "layouts"))
    layouts[layout] = {"steady_items_per_s": run.metrics["steady_throughput_per_s"],
                       "gpu_utilization_mean_pct": run.gpu.get("utilization_mean_pct"),
                       "processes_loaded_model": run.metadata["processes_loaded_model"],
                       "device_used": run.device_used}
  suite = {}
  for name, other in matrix.load().items():
    if other.needs_gpu and name != bench.name:
      if other.task == "text_generation" and importlib.util.find_spec("vllm") is None:
        suite[name] = {"skipped": "vllm is not installed here: it runs in its own image "
                                  "(make image-vllm-gpu push, then IN_IMAGE=1)"}
        continue
      run = launched(Overrides(name, items=min(other.local_items, 16),
                               results_dir=results / "suite"))
      suite[name] = {"device_used": run.device_used, "gpu": run.gpu,
                     "steady_items_per_s": run.metrics["steady_throughput_per_s"],
                     "mean_batch_latency_ms": (
                         run.metrics["mean_inference_batch_latency_micro_secs"] or 0) / 1000}
  summary = {
      "device": torch.cuda.get_device_name(0),
      "nvml_under_load": nvml_under_load(),
      "resnet152_gpu": {"device_used": record.device_used,
                        "gpu": record.gpu, "items": items,
                        "batch_size": bench.local_batch_size},
      "plain_cuda_items_per_s": plain, "beam_items_per_s": beam, "efficiency": beam / plain,
      "beam_items_per_s_without_telemetry": beam_quiet,
      "telemetry_overhead": 1 - beam / beam_quiet,
      "layouts": layouts,
      "in_image": in_image(bench.name, items, results / "in-image"),
      "other_gpu_benchmarks": suite,
  }
  text = json.dumps(summary, indent=2)
  print(text)
  if os.environ.get("OUT"):
    pathlib.Path(os.environ["OUT"], "gpu_check.json").write_text(text)
  ok = (summary["nvml_under_load"]["ok"] and record.device_used == "GPU"
        and record.gpu["telemetry"] == "available"
        and all(r["device_used"] == "GPU" for r in suite.values() if "skipped" not in r))
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
