"""Masked language modeling: sentence -> mask its last word -> WordPiece ids -> BERT -> the word.

Unlike Beam's example (which forces batch size 1 because tokenized sentences differ in length),
batches are padded to their longest sentence with an attention mask, so batching is real.
"""
from __future__ import annotations

import json
import re
from typing import Any, Optional, Sequence

import apache_beam as beam
import torch
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import PredictionResult
from apache_beam.ml.inference.pytorch_inference import PytorchModelHandlerKeyedTensor

from pipelines.worker import dead_letter, optimized_model, sentences
from pipelines.worker.architectures import build_architecture
from pipelines.worker.beam_metrics import KIT_NAMESPACE
from pipelines.worker.sentences import MASK_ID, UnusableSentence, load_tokenizer, pad
from pipelines.worker.tasks.base import Task

MAX_TOKENS = 512  # BERT's max_position_embeddings
_LAST_WORD = re.compile(r"^(.*?\w)(\W*)$")


def mask_last_word(sentence: str) -> str:
  """'The cat sat.' -> 'The cat [MASK].' (as Beam's example: the last word, punctuation kept).
  A sentence that already holds exactly one [MASK] is used as is; one holding more, or any
  other special token, is unusable: the tokenizer would read those as control tokens."""
  found = sentences.special_tokens_in(sentence)
  if found == {"[MASK]": 1}:
    return sentence
  sentences.refuse_special_tokens([token for token in found if token != "[MASK]"])
  if found:
    raise UnusableSentence(f"holds {found['[MASK]']} [MASK] tokens: a sentence may give at "
                           "most one (it is then used as is)")
  words = sentence.split()
  if len(words) < 2:
    raise UnusableSentence(f"needs at least 2 words to mask one, got {len(words)}")
  match = _LAST_WORD.match(words[-1])
  if match is None:
    raise UnusableSentence(f"last token '{words[-1]}' has no word to mask")
  return " ".join(words[:-1] + ["[MASK]" + match.group(2)])


def tokenize(tokenizer, masked: str) -> dict[str, torch.Tensor]:
  ids = tokenizer(masked, add_special_tokens=True)["input_ids"]
  if len(ids) > MAX_TOKENS:
    raise UnusableSentence(f"{len(ids)} tokens exceed BERT's {MAX_TOKENS}")
  if ids.count(MASK_ID) != 1:
    raise UnusableSentence("the sentence must hold exactly one [MASK] after tokenizing")
  input_ids = torch.tensor(ids, dtype=torch.long)
  return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}


def mask_logits(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                device: torch.device | str, inference_args: Optional[dict[str, Any]] = None
                ) -> torch.Tensor:
  """[batch, vocabulary]: BERT's logits at each sentence's mask, which the predicted token is
  taken from."""
  mask_positions = (input_ids == MASK_ID).int().argmax(dim=1)
  with torch.no_grad():
    # ["logits"]: transformers' output and a traced model's dict (optimized_model.py) alike
    logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                   **(inference_args or {}))["logits"]
  return logits[torch.arange(len(input_ids)), mask_positions.to(device)]


def predict_masked_tokens(batch: Sequence[dict[str, torch.Tensor]], model: torch.nn.Module,
                          device: torch.device, inference_args: Optional[dict[str, Any]] = None,
                          model_id: Optional[str] = None) -> list[PredictionResult]:
  """Pads the batch to its longest sentence, runs BERT, returns the top token id at each mask."""
  input_ids, attention_mask = pad(batch)
  # Padding is work the model does for nothing: the record reports it as padding_fraction.
  Metrics.counter(KIT_NAMESPACE, "token_slots").inc(input_ids.numel())
  Metrics.counter(KIT_NAMESPACE, "padding_slots").inc(
      input_ids.numel() - int(attention_mask.sum()))
  token_ids = mask_logits(model, input_ids, attention_mask, device,
                          inference_args).argmax(-1).tolist()
  return [PredictionResult(example, token_id, model_id)
          for example, token_id in zip(batch, token_ids)]


def masked_example(tokenizer, sentence: str) -> tuple[str, dict[str, torch.Tensor]]:
  """(masked sentence, its tensors); UnusableSentence for a sentence the task cannot use
  (refused before tokenizing where it is far too long)."""
  sentences.check_length(sentence, MAX_TOKENS)
  masked = mask_last_word(sentence)
  return masked, tokenize(tokenizer, masked)


class MaskAndTokenize(sentences.TokenizeLines):
  """sentence -> (masked sentence, tensors); unusable lines go to the dead-letter output."""

  def example(self, sentence: str):
    return masked_example(self._tokenizer, sentence)


class FormatPrediction(beam.DoFn):
  def __init__(self, vocab_path: str):
    self._vocab_path = vocab_path

  def setup(self):
    self._tokenizer = load_tokenizer(self._vocab_path)

  def process(self, keyed: tuple[str, PredictionResult]):
    masked, result = keyed
    yield json.dumps({"input": masked,
                      "token": self._tokenizer.convert_ids_to_tokens(result.inference)})


class LanguageModeling(Task):
  input_file = "sentences.txt"
  batchings = ("padded", "length")

  def parse(self, lines: beam.PCollection, opts):
    """Sentences -> (masked sentence, token ids), sorted by token length within windows when
    the run asks for length-aware batching."""
    parsed = lines | "MaskAndTokenize" >> beam.ParDo(
        MaskAndTokenize(opts.vocab_path)).with_outputs(dead_letter.TAG, main="sentences")
    return sentences.sorted_by_length(parsed.sentences, opts), parsed[dead_letter.TAG]

  def model_handler(self, state_dict_path: str, architecture: str, device: str,
                    batching: dict[str, Any], opts=None) -> PytorchModelHandlerKeyedTensor:
    return PytorchModelHandlerKeyedTensor(
        state_dict_path=state_dict_path,
        model_class=build_architecture,
        model_params={"architecture": architecture},
        device=device,
        inference_fn=predict_masked_tokens,
        **batching)

  def format_prediction(self, opts) -> beam.DoFn:
    return FormatPrediction(opts.vocab_path)

  def optimize(self, model: torch.nn.Module, name: str, batch_size: int) -> torch.nn.Module:
    """Traced and compiled on batches of made-up token ids (their values do not matter to a
    trace), one unpadded and one padded (transformers takes another path when no token is
    padding); int8 is dynamic, so it needs no calibration."""
    return optimized_model.apply(model, name, self.name,
                                 sentences.token_examples(batch_size, masked=True))

  def example_from_line(self, line: bytes, opts) -> dict[str, torch.Tensor]:
    sentence = line.decode("utf-8").strip()
    return masked_example(load_tokenizer(opts.vocab_path), sentence)[1]

  def prediction_logits(self, model: torch.nn.Module, examples: list[dict[str, torch.Tensor]],
                        device) -> torch.Tensor:
    """[batch, vocabulary]: the logits at each mask the predicted tokens are taken from."""
    return mask_logits(model, *pad(examples), device).float()

  def example_length(self, example: dict[str, torch.Tensor]) -> int:
    return sentences.token_count(example)


TASK = LanguageModeling()
