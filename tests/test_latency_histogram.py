"""Percentiles from the per-batch latency histogram against numpy on known samples."""
import numpy as np
import pytest

from pipelines.worker import latency_histogram


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_histogram_percentiles_are_within_bucket_resolution_of_numpy(seed):
  rng = np.random.default_rng(seed)
  samples = rng.lognormal(mean=np.log(50_000), sigma=0.6, size=2000)  # ~50 ms batches
  histogram = {}  # as the handler counts them: one per batch in its bucket
  for sample in samples:
    index = latency_histogram.bucket_index(sample)
    histogram[index] = histogram.get(index, 0) + 1
  estimates = latency_histogram.percentiles_from_histogram(histogram, (50, 90, 99))
  for q, estimate in estimates.items():
    exact = np.percentile(samples, q, method="inverted_cdf")
    # A bucket is 5% wide and the estimate is its geometric midpoint: <= 2.5% off.
    assert abs(estimate - exact) / exact <= 0.025, (q, estimate, exact)


def test_counter_names_round_trip():
  names = [latency_histogram.counter_name(us) for us in (900, 1000, 1000, 250_000)]
  histogram = latency_histogram.parse_counters({n: names.count(n) for n in names})
  assert sum(histogram.values()) == 4
  assert latency_histogram.percentiles_from_histogram(histogram, [100])[100] == pytest.approx(
      250_000, rel=0.025)


def test_empty_histogram_has_no_percentiles():
  assert latency_histogram.percentiles_from_histogram({}, [50]) == {50: None}


def test_bucket_edges():
  # Bucket i holds (1.05**(i-1), 1.05**i].
  i = latency_histogram.bucket_index(1.05 ** 10)
  assert i == 10
  assert latency_histogram.bucket_index(1.05 ** 10 * 1.001) == 11
