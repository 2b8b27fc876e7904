"""Side-by-side comparison of two runs (`make compare A=<run> B=<run>`).

Default: the latest run and the one before it in the same comparable group. Each metric's
change is judged against the noise of that group's history.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
from typing import Any

from pipelines.record import comparable, store
from pipelines.record.schema import Record, shown
from pipelines.report import history, regressions

METRICS = [*history.HEADLINE, "batch_latency_p50_ms", "batch_latency_p99_ms",
           "throughput_per_s", "gpu_utilization_mean_pct", "dead_lettered"]
NOISE_MULTIPLE = 3  # a change beyond 3 sigma of the history's run-to-run noise is real


def default_pair(records: list[Record]) -> tuple[Record, Record]:
  done = [r for r in records if r.succeeded]
  if not done:
    raise LookupError("no successful runs in the results store")
  latest = done[-1]
  same = comparable.groups(done)[comparable.key(latest)]
  if len(same) < 2:
    raise LookupError(f"only one run of {shown(comparable.key(latest).label())}: nothing to "
                      "compare")
  return same[-2], same[-1]


def compare(a: Record, b: Record, records: list[Record]) -> list[dict[str, Any]]:
  runs = comparable.groups(records).get(comparable.key(b), [])
  rows = []
  for metric in METRICS:
    va, vb = a.metrics.get(metric), b.metrics.get(metric)
    change = (vb - va) / abs(va) if va not in (None, 0) and vb is not None else None
    noise = regressions.relative_noise(history.series(runs, metric))
    if change is None:
      verdict = "; ".join(f"{side} {note}" for side, run in (("A", a), ("B", b))
                          if (note := run.metric_notes.get(metric))) or "n/a"
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
  ka, kb = comparable.key(a), comparable.key(b)
  lines = [*(f"{side}: {r.run_id} {r.timestamp} {str(r.metadata.get('git_sha', '?'))[:10]} "
             f"{r.status}" + (f": {r.error}" if r.error else "") for side, r in (("A", a),
                                                                                ("B", b))),
           f"group: {kb.label()}"
           + ("" if ka == kb else f"  (A is {ka.label()}: not like with like!)"),
           *([f"WARNING: profiles differ (A {a.profile}, B {b.profile}): "
              "different batching, layout and step label; changes below are not regressions"]
             if a.profile != b.profile else []),
           *([f"WARNING: {side} did not succeed ({r.status}): its figures are partial or "
              "missing" for side, r in (("A", a), ("B", b)) if not r.succeeded]),
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
  parser.add_argument("--results-dir", type=pathlib.Path, default=store.DEFAULT_DIR)
  parser.add_argument("--cross-profile", action="store_true",
                      help="compare runs of different profiles anyway (flagged in the output)")
  args = parser.parse_args(argv)
  records = store.load_all(args.results_dir)
  try:
    if args.a and args.b:
      a, b = (store.find(args.a, args.results_dir), store.find(args.b, args.results_dir))
    elif args.a or args.b:
      raise LookupError("give both A and B, or neither")
    else:
      a, b = default_pair(records)
  except (LookupError, KeyError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if a.benchmark != b.benchmark:
    print(f"error: A ({a.run_id}) is {a.benchmark}, B ({b.run_id}) is "
          f"{b.benchmark}: runs of different benchmarks are not comparable", file=sys.stderr)
    return 2
  if a.profile != b.profile and not args.cross_profile:
    print(f"error: A ({a.run_id}) is profile {shown(a.profile)}, B ({b.run_id}) is "
          f"profile {shown(b.profile)}: their batching, layout and step differ, so their "
          "figures are not comparable. Use `make compare-profiles BENCH=<name>` to measure the "
          "two profiles back to back, or pass --cross-profile to compare anyway.",
          file=sys.stderr)
    return 2
  print(shown_lines(format_table(a, b, compare(a, b, records))))
  return 0 if a.succeeded and b.succeeded else 1


def shown_lines(text: str) -> str:
  """Every line as a terminal may show it (record values can hold control characters)."""
  return "\n".join(shown(line) for line in text.split("\n"))


if __name__ == "__main__":
  sys.exit(main())
