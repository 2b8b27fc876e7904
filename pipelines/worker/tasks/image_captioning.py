"""Image captioning (Beam's pytorch_image_captioning.py): path -> BLIP writes 5 candidate
captions by beam search -> CLIP scores each against the image -> the best one.

How it differs from Beam's example:
  * one RunInference step, not two: the kit runs one model per benchmark, so the model is
    architectures.BlipClip (BLIP and CLIP in one module, one state dict) and one inference function
    generates with BLIP, then ranks with CLIP, per batch. CLIP therefore ranks the batch BLIP
    captioned (the run's batch size) instead of Beam's separate clip_batch_size=8 batches;
  * images are decoded and preprocessed for both models in the parse step (BLIP's processor:
    384x384 bicubic, CLIP's: short side 224 bicubic, centre crop 224, both normalized with
    CLIP's mean/std), so the handler gets tensors; Beam's handlers run the processors on PIL
    images inside inference;
  * an image that cannot be read or decoded is dead-lettered with its reason, where Beam's
    captions a black 224x224 image in its place;
  * the tokenizers are built offline from files beside the state dict: BLIP's is the bert
    uncased WordPiece vocab (tokenizer_files.VOCAB_FILE) plus [DEC]/[ENC], CLIP's the BPE files
    tokenizer_files.write_clip_bpe derives (CLIP_VOCAB_FILE, CLIP_MERGES_FILE there);
  * scores are Beam's default (clip_score_normalize=false): cosine similarity * logit_scale.
Generation is Beam's: max_new_tokens=30, num_beams=5, num_return_sequences=5, do_sample=False.
"""
from __future__ import annotations

import copy
import functools
import json
from typing import Any, Optional, Sequence

import apache_beam as beam
import torch
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import PredictionResult
from apache_beam.ml.inference.pytorch_inference import PytorchModelHandlerKeyedTensor

from pipelines.worker import architectures, images, tokenizer_files
from pipelines.worker.sentences import load_tokenizer
from pipelines.worker.tasks.base import Task

NUM_CAPTIONS = 5
MAX_NEW_TOKENS = 30
NUM_BEAMS = 5
CLIP_MAX_TOKENS = 77  # CLIP's context length: Beam's processor truncates to it
# CLIP's processor (and BLIP's): OpenAI CLIP's mean and std.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
BICUBIC = 3  # PIL.Image.BICUBIC, both processors' resample


@functools.lru_cache(maxsize=None)
def image_processors(architecture: str):
  """(BLIP's, CLIP's) image processor, with the published preprocessor_config values and the
  architecture's image sizes (the tiny test variant has small images)."""
  from transformers import BlipImageProcessor, CLIPImageProcessor
  blip, clip = architectures.blip_clip_configs(architecture)
  blip_size, clip_size = blip.vision_config.image_size, clip.vision_config.image_size
  return (BlipImageProcessor(size={"height": blip_size, "width": blip_size}, resample=BICUBIC,
                             image_mean=CLIP_MEAN, image_std=CLIP_STD, do_convert_rgb=True),
          CLIPImageProcessor(size={"shortest_edge": clip_size},
                             crop_size={"height": clip_size, "width": clip_size},
                             resample=BICUBIC, image_mean=CLIP_MEAN, image_std=CLIP_STD,
                             do_center_crop=True, do_convert_rgb=True))


def to_example(data: bytes, max_pixels: Optional[int], architecture: str
               ) -> dict[str, torch.Tensor]:
  """Image bytes -> both models' pixel tensors. Raises images.BadImage (images.decode's guards:
  not an image, truncated, too many pixels as stored or as CLIP's resize would make them)."""
  blip_processor, clip_processor = image_processors(architecture)
  clip_size = clip_processor.crop_size["height"]
  image = images.decode(data, max_pixels, short_side=clip_size, crop=clip_size)
  return {"blip_pixel_values": blip_processor(images=image, return_tensors="pt")[
              "pixel_values"][0],
          "clip_pixel_values": clip_processor(images=image, return_tensors="pt")[
              "pixel_values"][0]}


def tokenizer_folder(state_dict_path: str) -> str:
  """Where the tokenizer files are: beside the state dict (`make models` writes them there)."""
  return FileSystems.split(state_dict_path)[0]


def _read(folder: str, name: str) -> bytes:
  with FileSystems.open(FileSystems.join(folder, name)) as f:
    return f.read()


@functools.lru_cache(maxsize=None)
def blip_tokenizer(folder: str):
  """BLIP's: the bert uncased WordPiece vocab with [DEC] (30522, the captions' first token) and
  [ENC] (30523) added as special tokens, so decoding skips them as BLIP's own tokenizer does."""
  tokenizer = copy.deepcopy(load_tokenizer(FileSystems.join(folder, tokenizer_files.VOCAB_FILE)))
  tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
  if tokenizer.convert_tokens_to_ids(["[DEC]", "[ENC]"]) != [30522, 30523]:
    raise ValueError(f"{folder}: [DEC]/[ENC] are not BLIP's ids 30522/30523")
  return tokenizer


@functools.lru_cache(maxsize=None)
def clip_tokenizer(folder: str):
  """CLIP's byte-level BPE from the vocab.json and merges.txt that
  tokenizer_files.write_clip_bpe wrote."""
  from transformers import CLIPTokenizer
  vocab = json.loads(_read(folder, tokenizer_files.CLIP_VOCAB_FILE))
  lines = _read(folder, tokenizer_files.CLIP_MERGES_FILE).decode("utf-8").split("\n")
  merges = [tuple(line.split()) for line in lines[1:] if line]
  if len(vocab) != 49408 or len(merges) != tokenizer_files.CLIP_MERGES:
    raise ValueError(f"{folder}: {len(vocab)} tokens and {len(merges)} merges are not CLIP's "
                     f"BPE (49408, {tokenizer_files.CLIP_MERGES})")
  return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=CLIP_MAX_TOKENS)


def generate_candidates(blip: torch.nn.Module, pixel_values: torch.Tensor, tokenizer
                        ) -> list[list[str]]:
  """NUM_CAPTIONS captions per image, by BLIP's beam search as Beam's example runs it."""
  with torch.no_grad():
    ids = blip.generate(pixel_values=pixel_values, max_new_tokens=MAX_NEW_TOKENS,
                        num_beams=max(NUM_BEAMS, NUM_CAPTIONS),
                        num_return_sequences=NUM_CAPTIONS, do_sample=False)
  captions = tokenizer.batch_decode(ids, skip_special_tokens=True)
  return [captions[i:i + NUM_CAPTIONS] for i in range(0, len(captions), NUM_CAPTIONS)]


def clip_scores(clip: torch.nn.Module, pixel_values: torch.Tensor,
                candidates: Sequence[Sequence[str]], tokenizer) -> torch.Tensor:
  """[images, NUM_CAPTIONS]: each candidate's cosine similarity with its image, times CLIP's
  logit scale (Beam's score), in one CLIP pass over the batch's images and captions."""
  texts = [caption for captions in candidates for caption in captions]
  tokens = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
  device = pixel_values.device
  with torch.no_grad():
    # transformers 5: the features are the output's pooler_output (projected)
    image = clip.get_image_features(pixel_values=pixel_values).pooler_output
    text = clip.get_text_features(input_ids=tokens["input_ids"].to(device),
                                  attention_mask=tokens["attention_mask"].to(device)
                                  ).pooler_output
    image = image / image.norm(dim=-1, keepdim=True)
    text = text / text.norm(dim=-1, keepdim=True)
    text = text.reshape(len(candidates), NUM_CAPTIONS, -1)
    return (text * image[:, None, :]).sum(-1) * clip.logit_scale.exp()


def caption_and_rank(batch: Sequence[dict[str, torch.Tensor]], model: torch.nn.Module,
                     device: torch.device, inference_args: Optional[dict[str, Any]] = None,
                     model_id: Optional[str] = None, *, folder: str) -> list[PredictionResult]:
  """The inference function: BLIP's candidates, then CLIP's scores, for the whole batch."""
  blip_pixels = torch.stack([e["blip_pixel_values"] for e in batch]).to(device)
  clip_pixels = torch.stack([e["clip_pixel_values"] for e in batch]).to(device)
  candidates = generate_candidates(model.blip, blip_pixels, blip_tokenizer(folder))
  scores = clip_scores(model.clip, clip_pixels, candidates, clip_tokenizer(folder)).float()
  return [PredictionResult(example, {"candidates": captions, "scores": row.tolist()}, model_id)
          for example, captions, row in zip(batch, candidates, scores.cpu())]


def best(candidates: Sequence[str], scores: Sequence[float]) -> tuple[str, float]:
  """The highest-scoring caption (the first of equals, as Beam's max over indices)."""
  index = max(range(len(scores)), key=scores.__getitem__)
  return candidates[index], float(scores[index])


class FormatPrediction(beam.DoFn):
  def process(self, keyed: tuple[str, PredictionResult]):
    path, result = keyed
    candidates, scores = result.inference["candidates"], result.inference["scores"]
    caption, score = best(candidates, scores)
    yield json.dumps({"input": path, "best_caption": caption, "best_score": score,
                      "candidates": candidates, "scores": scores})


class ImageCaptioning(Task):
  input_file = "images.txt"
  reads_files = True

  def parse(self, lines: beam.PCollection, opts):
    """Image paths -> (path, pixel tensors), dead-lettering what every image task
    dead-letters."""
    return images.parse_lines(
        lines, functools.partial(to_example, architecture=opts.model_architecture), opts)

  def model_handler(self, state_dict_path: str, architecture: str, device: str,
                    batching: dict[str, Any], opts=None) -> PytorchModelHandlerKeyedTensor:
    return PytorchModelHandlerKeyedTensor(
        state_dict_path=state_dict_path,
        model_class=architectures.build_architecture,
        model_params={"architecture": architecture},
        device=device,
        inference_fn=functools.partial(caption_and_rank,
                                       folder=tokenizer_folder(state_dict_path)),
        **batching)

  def format_prediction(self, opts) -> beam.DoFn:
    return FormatPrediction()

  # optimize: the base's, none only (optimizations.NONE_ONLY says why)

  def example_from_line(self, line: bytes, opts) -> dict[str, Any]:
    """As the pipeline makes it, plus where its tokenizers are (the launcher's model does not
    carry them)."""
    example = images.example_from_line(
        line, functools.partial(to_example, architecture=opts.model_architecture), opts)
    return {**example, "tokenizers": tokenizer_folder(opts.model_state_dict_path)}

  def prediction_logits(self, model: torch.nn.Module, examples: list[dict[str, Any]],
                        device) -> torch.Tensor:
    """[batch, NUM_CAPTIONS]: the CLIP scores the best caption is taken from."""
    folder = examples[0]["tokenizers"]
    blip_pixels = torch.stack([e["blip_pixel_values"] for e in examples]).to(device)
    clip_pixels = torch.stack([e["clip_pixel_values"] for e in examples]).to(device)
    candidates = generate_candidates(model.blip, blip_pixels, blip_tokenizer(folder))
    return clip_scores(model.clip, clip_pixels, candidates, clip_tokenizer(folder)).float()


TASK = ImageCaptioning()
