"""`make perf`: each benchmark this machine can run (the CPU ones; the GPU one where CUDA is
usable) as a Beam pipeline and as a plain PyTorch loop, side by side.

Same model file, weights, preprocessing, batch size, batching and items, as --profile sets them
(the plain loop runs the pipeline's batch size where the profile fixes one, else the matrix's,
and sorts sentences by length where the pipeline does). The plain loop runs in one process on
all cores. The pipeline runs in two worker layouts (layout.py): 1 x all cores (one process, like
the plain loop) and the profile's layout for the Dataflow machine type (tuned: the matrix's
chosen one), plus any --layouts. Every figure is steady state: items after the first batch over
the time from the first batch's end to the last's (per SDK process, summed; process_stats.py),
so model load, start-up and warm-up are out of both; the pipeline's includes everything else
Beam does (reading, reshuffling, batching, metrics, writing outputs).
efficiency = pipeline items/s / plain loop items/s, within each back-to-back repeat (the plain
loop, then each layout); the median of REPEATS is reported with the range.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import time

import torch

from pipelines import child, cli_types, matrix, profiles, progress
from pipelines.cli_types import positive_int
from pipelines.layout import Layout
from pipelines.plan import Overrides
from pipelines.record import build, facts
from pipelines.sweep_results import median_or_none
from pipelines.worker import models
from pipelines.worker.handler import cuda_usable
from pipelines.worker.tokenizer_files import VOCAB_FILE


def plain_loop_refusal(bench: matrix.Benchmark) -> str | None:
  """Why the benchmark has no plain loop (its task's model is not a torch module), or None."""
  reason = bench.task_spec.no_local_model
  return f"{bench.name}: no plain loop: {reason}" if reason else None


def plain_options(bench: matrix.Benchmark, models_dir: pathlib.Path, profile: profiles.Profile):
  """The pipeline options the task's steps read to make an example as the run makes it (the
  model's files, the image limits' defaults, the sentence padding the profile runs)."""
  from apache_beam.options.pipeline_options import PipelineOptions

  from pipelines.worker.options import BenchmarkOptions
  return PipelineOptions(
      [], task=bench.task, model_architecture=bench.model,
      model_state_dict_path=str(models.model_path(bench.model, models_dir)),
      vocab_path=str(models_dir / VOCAB_FILE),
      sentence_batching=profile.sentence_batching_for(bench),
      decode=profile.decode_for(bench)).view_as(BenchmarkOptions)


def plain_loop(bench: matrix.Benchmark, lines: list[str], batch_size: int,
               models_dir: pathlib.Path, *, length_aware: bool, optimization: str = "none",
               profile: profiles.Profile | None = None) -> float:
  """Steady-state items/s of the same work without Beam, on all cores (the bench's GPU for a
  GPU benchmark), with the pipeline's CPU optimization, through the task's own steps: each
  line made into its example (lines the pipeline dead-letters left out), batched in the
  pipeline's order, run to its logits. The items after the first batch over the time from the
  first batch's end to the last's. `profile` (default: the default profile) says how sentences
  are padded."""
  task = bench.task_spec
  if plain_loop_refusal(bench):
    raise SystemExit(plain_loop_refusal(bench))
  torch.set_num_threads(os.cpu_count() or 1)  # a 1xT pipeline run may have narrowed the pool
  device = torch.device("cuda" if bench.needs_gpu else "cpu")
  opts = plain_options(bench, models_dir, profile or profiles.get(profiles.DEFAULT))
  model = models.load_model(opts.model_state_dict_path, bench.model).to(device)
  if optimization != "none":
    model = task.optimize(model, optimization, batch_size)
  items, first_items, first_end = 0, 0, None
  for batch in task.plain_batches((line.encode("utf-8") for line in lines), opts, batch_size,
                                  length_aware):
    task.prediction_logits(model, batch, device).cpu()  # .cpu() waits for the GPU
    items += len(batch)
    if first_end is None:
      first_items, first_end = len(batch), time.perf_counter()
  if first_end is None or items == first_items:
    raise SystemExit(f"{bench.name}: perf needs at least two batches of usable items "
                     f"({batch_size} each)")
  return (items - first_items) / (time.perf_counter() - first_end)


def fixed_batch_size(batching: dict[str, int]) -> int | None:
  """The batch size RunInference runs at, where min and max fix it (BatchElements' min
  defaults to 1); None for adaptive batching."""
  high = batching.get("max_batch_size")
  return high if high is not None and batching.get("min_batch_size", 1) == high else None


def plain_batch_size(bench: matrix.Benchmark, profile: profiles.Profile) -> int:
  """The plain loop's batch: the pipeline's where fixed, else (adaptive) the matrix's."""
  return fixed_batch_size(profile.batching_for(bench)) or bench.local_batch_size


def measure_repeat(bench: matrix.Benchmark, items: int, layouts: list[Layout],
                   results_dir: pathlib.Path, profile: profiles.Profile,
                   data_dir: pathlib.Path, models_dir: pathlib.Path) -> dict:
  """The plain loop, then the pipeline in each layout, back to back on the same machine, both
  with `profile`'s batching (plain_batch_size)."""
  lines = (data_dir / bench.task_spec.input_file).read_text().splitlines()[:items]
  plain = plain_loop(bench, lines, plain_batch_size(bench, profile), models_dir,
                     length_aware=profile.length_aware(bench),
                     optimization=profile.optimization_for(bench), profile=profile)
  runs = {}
  for layout in layouts:
    try:  # a fresh process, so its whole-process figure is what a user (or a worker) pays
      record = child.run(Overrides(bench.name, items=items, layout=layout,
                                      profile=profile.name, results_dir=results_dir,
                                      data_dir=data_dir, models_dir=models_dir))
    except child.NotStarted as e:
      raise SystemExit(f"{bench.name} {layout}: {e}") from None
    except child.Interrupted as e:
      raise SystemExit(e.exit_code) from None
    if not record.succeeded:
      raise SystemExit(f"{bench.name}: pipeline run failed: {record.error}")
    beam = record.metrics["steady_throughput_per_s"]
    if beam is None:
      raise SystemExit(f"{bench.name} {layout}: too few batches per process for a steady state; "
                       "raise N")
    runs[str(layout)] = {"beam_items_per_s": beam, "efficiency": beam / plain,
                         "worker_share_s": record.metrics.get("worker_share_s"),
                         "device_used": record.device_used,
                         "gpu_utilization_mean_pct": record.gpu.get("utilization_mean_pct"),
                         "sentence_batching": record.plan["sentence_batching"],
                         "run_id": record.run_id}
  return {"plain_items_per_s": plain, "layouts": runs}


def layout_ratio(bench: matrix.Benchmark, repeats: list[dict], chosen: str, other: str) -> dict:
  """The chosen layout's throughput over another's, within each back-to-back repeat."""
  values = sorted(r["layouts"][chosen]["beam_items_per_s"] / r["layouts"][other]["beam_items_per_s"]
                  for r in repeats)
  return {"benchmark": bench.name, "chosen": chosen, "other": other,
          "median": statistics.median(values), "min": values[0], "max": values[-1]}


def median_row(bench: matrix.Benchmark, items: int, layout: str, repeats: list[dict],
               profile: profiles.Profile) -> dict:
  pairs = sorted(({"plain_items_per_s": r["plain_items_per_s"], **r["layouts"][layout]}
                  for r in repeats), key=lambda pair: pair["efficiency"])
  batching = profile.batching_for(bench)
  return {"benchmark": bench.name, "profile": profile.name, "items": items,
          "batch_size": fixed_batch_size(batching), "batching": batching,
          "plain_batch_size": plain_batch_size(bench, profile),
          "layout": layout, "default": layout == str(profile.layout_for(bench)),
          **pairs[len(pairs) // 2],
          "efficiency_min": pairs[0]["efficiency"], "efficiency_max": pairs[-1]["efficiency"],
          "worker_share_s_median": median_or_none([p.get("worker_share_s") for p in pairs]),
          "pairs": pairs}


def share_text(seconds: float | None) -> str:
  return "-" if seconds is None else f"{seconds:.1f}"


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("benchmarks", nargs="*", help="default: every benchmark this machine can run")
  parser.add_argument("--items", type=cli_types.items, default=None,
                      help="items per run; `share`: one Dataflow worker's share of the dataset")
  parser.add_argument("--repeats", type=positive_int, default=3,
                      help="plain/pipeline pairs per benchmark; the median pair is reported "
                           "(a shared machine's speed drifts by 20%% between minutes)")
  parser.add_argument("--layouts", type=lambda t: [Layout.parse(x) for x in t.split(",")],
                      default=[], help="more pipeline layouts to measure, e.g. 2x2 (Dataflow's "
                      "default on n1-standard-2)")
  parser.add_argument("--results-dir", type=pathlib.Path, default=pathlib.Path("results/perf"))
  parser.add_argument("--profile", default=profiles.DEFAULT,
                      help="the profile both sides run: its layout and batching")
  parser.add_argument("--data-dir", type=pathlib.Path, default=pathlib.Path("data"))
  parser.add_argument("--models-dir", type=pathlib.Path, default=pathlib.Path("models"))
  args = parser.parse_args(argv)
  try:
    profile = profiles.get(args.profile)
  except profiles.ProfileError as e:
    parser.error(str(e))
  gpu_here = cuda_usable()
  wanted = args.benchmarks or list(matrix.load())
  refused = [plain_loop_refusal(b) for b in matrix.load().values()
             if b.name in args.benchmarks and plain_loop_refusal(b)]
  if refused:
    parser.error(refused[0])
  benches = [b for b in matrix.load().values()
             if b.name in wanted and (gpu_here or not b.needs_gpu)]
  for bench in [b for b in benches if plain_loop_refusal(b)]:
    print(f"skipped {plain_loop_refusal(bench)}", flush=True)
    benches.remove(bench)
  rows, ratios = [], []
  for index, bench in enumerate(benches, 1):
    items = bench.items_for(args.items)
    one_process = Layout(1, os.cpu_count() or 1)
    chosen = profile.layout_for(bench)
    layouts = list(dict.fromkeys([one_process, chosen, *args.layouts]))
    repeats = []
    for repeat in range(1, args.repeats + 1):
      print(f"\n=== {progress.step(index, len(benches), bench.name)}: repeat {repeat}/"
            f"{args.repeats} (plain loop, then the pipeline in {', '.join(map(str, layouts))}) ===",
            flush=True)
      repeats.append(measure_repeat(bench, items, layouts, args.results_dir, profile,
                                    args.data_dir, args.models_dir))
    rows += [median_row(bench, items, str(layout), repeats, profile) for layout in layouts]
    for other in layouts:
      if other != chosen:
        ratios.append(layout_ratio(bench, repeats, str(chosen), str(other)))
  print("\nsteady-state items/s, median of back-to-back repeats (* = the profile's layout)")
  print("benchmark       device  items  batch  layout   plain/s  beam/s  efficiency  (range)"
        "      whole process s")
  for r in rows:
    layout = r["layout"] + (" *" if r["default"] else "")
    batch = r["batch_size"] or "{min_batch_size}-{max_batch_size}".format(**r["batching"])
    print(f"{r['benchmark']:<15} {r['device_used']:<6}  {r['items']:>5}  {batch:>5}  "
          f"{layout:<7}  {r['plain_items_per_s']:>7.2f}  {r['beam_items_per_s']:>6.2f}  "
          f"{r['efficiency']:>10.2f}  ({r['efficiency_min']:.2f}-{r['efficiency_max']:.2f})"
          f"  {share_text(r['worker_share_s_median']):>15}")
  print("\nthe chosen layout against the others, median of per-repeat ratios (range)")
  for r in ratios:
    print(f"{r['benchmark']:<15} {r['chosen']} / {r['other']}: {r['median']:.2f} "
          f"({r['min']:.2f}-{r['max']:.2f})")
  out = args.results_dir / f"perf-{build.utc_now().replace(':', '')}.json"
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps({"versions": facts.versions(), "rows": rows,
                                "layout_ratios": ratios}, indent=2))
  print(f"figures: {out} (median of {args.repeats} pairs per benchmark)")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
