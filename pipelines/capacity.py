"""`make plan BENCH=<name> [ITEMS=50000] [DEADLINE=s] [BUDGET=usd]`: how many workers of which
machine type, projected from what this kit measured.

Model (one worker, items in parallel across workers, which Dataflow's batch jobs do):
  worker seconds = boot + image pull + start-up + items per worker / steady items/s
  job seconds    = worker seconds (the workers run side by side)
  job cost       = workers x worker seconds x the machine type's hourly price (infra/prices.toml)
where, for each worker layout of the benchmark, from its newest local records with a worker
share (metrics.worker_share_s; in-image records preferred: they include the container's and
every SDK process's start):
  steady items/s = metrics.steady_throughput_per_s (all processes of the worker)
  start-up       = worker_share_s - items / steady items/s (launcher, process start, model load,
                   first batch: all that does not scale with the items)
Constants no local run can measure, with where each default comes from (override in .env or
on the command line):
  WORKER_BOOT_S    VM boot and Dataflow's worker harness until the SDK container starts. Google
                   publishes no figure; 120 s is an assumption (Dataflow's own console shows the
                   workers' start-up in the job's worker logs: fit it from a real job, see below)
  IMAGE_GB         the worker image's compressed size: default the cpu-resnet image this kit
                   pushed here, 3.93 GB (PyPI's CUDA torch; Dataflow's CPU-wheel images are
                   smaller); `make push` prints the registry's figure for yours
  IMAGE_PULL_GBPS  pull rate from Artifact Registry in the same region; 0.1 GB/s is an
                   assumption (a few hundred Mbit/s per VM)
Machine types larger than the measured one are projections: steady items/s scales with vCPUs
(per-vCPU throughput held), model copies with processes (memory per copy from the matrix); such
rows say `projected`, never `measured`. Where Dataflow records of the benchmark exist, their job
window and cost are shown beside the projection for the same configuration, and WORKER_BOOT_S
is refitted from them (the window's excess over the projection without boot).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import pathlib
import statistics
import sys
from typing import Any

from pipelines import capacity_table, cost, matrix, profiles
from pipelines.layout import Layout, LayoutError, check_memory
from pipelines.record import comparable, store
from pipelines.record.schema import Record

WORKER_COUNTS = (1, 2, 5, 10, 20, 25, 50, 75, 100, 150, 200, 250, 300, 400, 500)
DEFAULTS = {"WORKER_BOOT_S": 120.0, "IMAGE_GB": 3.93, "IMAGE_PULL_GBPS": 0.1}
RECORDS_PER_LAYOUT = 3  # the newest ones, median


class PlanInputMissing(RuntimeError):
  """Nothing measured to project from: one line, exit 2."""


@dataclasses.dataclass(frozen=True)
class Measured:
  """One profile and worker layout of a benchmark as measured on one machine type."""
  benchmark: str
  profile: str  # its batching and step label: tuned or beam
  layout: Layout
  machine_type: str
  vcpus: int
  rate: float  # steady items/s of the whole worker
  startup_s: float  # everything that does not scale with the items
  in_image: bool
  run_ids: tuple[str, ...]
  hardware: str  # what the rate was measured on: the GPU, or the CPUs


def constants(env: dict[str, str] = os.environ, **given: float | None) -> dict[str, float]:
  out = dict(DEFAULTS)
  for name in DEFAULTS:
    value = given.get(name.lower())
    value = env.get(name) if value is None else value
    if value not in (None, ""):
      try:
        out[name] = float(value)
      except ValueError:
        raise PlanInputMissing(f"{name} must be a number, not {value!r}") from None
      if not math.isfinite(out[name]) or out[name] < 0 or (
          name == "IMAGE_PULL_GBPS" and out[name] == 0):
        raise PlanInputMissing(f"{name} must be a finite number"
                               f"{' above 0' if name == 'IMAGE_PULL_GBPS' else ' from 0'}, "
                               f"not {value!r}")
  return out


def measured(bench: matrix.Benchmark, records: list[Record]) -> list[Measured]:
  """Per profile and layout, from the newest local records of `bench` that have a worker share
  and a steady state (in-image records first), and asked nothing beyond their profile but a
  layout and an item count (an OPTIMIZE= or BATCH_SIZE= experiment is not the configuration
  the plan prices): the comparable key (record/comparable.py) says which."""
  by_layout: dict[tuple[str, str], list[Record]] = {}
  for r in records:
    key = comparable.key(r)
    if (r.benchmark == bench.name and r.succeeded and key.local
        and not key.experiment_without("layout", "items")
        and r.metrics.get("worker_share_s") and r.metrics.get("steady_throughput_per_s")):
      by_layout.setdefault((key.profile, key.layout), []).append(r)
  out = []
  for (profile, layout), group in sorted(by_layout.items()):
    in_image = [r for r in group if r.in_image]
    chosen = sorted(in_image or group, key=lambda r: r.timestamp)[-RECORDS_PER_LAYOUT:]
    rates = [r.metrics["steady_throughput_per_s"] for r in chosen]
    startups = [max(0.0, r.metrics["worker_share_s"]
                    - r.metrics["num_inferences"] / r.metrics["steady_throughput_per_s"])
                for r in chosen]
    out.append(Measured(bench.name, profile, Layout.parse(layout), bench.machine.name,
                        bench.machine.vcpus, statistics.median(rates),
                        statistics.median(startups), bool(in_image),
                        tuple(r.run_id for r in chosen), hardware(chosen[-1])))
  return out


def hardware(record: Record) -> str:
  """'NVIDIA H200, 2 CPUs' or '2 CPUs of Intel(R) Xeon(R) ...': what a rate was measured on."""
  meta = record.metadata
  cpus = meta.get("cpus") or meta.get("launcher_cpus") or "?"
  if record.device_used == "GPU":
    return f"{meta.get('gpu_name') or 'a GPU'}, {cpus} CPUs"
  return f"{cpus} CPUs of {meta.get('cpu_model') or 'an unrecorded CPU'}"


def worker_seconds(m: Measured, items_per_worker: int, vcpus: int, c: dict[str, float]) -> float:
  rate = m.rate * vcpus / m.vcpus
  return (c["WORKER_BOOT_S"] + c["IMAGE_GB"] / c["IMAGE_PULL_GBPS"] + m.startup_s
          + items_per_worker / rate)


def rows(bench: matrix.Benchmark, found: list[Measured], items: int, c: dict[str, float],
         prices: dict[str, Any]) -> list[dict[str, Any]]:
  """Every (machine type, layout, worker count) the measurements can speak for: larger machine
  types projected by vCPUs for a CPU benchmark; a GPU benchmark's rate is its GPU's, so only
  its own machine type."""
  out = []
  for machine, shape in prices["machine_types"].items():
    if bench.needs_gpu and machine != bench.machine.name:
      continue
    hourly = cost.worker_hour_price(machine, bench.dataflow.disk_size_gb,
                                    bench.dataflow.accelerator,
                                    bench.dataflow.accelerator_count, prices)
    if hourly is None:
      continue
    for m in found:
      scale = shape["vcpus"] / m.vcpus
      if scale != int(scale):
        continue  # the layout does not scale to this machine
      on_machine = Layout(m.layout.processes * int(scale), m.layout.threads)
      try:  # the launcher's own arithmetic: copies that cannot fit are not a configuration
        check_memory(on_machine, bench.process_memory_mib, machine, shape["memory_gb"],
                     bench.machine.reserved_gb, bench.model)
      except LayoutError:
        continue
      for workers in WORKER_COUNTS:
        seconds = worker_seconds(m, math.ceil(items / workers), shape["vcpus"], c)
        out.append({"benchmark": bench.name, "machine_type": machine,
                    "accelerator": bench.dataflow.accelerator, "measured_on": m.hardware,
                    "profile": m.profile, "layout": str(m.layout),
                    "layout_on_machine": str(on_machine),
                    "workers": workers, "job_s": seconds,
                    "cost_usd": workers * seconds / 3600 * hourly,
                    "basis": "measured" if scale == 1 else "projected",
                    "in_image": m.in_image})
  return out


def frontier(candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """The configurations no other is both faster and cheaper than, fastest first."""
  best: list[dict[str, Any]] = []
  for row in sorted(candidates, key=lambda r: (r["job_s"], r["cost_usd"])):
    if not best or row["cost_usd"] < best[-1]["cost_usd"]:
      best.append(row)
  return best


def cpu_twins(bench: matrix.Benchmark) -> list[matrix.Benchmark]:
  """The CPU benchmarks of a GPU benchmark's task and model (resnet152 for resnet152-gpu)."""
  if not bench.needs_gpu:
    return []
  return [b for b in matrix.load().values()
          if not b.needs_gpu and (b.task, b.model) == (bench.task, bench.model)]


def beam_configuration(bench_name: str) -> dict[str, Any]:
  beam = profiles.get("beam")
  shaped = beam.apply(matrix.get(bench_name))
  return {"machine_type": shaped.dataflow.machine_type, "workers": shaped.dataflow.num_workers,
          "max_workers": shaped.dataflow.max_num_workers,  # autoscaling's ceiling, or None
          "layout": str(beam.layout_for(shaped)), "profile": beam.name}


def dataflow_actuals(bench: matrix.Benchmark, records: list[Record]) -> list[dict[str, Any]]:
  return [{"run_id": r.run_id, "machine_type": r.machine_type,
           "workers": r.plan.get("workers"), "layout": r.layout, "profile": r.profile,
           "items": r.metrics.get("num_inferences"),
           "job_s": r.metrics.get("job_window_s") or r.metrics.get("wall_time_s"),
           "cost_usd": r.metrics.get("cost_usd")}
          for r in records if r.benchmark == bench.name and r.succeeded and not r.local]


def fit_boot(actuals: list[dict[str, Any]], found: list[Measured], c: dict[str, float],
             prices: dict[str, Any]) -> float | None:
  """WORKER_BOOT_S as the real jobs imply it: median of (job window - projection without boot)."""
  implied = []
  for a in actuals:
    m = next((m for m in found if (m.profile, str(m.layout)) == (a["profile"], a["layout"])),
             None)
    shape = prices["machine_types"].get(a["machine_type"])
    if m is None or shape is None or not a["workers"] or not a["items"] or not a["job_s"]:
      continue
    no_boot = worker_seconds(m, math.ceil(a["items"] / a["workers"]), shape["vcpus"],
                             {**c, "WORKER_BOOT_S": 0.0})
    implied.append(a["job_s"] - no_boot)
  return max(0.0, statistics.median(implied)) if implied else None


def plan(bench_name: str, items: int, deadline_s: float | None, budget_usd: float | None,
         results_dir: pathlib.Path, c: dict[str, float]) -> dict[str, Any]:
  bench = matrix.get(bench_name)
  records = store.load_all(results_dir) if results_dir.exists() else []
  found = measured(bench, records)
  twins = {twin.name: (twin, measured(twin, records)) for twin in cpu_twins(bench)}
  missing = (f"no local run of {bench.name} with a worker share and a steady state in "
             f"{results_dir}: run e.g. `make bench-{bench.name} N=share` (IN_IMAGE=1 to include "
             "the container's start-up) for each layout to compare (LAYOUT=...)")
  if not found and not any(twin_found for _, twin_found in twins.values()):
    raise PlanInputMissing(missing)
  prices = cost.load_prices()
  actuals = dataflow_actuals(bench, records)
  fitted = fit_boot(actuals, found, c, prices)
  if fitted is not None:
    c = {**c, "WORKER_BOOT_S": fitted}
  candidates = rows(bench, found, items, c, prices)
  # A GPU benchmark beside the same model on CPU workers, for the same items: the decision
  # between the two is what its measurements are for (its CPU twin's rows stand alone until
  # it has its own, which only a GPU machine can measure).
  for twin, twin_found in twins.values():
    found = found + twin_found
    candidates += rows(twin, twin_found, items, c, prices)
  beam = beam_configuration(bench.name)
  for row in candidates:
    row["beam"] = (row["benchmark"], row["machine_type"], row["workers"], row["layout"],
                   row["profile"]) == (bench.name, beam["machine_type"], beam["workers"],
                                       beam["layout"], beam["profile"])
  meeting = [r for r in candidates if deadline_s is None or r["job_s"] <= deadline_s]
  meeting = [r for r in meeting if budget_usd is None or r["cost_usd"] <= budget_usd]
  cheapest = min(meeting, key=lambda r: (r["cost_usd"], r["job_s"]), default=None)
  for a in actuals:
    a["projected"] = next((r for r in candidates if (r["benchmark"], r["machine_type"],
                           r["workers"], r["layout"], r["profile"]) == (
                               bench.name, a["machine_type"], a["workers"], a["layout"],
                               a["profile"])), None)
  return {"benchmark": bench.name, "items": items, "deadline_s": deadline_s,
          "not_measured": None if any(m.benchmark == bench.name for m in found) else missing,
          "budget_usd": budget_usd, "constants": c, "boot_fitted_from_dataflow": fitted is not None,
          "measured": [{**dataclasses.asdict(m), "layout": str(m.layout)} for m in found],
          "beam": beam, "recommended": cheapest, "frontier": frontier(candidates),
          "rows": candidates, "dataflow_actuals": actuals}


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("benchmark")
  parser.add_argument("--items", type=int, default=None,
                      help="items in the job (default: the matrix dataset's, e.g. 50000)")
  parser.add_argument("--deadline-s", type=float, default=None)
  parser.add_argument("--budget-usd", type=float, default=None)
  parser.add_argument("--results-dir", type=pathlib.Path, default=store.DEFAULT_DIR)
  for name in DEFAULTS:
    parser.add_argument(f"--{name.lower().replace('_', '-')}", type=float, default=None,
                        dest=name.lower(), help=f"default {DEFAULTS[name]:g} (or {name} in .env)")
  args = parser.parse_args(argv)
  try:
    bench = matrix.get(args.benchmark)
    c = constants(**{name.lower(): getattr(args, name.lower()) for name in DEFAULTS})
    result = plan(bench.name, args.items or bench.dataset_items, args.deadline_s,
                  args.budget_usd, args.results_dir, c)
  except (PlanInputMissing, matrix.MatrixError) as e:
    print(f"error: plan {args.benchmark}: {e}", file=sys.stderr)
    return 2
  print(capacity_table.table(result))
  out = args.results_dir / "plans" / f"{bench.name}.json"
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(result, indent=2) + "\n")
  print(f"plan: {out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
