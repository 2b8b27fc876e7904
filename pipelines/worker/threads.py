"""Each SDK worker process sizes its torch pools to the run's worker layout (pipelines/layout.py)
before it loads a model."""
from __future__ import annotations

import logging


def apply_threads(threads: int | None, interop_threads: int | None) -> None:
  """Sets this process's torch pools; called by every stage's setup before any torch work.
  The inter-op pool can only be sized before torch first uses it: a second call is a no-op."""
  import torch  # not at the top: the Makefile reads the matrix with a Python that has no torch
  if threads and torch.get_num_threads() != threads:
    torch.set_num_threads(threads)
  if interop_threads and torch.get_num_interop_threads() != interop_threads:
    try:
      torch.set_num_interop_threads(interop_threads)
    except RuntimeError as e:  # already started in this process: report what it really has
      logging.warning("torch inter-op threads stay %d: %s", torch.get_num_interop_threads(), e)
