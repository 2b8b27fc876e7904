"""Argument types shared by the worker's pipeline options and the kit's command lines."""
import argparse


def positive_int(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
  if value < 1:
    raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
  return value
