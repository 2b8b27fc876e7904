"""A sweep's results as plain data (what `make sweep` stores in results/sweeps/*.json): each
point's figures, the table printed and the report's plot lines. Read by the sweep command and the
report alike."""
from __future__ import annotations

import statistics
from typing import Any


def median_or_none(values: list[float | None]) -> float | None:
  """The median of the values present (None: a repeat without that figure); None if none is."""
  present = [v for v in values if v is not None]
  return statistics.median(present) if present else None


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
  """A point's figures: medians over its repeats."""
  def median(get):
    return median_or_none([get(r) for r in records])
  last = records[-1]["metadata"]
  return {
      "steady_items_per_s": median(lambda r: r["metrics"]["steady_throughput_per_s"]),
      "p99_batch_ms": median(lambda r: r["metrics"]["batch_latency_p99_ms"]),
      # the whole process for the point's items: launcher start to last batch (process_stats)
      "worker_share_s": median(lambda r: r["metrics"].get("worker_share_s")),
      "mean_batch_ms": median(lambda r: (r["metrics"]["mean_inference_batch_latency_micro_secs"]
                                         or 0) / 1000 or None),
      "peak_rss_mib_per_process": max((p.get("peak_rss_mib") or 0 for r in records
                                       for p in r["metadata"]["worker_processes"]), default=None),
      "processes_loaded_model": last["processes_loaded_model"],
      "threads_seen": sorted({p.get("intra_op_threads") for r in records
                              for p in r["metadata"]["worker_processes"]} - {None}),
      "status": "succeeded" if all(r["status"] == "succeeded" for r in records) else "failed",
      "run_ids": [r["run_id"] for r in records],
  }


def table(sweep: dict[str, Any]) -> str:
  lines = [f"{sweep['benchmark']}: steady-state items/s (p99 batch ms) | whole-process seconds "
           f"for {sweep['items']} items per point{share_note(sweep)}, median of "
           f"{sweep['repeats']}; * = the matrix default layout",
           "layout          " + "".join(f"{'batch ' + str(b):>27}" for b in sweep["batch_sizes"])
           + "   peak RSS/process"]
  for line in lines_of(sweep):
    points = [p for p in sweep["points"] if line_of(p) == line]
    cells = "".join(
        f"{cell(p):>27}" for p in sorted(points, key=lambda p: p["batch_size"]))
    rss = max((p["peak_rss_mib_per_process"] or 0 for p in points), default=0)
    star = " *" if line == default_line(sweep) else ""
    lines.append(f"{line + star:<16}{cells}   {rss} MiB")
  return "\n".join(lines)


def default_line(sweep: dict[str, Any]) -> str:
  return line_of({"layout": sweep["default_layout"], "batching": sweep.get("default_batching")})


def line_of(point: dict[str, Any]) -> str:
  """A plot line / table row: the layout, plus the batching where it varies (BERT)."""
  return point["layout"] + (f" {point['batching']}" if point.get("batching") else "")


def lines_of(sweep: dict[str, Any]) -> list[str]:
  return list(dict.fromkeys(line_of(p) for p in sweep["points"]))


def cell(point: dict[str, Any]) -> str:
  if point["status"] != "succeeded" or point["steady_items_per_s"] is None:
    return "failed" if point["status"] != "succeeded" else "too few batches"
  p99 = point["p99_batch_ms"]  # None: too few batches for a p99 (latency_histogram.py)
  share = point.get("worker_share_s")
  return (f"{point['steady_items_per_s']:.2f} ({'n/a' if p99 is None else f'{p99:.0f}'})"
          f" | {'-' if share is None else f'{share:.1f} s'}")


def share_note(sweep: dict[str, Any]) -> str:
  share = sweep.get("worker_share")
  return (f" (one Dataflow worker's share: {share['dataset_items']} / {share['num_workers']} "
          "workers)" if share else "")
