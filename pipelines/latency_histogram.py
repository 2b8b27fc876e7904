"""Per-batch latency percentiles that survive every runner.

Beam's distributions keep only sum/count/min/max, so each batch's latency also increments one
counter of a log-spaced histogram (5% wide buckets). Counters aggregate across workers on every
runner, Dataflow included; percentiles read back from the buckets are within 2.5% of the exact
sample percentile.
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
    rank = max(1, math.ceil(q / 100 * total))
    seen = 0
    for index, count in ordered:
      seen += count
      if seen >= rank:
        result[q] = _bucket_mid_us(index)
        break
  return result


def histogram_of(samples_us: Iterable[float]) -> dict[int, int]:
  histogram: dict[int, int] = {}
  for sample in samples_us:
    index = bucket_index(sample)
    histogram[index] = histogram.get(index, 0) + 1
  return histogram
