"""Model architectures and their weight files (what `make models` and the image bake run).

Each model is written as a PyTorch state dict `<name>.pth` plus a sidecar `<name>.pth.meta.json`
saying which weights it holds (pretrained or seeded random) and where they came from. Workers read
the sidecar when they load the model, so the run record says what actually ran. The Gemma
architectures are the exception: vLLM serves a Hugging Face model directory, so they are written
as a directory `<name>/` (config.json, model.safetensors, tokenizer) with the sidecar
`<name>.meta.json` beside it (model_directory.py); the kit's "state dict path" is then that
directory. The tokenizer files written beside the models come from tokenizer_files.py.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import pathlib
from typing import Callable

import torch

from pipelines.worker import tokenizer_files

WEIGHTS_KINDS = ("pretrained", "random")
RANDOM_SEED = 20221201
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

# Image captioning (Beam's pytorch_image_captioning.py): BLIP captions, CLIP ranks, one module.
# Values of the published config.json files of Salesforce/blip-image-captioning-base and
# openai/clip-vit-base-patch32 (transformers' defaults differ for BLIP: 8 text heads, a 1e-10
# vision initializer range); spelled out so a change of defaults cannot change the model.
_BLIP_CLIP_CONFIGS = {
    "blip-clip": dict(
        blip_text=dict(hidden_size=768, encoder_hidden_size=768, intermediate_size=3072,
                       num_hidden_layers=12, num_attention_heads=12),
        blip_vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                         num_attention_heads=12, image_size=384, patch_size=16),
        blip_projection_dim=512,
        clip_text=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                       num_attention_heads=8),
        clip_vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                         num_attention_heads=12, image_size=224, patch_size=32),
        clip_projection_dim=512),
    # Tests only: the same architectures (and real vocabularies), small enough for 2 cores.
    "blip-clip-tiny": dict(
        blip_text=dict(hidden_size=32, encoder_hidden_size=32, intermediate_size=64,
                       num_hidden_layers=2, num_attention_heads=2),
        blip_vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, image_size=32, patch_size=8),
        blip_projection_dim=16,
        clip_text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2),
        clip_vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, image_size=32, patch_size=8),
        clip_projection_dim=16),
}
_BLIP_CLIP_HUB_IDS = {"blip-clip": ("Salesforce/blip-image-captioning-base",
                                    "openai/clip-vit-base-patch32"),
                      "blip-clip-tiny": ("kit-test/blip-tiny", "kit-test/clip-tiny")}
# Text generation (Beam's vllm_gemma_batch.py): google/gemma-2b-it, served by vLLM from a model
# directory. The values of the published config.json (hidden_act "gelu" is its legacy value for
# the tanh approximation, which hidden_activation names); spelled out so it is written the same
# whatever transformers writes, and read alike by vLLM's transformers and the kit's.
_GEMMA_CONFIG = dict(
    architectures=["GemmaForCausalLM"], model_type="gemma", attention_bias=False,
    attention_dropout=0.0, bos_token_id=2, eos_token_id=1, pad_token_id=0, head_dim=256,
    hidden_act="gelu", hidden_activation="gelu_pytorch_tanh", hidden_size=2048,
    initializer_range=0.02, intermediate_size=16384, max_position_embeddings=8192,
    num_attention_heads=8, num_hidden_layers=18, num_key_value_heads=1, rms_norm_eps=1e-06,
    rope_scaling=None, rope_theta=10000.0, torch_dtype="bfloat16", use_cache=True,
    vocab_size=256000)
_GEMMA_CONFIGS = {
    "gemma-2b-it": _GEMMA_CONFIG,
    # Tests only: the same architecture, small enough for a 2-core CI machine.
    "gemma-tiny": {**_GEMMA_CONFIG, "hidden_size": 64, "intermediate_size": 128,
                   "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 1,
                   "head_dim": 16, "vocab_size": 512},
}


@dataclasses.dataclass(frozen=True)
class ModelMeta:
  architecture: str
  weights: str  # one of WEIGHTS_KINDS
  source: str  # where pretrained weights came from, or the random seed
  sha256: str
  torch_version: str


def is_bert(architecture: str) -> bool:
  return architecture in _BERT_CONFIGS


def is_blip_clip(architecture: str) -> bool:
  return architecture in _BLIP_CLIP_CONFIGS


def is_directory_model(architecture: str) -> bool:
  """Written as a Hugging Face model directory (what vLLM serves), not a state dict."""
  return architecture in _GEMMA_CONFIGS


def model_path(architecture: str, out_dir: pathlib.Path) -> pathlib.Path:
  """Where `write_model` writes the architecture: `<name>/` or `<name>.pth`."""
  return out_dir / (architecture if is_directory_model(architecture) else f"{architecture}.pth")


def uses_vocab(architecture: str) -> bool:
  """The model reads text through the bert uncased WordPiece vocab: BERT, DistilBERT, and BLIP's
  captioner (its text side is BERT's)."""
  return is_bert(architecture) or architecture in _DISTILBERT_CONFIGS or is_blip_clip(architecture)


def files_beside(architecture: str) -> tuple[str, ...]:
  """Files the workers read beside the model's state dict (CLIP's tokenizer for blip-clip)."""
  return ((tokenizer_files.CLIP_VOCAB_FILE, tokenizer_files.CLIP_MERGES_FILE)
          if is_blip_clip(architecture) else ())


def architectures() -> list[str]:
  return [*_RESNETS, *_TIMM, *_DETECTORS, *_BERT_CONFIGS, *_DISTILBERT_CONFIGS,
          *_BLIP_CLIP_CONFIGS, *_GEMMA_CONFIGS]


def gemma_config_json(architecture: str) -> dict:
  """The config.json of a Gemma architecture (the published values for gemma-2b-it)."""
  return dict(_GEMMA_CONFIGS[architecture])


def gemma_config(architecture: str):
  from transformers import GemmaConfig
  values = {k: v for k, v in gemma_config_json(architecture).items()
            if k not in ("architectures", "model_type", "torch_dtype", "hidden_activation")}
  return GemmaConfig(**{**values, "hidden_act": "gelu_pytorch_tanh"})


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


def blip_clip_configs(architecture: str):
  """(BlipConfig, CLIPConfig) of a blip-clip architecture."""
  from transformers import BlipConfig, CLIPConfig
  values = _BLIP_CLIP_CONFIGS[architecture]
  # BLIP's text side: the bert-uncased WordPiece vocab plus [DEC] (30522, the captions' first
  # token) and [ENC] (30523); generation stops at [SEP] (102).
  blip = BlipConfig(
      text_config=dict(vocab_size=30524, max_position_embeddings=512, bos_token_id=30522,
                       sep_token_id=102, pad_token_id=0, eos_token_id=2,
                       **values["blip_text"]),
      vision_config=dict(initializer_range=0.02, **values["blip_vision"]),
      projection_dim=values["blip_projection_dim"], image_text_hidden_size=256,
      logit_scale_init_value=2.6592)
  clip = CLIPConfig(
      text_config=dict(vocab_size=49408, max_position_embeddings=77, hidden_act="quick_gelu",
                       **values["clip_text"]),
      vision_config=dict(hidden_act="quick_gelu", **values["clip_vision"]),
      projection_dim=values["clip_projection_dim"], logit_scale_init_value=2.6592)
  return blip, clip


class BlipClip(torch.nn.Module):
  """BLIP (the captioner) and CLIP (the ranker) as one module with one state dict: the kit runs
  one model per benchmark, where Beam's example runs two RunInference steps."""

  def __init__(self, blip: torch.nn.Module, clip: torch.nn.Module):
    super().__init__()
    self.blip = blip
    self.clip = clip


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
  if is_blip_clip(architecture):
    from transformers import BlipForConditionalGeneration, CLIPModel
    blip, clip = blip_clip_configs(architecture)
    return BlipClip(BlipForConditionalGeneration(blip), CLIPModel(clip))
  if is_directory_model(architecture):
    from transformers import GemmaForCausalLM
    return GemmaForCausalLM(gemma_config(architecture))
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
  if is_blip_clip(architecture):
    from transformers import BlipForConditionalGeneration, CLIPModel
    blip_id, clip_id = _BLIP_CLIP_HUB_IDS[architecture]
    model = BlipClip(BlipForConditionalGeneration.from_pretrained(blip_id),
                     CLIPModel.from_pretrained(clip_id))
    return model.state_dict(), f"huggingface:{blip_id}+{clip_id}"
  raise ValueError(f"unknown architecture '{architecture}'")


def _random(architecture: str) -> tuple[dict[str, torch.Tensor], str]:
  torch.manual_seed(RANDOM_SEED)
  return build_architecture(architecture).state_dict(), f"seeded-random:{RANDOM_SEED}"


def file_sha256(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def meta_path(state_dict_path: str) -> str:
  """`<name>.pth.meta.json`; for a model directory `<name>.meta.json` beside it."""
  return state_dict_path.rstrip("/") + ".meta.json"


def write_model(architecture: str, out_dir: pathlib.Path, weights: str) -> pathlib.Path:
  """Writes `<architecture>.pth` (or the `<architecture>/` directory) and its sidecar; returns
  the state dict path (the directory)."""
  if weights not in WEIGHTS_KINDS:
    raise ValueError(f"weights must be one of {WEIGHTS_KINDS}, got '{weights}'")
  if is_directory_model(architecture):
    from pipelines.worker.model_directory import write_model_directory
    return write_model_directory(architecture, out_dir, weights)
  make: Callable = _pretrained if weights == "pretrained" else _random
  state_dict, source = make(architecture)
  out_dir.mkdir(parents=True, exist_ok=True)
  path = out_dir / f"{architecture}.pth"
  tmp = path.with_suffix(".pth.tmp")
  torch.save(state_dict, tmp)
  os.replace(tmp, path)  # a killed run never leaves a half-written model behind
  meta = ModelMeta(architecture, weights, source, file_sha256(path), torch.__version__)
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
    path = model_path(architecture, args.out)
    if is_current(path, args.weights):
      logging.info("%s: up to date (%s weights)", path, args.weights)
      continue
    logging.info("%s: writing %s weights ...", path, args.weights)
    write_model(architecture, args.out, args.weights)
  if any(uses_vocab(a) for a in wanted):
    logging.info("%s", tokenizer_files.write_vocab(args.out, args.weights))
  if any(is_blip_clip(a) for a in wanted):
    logging.info("%s", " ".join(map(str, tokenizer_files.write_clip_bpe(args.out))))


if __name__ == "__main__":
  main()
