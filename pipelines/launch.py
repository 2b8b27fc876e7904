"""One plan in, one outcome out: the runner for the plan prepares, the worker package's pipeline
is built from the plan, the runner executes it under a live progress display, and whatever
happens (done, failed, interrupted) comes back as an Outcome (record/build.py) for the record.
A Dataflow dry run builds the job, writes its description and returns None.
"""
from __future__ import annotations

import logging
import pathlib
import sys
import time
import traceback
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import dataflow, interrupts, matrix, runners
from pipelines.plan import RunPlan
from pipelines.progress import for_launch as progress_for_launch
from pipelines.record.build import Outcome, utc_now
from pipelines.worker import pipeline
from pipelines.worker.options import BenchmarkOptions

# Local runs count each batch's items in time windows of this size, for the record's steady
# state check (process_stats.steady_windows); off on Dataflow (its own job window counts).
WINDOW_MS = 250
ERROR_CHARS = 400  # a record's error: its first line and cause; the whole text goes to a log


def worker_options(plan: RunPlan, launch: runners.Launch) -> PipelineOptions:
  """The plan as the worker package's pipeline options (options.BenchmarkOptions)."""
  bench, layout = plan.bench, plan.layout
  return PipelineOptions(
      launch.beam_args + list(plan.beam_args), benchmark=bench.name, task=bench.task,
      model_architecture=bench.model, device=bench.device,
      min_batch_size=plan.min_batch_size, max_batch_size=plan.max_batch_size,
      layout=str(layout), torch_threads=layout.threads,
      torch_interop_threads=layout.interop_threads, inference_step=plan.inference_step,
      profile=plan.profile.name, sentence_batching=plan.sentence_batching,
      optimization=plan.optimization, gpu_sample_s=plan.gpu_sample_s, decode=plan.decode,
      pin_memory=plan.pin_memory, window_ms=WINDOW_MS if plan.local else 0, **launch.values)


def run(plan: RunPlan, share_start: tuple[int, str]) -> Outcome | None:
  """Runs the plan; None for a Dataflow dry run (nothing ran, nothing to record)."""
  runner = runners.for_runner(plan)
  launch = runner.prepare(plan)
  try:
    opts = worker_options(plan, launch)
    p = beam.Pipeline(runner=launch.engine, options=opts)
    pipeline.build(p, opts.view_as(BenchmarkOptions))
  except BaseException:
    runner.discard(launch)
    raise
  if plan.dry_run:
    _dry_run(p, opts, plan.bench, plan.results_dir)
    return None
  logging.info("Running %s (run %s) on %s", plan.bench.name, plan.run_id, plan.runner)
  outcome = Outcome(started=utc_now(), wall_time_s=0.0, share_start=share_start)
  start = time.perf_counter()
  live = progress_for_launch(plan.local, plan.items or 0, plan.bench.name).start()
  try:
    outcome.raw = runner.execute(p, launch)
  except (dataflow.JobCancelled, interrupts.Cancelled) as e:  # Ctrl-C/SIGTERM: not a failure
    outcome.error, outcome.status = str(e), "cancelled"
    outcome.facts["interrupted_by"] = e.signal_name
    print(f"{plan.bench.name}: {e}", file=sys.stderr, flush=True)
  except (interrupts.WorkerDied, interrupts.WorkerStalled, dataflow.JobError) as e:  # one line
    logging.error("benchmark %s failed: %s", plan.bench.name, e)
    outcome.error = f"{type(e).__name__}: {e}"
  except Exception as e:  # noqa: BLE001 - a failed run still gets a record saying so
    logging.exception("benchmark %s failed", plan.bench.name)
    outcome.error = error_line(e)
    outcome.detail = "".join(traceback.format_exception(e))
  finally:
    outcome.wall_time_s = time.perf_counter() - start
    live.stop()  # the final count; the bar closed
  outcome.facts.update(launch.facts)  # what the runner learned while running (job id, ...)
  outcome.job = launch.job
  if outcome.status == "cancelled":
    runner.discard(launch)  # a local run's folder holds only unfinished shards now
  if outcome.status == "cancelled" or outcome.raw is None:  # Beam's metrics never came
    outcome.partial = partial_counts(live.totals)
    outcome.facts.update(loaded_facts(live.totals))
  return outcome


def error_line(e: BaseException) -> str:
  """The error as a record keeps it: its first line, and the last line of the traceback Beam
  wraps into its own message (the real cause), bounded."""
  text = f"{type(e).__name__}: {e}".strip()
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  first = lines[0] if lines else type(e).__name__
  causes = [line for line in lines[1:] if not line.startswith(("File ", "Traceback", "^", "~"))
            and ("Error" in line.split(":")[0] or "Exception" in line.split(":")[0])]
  line = first if not causes or causes[-1] in first else f"{first} ... caused by {causes[-1]}"
  return line if len(line) <= ERROR_CHARS else line[:ERROR_CHARS - 3] + "..."


def partial_counts(totals: dict[str, int] | None) -> dict[str, int] | None:
  """What a local run's workers reported before it was interrupted or failed (progress.py)."""
  if totals is None:
    return None
  return {"num_inferences": totals["items"], "num_batches": totals["batches"],
          "sum_inference_request_batch_size": totals["items"],
          "dead_lettered": totals["dead_lettered"]}


def loaded_facts(totals: dict[str, Any] | None) -> dict[str, str]:
  """The device and weights the workers said they loaded, for a run whose Beam metrics never
  came (progress_reporter.py)."""
  return {k: v for k, v in ((totals or {}).get("loaded") or {}).items()
          if k in ("device_used", "weights")}


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
