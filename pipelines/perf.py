"""`make perf`: each benchmark this machine can run (the CPU ones; the GPU one where CUDA is
usable) as a Beam pipeline and as a plain PyTorch loop, side by side.

Same model file, weights, preprocessing functions, batch size, thread count and items. Both
figures exclude model load (a one-off per worker); the pipeline's includes everything else Beam
does (reading, reshuffling, batching, metrics, writing outputs).
efficiency = pipeline items/s / plain loop items/s, for each back-to-back pair; the median of
REPEATS pairs is reported with the range.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import time

import torch

from pipelines import image_classification, language_modeling, matrix, run_record
from pipelines.cli_types import positive_int
from pipelines.handler import cuda_usable
from pipelines.models import VOCAB_FILE, build_architecture
from pipelines.run import launch, parse_args
from pipelines.runners import LOCAL_INPUTS


def load_model(path: pathlib.Path, architecture: str) -> torch.nn.Module:
  model = build_architecture(architecture)
  model.load_state_dict(torch.load(path, map_location="cpu"))
  model.requires_grad_(False)
  return model.eval()


def _chunks(items: list, size: int):
  for i in range(0, len(items), size):
    yield items[i:i + size]


def plain_loop(bench: matrix.Benchmark, lines: list[str], batch_size: int,
               models_dir: pathlib.Path) -> float:
  """items/s of the same work without Beam, model load excluded."""
  device = torch.device("cuda" if bench.needs_gpu else "cpu")
  model = load_model(models_dir / f"{bench.model}.pth", bench.model).to(device)
  start = time.perf_counter()
  if bench.task == "image_classification":
    for chunk in _chunks(lines, batch_size):
      tensors = [image_classification.preprocess(image_classification.read_bytes(p))
                 for p in chunk]
      with torch.no_grad():
        logits = model(torch.stack(tensors).to(device))
      [image_classification.top1(row) for row in logits]  # .item() waits for the GPU
  else:
    tokenizer = language_modeling.load_tokenizer(str(models_dir / VOCAB_FILE))
    for chunk in _chunks(lines, batch_size):
      examples = [language_modeling.tokenize(tokenizer, language_modeling.mask_last_word(s))
                  for s in chunk]
      results = language_modeling.predict_masked_tokens(examples, model, device)
      [tokenizer.convert_ids_to_tokens(r.inference) for r in results]
  return len(lines) / (time.perf_counter() - start)


def measure_pair(bench: matrix.Benchmark, items: int, results_dir: pathlib.Path,
                 profile: str = "tuned") -> dict:
  """One plain loop then one pipeline run, back to back, so both see the same machine. The
  plain loop always runs the matrix's batch size; the pipeline runs `profile`'s settings."""
  lines = (pathlib.Path("data") / LOCAL_INPUTS[bench.task]).read_text().splitlines()[:items]
  plain = plain_loop(bench, lines, bench.local_batch_size, pathlib.Path("models"))
  run_args, beam_args = parse_args([bench.name, "--items", str(items), "--profile", profile,
                                    "--results-dir", str(results_dir)])
  record = launch(run_args, beam_args)
  if record["status"] != "succeeded":
    raise SystemExit(f"{bench.name}: pipeline run failed: {record['error']}")
  beam = record["metrics"]["throughput_per_s_excl_model_load"]
  return {"plain_items_per_s": plain, "beam_items_per_s": beam, "efficiency": beam / plain,
          "device_used": record["metadata"]["device_used"],
          "gpu_utilization_mean_pct": record["gpu"].get("utilization_mean_pct"),
          "run_id": record["run_id"]}


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("benchmarks", nargs="*", help="default: every benchmark this machine can run")
  parser.add_argument("--items", type=positive_int, default=None)
  parser.add_argument("--repeats", type=positive_int, default=3,
                      help="plain/pipeline pairs per benchmark; the median pair is reported "
                           "(a shared machine's speed drifts by 20%% between minutes)")
  parser.add_argument("--results-dir", type=pathlib.Path, default=pathlib.Path("results/perf"))
  parser.add_argument("--profile", default="tuned", help="the pipeline runs' profile")
  args = parser.parse_args(argv)
  gpu_here = cuda_usable()
  wanted = args.benchmarks or list(matrix.load())
  benches = [b for b in matrix.load().values()
             if b.name in wanted and (gpu_here or not b.needs_gpu)]
  rows = []
  for bench in benches:
    items = args.items or bench.local_items
    pairs = sorted((measure_pair(bench, items, args.results_dir, args.profile)
                    for _ in range(args.repeats)),
                   key=lambda pair: pair["efficiency"])
    rows.append({"benchmark": bench.name, "profile": args.profile, "items": items,
                 "batch_size": bench.local_batch_size,
                 "threads": torch.get_num_threads(), **pairs[len(pairs) // 2],
                 "efficiency_min": pairs[0]["efficiency"],
                 "efficiency_max": pairs[-1]["efficiency"], "pairs": pairs})
  print("\nbenchmark       device  items  batch  threads  plain/s  beam/s  efficiency  (range)")
  for r in rows:
    print(f"{r['benchmark']:<15} {r['device_used']:<6}  {r['items']:>5}  {r['batch_size']:>5}  "
          f"{r['threads']:>7}  {r['plain_items_per_s']:>7.2f}  {r['beam_items_per_s']:>6.2f}  "
          f"{r['efficiency']:>10.2f}  ({r['efficiency_min']:.2f}-{r['efficiency_max']:.2f})")
  out = args.results_dir / f"perf-{run_record.utc_now().replace(':', '')}.json"
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps({"versions": run_record.versions(), "rows": rows}, indent=2))
  print(f"figures: {out} (median of {args.repeats} pairs per benchmark)")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
