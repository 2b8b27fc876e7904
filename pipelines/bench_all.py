"""Runs every benchmark the hardware allows (`make bench-all`), each in its own process
(child.py), then prints one summary table and writes the report. Skipped benchmarks are listed
with the reason.

Ctrl-C or SIGTERM stops the loop: the running benchmark gets the signal (a Dataflow run then
cancels its job, a local run stops its workers; it records the run), no further benchmark
starts, and bench-all exits 130 (143 for SIGTERM)."""
from __future__ import annotations

import sys

from pipelines import child, matrix, progress, run, summary
from pipelines.record import build, store
from pipelines.report import __main__ as report
from pipelines.worker.handler import cuda_usable


def main(argv: list[str] | None = None) -> int:
  parser = run.parser(__doc__)
  args, beam_args = parser.parse_known_args(argv)
  beam_args = run.beam_flags(parser, beam_args)
  since = build.utc_now()
  local = args.runner == "DirectRunner"
  skipped, failed, interrupted = [], [], None
  gpu_here = cuda_usable() if local else None
  runnable = []
  for bench in matrix.load().values():
    if local and bench.needs_gpu and not gpu_here:
      skipped.append(f"{bench.name}: needs a CUDA GPU and torch sees none on this machine")
    else:
      runnable.append(bench)
  for index, bench in enumerate(runnable, 1):
    print(f"\n=== {progress.step(index, len(runnable), bench.name)} ===", flush=True)
    try:
      record = child.run(run.overrides(bench.name, args, beam_args), quiet=False)
    except child.Interrupted as e:
      print(f"interrupted during {bench.name}: no further benchmark started", file=sys.stderr)
      interrupted = e
      break
    except child.NotStarted as e:
      print(f"{bench.name} did not start: {e}", file=sys.stderr)
      failed.append(bench.name)
      continue
    if record is not None and not record.succeeded:
      failed.append(bench.name)
  records = [r for r in store.load_all(args.results_dir) if r.timestamp >= since]
  print("\n" + (summary.table(records) if records else "no runs recorded"))
  for line in skipped:
    print(f"skipped {line}")
  if interrupted:
    return interrupted.exit_code
  if not args.dry_run:
    report.main(["--results-dir", str(args.results_dir)])
  if failed:
    print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
