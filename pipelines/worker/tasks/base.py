"""Task: what differs by task, as one object. A task module in this package holds one instance of
a subclass as TASK; the pipeline (pipeline.py), the launcher's agreement check
(pipelines/agreement.py) and `make perf`'s plain loop (pipelines/perf.py) call only these.

Imports nothing heavy: the launcher reads a task's facts, and the package's names, without torch
until a task's steps run.
"""
from __future__ import annotations

import abc
from typing import Any, Iterable, Iterator, Optional


class Task(abc.ABC):
  # The facts of the task (class attributes of each subclass).
  input_file: str  # the generated local input list under data/ (`make data`)
  batchings: tuple[str, ...] = ("padded",)  # the batching modes it supports; the first: default
  reads_files: bool = False  # its input lines are paths of files the workers read
  decoders: tuple[str, ...] = ("cpu",)  # where it may decode its inputs (vocab.DECODERS)
  # Why the launcher cannot run the task's model itself (the agreement check, perf's plain
  # loop); None: it can, through example_from_line and prediction_logits.
  no_local_model: Optional[str] = None

  @property
  def name(self) -> str:
    """The matrix's `task`: the name of the module that holds the task."""
    return self.module.rpartition(".")[2]

  @property
  def module(self) -> str:
    """The module that holds the task (what an image must be able to import to run it)."""
    return type(self).__module__

  def __repr__(self) -> str:
    return f"<task {self.name}>"

  # The pipeline's steps.
  @abc.abstractmethod
  def parse(self, lines, opts):
    """lines -> (PCollection of (key, example), PCollection of dead letters)."""

  @abc.abstractmethod
  def model_handler(self, state_dict_path: str, architecture: str, device: str,
                    batching: dict[str, Any], opts=None):
    """Beam's model handler for the task's examples."""

  @abc.abstractmethod
  def format_prediction(self, opts):
    """A DoFn turning (key, PredictionResult) into one JSON line."""

  def optimize(self, model, name: str, batch_size: int):
    """The loaded model with the CPU optimization `name` applied (optimized_model.py); a task
    that writes none runs its model as loaded only."""
    from pipelines.worker import optimizations
    reason = optimizations.unavailable(name, self.name) or (
        None if name == optimizations.NONE else f"{name} is not written for {self.name}")
    if reason:
      raise optimizations.OptimizationUnavailable(reason)
    return model

  # The launcher's own runs of the model (agreement check, plain loop).
  @abc.abstractmethod
  def example_from_line(self, line: bytes, opts) -> Any:
    """One input line as the model's input, as the pipeline makes it; raises for a line the
    pipeline would dead-letter."""

  @abc.abstractmethod
  def prediction_logits(self, model, examples: list, device):
    """[batch, classes] on the model's device: the logits the predictions are taken from."""

  def example_length(self, example: Any) -> int:
    """An example's length, which length-aware batching sorts by (tasks with `length`)."""
    raise NotImplementedError(f"{self.name} has no length-aware batching")

  def plain_batches(self, lines: Iterable[bytes], opts, batch_size: int,
                    length_aware: bool = False) -> Iterator[list]:
    """The batches of examples the pipeline would run, made as they are needed: lines it would
    dead-letter are left out, and with length-aware batching each window of
    LENGTH_SORT_BATCHES batches is sorted shortest first (sentences.SortByLength's order)."""
    window = batch_size
    if length_aware:
      from pipelines.worker.sentences import LENGTH_SORT_BATCHES
      window = LENGTH_SORT_BATCHES * batch_size
    pending: list = []
    for line in lines:
      try:
        pending.append(self.example_from_line(line, opts))
      except Exception:  # noqa: BLE001,S112 - a line the pipeline dead-letters is not run
        continue
      if len(pending) == window:
        yield from self._cut(pending, batch_size, length_aware)
        pending = []
    yield from self._cut(pending, batch_size, length_aware)

  def _cut(self, examples: list, batch_size: int, length_aware: bool) -> Iterator[list]:
    if length_aware:
      examples = sorted(examples, key=self.example_length)
    for i in range(0, len(examples), batch_size):
      yield examples[i:i + batch_size]
