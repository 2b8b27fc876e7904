"""Side-by-side comparison of two runs (`make compare A=<run> B=<run>`).

Default: the latest run and the one before it in the same comparable group. Each metric's
change is judged against the noise of that group's history.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
from typing import Any

from pipelines import results_store
from pipelines.report import history, regressions

METRICS = [*history.HEADLINE, "batch_latency_p50_ms", "batch_latency_p99_ms",
           "throughput_per_s", "gpu_utilization_mean_pct", "dead_lettered"]
NOISE_MULTIPLE = 3  # a change beyond 3 sigma of the history's run-to-run noise is real


def default_pair(records: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
  done = [r for r in records if r["status"] == "succeeded"]
  if not done:
    raise LookupError("no successful runs in the results store")
  latest = done[-1]
  same = history.groups(done)[history.key(latest)]
  if len(same) < 2:
    raise LookupError(f"only one run of {history.key(latest).label()}: nothing to compare")
  return same[-2], same[-1]


def compare(a: dict[str, Any], b: dict[str, Any],
            records: list[dict[str, Any]]) -> list[dict[str, Any]]:
  runs = history.groups(records).get(history.key(b), [])
  rows = []
  for metric in METRICS:
    va, vb = a["metrics"].get(metric), b["metrics"].get(metric)
    change = (vb - va) / abs(va) if va not in (None, 0) and vb is not None else None
    noise = regressions.relative_noise(history.series(runs, metric))
    if change is None:
      verdict = "; ".join(f"{side} {note}" for side, run in (("A", a), ("B", b))
                          if (note := run.get("metric_notes", {}).get(metric))) or "n/a"
    elif noise is None:
      verdict = "unknown (history too short)"
    else:
      verdict = ("beyond noise" if abs(change) > NOISE_MULTIPLE * noise else "within noise")
    rows.append({"metric": metric, "a": va, "b": vb, "change": change, "noise": noise,
                 "verdict": verdict})
  return rows


def format_table(a, b, rows) -> str:
  def num(v):
    return "-" if v is None else f"{v:.4g}"
  lines = [f"A: {a['run_id']} {a['timestamp']} {a['metadata'].get('git_sha', '?')[:10]}",
           f"B: {b['run_id']} {b['timestamp']} {b['metadata'].get('git_sha', '?')[:10]}",
           f"group: {history.key(b).label()}"
           + ("" if history.key(a) == history.key(b)
              else f"  (A is {history.key(a).label()}: not like with like!)"),
           *([f"WARNING: profiles differ (A {history.profile(a)}, B {history.profile(b)}): "
              "different batching, layout and step label; changes below are not regressions"]
             if history.profile(a) != history.profile(b) else []),
           "",
           f"{'metric':<42} {'A':>12} {'B':>12} {'change':>8} {'noise':>7}  verdict"]
  for r in rows:
    change = "-" if r["change"] is None else f"{r['change']:+.1%}"
    noise = "-" if r["noise"] is None else f"{r['noise']:.1%}"
    lines.append(f"{r['metric']:<42} {num(r['a']):>12} {num(r['b']):>12} {change:>8} "
                 f"{noise:>7}  {r['verdict']}")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("a", nargs="?", help="run id (prefix); default: the previous run")
  parser.add_argument("b", nargs="?", help="run id (prefix); default: the latest run")
  parser.add_argument("--results-dir", type=pathlib.Path, default=results_store.DEFAULT_DIR)
  parser.add_argument("--cross-profile", action="store_true",
                      help="compare runs of different profiles anyway (flagged in the output)")
  args = parser.parse_args(argv)
  records = results_store.load_all(args.results_dir)
  try:
    if args.a and args.b:
      a, b = (results_store.find(args.a, args.results_dir),
              results_store.find(args.b, args.results_dir))
    elif args.a or args.b:
      raise LookupError("give both A and B, or neither")
    else:
      a, b = default_pair(records)
  except (LookupError, KeyError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if a["benchmark"] != b["benchmark"]:
    print(f"error: A ({a['run_id']}) is {a['benchmark']}, B ({b['run_id']}) is "
          f"{b['benchmark']}: runs of different benchmarks are not comparable", file=sys.stderr)
    return 2
  if history.profile(a) != history.profile(b) and not args.cross_profile:
    print(f"error: A ({a['run_id']}) is profile {history.profile(a)}, B ({b['run_id']}) is "
          f"profile {history.profile(b)}: their batching, layout and step differ, so their "
          "figures are not comparable. Use `make compare-profiles BENCH=<name>` to measure the "
          "two profiles back to back, or pass --cross-profile to compare anyway.",
          file=sys.stderr)
    return 2
  print(format_table(a, b, compare(a, b, records)))
  return 0


if __name__ == "__main__":
  sys.exit(main())
