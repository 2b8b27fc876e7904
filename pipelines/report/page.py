"""The self-contained HTML report: per comparable group, the latest headline numbers, cost,
history plots, the batch-latency spread and flagged regressions. Plots are embedded PNGs, so the
file opens offline."""
from __future__ import annotations

import base64
import html
from typing import Any

from pipelines import cost
from pipelines.record import comparable
from pipelines.record.schema import Record
from pipelines.report import history, plots, regressions

TABLE_METRICS = ["mean_inference_request_batch_size", "mean_inference_batch_latency_micro_secs",
                 "mean_load_model_latency_milli_secs", "throughput_per_s_excl_model_load",
                 "throughput_per_s", "batch_latency_p50_ms", "batch_latency_p90_ms",
                 "batch_latency_p99_ms", "gpu_utilization_mean_pct", "dead_lettered",
                 "num_inferences"]

CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px} h2{font-size:18px;margin-top:36px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0} td,th{padding:4px 10px;border-bottom:1px solid #eee;
text-align:right} th:first-child,td:first-child{text-align:left}
.bad{color:#b00020;font-weight:600} .ok{color:#2e7d32} .muted{color:#777;font-size:13px}
img{max-width:100%}
"""


def analyze(records: list[Record]) -> dict[str, Any]:
  """The machine-readable summary: change points and regressions per comparable group."""
  groups = []
  for key, runs in comparable.groups(records).items():
    change_points = {m: regressions.detect(history.series(runs, m), direction)
                     for m, direction in history.HEADLINE.items()}
    flagged = [{"metric": m, "run_id": runs[cp.index].run_id,
                "timestamp": runs[cp.index].timestamp, **cp.as_dict()}
               for m, cps in change_points.items() for cp in cps if cp.regression]
    groups.append({"group": key, "runs": runs, "change_points": change_points,
                   "regressions": flagged})
  return {"groups": groups,
          "recent_regressions": sum(1 for g in groups for r in g["regressions"] if r["recent"])}


def summary_json(analysis: dict[str, Any]) -> dict[str, Any]:
  return {
      "recent_regressions": analysis["recent_regressions"],
      "groups": [{
          "group": {**g["group"].__dict__, "experiment": dict(g["group"].experiment)},
          "runs": len(g["runs"]), "latest_run_id": g["runs"][-1].run_id,
          "change_points": {m: [cp.as_dict() for cp in cps]
                            for m, cps in g["change_points"].items()},
          "regressions": g["regressions"],
      } for g in analysis["groups"]],
  }


def _img(png: bytes, alt: str) -> str:
  data = base64.b64encode(png).decode()
  return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _text(value: Any) -> str:
  """Any value read from disk (a record, a sweep file), as text on the page."""
  return html.escape(str(value))


def _fmt(value: Any, note: str | None = None) -> str:
  if value is None:
    return html.escape(note) if note else "–"
  if isinstance(value, float):
    return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
  return _text(value)


def _group_section(g: dict[str, Any], prices: dict[str, Any]) -> str:
  runs, key = g["runs"], g["group"]
  latest = runs[-1]
  meta = latest.metadata
  notes = latest.metric_notes
  rows = "".join(f"<tr><td>{html.escape(history.LABELS.get(m, m))}</td>"
                 f"<td>{_fmt(latest.metrics.get(m), notes.get(m))}</td></tr>"
                 for m in TABLE_METRICS)
  estimate = cost.estimate(latest, prices)
  if estimate["applicable"]:
    cost_row = (f"<tr><td>cost of the run ({html.escape(estimate['basis'])})</td>"
                f"<td>{estimate['run']:.2f} "
                f"{_text(estimate['currency'])}</td></tr><tr><td>cost per 1,000 inferences</td>"
                f"<td>{estimate['per_1k_inferences']:.4f} {_text(estimate['currency'])}</td></tr>")
  else:
    why = html.escape(estimate["why"])
    cost_row = f"<tr><td>cost</td><td class=muted>not applicable: {why}</td></tr>"
  gpu = latest.gpu
  gpu_note = ("GPU telemetry: " + ("available, " + str(gpu.get("samples")) + " samples"
                                   if gpu.get("telemetry") == "available" else "unavailable"))
  if g["regressions"]:
    items = "".join(
        f"<li class=bad>{html.escape(history.LABELS.get(r['metric'], r['metric']))}: "
        f"{r['relative_change']:+.1%} from run {_text(r['run_id'])} "
        f"({_text(r['timestamp'])}){' — recent' if r['recent'] else ''}</li>"
        for r in g["regressions"])
    verdict = f"<p class=bad>Regressions flagged:</p><ul>{items}</ul>"
  else:
    verdict = "<p class=ok>No regression flagged.</p>"
  bound = (meta.get("ceilings") or {}).get("in_words")
  bound_line = f"<p>What bounds it: {_text(bound)}.</p>" if bound else ""
  headline = list(history.HEADLINE)
  versions = meta.get("versions", {})
  image = (f", image {html.escape(str(latest.plan['image']))}" if latest.plan.get("image")
           else "")
  return f"""
<section id="{html.escape(key.slug())}">
<h2>{html.escape(key.label())}</h2>
<p class=muted>{len(runs)} run(s). Latest: {_text(latest.run_id)} at
{_text(latest.timestamp)}, git {_text(str(meta.get('git_sha', '?'))[:10])},
Beam {_text(versions.get('apache-beam', '?'))},
torch {_text(versions.get('torch', '?'))}, batch size {_fmt(latest.plan.get('batch_size'))}{image}.
{html.escape(gpu_note)}.</p>
{verdict}
{bound_line}
<table><tr><th>latest run</th><th>value</th></tr>{rows}{cost_row}</table>
{_img(plots.history_grid(runs, headline, g['change_points']), 'history of ' + key.label())}
{_img(plots.latency_spread(runs), 'batch latency spread of ' + key.label())}
</section>"""


def _sweep_section(sweeps: dict[str, dict[str, Any]]) -> str:
  if not sweeps:
    return ""
  parts = [f"<h3>{_text(name)}</h3><p class=muted>{_fmt(s['items'])} items per point, median "
           f"of {_fmt(s['repeats'])}, {_text(s['started'])}, git "
           f"{_text(str(s.get('git_sha', '?'))[:10])}; the ringed point is the matrix "
           f"default ({_text(s['default_layout'])}, batch {_fmt(s['default_batch_size'])}).</p>"
           + _img(plots.sweep(s), f"sweep of {name}") for name, s in sorted(sweeps.items())]
  return ("<section id=sweeps><h2>Worker layout sweeps (make sweep)</h2><p class=muted>"
          "Steady state: per SDK process, items after its first batch over the time from its "
          "first to its last batch end, summed over processes.</p>" + "".join(parts)
          + "</section>")


def _plan_section(plans: dict[str, dict[str, Any]]) -> str:
  if not plans:
    return ""
  parts = []
  for name, p in sorted(plans.items()):
    best = p.get("recommended")
    c = p["constants"]
    parts.append(
        f"<h3>{_text(name)}</h3><p class=muted>{_fmt(p['items'])} items; worker boot "
        f"{_fmt(c['WORKER_BOOT_S'])} s, image {_fmt(c['IMAGE_GB'])} GB at "
        f"{_fmt(c['IMAGE_PULL_GBPS'])} GB/s; recommended: "
        + (f"{_fmt(best['workers'])} x {_text(best['machine_type'])} (layout "
           f"{_text(best['layout_on_machine'])}, {_text(best['basis'])}), "
           f"{_fmt(best['job_s'] / 60)} min, ${_fmt(best['cost_usd'])}" if best else "none")
        + "</p>" + _img(plots.plan_frontier(p), f"plan of {name}"))
  return ("<section id=plans><h2>Workers and machine types (make plan)</h2><p class=muted>"
          "Projected from local runs of one worker's share; machine types larger than the "
          "measured one are projections (hollow).</p>" + "".join(parts) + "</section>")


def render(records: list[Record], analysis: dict[str, Any], prices: dict[str, Any],
           generated_at: str, sweeps: dict[str, dict[str, Any]] | None = None,
           plans: dict[str, dict[str, Any]] | None = None) -> str:
  groups = analysis["groups"]
  index = "".join(
      f'<li><a href="#{html.escape(g["group"].slug())}">{html.escape(g["group"].label())}</a>'
      f'{" <span class=bad>regression</span>" if g["regressions"] else ""}</li>' for g in groups)
  failed = [r for r in records if not r.succeeded]
  failed_note = (f"<p class=bad>{len(failed)} failed run(s) not charted: "
                 + ", ".join(html.escape(f"{r.benchmark} {r.run_id}") for r in failed[-5:])
                 + "</p>") if failed else ""
  body = "".join(_group_section(g, prices) for g in groups) or "<p>No successful runs yet.</p>"
  extra = _sweep_section(sweeps or {}) + _plan_section(plans or {})
  return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Beam RunInference PyTorch benchmarks</title><style>{CSS}</style></head>
<body><h1>Beam RunInference PyTorch benchmarks</h1>
<p class=muted>Generated {html.escape(generated_at)} from {len(records)} run record(s).
Runs are compared only within a group (benchmark, runner, device, machine type, weights,
profile, worker layout, optimization, experiment).
Change points: PELT over each headline metric, at least 3 runs per segment, changes under 5%
ignored; red dashed lines are regressions.</p>
{failed_note}<ul>{index}</ul>{body}{extra}</body></html>
"""
