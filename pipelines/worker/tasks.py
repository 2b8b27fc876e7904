"""The tasks the kit benchmarks, one object each: what differs by task, named in one place.

A task's steps (parse its input lines, dead-lettering what it cannot use; its RunInference model
handler; its prediction format) live in the module the task names, which every task module
provides with the same functions:

  parse(lines, opts)      -> (PCollection of (key, example), PCollection of dead letters)
  model_handler(state_dict_path, architecture, device, batching, opts)
                          -> Beam's PyTorch model handler for the task's tensors
  format_prediction(opts) -> a DoFn turning (key, PredictionResult) into one JSON line
  optimize(model, name, batch_size)
                          -> the loaded model with a CPU optimization applied (optimized_model.py)
  example_from_line(line, opts), prediction_logits(model, examples)
                          -> what the launcher's agreement check runs (pipelines/agreement.py)

That module is imported only when the steps are needed (`Task.steps()`): the launcher and the
Makefile read the names below without torch. Adding a task is one module plus one entry here
and the matrix's.
"""
from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType

DEVICES = ("CPU", "GPU")


@dataclasses.dataclass(frozen=True)
class Task:
  name: str  # the matrix's `task`
  input_file: str  # the generated local input list under data/ (`make data`)
  needs_vocab: bool  # the model needs a tokenizer vocab beside its state dict
  batchings: tuple[str, ...]  # the batching modes it supports; the first is the default
  module: str  # the module with its steps
  reads_files: bool = False  # its input lines are paths of files the workers read

  def steps(self) -> ModuleType:
    return importlib.import_module(self.module)


IMAGE_CLASSIFICATION = Task("image_classification", "images.txt", needs_vocab=False,
                            batchings=("padded",),
                            module="pipelines.worker.image_classification", reads_files=True)
LANGUAGE_MODELING = Task("language_modeling", "sentences.txt", needs_vocab=True,
                         batchings=("padded", "length"),
                         module="pipelines.worker.language_modeling")
# padded: to the batch's longest sentence; length: similar lengths batched together; max_length:
# every sentence to 128 tokens, as Beam's sentiment example pads them.
SENTIMENT_CLASSIFICATION = Task("sentiment_classification", "sentences.txt", needs_vocab=True,
                                batchings=("padded", "length", "max_length"),
                                module="pipelines.worker.sentiment_classification")
OBJECT_DETECTION = Task("object_detection", "scenes.txt", needs_vocab=False,
                        batchings=("padded",),
                        module="pipelines.worker.object_detection", reads_files=True)
IMAGE_CAPTIONING = Task("image_captioning", "images.txt", needs_vocab=True,
                        batchings=("padded",), module="pipelines.worker.captioning",
                        reads_files=True)
# The model is a directory vLLM serves (models.is_directory_model), passed as the state dict path.
TEXT_GENERATION = Task("text_generation", "sentences.txt", needs_vocab=False,
                       batchings=("padded",), module="pipelines.worker.text_generation")
BY_NAME = {t.name: t for t in (IMAGE_CLASSIFICATION, LANGUAGE_MODELING,
                               SENTIMENT_CLASSIFICATION, OBJECT_DETECTION, IMAGE_CAPTIONING,
                               TEXT_GENERATION)}
TASKS = tuple(BY_NAME)


def get(name: str) -> Task:
  if name not in BY_NAME:
    raise ValueError(f"unknown task '{name}'; known: {', '.join(TASKS)}")
  return BY_NAME[name]
