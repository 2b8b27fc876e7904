"""Object detection: path -> letterboxed 800x800 tensor -> Faster R-CNN -> boxes, labels, scores.

Reproduces Beam 2.77.0's apache_beam/examples/inference/pytorch_image_object_detection.py
(the `faster-rcnn-gpu` benchmark): its preprocessing (decode_to_tens), its inference function
(_torchvision_detection_inference_fn) and its post-processing (PostProcessDoFn: score >= 0.5,
at most 50 detections). Where it differs, on purpose: bad inputs are dead-lettered with a reason
(Beam logs and drops them), and decoding is images.py's (EXIF orientation applied,
16-bit greys scaled, the pixel and byte limits), so every image task reads a file the same way.
"""
from __future__ import annotations

import json
from typing import Any, Optional, Sequence

import apache_beam as beam
import numpy as np
import torch
from apache_beam.ml.inference import utils
from apache_beam.ml.inference.base import PredictionResult
from apache_beam.ml.inference.pytorch_inference import PytorchModelHandlerTensor
from PIL import Image

from pipelines.worker import images
from pipelines.worker.architectures import build_architecture
from pipelines.worker.tasks.base import Task

IMAGE_SIZE = 800  # Beam's --image_size: every image is letterboxed onto an 800x800 canvas
SCORE_THRESHOLD = 0.5  # Beam's --score_threshold
MAX_DETECTIONS = 50  # Beam's --max_detections


def letterbox(image: Image.Image, size: int = IMAGE_SIZE) -> Image.Image:
  """Beam's decode_to_tens geometry: scaled so the longer side is `size`, pasted centred on a
  black size x size canvas. A fixed shape is what lets Beam's handler batch the tensors."""
  width, height = image.size
  scale = min(size / float(width), size / float(height))
  new_width, new_height = max(1, int(round(width * scale))), max(1, int(round(height * scale)))
  resized = image.resize((new_width, new_height))  # Pillow's default filter, as Beam's call
  canvas = Image.new("RGB", (size, size), color=(0, 0, 0))
  canvas.paste(resized, ((size - new_width) // 2, (size - new_height) // 2))
  return canvas


def preprocess(data: bytes, max_pixels: int | None = None) -> torch.Tensor:
  """JPEG/PNG bytes -> 3x800x800 float tensor in [0, 1] (no mean/std: torchvision's detection
  models normalize inside). Raises images.BadImage with a readable reason for an unusable image
  (images.decode's checks: the letterbox only scales down, so no resized-size limit)."""
  image = images.decode(data, max_pixels, short_side=None)
  pixels = np.asarray(letterbox(image)).astype("float32") / 255.0
  return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))


def detection_inference_fn(batch: Sequence[torch.Tensor], model: torch.nn.Module,
                           device: torch.device, inference_args: Optional[dict[str, Any]] = None,
                           model_id: Optional[str] = None) -> list[PredictionResult]:
  """Beam's _torchvision_detection_inference_fn: torchvision's detection models take a list of
  3xHxW tensors (no stacking) and return one {boxes, labels, scores} dict per image. Wrapped in
  PredictionResults (Beam's returns the bare dicts, which its post-processing unwraps)."""
  with torch.no_grad():
    outputs = model([torch.as_tensor(t).to(device) for t in batch])
  return utils._convert_to_result(batch, outputs, model_id)


def detections(output: dict[str, Any], threshold: float = SCORE_THRESHOLD,
               limit: int = MAX_DETECTIONS) -> list[dict[str, Any]]:
  """Beam's PostProcessDoFn._extract_detection: the detections scoring >= threshold, in the
  model's order (by score), at most `limit`; box is [x1, y1, x2, y2] in the 800x800 canvas."""
  def as_list(value):
    return value.detach().cpu().tolist() if isinstance(value, torch.Tensor) else list(value)
  boxes, labels, scores = (as_list(output[k]) for k in ("boxes", "labels", "scores"))
  kept = []
  for box, label, score in zip(boxes, labels, scores):
    if float(score) < threshold:
      continue
    kept.append({"label_id": int(label), "score": float(score),
                 "box": [float(c) for c in box[:4]]})
    if len(kept) >= limit:
      break
  return kept


class FormatPrediction(beam.DoFn):
  def process(self, keyed: tuple[str, Any]):
    path, result = keyed
    found = detections(result.inference)
    yield json.dumps({"input": path, "detections": found, "num_detections": len(found)})


class ObjectDetection(Task):
  input_file = "scenes.txt"
  reads_files = True

  def parse(self, lines: beam.PCollection, opts):
    """Image paths -> (path, tensor)."""
    return images.parse_lines(lines, preprocess, opts)

  def model_handler(self, state_dict_path: str, architecture: str, device: str,
                    batching: dict[str, Any], opts=None) -> PytorchModelHandlerTensor:
    return PytorchModelHandlerTensor(
        state_dict_path=state_dict_path,
        model_class=build_architecture,
        model_params={"architecture": architecture},
        device=device,
        inference_fn=detection_inference_fn,
        **batching)

  def format_prediction(self, opts) -> beam.DoFn:
    return FormatPrediction()

  # optimize: the base's, none only (optimizations.NONE_ONLY says why)

  def example_from_line(self, line: bytes, opts) -> torch.Tensor:
    return images.example_from_line(line, preprocess, opts)

  def prediction_logits(self, model: torch.nn.Module, examples: list[torch.Tensor],
                        device) -> torch.Tensor:
    """[batch, MAX_DETECTIONS]: each image's top detection scores, highest first, zero-padded.
    A detector has no class logits: these scores are what its predictions are kept by, so
    their largest difference is the agreement check's figure; argmax over them is always
    column 0, so the check's 'agreement' says nothing for this task."""
    with torch.no_grad():
      outputs = model([example.to(device) for example in examples])
    table = torch.zeros(len(outputs), MAX_DETECTIONS, device=device)
    for row, output in zip(table, outputs):
      scores = output["scores"].float().sort(descending=True).values[:MAX_DETECTIONS]
      row[:len(scores)] = scores
    return table


TASK = ObjectDetection()
