"""`make report`: writes results/report.html and results/regressions.json from the local store.

With --fail-on-regression (FAIL_ON_REGRESSION=1) it exits 3 when a regression is flagged among
the latest runs of any group, for nightly CI.
"""
import argparse
import json
import pathlib
import sys

from pipelines import cost
from pipelines.record import build, store
from pipelines.report import page


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--results-dir", type=pathlib.Path, default=store.DEFAULT_DIR)
  parser.add_argument("--fail-on-regression", action="store_true")
  args = parser.parse_args(argv)
  records = store.load_all(args.results_dir)
  sweeps = store.latest_sweeps(args.results_dir)
  plans = store.plans(args.results_dir)
  if not records and not sweeps and not plans:
    print(f"error: {args.results_dir} holds no run records (none readable in "
          f"{args.results_dir / 'records'}) and no sweeps: no report written", file=sys.stderr)
    return 2
  analysis = page.analyze(records)
  out = args.results_dir / "report.html"
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(page.render(records, analysis, cost.load_prices(), build.utc_now(),
                             sweeps, plans))
  summary = page.summary_json(analysis)
  (args.results_dir / "regressions.json").write_text(json.dumps(summary, indent=2) + "\n")
  print(f"report: {out.resolve()}")
  print(f"regressions: {(args.results_dir / 'regressions.json').resolve()} "
        f"({summary['recent_regressions']} recent)")
  if args.fail_on_regression and summary["recent_regressions"]:
    print("error: regressions flagged (FAIL_ON_REGRESSION=1)", file=sys.stderr)
    return 3
  return 0


if __name__ == "__main__":
  sys.exit(main())
