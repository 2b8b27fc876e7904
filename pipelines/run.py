"""Runs one benchmark of the matrix and writes its record (what `make bench-*` calls).

  python -m pipelines.run resnet101 [--items N] [--runner DirectRunner|DataflowRunner] ...

The command line becomes Overrides, plan.resolve makes them one RunPlan (or refuses with one
line, exit 2), launch.run runs it, record/build.py turns plan and outcome into the record, which
is saved before any post-run step: the agreement check of an optimization (agreement.py), then
publishing. Exit codes: 0 succeeded, 1 the run failed (its record says why), 2 refused before
anything ran, 128 + signal when interrupted (130 for Ctrl-C).
"""
from __future__ import annotations

import argparse
import logging
import pathlib
import sys

from pipelines import cli_types, dataflow, interrupts, launch, matrix, post_run, profiles, summary
from pipelines import plan as plan_lib
from pipelines.cli_types import positive_int
from pipelines.layout import LayoutError
from pipelines.record import build, store
from pipelines.record.schema import Record
from pipelines.worker import optimizations, options, process_stats, vocab

# Beam flags the worker layout sets (layout.py); given by hand they would contradict the record.
LAYOUT_FLAGS = ("--direct_num_workers", "--direct_running_mode")
EXIT_CANCELLED = 130  # 128 + SIGINT; a run exits 128 + the signal that stopped it
# What stops a run before it starts: one `error:` line, exit code 2.
REFUSALS = (plan_lib.PlanError, matrix.MatrixError, dataflow.SettingsMissing,
            store.NotWritable, LayoutError, profiles.ProfileError)


def parser(description: str | None = __doc__) -> argparse.ArgumentParser:
  """The kit's run flags (bench-all takes them too, for every benchmark)."""
  p = argparse.ArgumentParser(description=description, allow_abbrev=False,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--runner", default=plan_lib.LOCAL)
  p.add_argument("--items", type=cli_types.items, default=None,
                 help="items to run (default: local profile, or the full dataset on "
                      "Dataflow); `share`: one Dataflow worker's share of the dataset")
  p.add_argument("--batch-size", type=positive_int, default=None,
                 help="fixed batch size (default: the matrix's)")
  p.add_argument("--input", default=None, help="override the input list")
  p.add_argument("--data-dir", type=pathlib.Path, default=pathlib.Path("data"))
  p.add_argument("--models-dir", type=pathlib.Path, default=pathlib.Path("models"))
  p.add_argument("--results-dir", type=pathlib.Path, default=store.DEFAULT_DIR)
  p.add_argument("--layout", type=cli_types.layout, default=None,
                 help="worker layout PxT: SDK processes x torch threads per process "
                      "(default: the matrix's for the machine type)")
  p.add_argument("--batching", choices=vocab.BATCHINGS, default=None,
                 help="the sentence tasks: pad each batch as it comes (padded) or batch "
                      "sentences of similar length (length); default: the profile's, else "
                      "the matrix's")
  p.add_argument("--profile", default=profiles.DEFAULT,
                 help="run profile: tuned (the kit's settings, default) or beam (Beam's own "
                      "benchmark settings; see infra/benchmarks.toml [profiles.beam])")
  p.add_argument("--dry-run", action="store_true",
                 help="Dataflow only: build the job offline and write it to a JSON file")
  p.add_argument("--optimize", choices=optimizations.NAMES, default=None,
                 help="CPU optimization applied where the workers load the model (default: "
                      "the profile's; PROFILE=beam: none); an agreement check against none "
                      "goes into the record (README, \"CPU optimizations\")")
  p.add_argument("--decode", choices=vocab.DECODERS, default=None,
                 help="image classification: decode with PIL per item on the CPU (cpu, Beam's "
                      "way) or batched on the model's device (device: nvjpeg on a GPU); "
                      "default: the profile's, else the matrix's")
  p.add_argument("--in-image", action="store_true",
                 help="local runs: run the SDK workers inside the benchmark's worker image "
                      "(pushed by `make push`), under the machine type's CPU and memory "
                      "limits, as one Dataflow worker")
  return p


def beam_flags(p: argparse.ArgumentParser, beam_args: list[str]) -> tuple[str, ...]:
  """The flags the kit does not know: each must be one of Beam's (passed to Beam untouched)."""
  unknown = options.unknown_beam_args(beam_args)
  if unknown:
    p.error(f"unknown flag(s) {' '.join(unknown)}: neither the kit's (see --help) nor Beam's")
  layout_flags = [a for a in beam_args if a.split("=")[0] in LAYOUT_FLAGS]
  if layout_flags:
    p.error(f"{' '.join(layout_flags)} would change the worker layout behind the record's "
            "back: use --layout/LAYOUT=PxT")
  return tuple(beam_args)


def overrides(benchmark: str, args: argparse.Namespace,
              beam_args: tuple[str, ...]) -> plan_lib.Overrides:
  """The command line as Overrides (plan.py)."""
  return plan_lib.Overrides(
      benchmark=benchmark, runner=args.runner, profile=args.profile, items=args.items,
      batch_size=args.batch_size, input=args.input, layout=args.layout, batching=args.batching,
      dry_run=args.dry_run, data_dir=args.data_dir, models_dir=args.models_dir,
      results_dir=args.results_dir, beam_args=beam_args, in_image=args.in_image,
      optimization=args.optimize, decode=args.decode)


class RecordNotSaved(RuntimeError):
  """The run finished but its record could not be written where it belongs."""


def run_plan(plan: plan_lib.RunPlan, share_start: tuple[int, str]) -> Record | None:
  """Runs a resolved plan and returns its saved record (None for a Dataflow dry run)."""
  outcome = launch.run(plan, share_start)
  if outcome is None:
    return None
  record = build.build(plan.as_record(), outcome)
  if outcome.detail:
    record.metadata["error_log"] = _keep_log(plan, outcome.detail)
  saved = store.save_or_fallback(record, plan.results_dir)  # before any post-run step
  print(summary.table([record]))
  if not saved.ok:
    raise RecordNotSaved(saved.message)
  print(f"run record: {saved.path}")
  post_run.run(plan, record)
  return record


def _keep_log(plan: plan_lib.RunPlan, detail: str) -> str | None:
  """The whole error text beside the records (<results>/logs/<run id>.log): the record keeps
  its first line and cause."""
  path = plan.results_dir / "logs" / f"{plan.run_id}.log"
  try:
    store.write_atomically(path, detail)
  except OSError:
    return None
  return str(path)


_first_run_in_process = True


def worker_share_start() -> tuple[int, str]:
  """Where a worker share's time starts: the launcher process's own start for the first run
  in a process (what a user waits for: interpreter, imports, plan, pipeline, workers); a later
  run in the same process can only count from its own start."""
  global _first_run_in_process
  if _first_run_in_process:
    _first_run_in_process = False
    return process_stats.process_started_ms(), "launcher process start"
  return process_stats.now_ms(), "run start (not the first run in its process)"


def run_overrides(asked: plan_lib.Overrides, run_id: str | None = None) -> Record | None:
  """Resolves and runs, in this process (a child's main, the tests)."""
  start = worker_share_start()
  return run_plan(plan_lib.resolve(asked, run_id), start)


def quiet_logging() -> None:
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
  for noisy in ("apache_beam", "absl"):
    logging.getLogger(noisy).setLevel(logging.WARNING)


def exit_code(record: Record | None) -> int:
  if record is None:
    return 0
  stopped = record.metadata.get("interrupted_by") or record.metadata.get(
      "post_run_interrupted_by")
  if stopped:
    return interrupts.exit_code(stopped)
  return 0 if record.succeeded else 1


def main(argv: list[str] | None = None) -> int:
  quiet_logging()
  p = parser()
  p.add_argument("benchmark")
  args, beam_args = p.parse_known_args(argv)
  asked = overrides(args.benchmark, args, beam_flags(p, beam_args))
  return run_and_exit_code(asked)


def run_and_exit_code(asked: plan_lib.Overrides, run_id: str | None = None) -> int:
  """run_overrides with refusals and an unsaved record as their one line and exit code."""
  try:
    return exit_code(run_overrides(asked, run_id))
  except REFUSALS as e:
    print(f"error: {asked.benchmark}: {e}", file=sys.stderr)
    return 2
  except RecordNotSaved as e:
    print(f"error: {asked.benchmark}: {e}", file=sys.stderr)
    return 1


if __name__ == "__main__":
  sys.exit(main())
