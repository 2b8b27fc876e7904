"""A sweep's results as plain data (what `make sweep` stores in results/sweeps/*.json): each
point's figures, the table printed and the report's plot lines. Read by the sweep command and the
report alike."""
from __future__ import annotations

import math
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
  last = records[-1].metadata
  return {
      "steady_items_per_s": median(lambda r: r.metrics["steady_throughput_per_s"]),
      "p99_batch_ms": median(lambda r: r.metrics["batch_latency_p99_ms"]),
      # the whole process for the point's items: launcher start to last batch (process_stats)
      "worker_share_s": median(lambda r: r.metrics.get("worker_share_s")),
      "mean_batch_ms": median(lambda r: (r.metrics["mean_inference_batch_latency_micro_secs"]
                                         or 0) / 1000 or None),
      "peak_rss_mib_per_process": max((p.get("peak_rss_mib") or 0 for r in records
                                       for p in r.metadata["worker_processes"]), default=None),
      "processes_loaded_model": last["processes_loaded_model"],
      "threads_seen": sorted({p.get("intra_op_threads") for r in records
                              for p in r.metadata["worker_processes"]} - {None}),
      # the optimization's agreement with none (pipelines/agreement.py); None for none
      "agreement": median(lambda r: r.metrics.get("agreement")),
      "max_logit_diff": max((r.metrics.get("max_logit_diff") or 0 for r in records),
                            default=None),
      "agreement_passed": _passed(records),
      "optimize_s": median(lambda r: r.metrics.get("optimize_s")),
      "status": ("succeeded" if all(r.succeeded for r in records) else
                 "cancelled" if any(r.status == "cancelled" for r in records) else "failed"),
      "run_ids": [r.run_id for r in records],
  }


def _passed(records: list[dict[str, Any]]) -> bool | None:
  """Every repeat's agreement check passed (False if one failed; None: none could judge)."""
  verdicts = [(r.metadata.get("agreement_check") or {}).get("passed") for r in records]
  if False in verdicts:
    return False
  return True if verdicts and all(verdicts) else None


def table(sweep: dict[str, Any]) -> str:
  label = max([16, *(len(line) + 3 for line in lines_of(sweep))])
  width = 34 if sweep.get("optimizations") else 27
  lines = [f"{sweep['benchmark']}: steady-state items/s (p99 batch ms) | whole-process seconds "
           f"for {sweep['items']} items per point{share_note(sweep)}, median of "
           f"{sweep['repeats']}; * = the matrix default layout"
           + ("; aX = the optimization's agreement with none (! failed its check, ? cannot "
              "be judged with random weights)" if sweep.get("optimizations") else ""),
           f"{'layout':<{label}}" + "".join(f"{'batch ' + str(b):>{width}}"
                                            for b in sweep["batch_sizes"])
           + "   peak RSS/process"]
  for line in lines_of(sweep):
    points = [p for p in sweep["points"] if line_of(p) == line]
    cells = "".join(
        f"{cell(p):>{width}}" for p in sorted(points, key=lambda p: p["batch_size"]))
    rss = max((p["peak_rss_mib_per_process"] or 0 for p in points), default=0)
    star = " *" if line == default_line(sweep) else ""
    lines.append(f"{line + star:<{label}}{cells}   {rss} MiB")
  return "\n".join(lines)


def default_line(sweep: dict[str, Any]) -> str:
  return line_of({"layout": sweep["default_layout"], "batching": sweep.get("default_batching")})


def line_of(point: dict[str, Any]) -> str:
  """A plot line / table row: the layout, plus the batching where it varies (BERT) and the
  optimization where one was asked for."""
  return " ".join(filter(None, (point["layout"], point.get("batching"),
                                point.get("optimization"))))


def lines_of(sweep: dict[str, Any]) -> list[str]:
  return list(dict.fromkeys(line_of(p) for p in sweep["points"]))


def cell(point: dict[str, Any]) -> str:
  if point["status"] != "succeeded":
    return point["status"]
  share = point.get("worker_share_s")
  whole = "-" if share is None else f"{share:.1f} s"
  if point["steady_items_per_s"] is None:  # one batch per process: the whole time still counts
    return f"too few batches | {whole}"
  p99 = point["p99_batch_ms"]  # None: too few batches for a p99 (latency_histogram.py)
  agreement = point.get("agreement")  # an optimization's, against none
  return (f"{point['steady_items_per_s']:.2f} ({'n/a' if p99 is None else f'{p99:.0f}'})"
          f" | {whole}"
          + ("" if agreement is None else f" a{agreement:.2f}"
             + {False: "!", True: "", None: "?"}[point.get("agreement_passed")]))


def share_note(sweep: dict[str, Any]) -> str:
  share = sweep.get("worker_share")
  return (f" (one Dataflow worker's share: {share['dataset_items']} / {share['num_workers']} "
          "workers)" if share else "")


def problem(sweep: Any) -> str | None:
  """Why a sweep file (hand-edited, or from elsewhere) cannot be shown, or None: what the
  table and the report's plot read, of the types they need."""
  def whole(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1

  def figure(v):
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)
                         and math.isfinite(v) and v >= 0)
  if not isinstance(sweep, dict) or not isinstance(sweep.get("benchmark"), str):
    return "not a sweep (no benchmark)"
  if not isinstance(sweep.get("points"), list) or not all(
      isinstance(p, dict) for p in sweep["points"]):
    return "points is not a list of objects"
  if not isinstance(sweep.get("batch_sizes"), list) or not all(
      whole(b) for b in sweep["batch_sizes"]):
    return "batch_sizes is not a list of whole numbers"
  if not isinstance(sweep.get("default_layout"), str):
    return "default_layout is not a text"
  for i, p in enumerate(sweep["points"]):
    if not isinstance(p.get("layout"), str) or not whole(p.get("batch_size")):
      return f"points[{i}]: layout or batch_size of the wrong type"
    if not all(isinstance(p.get(k), (str, type(None))) for k in ("batching", "optimization")):
      return f"points[{i}]: batching or optimization is not a text"
    if p.get("status") not in ("succeeded", "failed", "cancelled"):
      return f"points[{i}]: status {p.get('status')!r} is not a run status"
    bad = [k for k in ("steady_items_per_s", "p99_batch_ms", "worker_share_s",
                       "peak_rss_mib_per_process", "agreement") if not figure(p.get(k))]
    if bad:
      return f"points[{i}]: {', '.join(bad)} not a finite number"
  return None
