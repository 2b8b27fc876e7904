"""End to end: the masked-LM pipeline, with real padded batching."""
import json

import pytest

from pipelines.worker.tasks import language_modeling
from tests.conftest import run_pipeline


def _sentences(data_dir):
  return (data_dir / "sentences.txt").read_text().splitlines()


def test_padded_batches_predict_what_batch_size_one_predicts(tmp_path, models_dir, data_dir):
  sentences = _sentences(data_dir)[:9]
  # The generated sentences differ in length, so a batch of 4 needs padding.
  assert len({len(s.split()) for s in sentences}) > 1
  batched = run_pipeline(tmp_path / "b4", sentences, task="language_modeling",
                         architecture="bert-tiny-uncased", models_dir=models_dir, batch_size=4)
  single = run_pipeline(tmp_path / "b1", sentences, task="language_modeling",
                        architecture="bert-tiny-uncased", models_dir=models_dir, batch_size=1)
  assert sorted(batched["predictions"]) == sorted(single["predictions"])
  assert len(batched["predictions"]) == len(sentences)
  assert all("[MASK]" in json.loads(line)["input"] for line in batched["predictions"])
  metrics = batched["record"].metrics
  assert metrics["num_inferences"] == len(sentences)
  assert metrics["sum_inference_request_batch_size"] == metrics["num_inferences"]
  assert metrics["mean_inference_request_batch_size"] > 1
  assert single["record"].metrics["mean_inference_request_batch_size"] == 1
  assert metrics["mean_load_model_latency_milli_secs"] > 0
  assert metrics["sentences_truncated"] == 0  # a sentiment figure: 0 for other tasks


def test_unusable_lines_are_dead_lettered_with_a_reason(tmp_path, models_dir, data_dir):
  good = _sentences(data_dir)[:5]
  too_long = " ".join(["word"] * 600) + "."
  lines = good[:2] + ["", "Hello", "!!! ???", too_long] + good[2:]
  out = run_pipeline(tmp_path, lines, task="language_modeling",
                     architecture="bert-tiny-uncased", models_dir=models_dir, batch_size=2)
  dead = {d["input"]: d["reason"] for d in map(json.loads, out["dead_letters"])}
  assert dead == {
      "": "empty line: no sentence",
      "Hello": "needs at least 2 words to mask one, got 1",
      "!!! ???": "last token '???' has no word to mask",
      # 599 words, [MASK], '.', [CLS], [SEP]; dead-letter inputs are kept to 1000 chars.
      too_long[:1000]: "603 tokens exceed BERT's 512",
  }
  metrics = out["record"].metrics
  assert len(out["predictions"]) == len(good)
  assert metrics["dead_lettered"] == 4
  assert metrics["num_inferences"] == len(lines) - metrics["dead_lettered"]


@pytest.mark.parametrize("sentence,masked", [
    ("The cat sat on the mat.", "The cat sat on the [MASK]."),
    ("no punctuation here", "no punctuation [MASK]"),
    ("Ends with many!?", "Ends with [MASK]!?"),
    ("hello [MASK]", "hello [MASK]"),  # already masked: used as is, not 'hello [MASK]]'
    ("[MASK] sat on the mat.", "[MASK] sat on the mat."),
])
def test_mask_last_word(sentence, masked):
  assert language_modeling.mask_last_word(sentence) == masked


def test_length_aware_batches_predict_what_padded_batches_predict(tmp_path, models_dir,
                                                                   data_dir):
  sentences = _sentences(data_dir)[:12]
  padded = run_pipeline(tmp_path / "padded", sentences, task="language_modeling",
                        architecture="bert-tiny-uncased", models_dir=models_dir, batch_size=3)
  by_length = run_pipeline(tmp_path / "length", sentences, task="language_modeling",
                           architecture="bert-tiny-uncased", models_dir=models_dir, batch_size=3,
                           beam_args=("--sentence_batching=length",))
  assert len(padded["predictions"]) == len(sentences)
  assert sorted(by_length["predictions"]) == sorted(padded["predictions"])
  # Same sentences, same batch size, far less padding.
  assert by_length["record"].metrics["padding_fraction"] < (
      padded["record"].metrics["padding_fraction"] / 2)
