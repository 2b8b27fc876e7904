"""text_generation (Beam's vllm_gemma_batch.py): what runs without vLLM and a GPU."""
from __future__ import annotations

import json
import subprocess
import sys
import types

import apache_beam as beam
import pytest
import torch
from apache_beam.ml.inference.base import PredictionResult
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines.worker import model_directory, models, optimizations, tasks
from pipelines.worker.tasks import text_generation

TASK = text_generation.TASK


def test_parse_keys_prompts_and_dead_letters_blank_lines():
  with TestPipeline() as p:
    lines = p | beam.Create(["Tell me a story.", "", "   ", "Why is the sky blue?"])
    prompts, dead = TASK.parse(lines, opts=None)
    assert_that(prompts, equal_to([("Tell me a story.", "Tell me a story."),
                                   ("Why is the sky blue?", "Why is the sky blue?")]),
                label="prompts")
    assert_that(dead | beam.Map(lambda d: (d["input"], d["stage"])),
                equal_to([("", "parse"), ("   ", "parse")]), label="dead")


def _completion(text: str):
  """Shaped like openai's Completion, what vLLM's server answers: .choices[0].text."""
  choice = types.SimpleNamespace(text=text, index=0, finish_reason="length")
  return types.SimpleNamespace(id="cmpl-1", object="text_completion", choices=[choice])


def test_format_takes_the_first_choice_as_beams_format_output():
  result = PredictionResult("Why is the sky blue?", _completion(" Rayleigh scattering"))
  line, = text_generation.FormatPrediction().process(("Why is the sky blue?", result))
  assert json.loads(line) == {"input": "Why is the sky blue?",
                              "completion": " Rayleigh scattering"}


def test_format_falls_back_as_beams_format_output():
  assert text_generation.completion_text(types.SimpleNamespace(text="plain")) == "plain"
  assert text_generation.completion_text(42) == "42"


def test_registered_and_only_none():
  task = tasks.get("text_generation")
  assert (task.input_file, task.batchings) == ("sentences.txt", ("padded",))
  assert task is TASK and task.module == "pipelines.worker.tasks.text_generation"
  assert optimizations.unavailable("none", "text_generation") is None
  for name in optimizations.NAMES[1:]:
    assert "vLLM server" in optimizations.unavailable(name, "text_generation")
    with pytest.raises(optimizations.OptimizationUnavailable):
      TASK.optimize(object(), name, batch_size=4)
  model = object()
  assert TASK.optimize(model, "none", batch_size=4) is model
  assert "vLLM server process" in TASK.no_local_model
  with pytest.raises(NotImplementedError, match="no agreement check"):
    TASK.example_from_line(b"x", None)
  with pytest.raises(NotImplementedError, match="no plain PyTorch loop"):
    TASK.prediction_logits(None, [], "cuda")


def test_module_imports_without_vllm():
  code = ("import sys, pipelines.worker.tasks.text_generation; "
          "assert not {'vllm', 'openai', 'apache_beam.ml.inference.vllm_inference'} & "
          "set(sys.modules)")
  subprocess.run([sys.executable, "-c", code], check=True)


def test_model_handler_is_beams_vllm_handler_on_the_directory(monkeypatch):
  # openai is a vLLM-image dependency; a stub is enough for Beam's module to import (as in
  # Beam's own vllm_inference_test), and nothing here starts a server.
  monkeypatch.setitem(sys.modules, "openai", types.SimpleNamespace(OpenAI=object,
                                                                  AsyncOpenAI=object))
  # Beam's module, imported against the stub, is dropped afterwards.
  monkeypatch.setitem(sys.modules, "apache_beam.ml.inference.vllm_inference", None)
  monkeypatch.delitem(sys.modules, "apache_beam.ml.inference.vllm_inference")
  handler = TASK.model_handler("/opt/models/gemma-2b-it", "gemma-2b-it", "GPU",
                                          {"min_batch_size": 2, "max_batch_size": 32})
  from apache_beam.ml.inference.vllm_inference import VLLMCompletionsModelHandler
  assert isinstance(handler, VLLMCompletionsModelHandler)
  assert handler._model_name == "/opt/models/gemma-2b-it"
  assert handler._vllm_server_kwargs == {"served-model-name": "/opt/models/gemma-2b-it"}
  assert handler.batch_elements_kwargs()["max_batch_size"] == 32
  with pytest.raises(ValueError, match="CUDA GPU"):
    TASK.model_handler("/opt/models/gemma-2b-it", "gemma-2b-it", "CPU", {})
  with pytest.raises(ValueError, match="worker's own disk"):
    TASK.model_handler("gs://bucket/gemma", "gemma-2b-it", "GPU", {})


def test_gemma_2b_it_config_is_the_published_one():
  config = model_directory.gemma_config_json("gemma-2b-it")
  assert {k: config[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                 "num_key_value_heads", "head_dim", "intermediate_size",
                                 "vocab_size", "max_position_embeddings", "rms_norm_eps",
                                 "rope_theta", "bos_token_id", "eos_token_id",
                                 "pad_token_id", "torch_dtype", "model_type")} == {
      "hidden_size": 2048, "num_hidden_layers": 18, "num_attention_heads": 8,
      "num_key_value_heads": 1, "head_dim": 256, "intermediate_size": 16384,
      "vocab_size": 256000, "max_position_embeddings": 8192, "rms_norm_eps": 1e-06,
      "rope_theta": 10000.0, "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0,
      "torch_dtype": "bfloat16", "model_type": "gemma"}
  # 2.5 B parameters (the embedding is the output layer too), built on the meta device.
  with torch.device("meta"):
    model = models.build_architecture("gemma-2b-it")
  assert 2.50e9 < sum(p.numel() for p in model.parameters()) < 2.52e9
  assert models.model_path("gemma-2b-it", models.pathlib.Path("m")).name == "gemma-2b-it"


@pytest.fixture(scope="module")
def gemma_tiny(tmp_path_factory):
  out = tmp_path_factory.mktemp("models")
  return models.write_model("gemma-tiny", out, "random")


def test_gemma_tiny_directory_and_sidecar(gemma_tiny):
  assert gemma_tiny.is_dir() and gemma_tiny.name == "gemma-tiny"
  assert {p.name for p in gemma_tiny.iterdir()} == {
      "config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
      "tokenizer_config.json", "special_tokens_map.json"}
  meta = models.read_meta(str(gemma_tiny))
  assert meta.weights == "random" and "tokenizer: byte-level BPE trained here" in meta.source
  assert (gemma_tiny.parent / "gemma-tiny.meta.json").exists()
  assert meta.sha256 == model_directory._sha256_directory(gemma_tiny)
  assert models.is_current(gemma_tiny, "random") and not models.is_current(gemma_tiny,
                                                                            "pretrained")
  from safetensors import safe_open
  with safe_open(str(gemma_tiny / "model.safetensors"), "pt") as f:
    assert "lm_head.weight" not in f.keys()  # tied to the embedding, as published
    assert f.get_tensor("model.embed_tokens.weight").dtype == torch.bfloat16


def test_gemma_tiny_loads_and_generates_with_transformers(gemma_tiny):
  """A valid Hugging Face model directory: what vLLM reads with transformers."""
  from transformers import AutoTokenizer, GemmaForCausalLM
  tokenizer = AutoTokenizer.from_pretrained(gemma_tiny)
  assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id,
          tokenizer.unk_token_id) == (0, 1, 2, 3)
  assert len(tokenizer) == 512  # every id the model can sample decodes
  model = GemmaForCausalLM.from_pretrained(gemma_tiny).eval()
  assert model.config.num_hidden_layers == 2 and model.config.vocab_size == 512
  ids = tokenizer("The cat sat on the mat.", return_tensors="pt")
  assert ids["input_ids"][0, 0] == 2  # <bos> first, as Gemma's tokenizer
  assert tokenizer.decode(ids["input_ids"][0], skip_special_tokens=True) == (
      "The cat sat on the mat.")
  out = model.generate(**ids, max_new_tokens=4, do_sample=False)
  assert out.shape == (1, ids["input_ids"].shape[1] + 4)
  assert isinstance(tokenizer.decode(out[0, ids["input_ids"].shape[1]:]), str)
  again = model.generate(**ids, max_new_tokens=4, do_sample=False)
  assert torch.equal(out, again)
