"""`make plan`'s table: the configurations worth a look (the time-cost frontier, Beam's
configuration, the cheapest meeting the deadline and budget, and, where a GPU benchmark is
planned beside its CPU twin, each one's cheapest and fastest), each row saying which hardware
its rate was measured on."""
from __future__ import annotations

from typing import Any

from pipelines.record.schema import shown


def _marks(result: dict[str, Any]) -> dict[int, str]:
  marks: dict[int, list[str]] = {id(r): ["frontier"] for r in result["frontier"]}

  def mark(row: dict[str, Any], text: str) -> None:
    marks.setdefault(id(row), []).append(text)
  beam = result["beam"]
  # An autoscaling job starts at `workers` and may grow: its row is where Beam's job starts.
  beam_label = ("Beam's configuration" if not beam.get("max_workers") else
                f"Beam's configuration at its start (autoscales to {beam['max_workers']})")
  for row in result["rows"]:
    if row["beam"]:
      mark(row, beam_label)
  benchmarks = sorted({row["benchmark"] for row in result["rows"]})
  if len(benchmarks) > 1:  # a GPU benchmark beside its CPU twin
    for name in benchmarks:
      own = [r for r in result["rows"] if r["benchmark"] == name]
      mark(min(own, key=lambda r: (r["cost_usd"], r["job_s"])), f"cheapest {name}")
      mark(min(own, key=lambda r: (r["job_s"], r["cost_usd"])), f"fastest {name}")
  if result["recommended"]:
    mark(result["recommended"], "<- cheapest" + (" meeting the deadline"
                                                 if result["deadline_s"] else "")
         + (" within the budget" if result["budget_usd"] else ""))
  return {key: "; ".join(texts) for key, texts in marks.items()}


def table(result: dict[str, Any]) -> str:
  def line(r: dict[str, Any], mark: str) -> str:
    machine = r["machine_type"] + (f"+{r['accelerator'].removeprefix('nvidia-tesla-')}"
                                   if r.get("accelerator") else "")
    return (f"{r['benchmark']:<15} {machine:<17} {r['profile']:<6} {r['layout_on_machine']:>6} "
            f"{r['workers']:>7} {r['job_s'] / 60:>9.1f} {r['cost_usd']:>9.2f}  "
            f"{r['basis']:<9}  {r.get('measured_on', '?'):<34} {mark}")
  c = result["constants"]
  out = [f"{result['benchmark']}: {result['items']} items; worker boot {c['WORKER_BOOT_S']:.0f} s"
         f"{' (fitted from Dataflow records)' if result['boot_fitted_from_dataflow'] else ''}, "
         f"image {c['IMAGE_GB']:g} GB at {c['IMAGE_PULL_GBPS']:g} GB/s", "measured here:"]
  for m in result["measured"]:
    out.append(f"  {m['benchmark']} {m['profile']} layout {m['layout']} on {m['machine_type']}: "
               f"{m['rate']:.2f} items/s steady, start-up {m['startup_s']:.1f} s "
               f"({'in the image' if m['in_image'] else 'host'}; measured on "
               f"{m.get('hardware', '?')}; runs {', '.join(m['run_ids'])})")
  out += ["", f"{'benchmark':<15} {'machine type':<17} {'profile':<6} {'layout':>6} "
          f"{'workers':>7} {'job min':>9} {'cost $':>9}  {'basis':<9}  {'measured on':<34}"]
  marks = _marks(result)
  for r in sorted((r for r in result["rows"] if id(r) in marks),
                  key=lambda r: (r["job_s"], r["cost_usd"])):
    out.append(line(r, marks[id(r)]))
  if not result["recommended"]:
    out.append("no configuration meets the deadline and budget given")
  if result.get("not_measured"):
    out.append(result["not_measured"])
  if not any(r["beam"] for r in result["rows"]):
    b = result["beam"]
    out.append(f"Beam's configuration ({b['workers']} x {b['machine_type']}, layout "
               f"{b['layout']}) is not projected: no local run of PROFILE=beam with a worker "
               f"share (make compare-profiles BENCH=... N=share)")
  if any("GPU" in str(r.get("measured_on")) or "NVIDIA" in str(r.get("measured_on"))
         for r in result["rows"]):
    out.append("A GPU benchmark's rate is the GPU it was measured on: a T4 worker's differs "
               "(README, \"The GPU benchmark\")")
  for a in result["dataflow_actuals"]:
    p = a["projected"]
    out.append(f"Dataflow run {a['run_id']}: {a['job_s'] and a['job_s'] / 60:.1f} min, "
               f"${a['cost_usd'] or 0:.2f}; projected "
               + (f"{p['job_s'] / 60:.1f} min, ${p['cost_usd']:.2f}" if p else "n/a"))
  return "\n".join(shown(line) for line in out)
