"""Per-batch latency percentiles that survive every runner.

Beam's distributions keep only sum/count/min/max, so each batch's latency also increments one
counter of a log-spaced histogram (5% wide buckets). Counters aggregate across workers on every
runner, Dataflow included; percentiles read back from the buckets are within 2.5% of the exact
sample percentile. The record's percentiles (`consistent_percentiles`) are also held to Beam's
exact count, mean, min and max, and left out when there are too few batches to have one.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping

GROWTH = 1.05
_PREFIX = "batch_latency_us_bucket_"


def bucket_index(latency_us: float) -> int:
  """Bucket i holds latencies in (GROWTH**(i-1), GROWTH**i] microseconds."""
  return max(0, math.ceil(math.log(max(latency_us, 1.0)) / math.log(GROWTH) - 1e-9))


def counter_name(latency_us: float) -> str:
  return f"{_PREFIX}{bucket_index(latency_us)}"


def parse_counters(counters: Mapping[str, int]) -> dict[int, int]:
  """The histogram {bucket index: count} from counters named by counter_name()."""
  return {int(name[len(_PREFIX):]): int(count)
          for name, count in counters.items() if name.startswith(_PREFIX) and count}


def _bucket_mid_us(index: int) -> float:
  # Geometric midpoint of the bucket: the estimate with the smallest worst-case relative error.
  return GROWTH ** (index - 0.5) if index > 0 else 1.0


def _rank(q: float, n: int) -> int:
  """Nearest rank of the q-th percentile among n sorted values (rounded so 99 * 100 / 100 is
  99, not 100)."""
  return max(1, math.ceil(round(q * n / 100, 9)))


def min_batches(q: float) -> int:
  """The fewest batches for which the q-th percentile is not simply the slowest batch (at least
  one batch lies above it): p50 2, p90 10, p99 100."""
  return math.ceil(round(100 / (100 - q), 9))


def consistent_percentiles(histogram: Mapping[int, int], quantiles: Iterable[float], *,
                           count: int, mean: float | None, low: float | None,
                           high: float | None) -> dict[float, tuple[float | None, str | None]]:
  """{q: (percentile in microseconds, None)}, or (None, why not) with fewer than min_batches(q)
  batches. `count`, `mean`, `low`, `high`: Beam's exact figures for the same batches. The
  histogram's estimate is kept within what they allow: k = rank(q) of the n batches lie at or
  below the percentile and the rest above it, so k/n * p + (1 - k/n) * max >= mean >=
  k/n * min + (1 - k/n) * p (a bucket's midpoint alone can fall below the mean, or the min)."""
  out: dict[float, tuple[float | None, str | None]] = {}
  for q, value in percentiles_from_histogram(histogram, quantiles).items():
    label = f"p{q:g}"
    if count < min_batches(q):
      out[q] = (None, f"n/a (too few batches: {count}; {label} needs >= {min_batches(q)})")
      continue
    if value is not None and None not in (mean, low, high):
      share = _rank(q, count) / count  # < 1: min_batches leaves a batch above the percentile
      lower = max(low, (mean - (1 - share) * high) / share)
      upper = min(high, (mean - share * low) / (1 - share))
      value = min(max(value, lower), upper)
    out[q] = (value, None if value is not None else "n/a (no batch latencies recorded)")
  return out


def percentiles_from_histogram(histogram: Mapping[int, int],
                               quantiles: Iterable[float]) -> dict[float, float | None]:
  """Percentiles (q in 0..100) in microseconds, by nearest rank over the buckets."""
  total = sum(histogram.values())
  result: dict[float, float | None] = {}
  ordered = sorted(histogram.items())
  for q in quantiles:
    if total == 0:
      result[q] = None
      continue
    rank = _rank(q, total)
    seen = 0
    for index, count in ordered:
      seen += count
      if seen >= rank:
        result[q] = _bucket_mid_us(index)
        break
  return result
