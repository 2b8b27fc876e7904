"""The benchmark models' files: what `make models` and the image bake write, and the launcher's
own loads of them.

Each model is written as a PyTorch state dict `<name>.pth` plus a sidecar `<name>.pth.meta.json`
saying which weights it holds (pretrained or seeded random) and where they came from
(model_files.py). Workers read the sidecar when they load the model, so the run record says what
actually ran. A family the registry marks as a directory model (Gemma, architectures.py) is
written as the Hugging Face model directory `<name>/` vLLM serves, with the sidecar
`<name>.meta.json` beside it (model_directory.py); the kit's "state dict path" is then that
directory. The tokenizer files written beside the models come from tokenizer_files.py.
"""
from __future__ import annotations

import argparse
import logging
import os
import pathlib

import torch

from pipelines.worker import architectures as registry
from pipelines.worker import tokenizer_files
from pipelines.worker.architectures import architectures, build_architecture  # noqa: F401
from pipelines.worker.model_files import (  # noqa: F401 - callers read the sidecar through here
  RANDOM_SEED,
  WEIGHTS_KINDS,
  ModelMeta,
  file_sha256,
  is_current,
  meta_path,
  read_meta,
  write_meta,
)


# The registry's facts of an architecture; an unknown one has none (building it says so).
def is_directory_model(architecture: str) -> bool:
  """Written as a Hugging Face model directory (what vLLM serves), not a state dict."""
  family = registry.find(architecture)
  return family is not None and family.write_directory is not None


def uses_vocab(architecture: str) -> bool:
  """The model reads text through the bert uncased WordPiece vocab (BERT, DistilBERT, BLIP)."""
  family = registry.find(architecture)
  return family is not None and family.uses_vocab


def files_beside(architecture: str) -> tuple[str, ...]:
  """Files the workers read beside the model's state dict (CLIP's tokenizer for blip-clip)."""
  family = registry.find(architecture)
  return family.files_beside if family else ()


def model_path(architecture: str, out_dir: pathlib.Path) -> pathlib.Path:
  """Where `write_model` writes the architecture: `<name>/` or `<name>.pth`."""
  return out_dir / (architecture if is_directory_model(architecture) else f"{architecture}.pth")


def load_model(path: str | pathlib.Path, architecture: str) -> torch.nn.Module:
  """The architecture with a local state dict loaded, in eval mode without gradients: what the
  workers run, for the launcher's own uses (perf's plain loop, the agreement check)."""
  model = build_architecture(architecture)
  model.load_state_dict(torch.load(path, map_location="cpu"))
  model.requires_grad_(False)
  return model.eval()


def _weights(architecture: str, weights: str) -> tuple[dict[str, torch.Tensor], str]:
  """(state dict, source): the family's real weights, or seeded random ones. No silent fallback
  from pretrained to random."""
  family = registry.family(architecture)
  if weights == "pretrained":
    if family.pretrained is None:
      raise ValueError(f"{architecture}: its family ({family.name}) has no pretrained weights")
    return family.pretrained(architecture)
  torch.manual_seed(RANDOM_SEED)
  return build_architecture(architecture).state_dict(), f"seeded-random:{RANDOM_SEED}"


def write_model(architecture: str, out_dir: pathlib.Path, weights: str) -> pathlib.Path:
  """Writes `<architecture>.pth` (or the `<architecture>/` directory) and its sidecar; returns
  the state dict path (the directory)."""
  if weights not in WEIGHTS_KINDS:
    raise ValueError(f"weights must be one of {WEIGHTS_KINDS}, got '{weights}'")
  family = registry.family(architecture)
  if family.write_directory is not None:
    return family.write_directory(architecture, out_dir, weights)
  state_dict, source = _weights(architecture, weights)
  out_dir.mkdir(parents=True, exist_ok=True)
  path = out_dir / f"{architecture}.pth"
  tmp = path.with_suffix(".pth.tmp")
  torch.save(state_dict, tmp)
  os.replace(tmp, path)  # a killed run never leaves a half-written model behind
  write_meta(path, ModelMeta(architecture, weights, source, file_sha256(path), torch.__version__))
  return path


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description="Write model state dicts for the benchmarks.")
  parser.add_argument("architectures", nargs="+",
                      help="e.g. resnet101 bert-base-uncased (`make models`: the matrix's)")
  parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("models"))
  parser.add_argument("--weights", choices=WEIGHTS_KINDS, default="random")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  wanted = args.architectures
  for architecture in wanted:
    path = model_path(architecture, args.out)
    if is_current(path, args.weights):
      logging.info("%s: up to date (%s weights)", path, args.weights)
      continue
    logging.info("%s: writing %s weights ...", path, args.weights)
    write_model(architecture, args.out, args.weights)
  if any(uses_vocab(a) for a in wanted):
    logging.info("%s", tokenizer_files.write_vocab(args.out, args.weights))
  if any(tokenizer_files.CLIP_VOCAB_FILE in files_beside(a) for a in wanted):
    logging.info("%s", " ".join(map(str, tokenizer_files.write_clip_bpe(args.out))))


if __name__ == "__main__":
  main()
