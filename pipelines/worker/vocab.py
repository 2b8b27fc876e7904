"""The kit's vocabulary: every name the Makefile, the launcher and the workers must agree on,
defined once. The Makefile reads its lists with `python3 -m pipelines.worker.vocab <list>` (no
venv needed: this module imports nothing), as it reads the matrix.
"""
from __future__ import annotations

import sys

# Run profiles every matrix has (more are the matrix file's [profiles.*] tables).
DEFAULT_PROFILE = "tuned"  # the kit's own settings
BEAM_PROFILE = "beam"  # Beam's own benchmark settings, published under Beam's series names

# Where a benchmark's model runs (the matrix's `device`).
DEVICES = ("CPU", "GPU")

# OPTIMIZE=: what the workers apply to the loaded model (optimizations.py says which runs where).
OPTIMIZATIONS = ("none", "channels_last", "freeze", "compile", "bf16", "int8", "fp16",
                 "fp16_channels_last", "bf16_channels_last")

# DECODE=: where an image classification run decodes its images: PIL on the CPU, per item in
# the SDK process (Beam's way), or batched on the model's device (nvjpeg on a GPU).
DECODERS = ("cpu", "device")

# BATCHING=: how sentences are batched, as a user may ask; the profiles also know max_length
# (every sentence padded to the tokenizer's maximum, as Beam's sentiment example pads).
BATCHINGS = ("padded", "length")
SENTENCE_BATCHINGS = (*BATCHINGS, "max_length")

# Beam's metric namespace for RunInference, the kit's own, and the RunInference step label a
# profile uses unless it names Beam's (Beam's metric names are composed from it).
BEAM_NAMESPACE = "BeamML_PyTorch"
KIT_NAMESPACE = "BenchmarkKit"
DEFAULT_INFERENCE_STEP = "RunInference"

# The prefixes of the kit's counters a worker reports and the record reads back: each names a
# fact by its suffix (`model_loaded_on_cuda`: 1 per process that loaded its model there).
LOADED_ON = "model_loaded_on_"
WEIGHTS = "model_weights_"
OPTIMIZATION_RAN = "optimization_ran_"
DECODED_ON = "decoded_on_"  # a batch decoded on the model's device (cuda, cpu): DECODE=device
DECODED_WITH_PIL = "decoded_with_pil"  # a batch whose items PIL decoded: DECODE=cpu
PROCESS = "process/"  # per SDK process facts: process/<host>:<pid>/<fact> (process_stats.py)
# items after each process's first batch, by the time window their batch ended in:
# window/<window ms>/<epoch ms // window ms>, summed over processes by Beam (process_stats.py)
WINDOW = "window/"

LISTS = {"optimizations": OPTIMIZATIONS, "batchings": BATCHINGS, "devices": DEVICES,
         "decoders": DECODERS}

if __name__ == "__main__":
  what = sys.argv[1] if len(sys.argv) > 1 else ""
  if what not in LISTS:
    raise SystemExit(f"usage: python -m pipelines.worker.vocab {' | '.join(LISTS)}")
  print(" ".join(LISTS[what]))
