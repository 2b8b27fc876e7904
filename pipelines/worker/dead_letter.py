"""Dead-letter records: every input that does not become a prediction, with a reason."""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Iterable

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines.worker.beam_metrics import KIT_NAMESPACE
from pipelines.worker.progress_reporter import reporter as progress_reporter

TAG = "dead_letter"


def record(item: Any, stage: str, reason: str) -> dict[str, str]:
  return {"input": str(item)[:1000], "stage": stage, "reason": reason}


def from_exception(item: Any, stage: str, error: BaseException) -> dict[str, str]:
  return record(item, stage, f"{type(error).__name__}: {error}")


def tagged(item: Any, stage: str, reason: str) -> beam.pvalue.TaggedOutput:
  return beam.pvalue.TaggedOutput(TAG, record(item, stage, reason))


@dataclasses.dataclass(frozen=True)
class Failed:
  """The inference of an item that reached the model call but could not be run (its batched
  decode failed): the task's format step dead-letters it (after_batching) instead of writing a
  prediction."""
  stage: str
  reason: str


def after_batching(item: Any, failed: Failed) -> beam.pvalue.TaggedOutput:
  """The dead letter of an item Beam counted in num_inferences (it went to the model call), also
  counted as dead_lettered_after_batching: inputs = num_inferences - dead_lettered_after_batching
  + dead_lettered."""
  Metrics.counter(KIT_NAMESPACE, "dead_lettered_after_batching").inc()
  return tagged(item, failed.stage, failed.reason)


def from_failed_batch(failure: tuple[Any, Any]) -> Iterable[dict[str, str]]:
  """RunInference's failed_inferences hold (batch of (key, example), error info); one record
  per key, so the count matches the inputs that were lost."""
  batch, error = failure
  reason = _describe(error)
  for element in batch:
    key = element[0] if isinstance(element, tuple) else element
    yield record(key, "inference", reason)


def _describe(error: Any) -> str:
  if isinstance(error, BaseException):
    return f"{type(error).__name__}: {error}"
  if isinstance(error, tuple) and len(error) >= 2:  # Beam's (type, repr(exception), traceback)
    return str(error[1])
  return str(error)


class DecodeUtf8(beam.DoFn):
  """bytes -> str; a line that is not UTF-8 goes to the dead-letter output with where it
  breaks."""

  def process(self, line: bytes):
    try:
      yield line.decode("utf-8")
    except UnicodeDecodeError as e:
      yield tagged(line.decode("utf-8", "backslashreplace"), "read",
                   f"not valid UTF-8: byte 0x{line[e.start]:02x} at offset {e.start}")


class CountAndSerialize(beam.DoFn):
  def process(self, dead: dict[str, str]):
    Metrics.counter(KIT_NAMESPACE, "dead_lettered").inc()
    Metrics.counter(KIT_NAMESPACE, f"dead_lettered_{dead['stage']}").inc()
    progress_reporter().add_dead()  # what an interrupted run's record counts (progress.py)
    yield json.dumps(dead, sort_keys=True)
