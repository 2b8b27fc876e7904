"""`make plan-check BENCH=<name> N=<n>`: is `make plan`'s model right here? It projects the
whole-process time of 2N items from runs at N and 4N (start-up + items / rate, the same
straight line the plan uses), then runs 2N and reports the error. Each run is a fresh process
(child.py) with the benchmark's tuned layout, or LAYOUT; IN_IMAGE=1 runs them in the image.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

from pipelines import child, cli_types, matrix
from pipelines.cli_types import positive_int
from pipelines.plan import Overrides
from pipelines.record import store
from pipelines.record.schema import Record

TOLERANCE = 0.10  # a projection off by more than this is not one to plan a bill on


def straight_line(n1: int, t1: float, n4: int, t4: float) -> tuple[float, float]:
  """(start-up seconds, seconds per item) through two (items, seconds) points."""
  per_item = (t4 - t1) / (n4 - n1)
  return t1 - n1 * per_item, per_item


def run_share(asked: Overrides) -> Record:
  try:
    record = child.run(asked)
  except child.NotStarted as e:
    raise SystemExit(f"error: plan-check {asked.benchmark}: {e}") from None
  except child.Interrupted as e:
    raise SystemExit(e.exit_code) from None
  seconds = record.metrics.get("worker_share_s")
  if not record.succeeded or seconds is None:
    raise SystemExit(f"error: plan-check {asked.benchmark}: run {record.run_id} "
                     f"{record.status} without a worker share: {record.error}")
  return record


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("benchmark")
  parser.add_argument("--items", type=positive_int, required=True, help="N: runs N, 4N, 2N")
  parser.add_argument("--layout", type=cli_types.layout, default=None)
  parser.add_argument("--in-image", action="store_true")
  parser.add_argument("--results-dir", type=pathlib.Path, default=store.DEFAULT_DIR)
  args = parser.parse_args(argv)
  try:
    matrix.get(args.benchmark)
  except matrix.MatrixError as e:
    print(f"error: plan-check {args.benchmark}: {e}", file=sys.stderr)
    return 2
  n = args.items
  times = {}
  for count in (n, 4 * n, 2 * n):
    record = run_share(Overrides(args.benchmark, items=count, layout=args.layout,
                                 in_image=args.in_image,
                                 results_dir=args.results_dir / "plan-check"))
    times[count] = record.metrics["worker_share_s"]
    print(f"{args.benchmark} N={count}: {times[count]:.2f} s whole process "
          f"(run {record.run_id})", flush=True)
  startup, per_item = straight_line(n, times[n], 4 * n, times[4 * n])
  if per_item <= 0:
    print(f"error: plan-check {args.benchmark}: {4 * n} items took no longer than {n} "
          f"({times[4 * n]:.2f} vs {times[n]:.2f} s): start-up hides the per-item time at "
          "these sizes, so nothing can be projected; raise N", file=sys.stderr)
    return 1
  projected = startup + 2 * n * per_item
  error = (projected - times[2 * n]) / times[2 * n]
  holds = abs(error) <= TOLERANCE
  result = {"benchmark": args.benchmark, "items": [n, 4 * n, 2 * n], "seconds": times,
            "startup_s": startup, "seconds_per_item": per_item, "projected_2n_s": projected,
            "measured_2n_s": times[2 * n], "error": error, "holds": holds,
            "in_image": args.in_image}
  print(f"projected {2 * n} items from {n} and {4 * n}: {projected:.2f} s; measured "
        f"{times[2 * n]:.2f} s; error {error:+.1%} (start-up {startup:.1f} s, "
        f"{1 / per_item:.2f} items/s): "
        + (f"within {TOLERANCE:.0%}: the plan's straight line holds here" if holds else
           f"beyond {TOLERANCE:.0%}: the plan's straight line does not hold at these sizes"))
  out = args.results_dir / "plans" / f"{args.benchmark}-check.json"
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(result, indent=2) + "\n")
  return 0 if holds else 1


if __name__ == "__main__":
  sys.exit(main())
