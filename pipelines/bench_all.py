"""Runs every benchmark the hardware allows (`make bench-all`), each in its own process, then
prints one summary table. Skipped benchmarks are listed with the reason.

Ctrl-C or SIGTERM stops the loop: the running benchmark gets the signal (a Dataflow run then
cancels its job, a local run stops its workers; it records the run and exits 130/143), no
further benchmark starts, and bench-all exits 130."""
from __future__ import annotations

import argparse
import pathlib
import signal
import subprocess
import sys

from pipelines import matrix, progress, results_store, run_record, summary
from pipelines.report import __main__ as report
from pipelines.run import EXIT_CANCELLED, LOCAL_RUNNERS
from pipelines.worker.handler import cuda_usable


def run_child(args: list[str]) -> int:
  """Runs one benchmark and waits for it, even through Ctrl-C: the terminal sends SIGINT to the
  child too, and the child must be left to cancel its job and write its record (subprocess.call
  would kill it). SIGTERM sent to bench-all alone is passed on to the child. Returns the child's
  exit code, EXIT_CANCELLED if it was interrupted."""
  child = subprocess.Popen([sys.executable, "-m", "pipelines.run", *args])
  interrupted = False

  def forward(signum, frame):
    nonlocal interrupted
    interrupted = True
    child.send_signal(signum)

  previous = signal.signal(signal.SIGTERM, forward)
  try:
    while True:
      try:
        code = child.wait()
        break
      except KeyboardInterrupt:
        interrupted = True  # the child got the same SIGINT from the terminal
  finally:
    signal.signal(signal.SIGTERM, previous)
  if code in (EXIT_CANCELLED, 128 + signal.SIGTERM, -signal.SIGINT, -signal.SIGTERM) \
      or interrupted:
    return EXIT_CANCELLED
  return code


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--runner", default="DirectRunner")
  parser.add_argument("--results-dir", type=pathlib.Path, default=results_store.DEFAULT_DIR)
  parser.add_argument("--dry-run", action="store_true")
  args, _ = parser.parse_known_args(argv)
  since = run_record.utc_now()
  local = args.runner in LOCAL_RUNNERS
  skipped, failed, interrupted = [], [], False
  gpu_here = cuda_usable() if local else None
  runnable = []
  for bench in matrix.load().values():
    if local and bench.needs_gpu and not gpu_here:
      skipped.append(f"{bench.name}: needs a CUDA GPU and torch sees none on this machine")
    else:
      runnable.append(bench)
  for index, bench in enumerate(runnable, 1):
    print(f"\n=== {progress.step(index, len(runnable), bench.name)} ===", flush=True)
    code = run_child([bench.name, *argv])
    if code == EXIT_CANCELLED:
      print(f"interrupted during {bench.name}: no further benchmark started", file=sys.stderr)
      interrupted = True
      break
    if code != 0:
      failed.append(bench.name)
  records = [r for r in results_store.load_all(args.results_dir)
             if r["timestamp"] >= since]
  print("\n" + (summary.table(records) if records else "no runs recorded"))
  for line in skipped:
    print(f"skipped {line}")
  if interrupted:
    return EXIT_CANCELLED
  if not args.dry_run:
    report.main(["--results-dir", str(args.results_dir)])
  if failed:
    print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
