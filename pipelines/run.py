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
import torch
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import beam_metrics, dataflow, matrix, pipeline, results_store, run_record, summary
from pipelines.handler import DeviceUnavailableError, require_device
from pipelines.models import VOCAB_FILE
from pipelines.options import BenchmarkOptions
from pipelines.progress import for_launch as progress_for_launch

LOCAL_RUNNERS = ("DirectRunner",)
LOCAL_INPUTS = {"image_classification": "images.txt", "language_modeling": "sentences.txt"}


class LaunchError(RuntimeError):
  """Something is missing before anything runs: a clear message, exit code 2."""


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("benchmark")
  parser.add_argument("--runner", default="DirectRunner")
  parser.add_argument("--items", type=int, default=None,
                      help="items to run (default: local profile, or the full dataset on Dataflow)")
  parser.add_argument("--batch-size", type=int, default=None,
                      help="fixed batch size (default: the matrix's)")
  parser.add_argument("--input", default=None, help="override the input list")
  parser.add_argument("--data-dir", type=pathlib.Path, default=pathlib.Path("data"))
  parser.add_argument("--models-dir", type=pathlib.Path, default=pathlib.Path("models"))
  parser.add_argument("--results-dir", type=pathlib.Path, default=results_store.DEFAULT_DIR)
  parser.add_argument("--dry-run", action="store_true",
                      help="Dataflow only: build the job offline and write it to a JSON file")
  return parser.parse_known_args(argv)  # the rest are passed to Beam untouched


def local_input(bench: matrix.Benchmark, args: argparse.Namespace,
                run_dir: pathlib.Path) -> tuple[str, int]:
  """This run's input file: the first N lines of the generated dataset (or of --input, all of
  it without --items). Returns its path and line count."""
  source = pathlib.Path(args.input) if args.input else args.data_dir / LOCAL_INPUTS[bench.task]
  if not source.exists():
    raise LaunchError(f"{source} does not exist: run `make data` first")
  lines = source.read_text().splitlines()
  items = args.items or (len(lines) if args.input else bench.local_items)
  if len(lines) < items:
    raise LaunchError(f"{source} has {len(lines)} items, {items} requested"
                      + ("" if args.input else f": run `make data N={items}`"))
  run_dir.mkdir(parents=True, exist_ok=True)
  path = run_dir / "input.txt"
  path.write_text("\n".join(lines[:items]) + "\n")
  return str(path.resolve()), items


def local_model_files(bench: matrix.Benchmark, models_dir: pathlib.Path) -> dict[str, str]:
  state_dict = models_dir / f"{bench.model}.pth"
  files = {"model_state_dict_path": state_dict}
  if bench.task == "language_modeling":
    files["vocab_path"] = models_dir / VOCAB_FILE
  for path in files.values():
    if not path.exists():
      raise LaunchError(f"{path} does not exist: run `make models` first")
  return {k: str(v.resolve()) for k, v in files.items()}


def local_runner():
  """The DirectRunner's batch engine, chosen explicitly: Beam's DirectRunner first tries to
  download and start Prism, so what it runs on would depend on network access. Benchmarks need
  one engine everywhere; this is the in-process FnApiRunner the DirectRunner uses for batch."""
  from apache_beam.runners.portability.fn_api_runner import fn_runner
  return fn_runner.FnApiRunner()


def launch(args: argparse.Namespace, beam_args: list[str],
           **telemetry) -> dict[str, Any] | None:
  """Runs the benchmark and returns its saved record (None for a Dataflow dry run).
  `telemetry` is passed to pipeline.build (the GPU check turns the sampler off with it)."""
  bench = matrix.get(args.benchmark)
  run_id = run_record.new_run_id()
  batch_size = args.batch_size or bench.local_batch_size
  local = args.runner in LOCAL_RUNNERS
  metadata: dict[str, Any] = {
      "runner": args.runner, "task": bench.task, "model": bench.model,
      "device_requested": bench.device, "batch_size": batch_size,
      "torch_threads": torch.get_num_threads(),
      "bigquery_table": bench.bigquery_table, "influx_measurement": bench.influx_measurement,
  }
  if local:
    require_device(bench.device)  # fail before any work, not after a CPU fallback
    run_dir = args.results_dir / "runs" / run_id
    input_path, items = local_input(bench, args, run_dir)
    values = {"input": input_path, "output": str((run_dir / "output").resolve()),
              **local_model_files(bench, args.models_dir)}
    runner = local_runner()
    metadata.update(engine="FnApiRunner", items_requested=items, machine_type="local",
                    num_workers=1, accelerator=None)
  else:
    cloud = dataflow.settings()
    if args.items:
      logging.warning("N/--items applies to local runs; Dataflow runs the whole input")
    values = dataflow.pipeline_values(bench, cloud, run_id, args.input)
    beam_args = dataflow.worker_args(bench, cloud, dataflow.job_name(bench, run_id)) + (
        ["--dry_run=True"] if args.dry_run else []) + beam_args
    runner = None
    metadata.update(engine="Dataflow", items_requested=bench.dataset_items,
                    machine_type=bench.dataflow.machine_type,
                    num_workers=bench.dataflow.num_workers,
                    accelerator=bench.dataflow.accelerator,
                    accelerator_count=bench.dataflow.accelerator_count,
                    disk_size_gb=bench.dataflow.disk_size_gb, region=cloud["REGION"],
                    image=dataflow.image_uri(bench, cloud),
                    image_digest=dataflow.image_digest(bench))
  metadata["input"] = values["input"]
  opts = PipelineOptions(
      beam_args, benchmark=bench.name, task=bench.task, model_architecture=bench.model,
      device=bench.device, min_batch_size=batch_size, max_batch_size=batch_size, **values)
  p = beam.Pipeline(runner=runner, options=opts)
  pipeline.build(p, opts.view_as(BenchmarkOptions), **telemetry)
  if args.dry_run:
    return _dry_run(p, opts, bench, args.results_dir)

  logging.info("Running %s (run %s) on %s", bench.name, run_id, args.runner)
  started = run_record.utc_now()
  start = time.perf_counter()
  raw, error = None, None
  live = progress_for_launch(local, metadata["items_requested"], bench.name).start()  # progress
  try:
    result = p.run()
    if not local:
      metadata.update(dataflow.launched_metadata(result, cloud))
    result.wait_until_finish()
    raw = beam_metrics.query(result)
  except Exception as e:  # noqa: BLE001 - a failed run still gets a record saying so
    logging.exception("benchmark %s failed", bench.name)
    error = f"{type(e).__name__}: {e}"
  wall = time.perf_counter() - start
  live.stop()  # progress: final count, bar closed
  record = run_record.build(run_id=run_id, benchmark=bench.name, started=started,
                            wall_time_s=wall, raw_metrics=raw, metadata=metadata, error=error)
  path = results_store.save(record, args.results_dir)
  print(summary.table([record]))
  print(f"run record: {path}")
  publish_after_run(record, args.results_dir)
  return record


def _dry_run(p: beam.Pipeline, opts: PipelineOptions, bench: matrix.Benchmark,
             results_dir: pathlib.Path) -> None:
  result = p.run()  # with --dry_run Beam builds the whole job and submits nothing
  description = dataflow.job_description(result, opts, bench)
  path = dataflow.write_job(description, results_dir / "dataflow-jobs")
  pool = description["worker_pools"][0]
  print(f"dry run: {bench.name} would launch {description['job_name']} with "
        f"{pool.get('numWorkers')} x {pool.get('machineType')}, disk {pool.get('diskSizeGb')} GB, "
        f"autoscaling {pool.get('autoscalingSettings', {}).get('algorithm')}, "
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


def main(argv: list[str] | None = None) -> int:
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
  for noisy in ("apache_beam", "absl"):
    logging.getLogger(noisy).setLevel(logging.WARNING)
  args, beam_args = parse_args(argv)
  try:
    if args.dry_run and args.runner in LOCAL_RUNNERS:
      raise LaunchError("DRY_RUN builds a Dataflow job: use it with RUNNER=DataflowRunner")
    record = launch(args, beam_args)
  except (LaunchError, DeviceUnavailableError, matrix.MatrixError,
          dataflow.SettingsMissing) as e:
    print(f"error: {args.benchmark}: {e}", file=sys.stderr)
    return 2
  return 0 if record is None or record["status"] == "succeeded" else 1


if __name__ == "__main__":
  sys.exit(main())
