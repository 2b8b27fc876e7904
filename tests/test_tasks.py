"""The task registry: a task is one module in pipelines/worker/tasks/ holding one Task object,
listed without importing anything heavy, and found by dropping its module in."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from pipelines.matrix import REPO_ROOT
from pipelines.worker import tasks
from pipelines.worker.tasks.base import Task

TASKS_DIR = REPO_ROOT / "pipelines" / "worker" / "tasks"


def test_the_registry_lists_exactly_the_task_modules_present():
  modules = {p.stem for p in TASKS_DIR.glob("*.py")} - {"__init__", "base"}
  assert set(tasks.names()) == modules == set(tasks.TASKS)
  assert len(modules) == 6


@pytest.mark.parametrize("name", tasks.names())
def test_each_task_module_holds_one_complete_task_object(name):
  task = tasks.get(name)
  assert isinstance(task, Task) and not type(task).__abstractmethods__
  assert task.name == name and task.module == f"pipelines.worker.tasks.{name}"
  assert task.input_file.endswith(".txt") and task.batchings and task.batchings[0] == "padded"
  assert task.decoders[0] == "cpu"  # --decode's default, which every task takes
  for method in ("parse", "model_handler", "format_prediction", "optimize", "example_from_line",
                 "prediction_logits", "plain_batches"):
    assert callable(getattr(task, method)), method
  if "length" in task.batchings:  # what length-aware batching (and the plain loop) sorts by
    assert type(task).example_length is not Task.example_length


def test_only_image_classification_decodes_on_the_device(tmp_path):
  from apache_beam.options.pipeline_options import PipelineOptions

  from pipelines.worker import options
  assert [n for n in tasks.names() if "device" in tasks.get(n).decoders] == [
      "image_classification"]

  def validate(task: str, decode: str) -> None:
    options.validate(PipelineOptions(
        [f"--decode={decode}"], task=task, input="in.txt", output=str(tmp_path),
        model_architecture="m", model_state_dict_path="m.pth", vocab_path="v.txt",
    ).view_as(options.BenchmarkOptions))
  validate("image_classification", "device")
  with pytest.raises(ValueError, match=r"^--decode device is not available for object_detection: "
                                       r"it decodes on cpu only$"):
    validate("object_detection", "device")


def test_an_unknown_task_names_the_known_ones():
  with pytest.raises(ValueError, match="unknown task 'nope'; known: image_captioning, "):
    tasks.get("nope")


def test_a_new_task_is_one_module_dropped_into_the_package(tmp_path, monkeypatch):
  (tmp_path / "echo_task.py").write_text(textwrap.dedent('''
      from pipelines.worker.tasks.base import Task

      class Echo(Task):
        input_file = "sentences.txt"
        def parse(self, lines, opts): return lines, lines
        def model_handler(self, state_dict_path, architecture, device, batching, opts=None):
          return None
        def format_prediction(self, opts): return None
        def example_from_line(self, line, opts): return line
        def prediction_logits(self, model, examples, device): return examples

      TASK = Echo()
      '''))
  monkeypatch.setattr(tasks, "__path__", [*tasks.__path__, str(tmp_path)])
  monkeypatch.delitem(sys.modules, "pipelines.worker.tasks.echo_task", raising=False)
  try:
    assert "echo_task" in tasks.names()
    task = tasks.get("echo_task")
    assert task.name == "echo_task" and task.input_file == "sentences.txt"
    assert task.optimize("model", "none", 4) == "model"  # the base's: none only
  finally:
    sys.modules.pop("pipelines.worker.tasks.echo_task", None)


def test_names_and_the_matrix_import_no_torch_beam_or_pillow():
  """`python -m pipelines.matrix names` (and the profiles' and the vocabulary's lists) is what
  the Makefile runs, with the system python."""
  code = ("import runpy, sys\n"
          "for module, what in (('matrix', 'names'), ('matrix', 'images'), ('matrix', 'models'),\n"
          "                     ('profiles', 'names'), ('worker.vocab', 'optimizations'),\n"
          "                     ('worker.vocab', 'batchings')):\n"
          "  sys.argv = [module, what]\n"
          "  runpy.run_module('pipelines.' + module, run_name='__main__')\n"
          "from pipelines.worker import tasks\n"
          "assert len(tasks.names()) == 6\n"
          "heavy = {'torch', 'apache_beam', 'PIL', 'numpy'} & set(sys.modules)\n"
          "assert not heavy, heavy\n")
  done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                        text=True, timeout=120)
  assert done.returncode == 0, done.stderr[-2000:]


class Lengths(Task):
  """A task whose examples are their own lengths; lines 'bad' are dead-lettered."""
  input_file = "sentences.txt"
  parse = model_handler = format_prediction = prediction_logits = None

  def example_from_line(self, line, opts):
    if line == b"bad":
      raise ValueError("dead-lettered")
    return int(line)

  def example_length(self, example):
    return example


def test_plain_batches_leave_out_dead_letters_and_sort_as_the_pipeline_does():
  from pipelines.worker.sentences import LENGTH_SORT_BATCHES
  lines = [b"bad", *(str(n).encode() for n in range(40, 0, -1)), b"bad"]
  assert [len(b) for b in Lengths().plain_batches(lines, None, 3)] == [3] * 13 + [1]
  assert next(Lengths().plain_batches(lines, None, 3)) == [40, 39, 38]  # arrival order
  sorted_batches = list(Lengths().plain_batches(lines, None, 2, length_aware=True))
  window = LENGTH_SORT_BATCHES * 2  # each window of 8 batches, shortest first
  assert sorted_batches[0] == [25, 26] and sorted_batches[7] == [39, 40]
  assert [e for b in sorted_batches for e in b] == [
      n for start in range(40, 0, -window)
      for n in sorted(range(start, max(start - window, 0), -1))]
