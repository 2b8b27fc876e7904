"""Object detection (Beam's pytorch_image_object_detection example): the real Faster R-CNN
ResNet-50 FPN on the DirectRunner's engine, its letterbox preprocessing and its output format."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from apache_beam.ml.inference.base import PredictionResult
from PIL import Image

from pipelines import data
from pipelines.worker import models, optimizations, synthetic_scenes
from pipelines.worker.images import BadImage
from pipelines.worker.tasks import object_detection
from tests.conftest import run_pipeline

ARCHITECTURE = "fasterrcnn_resnet50_fpn"  # the real one: ~2 s an image on 2 cores
SCENES = 3


@pytest.fixture(scope="module")
def detector_dir(tmp_path_factory):
  out = tmp_path_factory.mktemp("detector")
  models.write_model(ARCHITECTURE, out, "random")
  data.write_scenes(out, SCENES)
  return out


def _scenes(detector_dir) -> list[str]:
  return (detector_dir / "scenes.txt").read_text().split()


def _png(image: Image.Image) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, format="PNG")
  return buffer.getvalue()


def test_batched_predictions_equal_single_ones_and_bad_inputs_are_dead_lettered(
    tmp_path, detector_dir):
  good = _scenes(detector_dir)
  truncated = tmp_path / "truncated.jpg"
  truncated.write_bytes(open(good[0], "rb").read()[:2000])
  not_an_image = tmp_path / "notes.jpg"
  not_an_image.write_text("this is not a JPEG")
  max_bytes = max(len(open(p, "rb").read()) for p in good)
  too_many_bytes = tmp_path / "huge.jpg"
  too_many_bytes.write_bytes(b"\xff" * (max_bytes + 1))
  max_pixels = max(Image.open(p).size[0] * Image.open(p).size[1] for p in good)
  too_many_pixels = tmp_path / "wide.png"
  too_many_pixels.write_bytes(_png(Image.new("RGB", (max_pixels // 100 + 1, 100))))
  missing = str(tmp_path / "missing.jpg")
  bad = [str(truncated), "", missing, str(not_an_image), str(too_many_bytes),
         str(too_many_pixels)]
  limits = (f"--max_image_bytes={max_bytes}", f"--max_image_pixels={max_pixels}")

  batched = run_pipeline(tmp_path / "b2", good[:1] + bad + good[1:], task="object_detection",
                         architecture=ARCHITECTURE, models_dir=detector_dir, batch_size=2,
                         beam_args=limits)
  single = run_pipeline(tmp_path / "b1", good, task="object_detection",
                        architecture=ARCHITECTURE, models_dir=detector_dir, batch_size=1,
                        beam_args=limits)

  rows = {row["input"]: row for row in map(json.loads, batched["predictions"])}
  assert rows == {row["input"]: row for row in map(json.loads, single["predictions"])}
  assert set(rows) == set(good)
  assert batched["record"].metrics["num_batches"] == 2  # 3 images, at most 2 a batch
  assert single["record"].metrics["num_batches"] == 3
  for row in rows.values():
    assert row["num_detections"] == len(row["detections"]) <= object_detection.MAX_DETECTIONS
    assert all(d["score"] >= object_detection.SCORE_THRESHOLD for d in row["detections"])
    assert all(len(d["box"]) == 4 and isinstance(d["label_id"], int) for d in row["detections"])
  # This random model scores over 50 boxes >= 0.5 on some scene: the cap is exercised
  assert any(row["num_detections"] == object_detection.MAX_DETECTIONS for row in rows.values())
  # Random weights still propose boxes: the pipeline's rows are the plain model's, formatted.
  model = models.load_model(detector_dir / f"{ARCHITECTURE}.pth", ARCHITECTURE)
  with torch.no_grad():
    (output,) = model([object_detection.preprocess(open(good[0], "rb").read())])
  assert rows[good[0]]["detections"] == object_detection.detections(output)
  assert rows[good[0]]["num_detections"] > 0

  reasons = {d["input"]: (d["stage"], d["reason"]) for d in map(json.loads,
                                                                 batched["dead_letters"])}
  assert set(reasons) == set(bad)
  assert {stage for stage, _ in reasons.values()} == {"decode"}
  assert "truncated" in reasons[str(truncated)][1]
  assert reasons[""][1] == "empty line: no image path"
  assert reasons[missing][1] == "file not found"
  assert reasons[str(not_an_image)][1].startswith("not an image file")
  assert reasons[str(too_many_bytes)][1].startswith("file too large")
  assert reasons[str(too_many_pixels)][1].startswith("image too large")
  assert batched["record"].metrics["dead_lettered"] == len(bad)


def test_letterbox_scales_the_longer_side_to_800_and_centres_it_on_black():
  colour = (10, 200, 30)
  wide = object_detection.preprocess(_png(Image.new("RGB", (400, 200), colour)))
  assert wide.shape == (3, 800, 800) and wide.dtype == torch.float32
  expected = torch.tensor(colour, dtype=torch.float32).div(255).view(3, 1, 1)
  assert torch.equal(wide[:, 200:600, :], expected.expand(3, 400, 800))  # 400x200 -> 800x400
  assert not wide[:, :200].any() and not wide[:, 600:].any()  # black bars, no mean/std
  tall = object_detection.preprocess(_png(Image.new("RGB", (200, 400), colour)))
  assert torch.equal(tall[:, :, 200:600], expected.expand(3, 800, 400))
  assert not tall[:, :, :200].any() and not tall[:, :, 600:].any()


def test_preprocessing_is_beams_on_the_generated_scenes(detector_dir):
  beam_example = pytest.importorskip(
      "apache_beam.examples.inference.pytorch_image_object_detection")
  for path in _scenes(detector_dir):
    jpeg = open(path, "rb").read()
    assert torch.equal(object_detection.preprocess(jpeg), beam_example.decode_to_tens(jpeg))


def test_too_many_pixels_is_refused_before_decoding():
  with pytest.raises(BadImage, match="image too large: 400x200"):
    object_detection.preprocess(_png(Image.new("RGB", (400, 200))), max_pixels=400 * 200 - 1)


def test_format_keeps_scores_of_at_least_one_half_and_at_most_fifty():
  scores = torch.cat([torch.linspace(0.99, 0.5, 60), torch.tensor([0.49, 0.2])])
  output = {"boxes": torch.arange(len(scores) * 4, dtype=torch.float32).view(-1, 4),
            "labels": torch.arange(len(scores)), "scores": scores}
  (line,) = object_detection.FormatPrediction().process(
      ("a.jpg", PredictionResult(torch.zeros(1), output)))
  row = json.loads(line)
  assert row["input"] == "a.jpg" and row["num_detections"] == 50 == len(row["detections"])
  assert [d["label_id"] for d in row["detections"]] == list(range(50))  # the first 50, in order
  assert row["detections"][1] == {"label_id": 1, "score": pytest.approx(float(scores[1])),
                                  "box": [4.0, 5.0, 6.0, 7.0]}
  few = {"boxes": torch.zeros(3, 4), "labels": torch.tensor([5, 6, 7]),
         "scores": torch.tensor([0.9, 0.5, 0.4999])}
  assert [d["label_id"] for d in object_detection.detections(few)] == [5, 6]
  empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0), "scores": torch.zeros(0)}
  (line,) = object_detection.FormatPrediction().process(
      ("b.jpg", PredictionResult(torch.zeros(1), empty)))
  assert json.loads(line) == {"input": "b.jpg", "detections": [], "num_detections": 0}


def test_only_none_is_offered():
  model = torch.nn.Identity()
  assert object_detection.TASK.optimize(model, "none", 4) is model
  for name in optimizations.NAMES[1:]:
    reason = optimizations.unavailable(name, "object_detection")
    assert reason and "object_detection" in reason and "only none" in reason
    with pytest.raises(optimizations.OptimizationUnavailable, match="only none runs"):
      object_detection.TASK.optimize(model, name, 4)
  assert optimizations.unavailable("freeze", "image_classification") is None


def test_prediction_logits_are_each_images_top_scores_zero_padded():
  def detector(images):
    return [{"scores": torch.tensor([0.3, 0.9])}, {"scores": torch.rand(80)}][:len(images)]
  table = object_detection.TASK.prediction_logits(detector, [torch.zeros(3, 8, 8)] * 2,
                                                   "cpu")
  assert table.shape == (2, object_detection.MAX_DETECTIONS)
  assert table[0, :3].tolist() == pytest.approx([0.9, 0.3, 0.0]) and not table[0, 2:].any()
  assert torch.equal(table[1], table[1].sort(descending=True).values)


def test_scenes_are_deterministic_with_distinct_coloured_shapes():
  first = np.asarray(synthetic_scenes.dataset_scene(0))
  assert np.array_equal(first, np.asarray(synthetic_scenes.dataset_scene(0)))
  assert not np.array_equal(np.asarray(synthetic_scenes.dataset_scene(12))[:100, :100],
                            first[:100, :100])
  for index in range(6):
    pixels = np.asarray(synthetic_scenes.dataset_scene(index)).reshape(-1, 3)
    present = [c for c in synthetic_scenes.COLOURS if (pixels == c).all(axis=1).sum() > 500]
    assert len(present) >= synthetic_scenes.MIN_SHAPES - 1  # one may hide under another
