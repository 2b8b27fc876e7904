"""The model architectures, one registry entry per family (FAMILIES): how to build it untrained,
how to fetch its real weights, and what the kit needs beside it. A new family is one entry here
(its configs beside it); `make models` (models.py) and the workers (build_architecture) read
only this registry."""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import torch

from pipelines.worker import model_directory, tokenizer_files

StateDict = dict[str, torch.Tensor]

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


@dataclasses.dataclass(frozen=True)
class Family:
  name: str
  architectures: tuple[str, ...]
  build: Callable[[str], torch.nn.Module]  # the untrained architecture (random weights)
  # Downloads the real weights -> (state dict, where they came from). torch hub / Hugging Face
  # caches are honoured, so a pre-filled cache works offline; raises if they cannot be had.
  pretrained: Optional[Callable[[str], tuple[StateDict, str]]] = None
  uses_vocab: bool = False  # reads text through the bert uncased WordPiece vocab
  files_beside: tuple[str, ...] = ()  # what the workers read beside the state dict
  # Written as a Hugging Face model directory (what vLLM serves), not a state dict:
  # (architecture, out_dir, weights) -> the directory.
  write_directory: Optional[Callable] = None


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


def _torchvision(architecture: str, weights=None, detection: bool = False) -> torch.nn.Module:
  import torchvision
  if detection:  # weights_backbone=None too: its default downloads ImageNet backbone weights
    return getattr(torchvision.models.detection, architecture)(weights=weights,
                                                               weights_backbone=None)
  return getattr(torchvision.models, architecture)(weights=weights)


def _torchvision_pretrained(detection: bool):
  def pretrained(architecture: str) -> tuple[StateDict, str]:
    import torchvision
    weights = torchvision.models.get_model_weights(architecture).DEFAULT
    model = _torchvision(architecture, weights, detection)
    return model.state_dict(), f"torchvision:{weights}:{weights.url}"
  return pretrained


def _timm(architecture: str, pretrained: bool = False) -> torch.nn.Module:
  import timm
  return timm.create_model(architecture, pretrained=pretrained, num_classes=1000)


def _timm_pretrained(architecture: str) -> tuple[StateDict, str]:
  model = _timm(architecture, pretrained=True)
  return model.state_dict(), f"timm:{architecture}:{model.pretrained_cfg.get('hf_hub_id')}"


def _bert(architecture: str) -> torch.nn.Module:
  from transformers import BertForMaskedLM
  return BertForMaskedLM(bert_config(architecture))


def _bert_pretrained(architecture: str) -> tuple[StateDict, str]:
  from transformers import BertForMaskedLM
  hub_id = _BERT_HUB_IDS[architecture]
  return BertForMaskedLM.from_pretrained(hub_id).state_dict(), f"huggingface:{hub_id}"


def _distilbert(architecture: str) -> torch.nn.Module:
  from transformers import DistilBertForSequenceClassification
  return DistilBertForSequenceClassification(distilbert_config(architecture))


def _distilbert_pretrained(architecture: str) -> tuple[StateDict, str]:
  from transformers import DistilBertForSequenceClassification
  hub_id = _DISTILBERT_HUB_IDS[architecture]
  model = DistilBertForSequenceClassification.from_pretrained(hub_id)
  return model.state_dict(), f"huggingface:{hub_id}"


def _blip_clip(architecture: str) -> torch.nn.Module:
  from transformers import BlipForConditionalGeneration, CLIPModel
  blip, clip = blip_clip_configs(architecture)
  return BlipClip(BlipForConditionalGeneration(blip), CLIPModel(clip))


def _blip_clip_pretrained(architecture: str) -> tuple[StateDict, str]:
  from transformers import BlipForConditionalGeneration, CLIPModel
  blip_id, clip_id = _BLIP_CLIP_HUB_IDS[architecture]
  model = BlipClip(BlipForConditionalGeneration.from_pretrained(blip_id),
                   CLIPModel.from_pretrained(clip_id))
  return model.state_dict(), f"huggingface:{blip_id}+{clip_id}"


FAMILIES = (
    Family("resnet", ("resnet18", "resnet101", "resnet152"),  # resnet18: tests only
           build=_torchvision, pretrained=_torchvision_pretrained(detection=False)),
    # timm's EfficientNet-B0, as Beam's pytorch_imagenet_rightfit.py builds it
    # (timm.create_model(name, num_classes=1000)): its state dict's keys are timm's.
    Family("timm", ("efficientnet_b0",), build=_timm, pretrained=_timm_pretrained),
    # torchvision.models.detection; pretrained: FasterRCNN_ResNet50_FPN_Weights.DEFAULT (COCO_V1)
    Family("detection", ("fasterrcnn_resnet50_fpn",),
           build=lambda a: _torchvision(a, detection=True),
           pretrained=_torchvision_pretrained(detection=True)),
    Family("bert", tuple(_BERT_CONFIGS), build=_bert, pretrained=_bert_pretrained,
           uses_vocab=True),
    Family("distilbert", tuple(_DISTILBERT_CONFIGS), build=_distilbert,
           pretrained=_distilbert_pretrained, uses_vocab=True),
    # BLIP's text side is BERT's (the vocab); CLIP's tokenizer files sit beside the state dict.
    Family("blip-clip", tuple(_BLIP_CLIP_CONFIGS), build=_blip_clip,
           pretrained=_blip_clip_pretrained, uses_vocab=True,
           files_beside=(tokenizer_files.CLIP_VOCAB_FILE, tokenizer_files.CLIP_MERGES_FILE)),
    # Text generation (Beam's vllm_gemma_batch.py): google/gemma-2b-it, served by vLLM from a
    # model directory (model_directory.py writes it, pretrained or random).
    Family("gemma", tuple(model_directory.GEMMA_CONFIGS), build=model_directory.build_gemma,
           write_directory=model_directory.write_model_directory),
)
_BY_ARCHITECTURE = {a: family for family in FAMILIES for a in family.architectures}


def architectures() -> list[str]:
  return list(_BY_ARCHITECTURE)


def find(architecture: str) -> Family | None:
  return _BY_ARCHITECTURE.get(architecture)


def family(architecture: str) -> Family:
  if architecture not in _BY_ARCHITECTURE:
    raise ValueError(f"unknown architecture '{architecture}'; known: {architectures()}")
  return _BY_ARCHITECTURE[architecture]


def build_architecture(architecture: str) -> torch.nn.Module:
  """The untrained architecture; Beam's handler calls this, then loads the state dict."""
  return family(architecture).build(architecture)
