"""Masked language modeling: sentence -> mask its last word -> WordPiece ids -> BERT -> the word.

Unlike Beam's example (which forces batch size 1 because tokenized sentences differ in length),
batches are padded to their longest sentence with an attention mask, so batching is real.
"""
from __future__ import annotations

import functools
import json
import os
import re
import tempfile
from typing import Any, Optional, Sequence

import apache_beam as beam
import torch
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import PredictionResult
from apache_beam.ml.inference.pytorch_inference import PytorchModelHandlerKeyedTensor
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue
from torch.nn.utils.rnn import pad_sequence

from pipelines.worker import dead_letter, optimized_model
from pipelines.worker.architectures import build_architecture
from pipelines.worker.beam_metrics import KIT_NAMESPACE

# Ids in the bert-uncased vocab (checked against the tokenizer when it loads).
PAD_ID = 0
MASK_ID = 103
MAX_TOKENS = 512  # BERT's max_position_embeddings
# Length-aware batching sorts this many batches' worth of sentences at a time: wide enough to
# find similar lengths, small enough to keep a bundle's memory and latency bounded.
LENGTH_SORT_BATCHES = 8
_LAST_WORD = re.compile(r"^(.*?\w)(\W*)$")
# The tokenizer matches these anywhere in a text, case-sensitively ("a[SEP]b" holds one).
SPECIAL_TOKENS = ("[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]")


class UnusableSentence(ValueError):
  pass


@functools.lru_cache(maxsize=None)
def load_tokenizer(vocab_path: str):
  """A BertTokenizer from a vocab on any Beam filesystem (copied locally: the tokenizer reads
  files by path). Cached: the tokenize and format steps of a worker share one."""
  from transformers import BertTokenizer
  with FileSystems.open(vocab_path) as f:
    data = f.read()
  # The tokenizer holds the vocab in memory once built: the copy is removed at once.
  with tempfile.TemporaryDirectory(prefix="vocab-") as folder:
    with open(os.path.join(folder, "vocab.txt"), "wb") as f:
      f.write(data)
    tokenizer = BertTokenizer.from_pretrained(folder, do_lower_case=True)
  if tokenizer.mask_token_id != MASK_ID or tokenizer.pad_token_id != PAD_ID:
    raise ValueError(f"{vocab_path} is not the bert uncased vocab "
                     f"([MASK]={tokenizer.mask_token_id}, [PAD]={tokenizer.pad_token_id})")
  return tokenizer


def mask_last_word(sentence: str) -> str:
  """'The cat sat.' -> 'The cat [MASK].' (as Beam's example: the last word, punctuation kept).
  A sentence that already holds exactly one [MASK] is used as is; one holding more, or any
  other special token, is unusable: the tokenizer would read those as control tokens."""
  found = {token: sentence.count(token) for token in SPECIAL_TOKENS if token in sentence}
  if found == {"[MASK]": 1}:
    return sentence
  others = [token for token in found if token != "[MASK]"]
  if others:
    raise UnusableSentence(f"holds BERT's special token(s) {' '.join(others)}: the tokenizer "
                           "would read them as control tokens, not text")
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


def pad(batch: Sequence[dict[str, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
  """(input_ids, attention_mask) of the batch, padded to its longest sentence."""
  input_ids = pad_sequence([e["input_ids"] for e in batch], batch_first=True,
                           padding_value=PAD_ID)
  attention_mask = pad_sequence([e["attention_mask"] for e in batch], batch_first=True,
                                padding_value=0)
  return input_ids, attention_mask


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


class MaskAndTokenize(beam.DoFn):
  """sentence -> (masked sentence, tensors); unusable lines go to the dead-letter output."""

  def __init__(self, vocab_path: str):
    self._vocab_path = vocab_path

  def setup(self):
    self._tokenizer = load_tokenizer(self._vocab_path)

  def process(self, line: str):
    sentence = line.strip()
    if not sentence:
      yield dead_letter.tagged(line, "tokenize", "empty line: no sentence")
      return
    try:
      masked = mask_last_word(sentence)
      yield masked, tokenize(self._tokenizer, masked)
    except UnusableSentence as e:
      yield dead_letter.tagged(sentence, "tokenize", str(e))


class SortByLength(beam.DoFn):
  """Length-aware batching: buffers `window` sentences of a bundle and emits them shortest
  first, so the batches RunInference cuts from consecutive elements hold sentences of similar
  token length and pad little. Order does not change any prediction (each sentence is masked
  on its own); only the padding each batch carries does."""

  def __init__(self, window: int):
    self._window = window

  def start_bundle(self):
    self._buffer = []

  def process(self, element):
    self._buffer.append(element)
    if len(self._buffer) >= self._window:
      yield from self._drain()

  def finish_bundle(self):
    for element in self._drain():
      yield WindowedValue(element, MIN_TIMESTAMP, [GlobalWindow()])

  def _drain(self):
    ordered = sorted(self._buffer, key=lambda keyed: len(keyed[1]["input_ids"]))
    self._buffer = []
    return ordered


def parse_lines(lines: beam.PCollection, vocab_path: str):
  """-> (PCollection of (masked sentence, tensors), PCollection of dead-letter records)."""
  parsed = lines | "MaskAndTokenize" >> beam.ParDo(MaskAndTokenize(vocab_path)).with_outputs(
      dead_letter.TAG, main="sentences")
  return parsed.sentences, parsed[dead_letter.TAG]


def parse(lines: beam.PCollection, opts):
  """The task's parse step (pipelines/worker/tasks.py): sentences -> (sentence, token ids),
  sorted by token length within windows when the run asks for length-aware batching."""
  examples, bad_input = parse_lines(lines, opts.vocab_path)
  return sorted_by_length(examples, opts), bad_input


def sorted_by_length(examples: beam.PCollection, opts) -> beam.PCollection:
  """The examples, sorted by token length within windows of LENGTH_SORT_BATCHES batches when the
  run asks for length-aware batching (every sentence task's parse step ends with it)."""
  if not opts.length_aware_batching:
    return examples
  window = LENGTH_SORT_BATCHES * (opts.max_batch_size or 1)
  return examples | "SortByLength" >> beam.ParDo(SortByLength(window))


def format_prediction(opts) -> beam.DoFn:
  return FormatPrediction(opts.vocab_path)


def model_handler(state_dict_path: str, architecture: str, device: str,
                  batching: dict[str, Any], opts=None) -> PytorchModelHandlerKeyedTensor:
  return PytorchModelHandlerKeyedTensor(
      state_dict_path=state_dict_path,
      model_class=build_architecture,
      model_params={"architecture": architecture},
      device=device,
      inference_fn=predict_masked_tokens,
      **batching)


def optimize(model: torch.nn.Module, name: str, batch_size: int) -> torch.nn.Module:
  """The task's optimization step (optimized_model.py): traced and compiled on batches of
  made-up token ids (their values do not matter to a trace), one unpadded and one padded
  (transformers takes another path when no token is padding); int8 is dynamic, so it needs no
  calibration."""
  return optimized_model.apply(model, name, "language_modeling",
                               token_examples(batch_size, masked=True))


def token_examples(batch_size: int, masked: bool) -> list[optimized_model.Call]:
  """Two model calls on made-up token ids for the sentence tasks' optimize step: a full batch
  without padding and the same with padding ([CLS] .. ([MASK]) [SEP])."""
  input_ids = torch.arange(1000, 1000 + 16).repeat(max(2, batch_size), 1)
  input_ids[:, 0], input_ids[:, -1] = 101, 102
  if masked:
    input_ids[:, -2] = MASK_ID
  padded = torch.ones_like(input_ids)
  padded[0, 12:] = 0
  return [((), {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}),
          ((), {"input_ids": input_ids, "attention_mask": padded})]


def example_from_line(line: bytes, opts) -> dict[str, torch.Tensor]:
  """One input line as the model's input, as the pipeline makes it (agreement.py); raises
  for a line the pipeline would dead-letter."""
  return tokenize(load_tokenizer(opts.vocab_path), mask_last_word(line.decode("utf-8").strip()))


def prediction_logits(model: torch.nn.Module,
                      examples: list[dict[str, torch.Tensor]]) -> torch.Tensor:
  """[batch, vocabulary]: the logits the predicted tokens are taken from, as the pipeline's
  inference makes them (agreement.py)."""
  return mask_logits(model, *pad(examples), "cpu").float()


class FormatPrediction(beam.DoFn):
  def __init__(self, vocab_path: str):
    self._vocab_path = vocab_path

  def setup(self):
    self._tokenizer = load_tokenizer(self._vocab_path)

  def process(self, keyed: tuple[str, PredictionResult]):
    masked, result = keyed
    yield json.dumps({"input": masked,
                      "token": self._tokenizer.convert_ids_to_tokens(result.inference)})
