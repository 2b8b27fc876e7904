"""`make gpu-check`: what only a GPU machine can tell, as one prepared script of timed steps
that fits 8 minutes on a bare machine, at the 2 vCPUs of the T4 worker's n1-standard-2 (the
script pins itself and every run to them; --cpus to change).

  nvml         the sampler reads real utilization while a CUDA kernel loop runs
  sweep        resnet152-gpu over decode (cpu, device) x precision (fp32, fp16, bf16 where the
               GPU has it; channels_last) at one SDK process, then the winner at one process
               per vCPU: each run's record has its ceilings, efficiency and GPU telemetry
  overhead     the tuned run with and without telemetry, back to back, TELEMETRY_PAIRS times
  beam         PROFILE=beam: Beam's shape, the reference every ratio is taken against
  suite        every other GPU benchmark of the matrix (faster-rcnn-gpu), a few items each
  in_image     resnet152-gpu in its pushed worker image, where one was pushed

Every step runs under its own time limit: a hang is a recorded step, not a lost run, and no
step starts once the budget is spent. Prints one JSON summary, also written to
$OUT/gpu_check.json when OUT is set (and results/gpu-check/gpu_check.json).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import statistics
import sys
import time
from typing import Any, Callable

import torch

from pipelines import child, matrix
from pipelines.layout import Layout
from pipelines.plan import Overrides
from pipelines.record.schema import Record
from pipelines.worker import gpu_telemetry
from pipelines.worker.handler import cuda_usable

BENCH = "resnet152-gpu"
BUDGET_S = 450.0  # 7.5 minutes of steps; nothing starts past it
STEP_TIMEOUT_S = 100.0
ITEMS = 2048  # enough for a steady state at ~200 images/s (cpu decode) and ~2,500 (device)
TELEMETRY_PAIRS = 3
RESULTS = pathlib.Path("results/gpu-check")


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
  sm = [s.sm_active_pct for s in samples if s.sm_active_pct is not None]
  return {"ok": peak > 50, "samples": len(samples), "peak_utilization_pct": peak,
          "sm_active_max_pct": max(sm) if sm else None,
          "max_memory_mib": max((s.memory_used_mib for s in samples), default=0)}


def launched(asked: Overrides, timeout_s: float | None = None) -> Record:
  """One run's record, in a fresh process (child.py). A run that did not succeed ends the step
  with one line naming it and its record (no figure is computed from None)."""
  try:
    record = child.run(asked, timeout_s=timeout_s)
  except child.NotStarted as e:
    raise SystemExit(f"error: gpu-check: {asked.benchmark} did not start: {e}") from None
  except child.TimedOut as e:
    raise SystemExit(f"error: gpu-check: {asked.benchmark} {e}") from None
  what = f"error: gpu-check: {asked.benchmark} run {record.run_id}"
  if not record.succeeded:
    raise SystemExit(f"{what} {record.status}: {record.error or 'no error recorded'}")
  return record


def figures(record: Record) -> dict[str, Any]:
  """What a step keeps of a run: throughput, ceilings, efficiency, the GPU's own figures."""
  m, plan = record.metrics, record.plan
  return {"run_id": record.run_id, "decode": plan.get("decode"),
          "decoded": record.metadata.get("decoded"), "optimization": plan["optimization"],
          "layout": plan["layout"], "batch_size": plan.get("batch_size"),
          "items": m["num_inferences"], "device_used": record.device_used,
          "steady_items_per_s": m.get("steady_throughput_per_s"),
          "steady_window_items_per_s": m.get("steady_window_throughput_per_s"),
          "steady_state": record.metadata.get("steady_state", {}).get("why"),
          "worker_share_s": m.get("worker_share_s"),
          "ceiling_items_per_s": m.get("ceiling_items_per_s"),
          "efficiency_vs_ceiling": m.get("efficiency_vs_ceiling"),
          "bottleneck": (record.metadata.get("ceilings") or {}).get("in_words"),
          "decode_agreement": m.get("decode_agreement"),
          "decode_max_input_diff": m.get("decode_max_input_diff"),
          "agreement": m.get("agreement"), "gpu": record.gpu}


class Steps:
  """Runs named steps under a shared time budget, each under its own timeout, keeping each
  one's outcome (ok with its figures, failed with its line, or skipped) in `done`."""

  def __init__(self, budget_s: float):
    self.deadline = time.monotonic() + budget_s
    self.done: dict[str, dict[str, Any]] = {}

  def run(self, name: str, step: Callable[[], Any]) -> Any:
    left = self.deadline - time.monotonic()
    if left <= 0:
      self.done[name] = {"status": "skipped", "why": "the time budget was spent"}
      return None
    started = time.monotonic()
    print(f"gpu-check: {name}", flush=True)
    try:
      result = step()
      self.done[name] = {"status": "ok", "seconds": round(time.monotonic() - started, 1),
                         "figures": result}
      return result
    except SystemExit as e:  # a failed run's one line (launched), a refusal
      self.done[name] = {"status": "failed", "why": str(e.code),
                         "seconds": round(time.monotonic() - started, 1)}
    except Exception as e:  # noqa: BLE001 - a step that breaks is a recorded step
      self.done[name] = {"status": "failed", "why": f"{type(e).__name__}: {e}",
                         "seconds": round(time.monotonic() - started, 1)}
    return None

  def timeout(self) -> float:
    return max(1.0, min(STEP_TIMEOUT_S, self.deadline - time.monotonic()))


def precisions() -> list[str]:
  """fp32, fp16, and bf16 where the GPU has it (compute capability 8.0 and up)."""
  major, _ = torch.cuda.get_device_capability(0)
  return ["none", "fp16_channels_last"] + (["bf16_channels_last"] if major >= 8 else [])


def run_all(steps: Steps, items: int) -> dict[str, Any]:
  results = RESULTS

  def one(name: str, **asked: Any) -> dict[str, Any] | None:
    return steps.run(name, lambda: figures(launched(
        Overrides(BENCH, items=items, results_dir=results / "runs", **asked),
        timeout_s=steps.timeout())))

  steps.run("nvml", nvml_under_load)
  sweep = {}
  for decode in ("cpu", "device"):
    for precision in precisions():
      sweep[f"{decode} {precision} 1x2"] = one(
          f"sweep {decode} {precision} 1x2", decode=decode, optimization=precision,
          layout=Layout(1, 2))
  done = {k: v for k, v in sweep.items() if v and v["steady_items_per_s"]}
  best = max(done, key=lambda k: done[k]["steady_items_per_s"]) if done else None
  if best:  # the winner at one SDK process per vCPU: two processes decode, both infer
    decode, precision, _ = best.split()
    sweep[f"{decode} {precision} 2x1"] = one(f"sweep {decode} {precision} 2x1", decode=decode,
                                            optimization=precision, layout=Layout(2, 1))
  steps.run("overhead", lambda: telemetry_overhead(steps, items, best))
  beam = one("beam", profile="beam")
  suite = {name: steps.run(name, lambda b=bench: figures(launched(
      Overrides(b.name, items=min(b.local_items, 16), results_dir=results / "suite"),
      timeout_s=steps.timeout())))
           for name, bench in matrix.load().items() if bench.needs_gpu and name != BENCH
           and not (bench.task == "text_generation" and importlib.util.find_spec("vllm") is None)}
  steps.run("in_image", lambda: in_image(BENCH, 64, results / "in-image"))
  return {"sweep": sweep, "best": best, "beam": beam, "suite": suite}


def telemetry_overhead(steps: Steps, items: int, best: str | None) -> dict[str, Any]:
  """The tuned run with telemetry on, then off, back to back, TELEMETRY_PAIRS times: the
  median of the pairs' steady ratios."""
  asked = {}
  if best:
    decode, precision, layout = best.split()
    asked = {"decode": decode, "optimization": precision, "layout": Layout.parse(layout)}
  ratios = []
  for _ in range(TELEMETRY_PAIRS):
    on, off = (launched(Overrides(BENCH, items=items, results_dir=RESULTS / "overhead",
                                  gpu_sample_s=sample_s, **asked), timeout_s=steps.timeout())
               for sample_s in (None, 0))
    ratios.append(on.metrics["steady_throughput_per_s"] / off.metrics["steady_throughput_per_s"])
  return {"pairs": TELEMETRY_PAIRS, "on_over_off": ratios,
          "overhead": 1 - statistics.median(ratios)}


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
  record = launched(Overrides(name, items=items, in_image=True, results_dir=results))
  return {"ran": True, "image": record.plan["image"], "device_used": record.device_used,
          "versions": record.metadata["versions"],
          "steady_items_per_s": record.metrics["steady_throughput_per_s"],
          "container_memory": record.metadata.get("container_memory")}


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--cpus", type=int, default=matrix.get(BENCH).machine.vcpus,
                      help="CPUs every run is held to (default: the worker's vCPUs)")
  parser.add_argument("--items", type=int, default=ITEMS)
  parser.add_argument("--budget-s", type=float, default=BUDGET_S)
  args = parser.parse_args(argv)
  if not cuda_usable():
    print("error: gpu-check needs a CUDA GPU", file=sys.stderr)
    return 2
  allowed = sorted(os.sched_getaffinity(0))
  os.sched_setaffinity(0, allowed[:args.cpus])  # the children inherit it
  steps = Steps(args.budget_s)
  outcome = run_all(steps, args.items)
  summary = {"device": torch.cuda.get_device_name(0),
             "capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
             "cpus": sorted(os.sched_getaffinity(0)), "items": args.items,
             "best": outcome["best"], "steps": steps.done,
             "versions": {"torch": torch.__version__, "cuda": torch.version.cuda}}
  text = json.dumps(summary, indent=2, default=str)
  print(text)
  RESULTS.mkdir(parents=True, exist_ok=True)
  (RESULTS / "gpu_check.json").write_text(text + "\n")
  if os.environ.get("OUT"):
    pathlib.Path(os.environ["OUT"], "gpu_check.json").write_text(text + "\n")
  failed = [name for name, step in steps.done.items() if step["status"] != "ok"]
  print(f"gpu-check: {len(steps.done) - len(failed)} of {len(steps.done)} steps ok"
        + (f"; not ok: {', '.join(failed)}" if failed else ""), file=sys.stderr)
  return 0 if not failed else 1


if __name__ == "__main__":
  sys.exit(main())
