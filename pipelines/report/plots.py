"""PNG plots (matplotlib, headless) returned as bytes for embedding in the page."""
from __future__ import annotations

import io
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pipelines.record.schema import Record  # noqa: E402
from pipelines.report import history  # noqa: E402
from pipelines.report.regressions import ChangePoint  # noqa: E402

# Labels come from records and sweep files: a '$' in them is text, never mathtext (which would
# fail the whole report on an unbalanced formula).
_PLAIN_TEXT = {"text.parse_math": False}


def _png(fig) -> bytes:
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
  plt.close(fig)
  return buffer.getvalue()


def _run_labels(runs: Sequence[Record]) -> list[str]:
  return [f"{r.timestamp[5:16].replace('T', ' ')}\n{str(r.metadata.get('git_sha', '?'))[:7]}"
          for r in runs]


def _ticks(ax, runs, max_labels: int) -> None:
  labels = _run_labels(runs)
  step = max(1, -(-len(labels) // max_labels))
  ax.set_xticks(range(0, len(labels), step))
  ax.set_xticklabels(labels[::step], fontsize=7)


@matplotlib.rc_context(_PLAIN_TEXT)
def history_grid(runs: list[Record], metrics: list[str],
                 change_points: dict[str, list[ChangePoint]]) -> bytes:
  """One small history chart per metric; change points drawn red (regression) or grey."""
  cols = 2
  rows = (len(metrics) + cols - 1) // cols
  fig, axes = plt.subplots(rows, cols, figsize=(11, 3.1 * rows), squeeze=False)
  for ax, metric in zip(axes.flat, metrics):
    values = history.series(runs, metric)
    xs = [i for i, v in enumerate(values) if v is not None]
    ax.plot(xs, [values[i] for i in xs], marker="o", markersize=3, linewidth=1.2,
            color="#1f77b4")
    for cp in change_points.get(metric, []):
      ax.axvline(cp.index - 0.5, color="#d62728" if cp.regression else "#888888",
                 linestyle="--", linewidth=1.2)
      ax.annotate(f"{cp.relative_change:+.0%}", (cp.index - 0.5, ax.get_ylim()[1]),
                  fontsize=8, color="#d62728" if cp.regression else "#555555",
                  ha="left", va="top")
    ax.set_title(history.LABELS.get(metric, metric), fontsize=10)
    ax.grid(alpha=0.3)
    _ticks(ax, runs, max_labels=5)
  for ax in list(axes.flat)[len(metrics):]:
    ax.set_visible(False)
  fig.tight_layout()
  return _png(fig)


@matplotlib.rc_context(_PLAIN_TEXT)
def latency_spread(runs: list[Record]) -> bytes:
  """Per run: min-max range of batch latency, with p50, p90 and p99 marked."""
  fig, ax = plt.subplots(figsize=(11, 3.2))
  for i, run in enumerate(runs):
    m = run.metrics
    low, high = m.get("min_inference_batch_latency_micro_secs"), m.get(
        "max_inference_batch_latency_micro_secs")
    if low is not None and high is not None:
      ax.vlines(i, low / 1000, high / 1000, color="#bbbbbb", linewidth=6)
  for key, marker, color in (("batch_latency_p50_ms", "o", "#1f77b4"),
                             ("batch_latency_p90_ms", "^", "#ff7f0e"),
                             ("batch_latency_p99_ms", "x", "#d62728")):
    values = history.series(runs, key)
    xs = [i for i, v in enumerate(values) if v is not None]
    ax.scatter(xs, [values[i] for i in xs], marker=marker, color=color, zorder=3,
               label=key.split("_")[-2])
  ax.set_ylabel("batch latency (ms)")
  ax.set_title("Batch latency spread per run (bar: min to max)", fontsize=10)
  ax.legend(fontsize=8, loc="upper left")
  ax.grid(alpha=0.3)
  _ticks(ax, runs, max_labels=10)
  fig.tight_layout()
  return _png(fig)


@matplotlib.rc_context(_PLAIN_TEXT)
def sweep(sweep: dict[str, Any]) -> bytes:
  """Steady-state throughput and p99 batch latency against batch size, one line per layout
  (and batching), the matrix default ringed."""
  from pipelines.sweep_results import default_line, line_of, lines_of
  fig, (tput, p99) = plt.subplots(1, 2, figsize=(11, 3.6))
  default = default_line(sweep)
  for line in lines_of(sweep):
    points = sorted((p for p in sweep["points"] if line_of(p) == line and
                     p["steady_items_per_s"] is not None), key=lambda p: p["batch_size"])
    xs = [p["batch_size"] for p in points]
    width = 2.4 if line == default else 1.2
    label = line + (" (default)" if line == default else "")
    tput.plot(xs, [p["steady_items_per_s"] for p in points], marker="o", linewidth=width,
              label=label)
    p99.plot(xs, [p["p99_batch_ms"] for p in points], marker="o", linewidth=width, label=label)
    for p in points:
      if line == default and p["batch_size"] == sweep["default_batch_size"]:
        tput.scatter([p["batch_size"]], [p["steady_items_per_s"]], s=160, facecolors="none",
                     edgecolors="#d62728", linewidths=2, zorder=4)
        p99.scatter([p["batch_size"]], [p["p99_batch_ms"]], s=160, facecolors="none",
                    edgecolors="#d62728", linewidths=2, zorder=4)
  for ax, title in ((tput, "steady-state items/s"), (p99, "p99 batch latency (ms)")):
    ax.set_xscale("log", base=2)
    ax.set_xticks(sweep["batch_sizes"])
    ax.set_xticklabels([str(b) for b in sweep["batch_sizes"]])
    ax.set_xlabel("batch size")
    ax.set_title(f"{sweep['benchmark']}: {title}", fontsize=10)
    ax.grid(alpha=0.3)
  tput.legend(fontsize=8)
  fig.tight_layout()
  return _png(fig)


def plan_frontier(plan: dict[str, Any]) -> bytes:
  """`make plan`'s projections: job time against cost for every configuration (measured
  machine type solid, projected hollow), the time-cost frontier, Beam's configuration and the
  recommended one marked."""
  fig, ax = plt.subplots(figsize=(7.5, 4.2))
  for basis, style in (("measured", {}), ("projected", {"facecolors": "none"})):
    rows = [r for r in plan["rows"] if r["basis"] == basis]
    ax.scatter([r["job_s"] / 60 for r in rows], [r["cost_usd"] for r in rows], s=14, alpha=0.5,
               edgecolors="#1f77b4", label=f"{basis} machine type", **style)
  front = plan["frontier"]
  ax.plot([r["job_s"] / 60 for r in front], [r["cost_usd"] for r in front], color="#2ca02c",
          linewidth=1.6, label="frontier (none faster and cheaper)")
  for rows, colour, label in (([r for r in plan["rows"] if r.get("beam")], "#d62728",
                               "Beam's configuration"),
                              ([plan["recommended"]] if plan.get("recommended") else [],
                               "#ff7f0e", "recommended")):
    ax.scatter([r["job_s"] / 60 for r in rows], [r["cost_usd"] for r in rows], s=120,
               facecolors="none", edgecolors=colour, linewidths=2, label=label, zorder=4)
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlabel("job time (min)")
  ax.set_ylabel("job cost (USD)")
  ax.set_title(f"{plan['benchmark']}: {plan['items']} items, projected", fontsize=10)
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize=7)
  fig.tight_layout()
  return _png(fig)
