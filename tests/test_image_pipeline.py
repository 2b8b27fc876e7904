"""End to end: the image classification pipeline on the DirectRunner's engine."""
import json

import torch

from pipelines import image_classification
from pipelines.perf import load_model
from tests.conftest import run_pipeline


def _images(data_dir):
  return (data_dir / "images.txt").read_text().split()


def test_predictions_match_plain_pytorch_and_metrics_add_up(tmp_path, models_dir, data_dir):
  paths = _images(data_dir)[:7]
  out = run_pipeline(tmp_path, paths, task="image_classification", architecture="resnet18",
                     models_dir=models_dir, batch_size=3)
  metrics = out["record"]["metrics"]

  model = load_model(models_dir / "resnet18.pth", "resnet18")
  with torch.no_grad():
    logits = model(torch.stack([image_classification.preprocess(
        image_classification.read_bytes(p)) for p in paths]))
  expected = {f"{p},{image_classification.top1(row)}" for p, row in zip(paths, logits)}
  assert set(out["predictions"]) == expected
  assert out["dead_letters"] == []
  assert metrics["num_inferences"] == len(paths)
  assert metrics["sum_inference_request_batch_size"] == metrics["num_inferences"]
  assert metrics["num_batches"] >= 3  # batch size 3 caps every batch
  assert metrics["mean_inference_request_batch_size"] <= 3
  assert metrics["mean_load_model_latency_milli_secs"] > 0
  assert metrics["mean_inference_batch_latency_micro_secs"] > 0
  assert out["record"]["metadata"]["device_used"] == "CPU"
  assert out["record"]["metadata"]["weights"] == "random"
  assert sum(out["record"]["latency_histogram"].values()) == metrics["num_batches"]


def test_bad_images_are_dead_lettered_and_the_rest_complete(tmp_path, models_dir, data_dir):
  good = _images(data_dir)[:4]
  truncated = tmp_path / "truncated.jpg"
  truncated.write_bytes(pathlib_bytes(good[0])[:2000])
  not_an_image = tmp_path / "notes.jpg"
  not_an_image.write_text("this is not a JPEG")
  lines = good[:2] + [str(truncated), "", str(tmp_path / "missing.jpg"),
                      str(not_an_image)] + good[2:]
  out = run_pipeline(tmp_path, lines, task="image_classification", architecture="resnet18",
                     models_dir=models_dir, batch_size=2)
  metrics = out["record"]["metrics"]
  dead = [json.loads(line) for line in out["dead_letters"]]

  assert len(out["predictions"]) == len(good)
  assert {d["input"]: d["stage"] for d in dead} == {
      str(truncated): "decode", "": "decode", str(tmp_path / "missing.jpg"): "decode",
      str(not_an_image): "decode"}
  reasons = {d["input"]: d["reason"] for d in dead}
  assert "truncated" in reasons[str(truncated)]
  assert reasons[""] == "empty line: no image path"
  assert reasons[str(tmp_path / "missing.jpg")].startswith("FileNotFoundError")
  assert reasons[str(not_an_image)].startswith("UnidentifiedImageError")
  assert metrics["dead_lettered"] == 4
  assert metrics["num_inferences"] == len(lines) - metrics["dead_lettered"]
  assert metrics["sum_inference_request_batch_size"] == metrics["num_inferences"]


def pathlib_bytes(path):
  with open(path, "rb") as f:
    return f.read()
