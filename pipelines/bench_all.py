"""Runs every benchmark the hardware allows (`make bench-all`), each in its own process, then
prints one summary table. Skipped benchmarks are listed with the reason."""
from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys

from pipelines import matrix, progress, results_store, run_record, summary
from pipelines.handler import cuda_usable
from pipelines.report import __main__ as report
from pipelines.run import LOCAL_RUNNERS


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--runner", default="DirectRunner")
  parser.add_argument("--results-dir", type=pathlib.Path, default=results_store.DEFAULT_DIR)
  parser.add_argument("--dry-run", action="store_true")
  args, _ = parser.parse_known_args(argv)
  since = run_record.utc_now()
  local = args.runner in LOCAL_RUNNERS
  skipped, failed = [], []
  gpu_here = cuda_usable() if local else None
  runnable = []
  for bench in matrix.load().values():
    if local and bench.needs_gpu and not gpu_here:
      skipped.append(f"{bench.name}: needs a CUDA GPU and torch sees none on this machine")
    else:
      runnable.append(bench)
  for index, bench in enumerate(runnable, 1):
    print(f"\n=== {progress.step(index, len(runnable), bench.name)} ===", flush=True)
    if subprocess.call([sys.executable, "-m", "pipelines.run", bench.name, *argv]) != 0:
      failed.append(bench.name)
  records = [r for r in results_store.load_all(args.results_dir)
             if r["timestamp"] >= since]
  print("\n" + (summary.table(records) if records else "no runs recorded"))
  for line in skipped:
    print(f"skipped {line}")
  if not args.dry_run:
    report.main(["--results-dir", str(args.results_dir)])
  if failed:
    print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
