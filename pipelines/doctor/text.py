"""The doctor screen's layout: a label column, then the text."""
from __future__ import annotations

WIDTH = 12


def row(label: str, text: str) -> str:
  return f"{label:<{WIDTH}}{text}"


def more(text: str) -> str:
  """A further line of the row above."""
  return " " * WIDTH + text
