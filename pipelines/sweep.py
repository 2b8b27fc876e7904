"""`make sweep BENCH=<name> [BATCH_SIZES=4,8,16,32] [LAYOUTS=1xV,Vx1,VxV] [BATCHINGS=padded,length]
[OPTIMIZATIONS=none,freeze,...] [N=…] [REPEATS=1] [IN_IMAGE=1]`: one benchmark over a grid of
batch sizes x worker layouts (only those Dataflow can run on its machine type of V vCPUs) (x,
for BERT, padded or length-aware batching; x CPU optimizations, each with its agreement check
against none), run locally.

Each point's plan is resolved (and checked) before the first point runs; each point then runs in
its own process (child.py), so points do not share a warmed-up process. Each point is
measured in steady state, from the workers' own batch timestamps (see
pipelines/worker/process_stats.py): per SDK process, the items of its batches
after the first over the time from its first batch's end to its last batch's end, summed over
processes. Process start-up, model load and the first batch are excluded whatever N is; N only
needs to give every process a few batches. With REPEATS > 1 a point's figures are the median.

Prints a table and stores it as results/sweeps/<bench>-<time>.json (the report plots the latest
sweep of each benchmark); the points' run records go to results/sweeps/runs/, apart from the
benchmark history.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

from pipelines import child, cli_types, matrix, plan, run
from pipelines.cli_types import positive_int
from pipelines.layout import Layout, LayoutError
from pipelines.record import build, facts, store
from pipelines.record.schema import Record
from pipelines.sweep_results import cell, summarize, table
from pipelines.worker import optimizations

DEFAULT_BATCH_SIZES = "4,8,16,32"


def dataflow_layouts(vcpus: int) -> list[Layout]:
  """The layouts Dataflow can run on a machine type of `vcpus`: one SDK process with all the
  vCPUs as torch threads, one single-threaded process per vCPU, and Beam's default (one process
  per vCPU, torch's default pool of all of them in each): 1x2, 2x1, 2x2 on n1-standard-2."""
  return list(dict.fromkeys(Layout(p, t) for p, t in ((1, vcpus), (vcpus, 1), (vcpus, vcpus))))


def _list(parse):
  def parse_list(text: str) -> list:
    return [parse(part) for part in text.split(",") if part.strip()]
  return parse_list


def run_point(asked: plan.Overrides) -> Record:
  """One point, in a fresh process (child.py); its record (status failed with the error if it
  failed)."""
  try:
    return child.run(asked)
  except child.NotStarted as e:
    raise SystemExit(f"sweep point {asked.layout} {asked.batching or ''} batch "
                     f"{asked.batch_size} did not start:\n{e}") from None


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("benchmark")
  parser.add_argument("--batch-sizes", type=_list(positive_int), default=DEFAULT_BATCH_SIZES)
  parser.add_argument("--layouts", type=_list(cli_types.layout), default=None,
                      help="PxT,... (default: the ones Dataflow can run on the machine type: "
                           "1xV,Vx1,VxV for V vCPUs)")
  parser.add_argument("--batchings", type=_list(str), default=None,
                      help="language modeling: padded,length (default: both)")
  parser.add_argument("--optimizations", type=_list(str), default=None,
                      help=f"CPU optimizations ({','.join(optimizations.NAMES)}; default: the "
                           "profile's)")
  parser.add_argument("--in-image", action="store_true",
                      help="each point's SDK workers run in the benchmark's pushed worker image")
  parser.add_argument("--items", type=cli_types.items, default=None,
                      help="items per point (default: the benchmark's local items); `share`: "
                           "one Dataflow worker's share of the dataset")
  parser.add_argument("--repeats", type=positive_int, default=1)
  parser.add_argument("--results-dir", type=pathlib.Path, default=store.DEFAULT_DIR)
  parser.add_argument("--data-dir", type=pathlib.Path, default=pathlib.Path("data"))
  parser.add_argument("--models-dir", type=pathlib.Path, default=pathlib.Path("models"))
  args = parser.parse_args(argv)
  try:
    bench = matrix.get(args.benchmark)
  except matrix.MatrixError as e:
    print(f"error: sweep {args.benchmark}: {e}", file=sys.stderr)
    return 2
  vcpus = bench.machine.vcpus
  args.layouts = args.layouts or dataflow_layouts(vcpus)
  try:  # a layout Dataflow cannot run would choose a default no job can use
    for layout in args.layouts:
      layout.dataflow_experiments(vcpus)
  except LayoutError as e:
    print(f"error: sweep {args.benchmark}: {e} on {bench.machine.name}: sweep the layouts it "
          f"can run ({','.join(str(x) for x in dataflow_layouts(vcpus))})", file=sys.stderr)
    return 2
  items = bench.items_for(args.items)
  point_results = args.results_dir / "sweeps" / "runs"
  known = bench.task_spec.batchings
  unknown = set(args.batchings or ()) - set(known)
  if unknown:
    parser.error(f"{bench.name} batches its items {' or '.join(known)}, not "
                 f"{', '.join(sorted(unknown))}")
  # images: every batch is the same size, nothing to pad
  batchings = args.batchings or (list(known) if len(known) > 1 else [None])
  unknown = set(args.optimizations or ()) - set(optimizations.NAMES)
  if unknown:
    parser.error(f"unknown optimization {', '.join(sorted(unknown))}: use "
                 f"{','.join(optimizations.NAMES)}")
  grid = [plan.Overrides(bench.name, items=items, batch_size=b, layout=layout, batching=batching,
                        optimization=optimization, in_image=args.in_image,
                        data_dir=args.data_dir, models_dir=args.models_dir,
                        results_dir=point_results)
          for optimization in args.optimizations or [None]
          for layout in args.layouts for batching in batchings for b in args.batch_sizes]
  try:
    for point in grid:  # every check of every point, before the first one runs
      plan.resolve(point, run_id="sweep-check")
  except run.REFUSALS as e:
    print(f"error: sweep {args.benchmark}: {e}", file=sys.stderr)
    return 2
  sweep = {"benchmark": bench.name, "items": items, "repeats": args.repeats,
           "worker_share": bench.worker_share() if args.items == cli_types.SHARE else None,
           "batch_sizes": args.batch_sizes, "layouts": [str(x) for x in args.layouts],
           "default_layout": str(bench.layout), "default_batch_size": bench.local_batch_size,
           "default_batching": bench.batching if "length" in bench.task_spec.batchings else None,
           "optimizations": args.optimizations, "in_image": args.in_image,
           "started": build.utc_now(), "versions": facts.versions(),
           **facts.git_state(), "points": []}
  interrupted = run_grid(grid, args.repeats, bench.name, sweep)
  out = args.results_dir / "sweeps" / f"{bench.name}-{sweep['started'].replace(':', '')}.json"
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(sweep, indent=2) + "\n")
  print("\n" + table(sweep))
  print(f"sweep: {out}")
  if interrupted:
    print(f"sweep {bench.name}: interrupted by {interrupted.signal_name}; the points that "
          "finished are kept above", file=sys.stderr)
    return interrupted.exit_code
  return 0 if all(p["status"] == "succeeded" for p in sweep["points"]) else 1


def run_grid(grid: list[plan.Overrides], repeats: int, name: str,
             sweep: dict) -> child.Interrupted | None:
  """Runs every point `repeats` times into sweep["points"]; stops at Ctrl-C or SIGTERM, keeping
  the points that finished (and the interrupted one, as cancelled, when it recorded itself)."""
  start = time.monotonic()
  total = len(grid) * repeats
  for i, asked in enumerate(grid):
    records = []
    for r in range(repeats):
      step = i * repeats + r + 1
      eta = (time.monotonic() - start) / (step - 1) * (total - step + 1) if step > 1 else None
      print(f"[{step}/{total}] {name} layout {asked.layout} {asked.batching or ''} batch "
            f"{asked.batch_size} {asked.optimization or ''}"
            + (f" (about {eta / 60:.0f} min left)" if eta else ""), flush=True)
      try:
        records.append(run_point(asked))
      except child.Interrupted as e:
        if e.record is not None:
          records.append(e.record)
        if records:
          sweep["points"].append(_point(asked, records))
        return e
    sweep["points"].append(_point(asked, records))
    print(f"    {cell(sweep['points'][-1])} items/s (p99 batch ms)", flush=True)
  return None


def _point(asked: plan.Overrides, records: list[Record]) -> dict:
  return {"layout": str(asked.layout), "batching": asked.batching, "batch_size": asked.batch_size,
          "optimization": asked.optimization, **summarize(records)}


if __name__ == "__main__":
  sys.exit(main())
