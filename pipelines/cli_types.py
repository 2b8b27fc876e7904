"""Argument types shared by the kit's command lines."""
import argparse

from pipelines.worker.arg_types import positive_int  # noqa: F401 - the kit's one definition


def layout(text: str):
  """A worker layout PxT (pipelines/layout.py), with its own message on a bad value."""
  from pipelines.layout import Layout, LayoutError
  try:
    return Layout.parse(text)
  except LayoutError as e:
    raise argparse.ArgumentTypeError(str(e)) from None
