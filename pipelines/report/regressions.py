"""Change-point detection over a benchmark's history, the way Beam's perf tooling flags them:
find change points, keep those with enough runs on each side and a relative change above a
threshold, and call a change a regression when it moves the metric the wrong way.

Beam uses e-divisive (signal-processing-algorithms, which pins numpy < 2 and cannot be installed
beside this kit's numpy 2); this uses ruptures' PELT with a penalty scaled to the series' own
noise, which finds the same mean shifts.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np

MIN_RUNS_PER_SEGMENT = 3  # Beam: min runs between change points
RELATIVE_THRESHOLD = 0.05  # a change smaller than 5% of the earlier level is not flagged
RECENT_WINDOW = 14  # Beam alerts on change points among the latest 14 runs


@dataclasses.dataclass(frozen=True)
class ChangePoint:
  index: int  # first run after the change
  before: float  # median of the segment before
  after: float  # median of the segment after
  relative_change: float  # (after - before) / before
  regression: bool  # moved the metric the wrong way
  recent: bool  # within the latest RECENT_WINDOW runs

  def as_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def noise_sigma(values: np.ndarray) -> float:
  """Robust noise level: MAD of first differences (insensitive to a few steps)."""
  diffs = np.diff(values)
  if len(diffs) == 0:
    return 0.0
  return float(1.4826 * np.median(np.abs(diffs - np.median(diffs))) / math.sqrt(2))


def relative_noise(values: Sequence[float]) -> float | None:
  """Noise as a fraction of the typical level; None with too little history to tell."""
  clean = np.array([v for v in values if v is not None], dtype=float)
  if len(clean) < 4 or np.median(clean) == 0:
    return None
  return noise_sigma(clean) / abs(float(np.median(clean)))


def detect(values: Sequence[float | None], direction: str) -> list[ChangePoint]:
  """Change points of a metric's history (None values are skipped)."""
  import ruptures

  points = [(i, v) for i, v in enumerate(values) if v is not None]
  if len(points) < 2 * MIN_RUNS_PER_SEGMENT:
    return []
  index, y = zip(*points)
  y = np.asarray(y, dtype=float)
  sigma = noise_sigma(y) or (1e-3 * abs(float(np.median(y))) or 1e-9)
  standardized = (y - np.median(y)) / sigma
  breaks = ruptures.Pelt(model="l2", min_size=MIN_RUNS_PER_SEGMENT, jump=1).fit(
      standardized).predict(pen=3 * math.log(len(y)))[:-1]
  found = []
  bounds = [0, *breaks, len(y)]
  for k, b in enumerate(breaks):
    before = float(np.median(y[bounds[k]:b]))
    after = float(np.median(y[b:bounds[k + 2]]))
    if before == 0:
      continue
    change = (after - before) / abs(before)
    if abs(change) < RELATIVE_THRESHOLD:
      continue
    worse = (change > 0 if direction == "higher_is_worse"
             else change < 0 if direction == "lower_is_worse" else False)
    found.append(ChangePoint(index=index[b], before=before, after=after,
                             relative_change=change, regression=worse,
                             recent=index[b] >= len(values) - RECENT_WINDOW))
  return found
