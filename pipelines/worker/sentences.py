"""What the sentence tasks share: the bert uncased tokenizer, the checks a line passes before it
is tokenized, the parse step's dead-lettering, padding a batch, and length-aware batching's
sort."""
from __future__ import annotations

import functools
import os
import tempfile
from typing import Sequence

import apache_beam as beam
import torch
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue
from torch.nn.utils.rnn import pad_sequence

from pipelines.worker import dead_letter, optimized_model

# Ids in the bert-uncased vocab (checked against the tokenizer when it loads).
PAD_ID = 0
MASK_ID = 103
# Length-aware batching sorts this many batches' worth of sentences at a time: wide enough to
# find similar lengths, small enough to keep a bundle's memory and latency bounded.
LENGTH_SORT_BATCHES = 8
# The tokenizer matches these anywhere in a text, case-sensitively ("a[SEP]b" holds one).
SPECIAL_TOKENS = ("[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]")
# A WordPiece token holds at most 100 characters of a word (BertTokenizer makes a longer word one
# [UNK]) and the space after it: a line with more than this many characters per token the model
# takes cannot fit, and is refused before the tokenizer spends time on all of it (a 1 MB line).
CHARS_PER_TOKEN_BOUND = 200


class UnusableSentence(ValueError):
  """A line the task cannot use; the message is the dead-letter reason."""


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


class TokenizeLines(beam.DoFn):
  """line -> the task's (key, tensors) from example(sentence); empty lines and those example()
  refuses (UnusableSentence) go to the dead-letter output with the reason."""

  def __init__(self, vocab_path: str):
    self._vocab_path = vocab_path

  def setup(self):
    self._tokenizer = load_tokenizer(self._vocab_path)

  def example(self, sentence: str) -> tuple[str, dict[str, torch.Tensor]]:
    raise NotImplementedError

  def process(self, line: str):
    sentence = line.strip()
    if not sentence:
      yield dead_letter.tagged(line, "tokenize", "empty line: no sentence")
      return
    try:
      yield self.example(sentence)
    except UnusableSentence as e:
      yield dead_letter.tagged(sentence, "tokenize", str(e))


def check_length(sentence: str, max_tokens: int) -> None:
  """Refuses a line far longer than max_tokens tokens can hold, before tokenizing it."""
  limit = max_tokens * CHARS_PER_TOKEN_BOUND
  if len(sentence) > limit:
    raise UnusableSentence(f"{len(sentence)} characters: over {limit}, far more than "
                           f"{max_tokens} tokens can hold (refused before tokenizing)")


def special_tokens_in(sentence: str) -> dict[str, int]:
  """{token: count} of BERT's special tokens the text holds."""
  return {token: sentence.count(token) for token in SPECIAL_TOKENS if token in sentence}


def refuse_special_tokens(found: Sequence[str]) -> None:
  if found:
    raise UnusableSentence(f"holds BERT's special token(s) {' '.join(found)}: the tokenizer "
                           "would read them as control tokens, not text")


def pad(batch: Sequence[dict[str, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
  """(input_ids, attention_mask) of the batch, padded to its longest sentence."""
  input_ids = pad_sequence([e["input_ids"] for e in batch], batch_first=True,
                           padding_value=PAD_ID)
  attention_mask = pad_sequence([e["attention_mask"] for e in batch], batch_first=True,
                                padding_value=0)
  return input_ids, attention_mask


def token_count(example: dict[str, torch.Tensor]) -> int:
  """The sentence's tokens (length-aware batching's sort key): padding does not count."""
  return int(example["attention_mask"].sum())


class SortByLength(beam.DoFn):
  """Length-aware batching: buffers `window` sentences of a bundle and emits them shortest
  first, so the batches RunInference cuts from consecutive elements hold sentences of similar
  token length and pad little. Order does not change any prediction (each sentence is handled
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
    ordered = sorted(self._buffer, key=lambda keyed: token_count(keyed[1]))
    self._buffer = []
    return ordered


def sorted_by_length(examples: beam.PCollection, opts) -> beam.PCollection:
  """The examples, sorted by token length within windows of LENGTH_SORT_BATCHES batches when the
  run asks for length-aware batching (every sentence task's parse step ends with it)."""
  if opts.sentence_batching != "length":
    return examples
  window = LENGTH_SORT_BATCHES * (opts.max_batch_size or 1)
  return examples | "SortByLength" >> beam.ParDo(SortByLength(window))


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
