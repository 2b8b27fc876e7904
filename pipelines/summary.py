"""The on-screen summary table of run records."""
from __future__ import annotations

import argparse
import pathlib
from typing import Sequence

from pipelines.record import store
from pipelines.record.schema import Record, shown

COLUMNS = (
    ("benchmark", lambda r: r.benchmark),
    ("profile", lambda r: r.profile),
    ("status", lambda r: r.status),
    ("device", lambda r: r.device_used),
    ("weights", lambda r: r.weights),
    ("layout", lambda r: r.layout),
    ("optimize", lambda r: r.optimization),
    ("items", lambda r: r.metrics["num_inferences"]),
    ("dead", lambda r: r.metrics["dead_lettered"]),
    ("batch", lambda r: _num(r.metrics["mean_inference_request_batch_size"], 1)),
    ("batch ms", lambda r: _num(_ms(r.metrics["mean_inference_batch_latency_micro_secs"]), 1)),
    ("p99 ms", lambda r: _percentile(r, "batch_latency_p99_ms")),
    ("load ms", lambda r: _num(r.metrics["mean_load_model_latency_milli_secs"], 0)),
    ("items/s", lambda r: _num(r.metrics["throughput_per_s"], 2)),
    ("items/s excl load", lambda r: _num(r.metrics["throughput_per_s_excl_model_load"], 2)),
    ("steady items/s", lambda r: _num(r.metrics.get("steady_throughput_per_s"), 2)),
    ("gpu util %", lambda r: _num(r.gpu.get("utilization_mean_pct"), 0)
     if r.gpu.get("telemetry") == "available" else "n/a"),
    ("run id", lambda r: r.run_id),
)


def _ms(us):
  return us / 1000 if us is not None else None


def _percentile(record: Record, name: str) -> str:
  value = record.metrics.get(name)
  if value is None and name in record.metric_notes:
    return f"n/a ({record.metrics.get('num_batches')} batches)"  # too few for it
  return _num(value, 1)


def _num(value, digits: int) -> str:
  return "-" if value is None else f"{value:.{digits}f}"


def table(records: Sequence[Record]) -> str:
  """One row per record; values read from records are shown with their control characters
  escaped (a hand-edited record's ANSI codes never reach the terminal raw)."""
  rows = [[h for h, _ in COLUMNS]] + [[shown(f(r)) for _, f in COLUMNS] for r in records]
  widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
  lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
  lines.insert(1, "  ".join("-" * w for w in widths))
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description="Print the latest run records as a table.")
  parser.add_argument("--results", type=pathlib.Path, default=store.DEFAULT_DIR)
  parser.add_argument("--since", default="", help="only runs started at or after this ISO time")
  args = parser.parse_args(argv)
  records = [r for r in store.load_all(args.results) if r.timestamp >= args.since]
  print(table(records) if records else "no run records yet")


if __name__ == "__main__":
  main()
