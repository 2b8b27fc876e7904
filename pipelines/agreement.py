"""The agreement check of an optimized run (OPTIMIZE=, optimizations.py) against `none`.

After a local run, the launcher loads the run's model twice, as the workers do, applies the
run's optimization to one copy and runs both on the same items: the first CHECK_ITEMS of the
run's own inputs that the pipeline would not dead-letter. It runs here, after the measured run,
so it costs the command time but never the measurement. The record gets:
  metrics.agreement       the fraction of items whose prediction (top-1 class, predicted token)
                          is the same as none's
  metrics.max_logit_diff  the largest absolute difference of any logit the prediction is taken
                          from (all classes; the vocabulary at the mask)
  metadata.agreement_check  items, kind (exact or lossy), passed, whether the figure means
                          anything (pretrained weights), tolerance, seconds
An exact transform passes when its logits are within RELATIVE_TOLERANCE of the largest logit and
every prediction that differs is a tie (the reference's top two closer than the difference seen).
A lossy one passes at LOSSY_PASS agreement, and only with pretrained weights: random weights give
near-tie logits, so their agreement says nothing (passed is then None, with a note).
"""
from __future__ import annotations

import copy
import time
from typing import Any, Callable

import torch

from pipelines.worker import optimizations
from pipelines.worker.models import load_model, read_meta

CHECK_ITEMS = 32
RELATIVE_TOLERANCE = 1e-4
LOSSY_PASS = 0.99


def check(plan, items: int = CHECK_ITEMS) -> dict[str, Any] | None:
  """The check's figures for the record (None: the run has no optimization to check)."""
  name = plan.optimization
  if name == optimizations.NONE:
    return None
  if not plan.local:
    return {"items": 0, "passed": None,
            "note": f"not checked on Dataflow: a local run with OPTIMIZE={name} checks it"}
  if not plan.check_model_files:
    return {"items": 0, "passed": None,
            "note": "not checked: no local model files (make models) to check against"}
  started = time.perf_counter()
  from apache_beam.options.pipeline_options import PipelineOptions

  from pipelines.worker.options import BenchmarkOptions
  files = dict(plan.check_model_files)
  opts = PipelineOptions(list(plan.beam_args), **files).view_as(BenchmarkOptions)
  steps = plan.task  # the task object: its steps are its methods
  examples = first_usable(plan.input_lines, items, lambda line: steps.example_from_line(line, opts))
  if not examples:
    return {"items": 0, "passed": None, "note": "not checked: every input was dead-lettered"}
  device = model_device(plan)  # a GPU optimization (fp16) is checked where it runs
  reference = load_model(files["model_state_dict_path"], plan.bench.model).to(device)
  batch = plan.max_batch_size or 8
  optimized = steps.optimize(copy.deepcopy(reference), name, batch)
  chunks = [examples[i:i + batch] for i in range(0, len(examples), batch)]
  want = torch.cat([steps.prediction_logits(reference, c, device).cpu() for c in chunks])
  got = torch.cat([steps.prediction_logits(optimized, c, device).cpu() for c in chunks])
  meta = read_meta(files["model_state_dict_path"])
  weights = meta.weights if meta else "unknown"
  figures = compare(want, got, exact=name in optimizations.EXACT,
                    meaningful=weights == "pretrained")
  return {**figures, "weights": weights, "seconds": round(time.perf_counter() - started, 1),
          "ran_on": f"the launcher (torch {torch.__version__})"}


def compare(want: torch.Tensor, got: torch.Tensor, exact: bool,
            meaningful: bool) -> dict[str, Any]:
  """Agreement of two [items, classes] logit tables, and the verdict (module docstring)."""
  diff = float((want - got).abs().max())
  scale = float(want.abs().max())
  flipped = want.argmax(1) != got.argmax(1)
  top2 = want.topk(2, dim=1).values
  ties = top2[:, 0] - top2[:, 1] <= 2 * diff
  out: dict[str, Any] = {
      "agreement": 1 - float(flipped.float().mean()), "max_logit_diff": diff,
      "items": len(want), "kind": "exact" if exact else "lossy", "logit_scale": scale,
      "flipped": int(flipped.sum()), "flipped_at_ties": int((flipped & ties).sum())}
  if exact:
    out["tolerance"] = f"max_logit_diff <= {RELATIVE_TOLERANCE:g} x the largest logit"
    out["passed"] = bool(diff <= RELATIVE_TOLERANCE * max(scale, 1.0)
                         and out["flipped"] == out["flipped_at_ties"])
  else:
    out["tolerance"] = f"agreement >= {LOSSY_PASS:g} with pretrained weights"
    out["passed"] = out["agreement"] >= LOSSY_PASS if meaningful else None
    if not meaningful:
      out["note"] = ("random weights: their logits are near ties, so a lossy change's (an "
                     "optimization's, another decoder's) agreement means little; run `make "
                     "models WEIGHTS=pretrained` (README, \"CPU optimizations\") for a "
                     "meaningful one")
  return out


def model_device(plan) -> torch.device:
  """Where the run's model runs (a GPU benchmark's on CUDA)."""
  return torch.device("cuda" if plan.bench.device == "GPU" else "cpu")


def first_usable(lines, items: int, convert: Callable[[bytes], Any]) -> list:
  """convert(line) of the first `items` lines it takes: the lines the pipeline would not
  dead-letter (convert raises for those, as the pipeline's parse step refuses them)."""
  out: list = []
  for line in lines:
    try:
      out.append(convert(line))
    except Exception:  # noqa: BLE001,S112 - a line the pipeline dead-letters is left out
      continue
    if len(out) == items:
      break
  return out


def check_decode(plan, items: int = CHECK_ITEMS) -> dict[str, Any] | None:
  """DECODE=device against cpu: the same items decoded by PIL (the cpu path's preprocessing)
  and by the batched decoder on the model's device (device_decode.decode_batch), run through
  the same model as loaded; the figures of `compare` (lossy: a different resize), plus how far
  the model's inputs are apart (max_input_diff, in normalized units). None: the run decodes
  on the CPU."""
  if plan.decode != "device":
    return None
  if not plan.check_model_files:
    return {"items": 0, "passed": None,
            "note": "not checked: no local model files (make models) to check against"}
  from pipelines.worker import device_decode, images
  from pipelines.worker.tasks import image_classification
  started = time.perf_counter()

  def both(line: bytes) -> tuple[torch.Tensor, bytes]:
    data = images.read_bytes(line.decode("utf-8").strip())
    return image_classification.preprocess(data), data
  pairs = first_usable(plan.input_lines, items, both)
  device = model_device(plan)
  decoded, failed = device_decode.decode_batch([data for _, data in pairs], device)
  kept = [cpu for i, (cpu, _) in enumerate(pairs) if i not in failed]
  if not kept:
    return {"items": 0, "passed": None, "note": "not checked: no input decoded both ways"}
  files = dict(plan.check_model_files)
  model = load_model(files["model_state_dict_path"], plan.bench.model).to(device)
  want, got = torch.stack(kept).to(device), decoded.to(device)
  with torch.no_grad():
    logits = model(torch.cat([want, got])).float().cpu()
  meta = read_meta(files["model_state_dict_path"])
  weights = meta.weights if meta else "unknown"
  figures = compare(logits[:len(kept)], logits[len(kept):], exact=False,
                    meaningful=weights == "pretrained")
  return {**figures, "max_input_diff": float((want - got).abs().max()),
          "decoded_on": device.type, "weights": weights,
          "seconds": round(time.perf_counter() - started, 1)}
