"""Sentiment classification's input checks end to end: lines holding BERT's special tokens and
absurdly long lines are dead-lettered with a reason, and truncated sentences reach the record."""
import json

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.worker import sentences
from pipelines.worker.options import BenchmarkOptions
from pipelines.worker.tasks import sentiment_classification
from pipelines.worker.tokenizer_files import VOCAB_FILE
from tests.conftest import run_pipeline

SPECIAL = "the tokenizer would read them as control tokens, not text"


def test_special_tokens_and_huge_lines_are_dead_lettered_and_truncation_is_counted(
    tmp_path, models_dir, data_dir):
  good = (data_dir / "sentences.txt").read_text().splitlines()[:3]
  long = " ".join(["word"] * 200) + "."  # past 128 tokens: cut at 128 and counted
  huge = "word " * 200_000  # 1 MB: refused before the tokenizer reads it
  special = ["Mask [MASK] here.", "First [SEP] second.", "glued[CLS]words and [UNK] too"]
  out = run_pipeline(tmp_path, [*good, long, huge, *special], task="sentiment_classification",
                     architecture="distilbert-tiny-uncased-sst2", models_dir=models_dir,
                     batch_size=2)
  dead = {d["input"]: d["reason"] for d in map(json.loads, out["dead_letters"])}
  assert dead == {
      special[0]: f"holds BERT's special token(s) [MASK]: {SPECIAL}",
      special[1]: f"holds BERT's special token(s) [SEP]: {SPECIAL}",
      special[2]: f"holds BERT's special token(s) [CLS] [UNK]: {SPECIAL}",
      # dead-letter inputs are kept to 1000 characters
      huge.strip()[:1000]: "999999 characters: over 25600, far more than 128 tokens can hold "
                           "(refused before tokenizing)",
  }
  metrics = out["record"].metrics
  assert metrics["num_inferences"] == len(good) + 1
  assert metrics["sentences_truncated"] == 1
  assert {json.loads(p)["input"] for p in out["predictions"]} == {*good, long}


def test_example_from_line_refuses_what_the_pipeline_dead_letters_and_pads_as_it_runs(
    models_dir):
  task = sentiment_classification.TASK
  opts = PipelineOptions([], vocab_path=str(models_dir / VOCAB_FILE)).view_as(BenchmarkOptions)
  for line in (b"", b"a [PAD] here", ("x" * 30_000).encode()):
    with pytest.raises(sentences.UnusableSentence):
      task.example_from_line(line, opts)
  example = task.example_from_line(b"A fine film.", opts)
  assert len(example["input_ids"]) == task.example_length(example) < 10
  padded = task.example_from_line(b"A fine film.", PipelineOptions(
      [], vocab_path=str(models_dir / VOCAB_FILE),
      sentence_batching="max_length").view_as(BenchmarkOptions))
  assert len(padded["input_ids"]) == sentiment_classification.MAX_TOKENS
  assert task.example_length(padded) == task.example_length(example)
