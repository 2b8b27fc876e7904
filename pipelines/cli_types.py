"""Argument types shared by the kit's command lines."""
import argparse


def positive_int(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
  if value < 1:
    raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
  return value


def layout(text: str):
  """A worker layout PxT (pipelines/layout.py), with its own message on a bad value."""
  from pipelines.layout import Layout, LayoutError
  try:
    return Layout.parse(text)
  except LayoutError as e:
    raise argparse.ArgumentTypeError(str(e)) from None
