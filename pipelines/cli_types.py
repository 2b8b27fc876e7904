"""Argument types shared by the kit's command lines."""
import argparse

from pipelines.worker.arg_types import positive_int  # noqa: F401 - the kit's one definition

SHARE = "share"  # N=share: the items one Dataflow worker gets (matrix.Benchmark.share_items)


def items(text: str) -> int | str:
  """A whole number of items from 1, or `share`."""
  if text.strip() == SHARE:
    return SHARE
  try:
    return positive_int(text)
  except argparse.ArgumentTypeError:
    raise argparse.ArgumentTypeError(
        f"'{text}' is neither a whole number from 1 nor '{SHARE}' (one Dataflow worker's "
        "share of the dataset)") from None


def layout(text: str):
  """A worker layout PxT (pipelines/layout.py), with its own message on a bad value."""
  from pipelines.layout import Layout, LayoutError
  try:
    return Layout.parse(text)
  except LayoutError as e:
    raise argparse.ArgumentTypeError(str(e)) from None
