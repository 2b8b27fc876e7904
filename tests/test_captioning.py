"""Image captioning end to end on the DirectRunner's engine, with the tiny BLIP+CLIP variant
(the real architectures, small sizes) and the tokenizers built offline."""
import gzip
import json
import os
import subprocess
import sys

import pytest
import torch
from apache_beam.options.pipeline_options import PipelineOptions
from PIL import Image

from pipelines import data
from pipelines.matrix import REPO_ROOT
from pipelines.worker import architectures, models, optimizations, tokenizer_files
from pipelines.worker.options import BenchmarkOptions
from pipelines.worker.tasks import image_captioning as captioning
from tests.conftest import run_pipeline

ARCHITECTURE = "blip-clip-tiny"
# 1 MP: the generated images (1024x768, 768x1024) pass; CLIP's resize of a 1x4000 strip to a
# short side of 32 (32x128000) does not.
MAX_PIXELS = 1_000_000


@pytest.fixture(scope="module")
def caption_models(tmp_path_factory):
  out = tmp_path_factory.mktemp("caption-models")
  models.write_model(ARCHITECTURE, out, "random")
  tokenizer_files.write_vocab(out, "random")
  tokenizer_files.write_clip_bpe(out)
  return out


@pytest.fixture(scope="module")
def images(tmp_path_factory):
  return data.write_images(tmp_path_factory.mktemp("caption-data"), 2).read_text().split()


def _run(tmp_path, lines, caption_models, batch_size):
  out = run_pipeline(tmp_path, lines, task="image_captioning", architecture=ARCHITECTURE,
                     models_dir=caption_models, batch_size=batch_size,
                     beam_args=(f"--max_image_pixels={MAX_PIXELS}",))
  return out, {row["input"]: row for row in map(json.loads, out["predictions"])}


def test_each_image_gets_five_ranked_candidates_and_bad_files_are_dead_lettered(
    tmp_path, caption_models, images):
  truncated = tmp_path / "truncated.jpg"
  truncated.write_bytes(open(images[0], "rb").read()[:2000])
  not_an_image = tmp_path / "notes.jpg"
  not_an_image.write_text("this is not a JPEG")
  strip = tmp_path / "strip.png"
  Image.new("RGB", (1, 4000)).save(strip)
  huge = tmp_path / "huge.png"
  Image.new("RGB", (1100, 1000)).save(huge)
  missing = tmp_path / "missing.jpg"
  lines = [images[0], str(truncated), "", str(not_an_image), str(missing), str(strip),
           str(huge), images[1]]
  out, predictions = _run(tmp_path, lines, caption_models, batch_size=2)

  assert set(predictions) == set(images)
  for row in predictions.values():
    assert len(row["candidates"]) == len(row["scores"]) == captioning.NUM_CAPTIONS
    assert all(isinstance(c, str) for c in row["candidates"])
    best = max(range(captioning.NUM_CAPTIONS), key=row["scores"].__getitem__)
    assert row["best_caption"] == row["candidates"][best]
    assert row["best_score"] == row["scores"][best] == max(row["scores"])
  reasons = {d["input"]: d["reason"] for d in map(json.loads, out["dead_letters"])}
  assert set(reasons) == {str(truncated), "", str(not_an_image), str(missing), str(strip),
                          str(huge)}
  assert "truncated" in reasons[str(truncated)]
  assert reasons[""] == "empty line: no image path"
  assert reasons[str(not_an_image)].startswith("not an image file")
  assert reasons[str(missing)] == "file not found"
  assert reasons[str(strip)].startswith("aspect ratio too extreme: 1x4000 resizes to 32x128000")
  assert reasons[str(huge)].startswith("image too large: 1100x1000")
  metrics = out["record"].metrics
  assert metrics["dead_lettered"] == 6
  assert metrics["num_inferences"] == 2


def test_batch_size_does_not_change_predictions_and_matches_the_model_run_directly(
    tmp_path, caption_models, images):
  _, by_one = _run(tmp_path / "one", images, caption_models, batch_size=1)
  _, by_two = _run(tmp_path / "two", images, caption_models, batch_size=2)

  opts = PipelineOptions([], model_architecture=ARCHITECTURE,
                         model_state_dict_path=str(caption_models / f"{ARCHITECTURE}.pth"),
                         max_image_pixels=MAX_PIXELS).view_as(BenchmarkOptions)
  examples = [captioning.TASK.example_from_line(path.encode(), opts) for path in images]
  model = models.load_model(caption_models / f"{ARCHITECTURE}.pth", ARCHITECTURE)
  direct = captioning.TASK.prediction_logits(model, examples, "cpu")
  assert direct.shape == (2, captioning.NUM_CAPTIONS)
  for i, path in enumerate(images):
    # Beam search picks the same captions whatever the batch; scores differ by float rounding
    # only (CLIP pads the batch's captions to its longest).
    assert by_one[path]["candidates"] == by_two[path]["candidates"]
    assert by_one[path]["best_caption"] == by_two[path]["best_caption"]
    for got in (by_one[path]["scores"], by_two[path]["scores"]):
      assert torch.allclose(torch.tensor(got), direct[i], rtol=1e-4, atol=1e-5)


def test_the_clip_tokenizer_built_offline_is_clips(caption_models):
  tokenizer = captioning.clip_tokenizer(str(caption_models))
  sentence = "a photo of a cat sitting on the beach"
  ids = tokenizer(sentence)["input_ids"]
  # <|startoftext|> a photo of a cat ... <|endoftext|>: CLIP's published ids
  assert ids[:6] == [49406, 320, 1125, 539, 320, 2368] and ids[-1] == 49407
  assert tokenizer.decode(ids, skip_special_tokens=True) == sentence
  assert len(tokenizer("word " * 200, truncation=True)["input_ids"]) == captioning.CLIP_MAX_TOKENS


def test_the_clip_bpe_is_refused_when_its_source_is_not_clips(tmp_path, monkeypatch):
  source = tmp_path / "open_clip" / "bpe_simple_vocab_16e6.txt.gz"
  source.parent.mkdir()
  source.write_bytes(gzip.compress(b"#version: 0.2\ni n\n"))

  class Tampered:
    def locate_file(self, path):
      return tmp_path / path
  monkeypatch.setattr(tokenizer_files.importlib.metadata, "distribution", lambda name: Tampered())
  with pytest.raises(RuntimeError, match="is not CLIP's BPE"):
    tokenizer_files.write_clip_bpe(tmp_path / "out")
  assert not (tmp_path / "out" / tokenizer_files.CLIP_VOCAB_FILE).exists()


def test_only_the_model_as_loaded_runs():
  model = torch.nn.Linear(1, 1)
  assert captioning.TASK.optimize(model, optimizations.NONE, 4) is model
  for name in optimizations.NAMES[1:]:
    reason = optimizations.unavailable(name, "image_captioning")
    assert reason and "beam-search" in reason
    with pytest.raises(optimizations.OptimizationUnavailable, match="image_captioning"):
      captioning.TASK.optimize(model, name, 4)
  assert optimizations.unavailable("freeze", "language_modeling") is None


def _snapshot(hf_home, repo_id):
  """A folder of the Hugging Face cache layout that from_pretrained finds offline."""
  revision = "0" * 40
  repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
  (repo / "refs").mkdir(parents=True)
  (repo / "refs" / "main").write_text(revision)
  path = repo / "snapshots" / revision
  path.mkdir(parents=True)
  return path


def test_pretrained_weights_are_the_two_hub_models_in_one_state_dict(tmp_path, caption_models):
  """The download path (never run against the hub here), from a pre-filled cache, offline."""
  from transformers import BlipForConditionalGeneration, CLIPModel
  hf_home = tmp_path / "hf"
  blip_config, clip_config = architectures.blip_clip_configs(ARCHITECTURE)
  torch.manual_seed(5)
  blip, clip = BlipForConditionalGeneration(blip_config), CLIPModel(clip_config)
  blip.save_pretrained(_snapshot(hf_home, "kit-test/blip-tiny"))
  clip.save_pretrained(_snapshot(hf_home, "kit-test/clip-tiny"))
  bert = _snapshot(hf_home, "google-bert/bert-base-uncased")
  (bert / "vocab.txt").write_bytes((caption_models / tokenizer_files.VOCAB_FILE).read_bytes())
  (bert / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
  (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
  out = tmp_path / "out"
  env = {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
         "HOME": str(tmp_path), "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
  result = subprocess.run([sys.executable, "-m", "pipelines.worker.models", "--weights",
                           "pretrained", "--out", str(out), ARCHITECTURE],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]

  meta = models.read_meta(str(out / f"{ARCHITECTURE}.pth"))
  assert (meta.weights, meta.source) == ("pretrained",
                                         "huggingface:kit-test/blip-tiny+kit-test/clip-tiny")
  baked = torch.load(out / f"{ARCHITECTURE}.pth")
  expected = architectures.BlipClip(blip, clip).state_dict()
  assert baked.keys() == expected.keys()
  assert all(torch.equal(baked[k], v) for k, v in expected.items())
  assert {p.name for p in out.iterdir()} >= {
      tokenizer_files.VOCAB_FILE, tokenizer_files.CLIP_VOCAB_FILE, tokenizer_files.CLIP_MERGES_FILE}
