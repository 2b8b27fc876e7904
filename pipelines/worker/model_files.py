"""A model file's sidecar (`<name>.pth.meta.json`, `<name>.meta.json` for a model directory):
which weights it holds and where they came from, so the run record says what actually ran.
Both model writers (models.py, model_directory.py) and the workers' loads read it here."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib

WEIGHTS_KINDS = ("pretrained", "random")
RANDOM_SEED = 20221201  # random weights (and the Gemma tokenizer's corpus) are seeded with it


@dataclasses.dataclass(frozen=True)
class ModelMeta:
  architecture: str
  weights: str  # one of WEIGHTS_KINDS
  source: str  # where pretrained weights came from, or the random seed
  sha256: str
  torch_version: str


def file_sha256(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def meta_path(state_dict_path: str) -> str:
  """`<name>.pth.meta.json`; for a model directory `<name>.meta.json` beside it."""
  return state_dict_path.rstrip("/") + ".meta.json"


def write_meta(model: pathlib.Path, meta: ModelMeta) -> None:
  pathlib.Path(meta_path(str(model))).write_text(json.dumps(dataclasses.asdict(meta), indent=2))


def read_meta(state_dict_path: str) -> ModelMeta | None:
  """The sidecar of a state dict on any Beam filesystem, or None when there is none."""
  from apache_beam.io.filesystems import FileSystems
  try:
    with FileSystems.open(meta_path(state_dict_path)) as f:
      return ModelMeta(**json.loads(f.read()))
  except Exception:  # noqa: BLE001 - a missing sidecar means "unknown weights", not a failure
    return None


def is_current(path: pathlib.Path, weights: str) -> bool:
  """True when `path` exists with the requested weights kind (so `make models` is idempotent)."""
  meta = read_meta(str(path)) if path.exists() else None
  return meta is not None and meta.weights == weights
