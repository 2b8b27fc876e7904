"""Runs one benchmark from the matrix and writes its run record (what `make bench-*` calls).

  python -m pipelines.run resnet101 [--items N] [--runner DirectRunner|DataflowRunner] ...

Locally it reads the generated data under data/ and the model files under models/; on Dataflow
it uses the matrix's datasets and worker shape (see dataflow.py).
"""
from __future__ import annotations

import argparse
import logging
import pathlib
import sys
import time
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import (
  cli_types,
  dataflow,
  interrupts,
  matrix,
  profiles,
  results_store,
  run_record,
  runners,
  summary,
)
from pipelines import plan as plan_lib
from pipelines.cli_types import positive_int
from pipelines.layout import LayoutError
from pipelines.progress import for_launch as progress_for_launch
from pipelines.worker import optimizations, options, pipeline, process_stats
from pipelines.worker.options import BenchmarkOptions

LOCAL_RUNNERS = ("DirectRunner",)
# Beam flags the worker layout sets (layout.py); given by hand they would contradict the record.
LAYOUT_FLAGS = ("--direct_num_workers", "--direct_running_mode")
EXIT_CANCELLED = 130  # bench-all: a run was interrupted (128 + SIGINT); a run exits 128 + signal


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
  """The kit's flags; every other flag must be one of Beam's (passed to Beam untouched)."""
  parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("benchmark")
  parser.add_argument("--runner", default="DirectRunner")
  parser.add_argument("--items", type=cli_types.items, default=None,
                      help="items to run (default: local profile, or the full dataset on "
                           "Dataflow); `share`: one Dataflow worker's share of the dataset")
  parser.add_argument("--batch-size", type=positive_int, default=None,
                      help="fixed batch size (default: the matrix's)")
  parser.add_argument("--input", default=None, help="override the input list")
  parser.add_argument("--data-dir", type=pathlib.Path, default=pathlib.Path("data"))
  parser.add_argument("--models-dir", type=pathlib.Path, default=pathlib.Path("models"))
  parser.add_argument("--results-dir", type=pathlib.Path, default=results_store.DEFAULT_DIR)
  parser.add_argument("--layout", type=cli_types.layout, default=None,
                      help="worker layout PxT: SDK processes x torch threads per process "
                           "(default: the matrix's for the machine type)")
  parser.add_argument("--batching", choices=("padded", "length"), default=None,
                      help="language modeling: pad each batch as it comes (padded) or batch "
                           "sentences of similar length (length); default: the profile's, "
                           "else the matrix's")
  parser.add_argument("--profile", default=profiles.DEFAULT,
                      help="run profile: tuned (the kit's settings, default) or beam (Beam's own "
                           "benchmark settings; see infra/benchmarks.toml [profiles.beam])")
  parser.add_argument("--dry-run", action="store_true",
                      help="Dataflow only: build the job offline and write it to a JSON file")
  parser.add_argument("--optimize", choices=optimizations.NAMES, default=None,
                      help="CPU optimization applied where the workers load the model (default: "
                           "the profile's; PROFILE=beam: none); an agreement check against "
                           "none goes into the record (README, \"CPU optimizations\")")
  parser.add_argument("--in-image", action="store_true",
                      help="local runs: run the SDK workers inside the benchmark's worker image "
                           "(pushed by `make push`), under the machine type's CPU and memory "
                           "limits, as one Dataflow worker")
  args, beam_args = parser.parse_known_args(argv)
  unknown = options.unknown_beam_args(beam_args)
  if unknown:
    parser.error(f"unknown flag(s) {' '.join(unknown)}: neither the kit's (see --help) "
                 "nor Beam's")
  layout_flags = [a for a in beam_args if a.split("=")[0] in LAYOUT_FLAGS]
  if layout_flags:
    parser.error(f"{' '.join(layout_flags)} would change the worker layout behind the "
                 "record's back: use --layout/LAYOUT=PxT")
  return args, beam_args


def overrides(args: argparse.Namespace, beam_args: list[str]) -> plan_lib.Overrides:
  """The command line as Overrides (plan.py)."""
  return plan_lib.Overrides(
      benchmark=args.benchmark, runner=args.runner, profile=args.profile, items=args.items,
      batch_size=args.batch_size, input=args.input, layout=args.layout, batching=args.batching,
      dry_run=args.dry_run, data_dir=args.data_dir, models_dir=args.models_dir,
      results_dir=args.results_dir, beam_args=tuple(beam_args), in_image=args.in_image,
      optimization=args.optimize)


def launch(plan: plan_lib.RunPlan, share_clock: tuple[int, str] | None = None,
           **telemetry) -> dict[str, Any] | None:
  """Runs a resolved plan and returns its saved record (None for a Dataflow dry run).
  `share_clock`: where the worker share's time starts (share_clock()); `telemetry` is passed
  to pipeline.build (the GPU check turns the sampler off with it)."""
  share_clock = share_clock or started_now()
  bench, profile, layout = plan.bench, plan.profile, plan.layout
  target = runners.for_runner(plan)
  run = target.prepare(plan)
  metadata: dict[str, Any] = {
      "runner": plan.runner, "task": bench.task, "model": bench.model,
      "profile": profile.name, "inference_step": plan.inference_step, "source": plan.source,
      "device_requested": bench.device,
      "batch_size": plan.fixed_batch_size, "batching": plan.batching,
      **layout.as_dict(),
      # bundles one SDK process runs at once: 1 locally (the FnApiRunner's way); on Dataflow
      # the profile's pin, or None where the service chooses
      "harness_threads": 1 if plan.local else profile.harness_threads,
      "length_aware_batching": plan.length_aware, "optimization": plan.optimization,
      "bigquery_table": bench.bigquery_table, "influx_measurement": bench.influx_measurement,
      # the benchmark's Dataflow worker shape (what a local run's cost is priced as)
      "dataflow_machine_type": bench.dataflow.machine_type,
      "dataflow_workers": bench.dataflow.worker_range,
      "dataflow_autoscaling_algorithm": bench.dataflow.autoscaling_algorithm,
      "dataflow_disk_size_gb": bench.dataflow.disk_size_gb,
      "dataflow_accelerator": bench.dataflow.accelerator,
      "dataflow_accelerator_count": bench.dataflow.accelerator_count,
      **run.metadata, "input": run.values["input"],
      "model_state_dict_path": run.values["model_state_dict_path"],
  }
  try:
    opts = PipelineOptions(
        run.beam_args + list(plan.beam_args), benchmark=bench.name, task=bench.task,
        model_architecture=bench.model, device=bench.device,
        min_batch_size=plan.min_batch_size, max_batch_size=plan.max_batch_size,
        layout=str(layout), torch_threads=layout.threads,
        torch_interop_threads=layout.interop_threads,
        inference_step=plan.inference_step, profile=profile.name,
        length_aware_batching=plan.length_aware,
        sentence_padding="max_length" if plan.sentence_batching == "max_length" else "longest",
        optimization=plan.optimization, **run.values)
    p = beam.Pipeline(runner=run.engine, options=opts)
    pipeline.build(p, opts.view_as(BenchmarkOptions), **telemetry)
  except BaseException:
    target.discard(run)
    raise
  if plan.dry_run:
    return _dry_run(p, opts, bench, plan.results_dir)

  logging.info("Running %s (run %s) on %s", bench.name, plan.run_id, plan.runner)
  started = run_record.utc_now()
  start = time.perf_counter()
  raw, error, status, interrupted_by = None, None, None, None
  live = progress_for_launch(plan.local, metadata["items_requested"], bench.name).start()
  try:
    raw = target.execute(p, run)
  except (dataflow.JobCancelled, interrupts.Cancelled) as e:  # Ctrl-C/SIGTERM: not a failure
    error, status, interrupted_by = str(e), "cancelled", e.signal_name
    print(f"{bench.name}: {error}", file=sys.stderr, flush=True)
  except interrupts.WorkerDied as e:  # one line: the traceback would be Beam's, not the cause
    logging.error("benchmark %s failed: %s", bench.name, e)
    error = f"{type(e).__name__}: {e}"
  except dataflow.JobError as e:  # the job failed or the API went away: its id is in the text
    logging.error("benchmark %s failed: %s", bench.name, e)
    error = f"{type(e).__name__}: {e}"
  except Exception as e:  # noqa: BLE001 - a failed run still gets a record saying so
    logging.exception("benchmark %s failed", bench.name)
    error = f"{type(e).__name__}: {e}"
  finally:
    wall = time.perf_counter() - start
    live.stop()  # the final count; the bar closed
  metadata.update(run.metadata)  # what the runner learned while running (job id, ...)
  agreement = _agreement(plan) if raw is not None and error is None and not status else None
  partial = None
  if status == "cancelled":
    metadata["interrupted_by"] = interrupted_by
    partial = _partial_counts(live.totals)
    target.discard(run)  # a local run's folder holds only unfinished shards now
  elif raw is None:  # failed before Beam's metrics arrived (a worker died): what got done
    partial = _partial_counts(live.totals)
  record = run_record.build(run_id=plan.run_id, benchmark=bench.name, started=started,
                            wall_time_s=wall, raw_metrics=raw, metadata=metadata, error=error,
                            job=run.job, status=status, partial=partial,
                            share_clock=share_clock, agreement=agreement)
  record["plan"] = plan.as_record()
  saved = results_store.save_or_fallback(record, plan.results_dir)
  print(summary.table([record]))
  if not saved.ok:
    raise RecordNotSaved(saved.message)
  print(f"run record: {saved.path}")
  publish_after_run(record, plan.results_dir)
  return record


def _agreement(plan: plan_lib.RunPlan) -> dict[str, Any] | None:
  """The optimization's agreement check (agreement.py), after the measured run; a check that
  fails to run is said in the record, and the run stays good."""
  from pipelines import agreement
  try:
    return agreement.check(plan)
  except Exception as e:  # noqa: BLE001 - the measurement is done; say why it is unchecked
    logging.exception("agreement check of %s failed", plan.optimization)
    return {"items": 0, "passed": None, "note": f"agreement check failed: {type(e).__name__}: "
                                                f"{e}"}


def _partial_counts(totals: dict[str, int] | None) -> dict[str, int] | None:
  """What a local run's workers reported before it was interrupted or failed (progress.py)."""
  if totals is None:
    return None
  return {"num_inferences": totals["items"], "num_batches": totals["batches"],
          "sum_inference_request_batch_size": totals["items"],
          "dead_lettered": totals["dead_lettered"]}


class RecordNotSaved(RuntimeError):
  """The run finished but its record could not be written where it belongs."""


def _dry_run(p: beam.Pipeline, opts: PipelineOptions, bench: matrix.Benchmark,
             results_dir: pathlib.Path) -> None:
  result = p.run()  # with --dry_run Beam builds the whole job and submits nothing
  description = dataflow.job_description(result, opts, bench)
  path = dataflow.write_job(description, results_dir / "dataflow-jobs")
  pool = description["worker_pools"][0]
  print(f"dry run: {bench.name} would launch {description['job_name']} with "
        f"{pool.get('numWorkers')} x {pool.get('machineType')}, disk {pool.get('diskSizeGb')} GB, "
        f"autoscaling {pool.get('autoscalingSettings', {}).get('algorithm')}, layout "
        f"{description['layout']['sdk_processes_per_worker']} SDK process(es) x "
        f"{description['layout']['torch_threads']} torch threads per worker, "
        f"image {', '.join(description['container_images'])}, "
        f"service options {description['service_options'] or 'none'}")
  print(f"job file: {path}")


def publish_after_run(record: dict[str, Any], results_dir: pathlib.Path) -> None:
  """The post-run step: send the saved record to the configured stores. A failure is recorded
  on the run and reported; the run itself stays good and `make publish` resends it later."""
  from pipelines.publish import publisher, settings
  try:
    targets = publisher.configured_targets()
  except settings.SettingsError as e:
    print(f"warning: not published: {e}", file=sys.stderr)
    return
  for failure in publisher.publish_record(record, targets, results_dir):
    print(f"warning: not published: {failure}; `make publish` will retry", file=sys.stderr)
  for outcome in record.get("publish", {}).values():
    if outcome["status"] == "ok":
      print(f"published to {outcome['target']}")


# What stops a run before it starts: one `error:` line, exit code 2.
REFUSALS = (plan_lib.PlanError, matrix.MatrixError, dataflow.SettingsMissing,
            results_store.NotWritable, LayoutError, profiles.ProfileError)


_first_run_in_process = True


def share_clock() -> tuple[int, str]:
  """Where a worker share's time starts: the launcher process's own start for the first run
  in a process (what a user waits for: interpreter, imports, plan, pipeline, workers); a later
  run in the same process (in-process perf repeats) can only count from its own start."""
  global _first_run_in_process
  if _first_run_in_process:
    _first_run_in_process = False
    return process_stats.process_started_ms(), "launcher process start"
  return started_now()


def started_now() -> tuple[int, str]:
  return process_stats.now_ms(), "run start (not the first run in its process)"


def run_overrides(o: plan_lib.Overrides, run_id: str | None = None,
                  **telemetry) -> dict[str, Any] | None:
  """Resolves and runs; what perf, sweep points, compare-profiles and gpu-check call."""
  clock = share_clock()
  return launch(plan_lib.resolve(o, run_id), clock, **telemetry)


def run_checked(o: plan_lib.Overrides, **telemetry) -> dict[str, Any] | None:
  """run_overrides for the commands built on it (perf, compare-profiles, gpu-check): a refusal
  ends the command with its one line and exit code 2."""
  try:
    return run_overrides(o, **telemetry)
  except REFUSALS as e:
    print(f"error: {o.benchmark}: {e}", file=sys.stderr)
    raise SystemExit(2) from None


def quiet_logging() -> None:
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
  for noisy in ("apache_beam", "absl"):
    logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
  quiet_logging()
  args, beam_args = parse_args(argv)
  try:
    record = run_overrides(overrides(args, beam_args))
  except REFUSALS as e:
    print(f"error: {args.benchmark}: {e}", file=sys.stderr)
    return 2
  except RecordNotSaved as e:
    print(f"error: {args.benchmark}: {e}", file=sys.stderr)
    return 1
  return exit_code(record)


def exit_code(record: dict[str, Any] | None) -> int:
  if record is not None and record["status"] == "cancelled":
    return interrupts.exit_code(record["metadata"].get("interrupted_by") or "SIGINT")
  return 0 if record is None or record["status"] == "succeeded" else 1


if __name__ == "__main__":
  sys.exit(main())
