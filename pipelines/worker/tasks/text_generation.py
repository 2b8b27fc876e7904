"""Text generation (Beam's vllm_gemma_batch.py): prompt -> google/gemma-2b-it served by vLLM ->
the completion.

As Beam's example: each line is one prompt; Beam's VLLMCompletionsModelHandler starts vLLM's
OpenAI-compatible server (`python -m vllm.entrypoints.openai.api_server --model <dir>`) in the
worker and sends each prompt of a batch as one completions request, with Beam's server kwargs
(served-model-name = the model path) and no request arguments (the completions API's defaults:
16 tokens at most). The completion is choices[0].text, as Beam's FormatOutput takes it.

How it differs from Beam's example:
  * the model is a directory baked into the image (model_directory.write_model_directory:
    /opt/models/gemma-2b-it/), passed as the kit's --model_state_dict_path: for this task that
    "state dict path" is the model DIRECTORY vLLM serves; Beam's example copies it from GCS;
  * an empty (or blank) line is dead-lettered: Beam sends it as an empty prompt;
  * output is a JSON line {"input": prompt, "completion": text} (Beam writes BigQuery rows
    {prompt, completion}).
vLLM is imported only where the handler is built (it needs a CUDA GPU and its own torch: the
vllm-gpu image, docker/Dockerfile.vllm), so this module imports without it. On a T4 (no
bfloat16) vLLM serves Gemma's bfloat16 weights as float16 by itself.
"""
from __future__ import annotations

import json
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import PredictionResult

from pipelines.worker import dead_letter
from pipelines.worker.tasks.base import Task


def server_kwargs(model_dir: str) -> dict[str, str]:
  """The vLLM server's extra flags, as Beam's example passes them."""
  return {"served-model-name": model_dir}


class ToPrompt(beam.DoFn):
  """line -> (prompt, prompt): the prompt is its own key. Blank lines are dead letters."""

  def process(self, line: str):
    if not line.strip():
      yield dead_letter.tagged(line, "parse", "empty prompt: nothing to complete")
      return
    yield line, line


def completion_text(completion: Any) -> str:
  """The text of a completion, as Beam's FormatOutput takes it: choices[0].text, else .text,
  else the whole object as a string."""
  if hasattr(completion, "choices"):
    return completion.choices[0].text
  if hasattr(completion, "text"):
    return completion.text
  return str(completion)


class FormatPrediction(beam.DoFn):
  def process(self, keyed: tuple[str, PredictionResult]):
    prompt, result = keyed
    yield json.dumps({"input": prompt, "completion": completion_text(result.inference)})


class TextGeneration(Task):
  input_file = "sentences.txt"
  # The model is a directory vLLM serves (models.is_directory_model), passed as the state dict
  # path: no torch module in the worker, none in the launcher either.
  no_local_model = ("text_generation's model is a vLLM server process (Beam's "
                    "VLLMCompletionsModelHandler), not a torch module the launcher can run by "
                    "itself: it has no agreement check (it runs only the none optimization) and "
                    "no plain PyTorch loop to compare the pipeline with")

  def parse(self, lines: beam.PCollection, opts):
    """Lines -> (prompt, prompt)."""
    parsed = lines | "Prompts" >> beam.ParDo(ToPrompt()).with_outputs(dead_letter.TAG,
                                                                       main="prompts")
    return parsed.prompts, parsed[dead_letter.TAG]

  def model_handler(self, state_dict_path: str, architecture: str, device: str,
                    batching: dict[str, Any], opts=None):
    """Beam's VLLMCompletionsModelHandler serving the model directory `state_dict_path` (a
    local path in the worker image: vLLM reads it by path). Needs vllm and openai (the vllm-gpu
    image)."""
    if "://" in state_dict_path:
      raise ValueError(f"{state_dict_path}: text_generation serves a model directory on the "
                       "worker's own disk (baked into the vllm-gpu image), not a remote path")
    if device != "GPU":
      raise ValueError(f"text_generation runs vLLM on a CUDA GPU; device {device} cannot run it")
    try:
      from apache_beam.ml.inference.vllm_inference import VLLMCompletionsModelHandler
    except ImportError as e:
      raise RuntimeError(f"text_generation needs vllm and openai (the vllm-gpu image, "
                         f"requirements/vllm.txt): {e}") from e
    return VLLMCompletionsModelHandler(model_name=state_dict_path,
                                       vllm_server_kwargs=server_kwargs(state_dict_path),
                                       **batching)

  def format_prediction(self, opts) -> beam.DoFn:
    return FormatPrediction()

  # optimize: the base's, none only (optimizations.NONE_ONLY says why)

  def example_from_line(self, line: bytes, opts):
    raise NotImplementedError(self.no_local_model)

  def prediction_logits(self, model: Any, examples: list, device) -> Any:
    raise NotImplementedError(self.no_local_model)


TASK = TextGeneration()
