"""Shared fixtures: small real models (resnet18, a tiny BertConfig) and generated data.

The architectures are the real torchvision/transformers ones; only their size is reduced where
the architecture does not matter for what a test checks.
"""
from __future__ import annotations

import os
import pathlib
import shutil

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import data
from pipelines.record import build
from pipelines.runners import local_engine
from pipelines.worker import beam_metrics, models, pipeline, tokenizer_files
from pipelines.worker.options import BenchmarkOptions
from tests.skip_summary import pytest_sessionfinish, pytest_terminal_summary  # noqa: F401

# `make test` runs this suite under make: the tests' own `make` calls would inherit its flags and
# level (and print "make[1]: Entering directory ..."). They run as a user's make would.
for _make_variable in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKE_TERMOUT", "MAKE_TERMERR"):
  os.environ.pop(_make_variable, None)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> pathlib.Path:
  out = tmp_path_factory.mktemp("models")
  for architecture in ("resnet18", "bert-tiny-uncased", "distilbert-tiny-uncased-sst2",
                       "efficientnet_b0", "fasterrcnn_resnet50_fpn", "blip-clip-tiny"):
    models.write_model(architecture, out, "random")
  tokenizer_files.write_vocab(out, "random")
  tokenizer_files.write_clip_bpe(out)
  return out


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory, models_dir) -> pathlib.Path:
  out = tmp_path_factory.mktemp("data")
  data.write_images(out, 10)
  data.write_scenes(out, 2)
  data.write_sentences(out, 12, models_dir / tokenizer_files.VOCAB_FILE)
  return out


def run_pipeline(tmp_path: pathlib.Path, lines: list[str], *, task: str, architecture: str,
                 models_dir: pathlib.Path, batch_size: int, device: str = "CPU",
                 beam_args: tuple[str, ...] = (), telemetry_reader=None) -> dict:
  """Runs the real pipeline on the FnApiRunner; returns outputs, dead letters and the record.
  `beam_args` are Beam and kit flags, e.g. --direct_num_workers=2
  --direct_running_mode=multi_processing, --gpu_sample_s=0.01."""
  tmp_path.mkdir(parents=True, exist_ok=True)
  input_path = tmp_path / "input.txt"
  input_path.write_text("\n".join(lines) + "\n")
  output = tmp_path / "out"
  shutil.rmtree(output, ignore_errors=True)
  opts = PipelineOptions(
      list(beam_args), task=task, input=str(input_path), output=str(output),
      model_architecture=architecture, device=device,
      model_state_dict_path=str(models_dir / f"{architecture}.pth"),
      vocab_path=str(models_dir / tokenizer_files.VOCAB_FILE),
      min_batch_size=batch_size, max_batch_size=batch_size)
  p = beam.Pipeline(runner=local_engine(), options=opts)
  pipeline.build(p, opts.view_as(BenchmarkOptions), telemetry_reader=telemetry_reader)
  result = p.run()
  result.wait_until_finish()
  raw = beam_metrics.query(result)
  record = build.build({"run_id": "test", "benchmark": "test", "runner": "DirectRunner"},
                       build.Outcome(started=build.utc_now(), wall_time_s=1.0, raw=raw))
  read = lambda pattern: [line for f in sorted(output.glob(pattern))  # noqa: E731
                          for line in f.read_text().splitlines()]
  return {"predictions": read("predictions*"), "dead_letters": read("dead_letter*"),
          "record": record, "raw": raw}
