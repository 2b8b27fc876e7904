"""Sentiment classification: sentence -> WordPiece ids -> DistilBERT (SST-2) -> POSITIVE/NEGATIVE.

Beam's example (apache_beam/examples/inference/pytorch_sentiment.py, 2.77) tokenizes each
sentence to exactly 128 tokens (padding='max_length', truncation=True, max_length=128), stacks
them and runs DistilBertForSequenceClassification. Here the same tokens are padded either that
way (`--sentence_batching=max_length`, what the beam profile runs) or to the longest sentence of
the batch (`longest`, the tuned default): the attention mask makes the logits of a sentence the
same either way, up to float rounding; only the padding work differs. Sentences past 128 tokens
are cut at 128 as Beam cuts them, and counted (the record's `sentences_truncated`). Where Beam
classifies any line, a line holding BERT's special tokens ([CLS], [MASK], ...) is dead-lettered
(the tokenizer would read them as control tokens, not text), and so is one far longer than 128
tokens can hold, before it is tokenized.
"""
from __future__ import annotations

import json
from typing import Any, Optional, Sequence

import apache_beam as beam
import torch
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import PredictionResult
from apache_beam.ml.inference.pytorch_inference import PytorchModelHandlerKeyedTensor

from pipelines.worker import dead_letter, optimized_model, sentences
from pipelines.worker.architectures import SENTIMENT_LABELS, build_architecture
from pipelines.worker.beam_metrics import KIT_NAMESPACE
from pipelines.worker.sentences import PAD_ID, UnusableSentence, load_tokenizer, pad
from pipelines.worker.tasks.base import Task

MAX_TOKENS = 128  # Beam's tokenizer call: max_length=128


def tokenize(tokenizer, sentence: str) -> tuple[dict[str, torch.Tensor], bool]:
  """(input_ids and attention_mask of the sentence, cut at MAX_TOKENS as Beam cuts it;
  whether it was cut)."""
  ids = tokenizer(sentence, add_special_tokens=True)["input_ids"]
  truncated = len(ids) > MAX_TOKENS
  if truncated:
    ids = tokenizer(sentence, truncation=True, max_length=MAX_TOKENS)["input_ids"]
  input_ids = torch.tensor(ids, dtype=torch.long)
  return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}, truncated


def pad_batch(batch: Sequence[dict[str, torch.Tensor]], padding: str
              ) -> tuple[torch.Tensor, torch.Tensor]:
  """(input_ids, attention_mask): padded to the longest sentence, or all to MAX_TOKENS."""
  input_ids, attention_mask = pad(batch)
  if padding == "max_length" and input_ids.shape[1] < MAX_TOKENS:
    extra = MAX_TOKENS - input_ids.shape[1]
    input_ids = torch.nn.functional.pad(input_ids, (0, extra), value=PAD_ID)
    attention_mask = torch.nn.functional.pad(attention_mask, (0, extra), value=0)
  return input_ids, attention_mask


def sentiment_logits(model: torch.nn.Module, input_ids: torch.Tensor,
                     attention_mask: torch.Tensor, device: torch.device | str,
                     inference_args: Optional[dict[str, Any]] = None) -> torch.Tensor:
  """[batch, 2]: the classifier's logits (NEGATIVE, POSITIVE)."""
  with torch.no_grad():
    # ["logits"]: transformers' output and a traced model's dict (optimized_model.py) alike
    return model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                 **(inference_args or {}))["logits"]


def make_inference_fn(padding: str):
  def classify(batch: Sequence[dict[str, torch.Tensor]], model: torch.nn.Module,
               device: torch.device, inference_args: Optional[dict[str, Any]] = None,
               model_id: Optional[str] = None) -> list[PredictionResult]:
    """Pads the batch, runs DistilBERT, returns each sentence's (label id, confidence)."""
    input_ids, attention_mask = pad_batch(batch, padding)
    Metrics.counter(KIT_NAMESPACE, "token_slots").inc(input_ids.numel())
    Metrics.counter(KIT_NAMESPACE, "padding_slots").inc(
        input_ids.numel() - int(attention_mask.sum()))
    probabilities = torch.softmax(
        sentiment_logits(model, input_ids, attention_mask, device, inference_args).float(), -1)
    confidence, label = probabilities.max(-1)
    return [PredictionResult(example, (int(i), float(c)), model_id)
            for example, i, c in zip(batch, label.tolist(), confidence.tolist())]
  return classify


def usable(sentence: str) -> str:
  """The sentence, or UnusableSentence: BERT's special tokens in it would be read as control
  tokens, and a line far longer than MAX_TOKENS tokens is refused before tokenizing (a shorter
  one past MAX_TOKENS is cut, as Beam cuts it)."""
  sentences.check_length(sentence, MAX_TOKENS)
  sentences.refuse_special_tokens(list(sentences.special_tokens_in(sentence)))
  return sentence


class Tokenize(sentences.TokenizeLines):
  """sentence -> (sentence, tensors), counting the sentences cut at MAX_TOKENS; empty and
  unusable lines go to the dead-letter output."""

  def __init__(self, vocab_path: str):
    super().__init__(vocab_path)
    self._truncated = Metrics.counter(KIT_NAMESPACE, "sentences_truncated")

  def example(self, sentence: str):
    tensors, truncated = tokenize(self._tokenizer, usable(sentence))
    if truncated:
      self._truncated.inc()
    return sentence, tensors


def _padding(opts) -> str:
  """How a batch is padded: every sentence to MAX_TOKENS (max_length), else to its longest."""
  return "max_length" if getattr(opts, "sentence_batching", None) == "max_length" else "longest"


class FormatPrediction(beam.DoFn):
  def process(self, keyed: tuple[str, PredictionResult]):
    sentence, result = keyed
    label, confidence = result.inference
    # Beam's SentimentPostProcessor row: text, sentiment, confidence
    yield json.dumps({"input": sentence, "sentiment": SENTIMENT_LABELS[label],
                      "confidence": round(confidence, 6)})


class SentimentClassification(Task):
  input_file = "sentences.txt"
  # padded: to the batch's longest sentence; length: similar lengths batched together;
  # max_length: every sentence to 128 tokens, as Beam's sentiment example pads them.
  batchings = ("padded", "length", "max_length")

  def parse(self, lines: beam.PCollection, opts):
    """Sentences -> (sentence, token ids), sorted by token length within windows when the run
    asks for length-aware batching."""
    parsed = lines | "Tokenize" >> beam.ParDo(Tokenize(opts.vocab_path)).with_outputs(
        dead_letter.TAG, main="sentences")
    return sentences.sorted_by_length(parsed.sentences, opts), parsed[dead_letter.TAG]

  def model_handler(self, state_dict_path: str, architecture: str, device: str,
                    batching: dict[str, Any], opts=None) -> PytorchModelHandlerKeyedTensor:
    return PytorchModelHandlerKeyedTensor(
        state_dict_path=state_dict_path,
        model_class=build_architecture,
        model_params={"architecture": architecture},
        device=device,
        inference_fn=make_inference_fn(_padding(opts)),
        **batching)

  def format_prediction(self, opts) -> beam.DoFn:
    return FormatPrediction()

  def optimize(self, model: torch.nn.Module, name: str, batch_size: int) -> torch.nn.Module:
    """As language modeling's: traced and compiled on made-up token ids, one batch without
    padding and one with (transformers takes another path when no token is padding)."""
    return optimized_model.apply(model, name, self.name,
                                 sentences.token_examples(batch_size, masked=False))

  def example_from_line(self, line: bytes, opts) -> dict[str, torch.Tensor]:
    """As Tokenize makes it; with --sentence_batching=max_length padded to MAX_TOKENS already,
    as the pipeline's batches are."""
    sentence = line.decode("utf-8").strip()
    if not sentence:
      raise UnusableSentence("empty line: no sentence")
    tensors = tokenize(load_tokenizer(opts.vocab_path), usable(sentence))[0]
    if _padding(opts) != "max_length":
      return tensors
    input_ids, attention_mask = pad_batch([tensors], "max_length")
    return {"input_ids": input_ids[0], "attention_mask": attention_mask[0]}

  def prediction_logits(self, model: torch.nn.Module, examples: list[dict[str, torch.Tensor]],
                        device) -> torch.Tensor:
    """[batch, 2]: the logits the predicted label is taken from."""
    return sentiment_logits(model, *pad(examples), device).float()

  def example_length(self, example: dict[str, torch.Tensor]) -> int:
    return sentences.token_count(example)


TASK = SentimentClassification()
