"""`make compare-profiles BENCH=<name>`: the `tuned` and the `beam` profile of one benchmark,
run locally back to back (each repeat: tuned, then beam, so both see the same machine), and for
each headline metric the median over the repeats of the ratio beam / tuned.

  python -m pipelines.compare_profiles resnet101 [--items N] [--repeats 3]

The figures (every run's metrics, the ratios of each repeat, their medians) are stored as JSON
under <results>/compare-profiles/.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Any

from pipelines import child, cli_types
from pipelines.cli_types import positive_int
from pipelines.plan import Overrides
from pipelines.record import build, facts, store
from pipelines.record.schema import Record
from pipelines.sweep_results import median_or_none
from pipelines.worker.vocab import BEAM_PROFILE, DEFAULT_PROFILE

PROFILES = (DEFAULT_PROFILE, BEAM_PROFILE)  # run in this order, each repeat
METRICS = (
    ("mean_inference_request_batch_size", "mean batch size"),
    ("mean_inference_batch_latency_micro_secs", "mean batch latency (µs)"),
    ("mean_load_model_latency_milli_secs", "mean model load (ms)"),
    ("steady_throughput_per_s", "steady throughput (items/s)"),
    ("throughput_per_s_excl_model_load", "throughput excl. load (items/s)"),
    # what one worker pays for its items, start-up included (N=share: a Dataflow worker's share)
    ("worker_share_s", "whole process (s)"),
)
# Kept beside each run: what explains the difference.
SETTINGS = ("layout", "processes", "threads", "batching", "inference_step")  # plan keys


def ratio(beam: float | None, tuned: float | None) -> float | None:
  return beam / tuned if beam is not None and tuned not in (None, 0) else None


def run_profile(bench: str, profile: str, items: int | str | None,
                results_dir: pathlib.Path, in_image: bool = False) -> Record:
  """One run in a fresh process (child.py), so its whole-process figure is a user's."""
  try:
    record = child.run(Overrides(bench, profile=profile, items=items, results_dir=results_dir,
                                 in_image=in_image))
  except child.NotStarted as e:
    raise SystemExit(f"{bench} ({profile}): {e}") from None
  except child.Interrupted as e:
    raise SystemExit(e.exit_code) from None
  if not record.succeeded:
    raise SystemExit(f"{bench} ({profile}): run failed: {record.error}")
  return record


def summarize(repeats: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
  """{metric: {tuned: [...], beam: [...], ratios: [...], median_ratio}} from the repeats'
  records ({'tuned': record, 'beam': record} each)."""
  out = {}
  for metric, _ in METRICS:
    values = {p: [r[p].metrics.get(metric) for r in repeats] for p in PROFILES}
    ratios = [ratio(b, t) for t, b in zip(values["tuned"], values["beam"])]
    out[metric] = {**values, "ratios": ratios, "median_ratio": median_or_none(ratios),
                   **{f"median_{p}": median_or_none(values[p]) for p in PROFILES}}
  return out


def format_table(bench: str, figures: dict[str, Any], n: int) -> str:
  def num(v):
    return "-" if v is None else f"{v:.4g}"
  lines = [f"{bench}: beam / tuned, median of {n} back-to-back repeat(s)", "",
           f"{'metric':<34} {'tuned':>10} {'beam':>10} {'beam/tuned':>11}  ratios"]
  for metric, label in METRICS:
    f = figures[metric]
    ratios = ", ".join("-" if r is None else f"{r:.3f}" for r in f["ratios"])
    lines.append(f"{label:<34} {num(f['median_tuned']):>10} {num(f['median_beam']):>10} "
                 f"{num(f['median_ratio']):>11}  ({ratios})")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("benchmark")
  parser.add_argument("--items", type=cli_types.items, default=None,
                      help="items per run; `share`: one Dataflow worker's share of the dataset")
  parser.add_argument("--repeats", type=positive_int, default=3)
  parser.add_argument("--in-image", action="store_true",
                      help="both profiles with their SDK workers in the pushed worker image")
  parser.add_argument("--results-dir", type=pathlib.Path, default=store.DEFAULT_DIR)
  args = parser.parse_args(argv)
  repeats = []
  for i in range(args.repeats):
    pair = {}
    for profile in PROFILES:
      print(f"\n=== {args.benchmark}: repeat {i + 1}/{args.repeats}, profile {profile} ===",
            flush=True)
      pair[profile] = run_profile(args.benchmark, profile, args.items, args.results_dir,
                                  args.in_image)
    repeats.append(pair)
  figures = summarize(repeats)
  table = format_table(args.benchmark, figures, args.repeats)
  print("\n" + table)
  out = (args.results_dir / "compare-profiles"
         / f"{args.benchmark}-{build.utc_now().replace(':', '')}.json")
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps({
      "benchmark": args.benchmark, "items": args.items, "repeats": args.repeats,
      "order": "each repeat runs tuned, then beam", "figures": figures,
      "runs": [{p: {"run_id": r[p].run_id, "timestamp": r[p].timestamp,
                    **{k: r[p].plan.get(k) for k in SETTINGS},
                    "metrics": r[p].metrics} for p in PROFILES} for r in repeats],
      "versions": facts.versions(), "hostname": repeats[0]["tuned"].metadata["hostname"],
  }, indent=2, default=str) + "\n")
  print(f"figures: {out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
