"""The benchmark pipeline: read -> parse (dead-letter bad input) -> RunInference -> write.

One pipeline for every task and runner; only the parse step, the model handler and the output
format differ by task (the task objects, pipelines/worker/tasks/). A streaming job (Dataflow,
--streaming) reads its items from Pub/Sub, one per message, in Beam's streaming benchmarks'
windows; every other run reads the same items from the text file (the record's `source` says
which).
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import apache_beam as beam
from apache_beam import coders
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.transforms import trigger, window

from pipelines.worker import dead_letter, gpu_telemetry, tasks
from pipelines.worker.handler import BenchmarkModelHandler
from pipelines.worker.options import BenchmarkOptions, validate

# Beam's streaming benchmarks (pytorch_sentiment.py, pytorch_imagenet_rightfit.py, 2.77):
# FixedWindows(60) fired by AfterProcessingTime(30), discarding, no allowed lateness.
WINDOW_S, TRIGGER_S = 60, 30


def read_items(p: beam.Pipeline, opts: BenchmarkOptions) -> beam.PCollection:
  """The input's items as bytes: lines of the text file, or Pub/Sub messages when streaming."""
  if opts.view_as(StandardOptions).streaming:
    return (p
            | "ReadFromPubSub" >> beam.io.ReadFromPubSub(subscription=opts.pubsub_subscription)
            | "Window" >> beam.WindowInto(
                window.FixedWindows(WINDOW_S), trigger=trigger.AfterProcessingTime(TRIGGER_S),
                accumulation_mode=trigger.AccumulationMode.DISCARDING, allowed_lateness=0))
  # No build-time check of the input: it would reach out to GCS even for a dry run; local
  # inputs are checked by the launcher and a bad gs:// path fails the job at once.
  # Lines are read as bytes and decoded one by one: an undecodable line is dead-lettered
  # instead of failing the whole job (Beam's default coder decodes strictly).
  return p | "ReadInput" >> beam.io.ReadFromText(opts.input, coder=coders.BytesCoder(),
                                                 validate=False)


def batching(opts: BenchmarkOptions) -> dict[str, int]:
  return {k: v for k, v in (("min_batch_size", opts.min_batch_size),
                            ("max_batch_size", opts.max_batch_size)) if v is not None}


def build(p: beam.Pipeline, opts: BenchmarkOptions,
          telemetry_reader: Callable[[], Any] | None = None) -> None:
  """Adds the benchmark to `p`. GPU telemetry is NVML's where present, every
  --gpu_sample_s seconds (0: off); `telemetry_reader` is the seam tests use to inject a GPU
  sampling function instead."""
  validate(opts)
  reader = telemetry_reader or (gpu_telemetry.nvml_reader if opts.gpu_sample_s else _no_gpu)
  decoded = read_items(p, opts) | "DecodeLines" >> beam.ParDo(
      dead_letter.DecodeUtf8()).with_outputs(dead_letter.TAG, main="lines")
  # Reshuffle spreads the (cheap) lines across workers and SDK processes before the expensive
  # decode/tokenize and inference: a small file is one read split, read by one process.
  lines = decoded.lines | "Distribute" >> beam.Reshuffle()
  undecodable = decoded[dead_letter.TAG]
  task = tasks.get(opts.task)
  examples, bad_input = task.parse(lines, opts)
  formatter = task.format_prediction(opts)
  base = task.model_handler(opts.model_state_dict_path, opts.model_architecture, opts.device,
                            batching(opts), opts)
  handler = KeyedModelHandler(BenchmarkModelHandler(
      base, device=opts.device, state_dict_path=opts.model_state_dict_path,
      threads=opts.torch_threads, interop_threads=opts.torch_interop_threads,
      optimization=opts.optimization,
      optimize=functools.partial(task.optimize, batch_size=opts.max_batch_size or 1),
      telemetry_reader=reader,
      telemetry_interval_s=opts.gpu_sample_s or gpu_telemetry.SAMPLE_INTERVAL_S,
      window_ms=opts.window_ms))
  predictions, failed = examples | opts.inference_step >> RunInference(
      handler).with_exception_handling()

  # streaming: each window's files are written when it fires
  written_every = TRIGGER_S if opts.view_as(StandardOptions).streaming else None
  # A task's format step dead-letters an item that reached the model call but failed there
  # (dead_letter.Failed: image classification's batched decode); other tasks never emit one.
  formatted = predictions | "FormatPredictions" >> beam.ParDo(formatter).with_outputs(
      dead_letter.TAG, main="predictions")
  _ = (formatted.predictions
       | "WritePredictions" >> beam.io.WriteToText(f"{opts.output}/predictions",
                                                   file_name_suffix=".jsonl",
                                                   triggering_frequency=written_every))
  failed_inference = failed.failed_inferences | "ExplodeFailedBatches" >> beam.FlatMap(
      dead_letter.from_failed_batch)
  _ = ((undecodable, bad_input, failed_inference, formatted[dead_letter.TAG])
       | "MergeDeadLetters" >> beam.Flatten()
       | "CountDeadLetters" >> beam.ParDo(dead_letter.CountAndSerialize())
       | "WriteDeadLetters" >> beam.io.WriteToText(f"{opts.output}/dead_letter",
                                                   file_name_suffix=".jsonl",
                                                   triggering_frequency=written_every))


def _no_gpu() -> None:
  """The telemetry reader of a run that asked for none (--gpu_sample_s=0)."""
  return None
