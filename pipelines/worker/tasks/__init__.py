"""The tasks the kit benchmarks: one module each in this package, named as the matrix's `task`,
holding its Task object (base.py) as TASK. Adding a task is one module here plus its benchmarks
in the matrix (infra/benchmarks.toml).

names() lists the modules without importing them, so the Makefile and the matrix read the task
names without torch or Beam; get() imports the one module asked for.
"""
from __future__ import annotations

import importlib
import pkgutil

from pipelines.worker.tasks.base import Task

DEVICES = ("CPU", "GPU")
_NOT_TASKS = ("base",)  # this package's modules that hold no task


def names() -> tuple[str, ...]:
  return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__)
                      if not m.ispkg and m.name not in _NOT_TASKS
                      and not m.name.startswith("_")))


TASKS = names()


def get(name: str) -> Task:
  """The task named `name` (its module imported now)."""
  if name not in names():
    raise ValueError(f"unknown task '{name}'; known: {', '.join(names())}")
  task = importlib.import_module(f"{__name__}.{name}").TASK
  if not isinstance(task, Task) or task.name != name:
    raise TypeError(f"{__name__}.{name}.TASK is not the Task of its module: {task!r}")
  return task

