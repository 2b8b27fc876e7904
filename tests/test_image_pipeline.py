"""End to end: the image classification pipeline on the DirectRunner's engine."""
import json

import torch

from pipelines.worker import images
from pipelines.worker.models import load_model
from pipelines.worker.tasks import image_classification
from tests.conftest import run_pipeline


def _images(data_dir):
  return (data_dir / "images.txt").read_text().split()


def test_predictions_match_plain_pytorch_and_metrics_add_up(tmp_path, models_dir, data_dir):
  paths = _images(data_dir)[:7]
  out = run_pipeline(tmp_path, paths, task="image_classification", architecture="resnet18",
                     models_dir=models_dir, batch_size=3)
  metrics = out["record"].metrics

  model = load_model(models_dir / "resnet18.pth", "resnet18")
  with torch.no_grad():
    logits = model(torch.stack([image_classification.preprocess(
        images.read_bytes(p)) for p in paths]))
  expected = {(p, image_classification.top1(row)) for p, row in zip(paths, logits)}
  predictions = [json.loads(line) for line in out["predictions"]]
  assert {(row["input"], row["class"]) for row in predictions} == expected
  assert out["dead_letters"] == []
  assert metrics["num_inferences"] == len(paths)
  assert metrics["sum_inference_request_batch_size"] == metrics["num_inferences"]
  assert metrics["num_batches"] >= 3  # batch size 3 caps every batch
  assert metrics["mean_inference_request_batch_size"] <= 3
  assert metrics["mean_load_model_latency_milli_secs"] > 0
  assert metrics["mean_inference_batch_latency_micro_secs"] > 0
  assert out["record"].metadata["device_used"] == "CPU"
  assert out["record"].metadata["weights"] == "random"
  assert sum(out["record"].latency_histogram.values()) == metrics["num_batches"]
  # Versions, threads and host come from the worker (here the same process as the launcher).
  import socket
  meta = out["record"].metadata
  assert meta["versions"]["torch"] == torch.__version__
  assert meta["versions"]["cuda"] == (torch.version.cuda or "none")
  assert meta["torch_threads"] == torch.get_num_threads()
  assert meta["hostname"] == socket.gethostname() == meta["launcher_hostname"]


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
  metrics = out["record"].metrics
  dead = [json.loads(line) for line in out["dead_letters"]]

  assert len(out["predictions"]) == len(good)
  assert {d["input"]: d["stage"] for d in dead} == {
      str(truncated): "decode", "": "decode", str(tmp_path / "missing.jpg"): "decode",
      str(not_an_image): "decode"}
  reasons = {d["input"]: d["reason"] for d in dead}
  assert "truncated" in reasons[str(truncated)]
  assert reasons[""] == "empty line: no image path"
  assert reasons[str(tmp_path / "missing.jpg")] == "file not found"
  assert reasons[str(not_an_image)].startswith("not an image file")
  assert "BytesIO" not in reasons[str(not_an_image)]
  assert metrics["dead_lettered"] == 4
  assert metrics["num_inferences"] == len(lines) - metrics["dead_lettered"]
  assert metrics["sum_inference_request_batch_size"] == metrics["num_inferences"]


def pathlib_bytes(path):
  with open(path, "rb") as f:
    return f.read()


def test_a_batch_that_fails_inference_is_dead_lettered_per_input(models_dir):
  """Beam's real failed_inferences output, turned into one dead letter per lost input."""
  import apache_beam as beam
  from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
  from apache_beam.testing.util import assert_that, equal_to

  from pipelines.runners import local_engine
  from pipelines.worker import dead_letter
  from pipelines.worker.handler import BenchmarkModelHandler

  path = str(models_dir / "resnet18.pth")
  handler = KeyedModelHandler(BenchmarkModelHandler(
      image_classification.TASK.model_handler(path, "resnet18", "CPU",
                                         {"min_batch_size": 2, "max_batch_size": 2}),
      device="CPU", state_dict_path=path, telemetry_reader=lambda: None))
  with beam.Pipeline(runner=local_engine()) as p:
    # Two tensors of different shapes cannot be stacked into one batch.
    examples = p | beam.Create([("a.jpg", torch.zeros(3, 224, 224)),
                                ("b.jpg", torch.zeros(3, 10, 10))])
    _, failed = examples | RunInference(handler).with_exception_handling()
    dead = (failed.failed_inferences | beam.FlatMap(dead_letter.from_failed_batch)
            | beam.Map(lambda d: (d["input"], d["stage"], d["reason"][:40])))
    reason = "RuntimeError('stack expects each tensor "
    assert_that(dead, equal_to([("a.jpg", "inference", reason), ("b.jpg", "inference", reason)]))


def test_a_run_where_every_input_is_bad_is_a_failed_run(tmp_path, models_dir):
  out = run_pipeline(tmp_path, ["", str(tmp_path / "missing.jpg")], task="image_classification",
                     architecture="resnet18", models_dir=models_dir, batch_size=2)
  record = out["record"]
  assert record.status == "failed"
  assert record.error == "no inferences ran (2 inputs dead-lettered)"
  assert len(out["dead_letters"]) == 2


def test_a_jpeg_cut_inside_its_header_is_reported_truncated_not_unidentified(data_dir):
  """Image.open reads the header only; a JPEG cut before its scan data fails every format
  plugin alike, which Pillow reports as 'cannot identify image file'."""
  import pytest
  jpeg = open(_images(data_dir)[0], "rb").read()
  for cut in (4, 100, 300):
    with pytest.raises(images.BadImage, match=r"^corrupt or truncated JPEG image: its header"):
      images.decode(jpeg[:cut], None, short_side=None)
  with pytest.raises(images.BadImage, match=r"^corrupt or truncated JPEG image: image file is "):
    images.decode(jpeg[:len(jpeg) // 2], None, short_side=None)  # cut in the scan data
  with pytest.raises(images.BadImage, match=r"^not an image file \(11 bytes"):
    images.decode(b"hello world", None, short_side=None)


# --- --decode device: the batch decoded on the model's device (here the CPU) -----------------

def _kit(out) -> dict[str, int]:
  from pipelines.worker import beam_metrics
  return beam_metrics.kit_counters(out["raw"])


def test_device_decode_predicts_as_cpu_decode_and_says_where_it_decoded(tmp_path, models_dir,
                                                                       data_dir):
  paths = _images(data_dir)
  runs = {decode: run_pipeline(tmp_path / decode, paths, task="image_classification",
                               architecture="resnet18", models_dir=models_dir, batch_size=4,
                               beam_args=(f"--decode={decode}",))
          for decode in ("cpu", "device")}
  device, cpu = runs["device"], runs["cpu"]
  assert sorted(device["predictions"]) == sorted(cpu["predictions"])  # every image, same class
  assert len(device["predictions"]) == len(paths) and device["dead_letters"] == []
  metrics = device["record"].metrics
  assert metrics["num_inferences"] == len(paths) and metrics["dead_lettered_after_batching"] == 0
  # where it decoded, per batch: the launcher's metadata.decode
  assert _kit(device)["decoded_on_cpu"] == metrics["num_batches"]
  assert "decoded_with_pil" not in _kit(device) and "decoded_on_cuda" not in _kit(device)
  assert _kit(cpu)["decoded_with_pil"] == cpu["record"].metrics["num_batches"]
  assert "decoded_on_cpu" not in _kit(cpu)
  # Beam's input bytes: the files themselves (counted without walking them byte by byte), and
  # the keys, which Beam's KeyedModelHandler adds pickled
  files = sum(len(pathlib_bytes(p)) for p in paths)
  assert files < metrics["sum_inference_request_batch_byte_size"] < files + 200 * len(paths)

  # The logits, through the task's own steps (what the agreement check and perf run): measured
  # on these 10 images with resnet18's random weights, max |logit diff| 6.5e-04 (logits up to
  # 4.5; the smallest top-1/top-2 gap 0.15), from resize differences of at most one 8-bit level
  # (test_device_decode.py).
  from pipelines.worker.options import BenchmarkOptions
  model = load_model(models_dir / "resnet18.pth", "resnet18")
  task = image_classification.TASK
  logits = {}
  for decode in ("cpu", "device"):
    opts = BenchmarkOptions([f"--decode={decode}"])
    examples = [task.example_from_line(p.encode(), opts) for p in paths]
    logits[decode] = task.prediction_logits(model, examples, "cpu")
  assert logits["device"].shape == (len(paths), 1000)
  assert (logits["device"] - logits["cpu"]).abs().max().item() < 5e-3
  assert torch.equal(logits["device"].argmax(1), logits["cpu"].argmax(1))


def test_device_decode_dead_letters_each_bad_file_alone(tmp_path, models_dir, data_dir):
  """A JPEG corrupted in its middle passes every per-file check and fails in its batch's decode:
  only it is dead-lettered, after batching. Everything the parse step refuses it refuses as the
  cpu path does, with the same reasons."""
  from PIL import Image

  from tests.test_device_decode import corrupt_in_the_middle
  good = _images(data_dir)[:5]
  corrupt = tmp_path / "corrupt.jpg"
  corrupt.write_bytes(corrupt_in_the_middle(pathlib_bytes(good[0])))
  truncated = tmp_path / "truncated.jpg"
  truncated.write_bytes(pathlib_bytes(good[0])[:20000])  # cut in its scan data
  not_an_image = tmp_path / "notes.jpg"
  not_an_image.write_text("this is not a JPEG")
  strip = tmp_path / "strip.png"
  Image.new("L", (1, 30000)).save(strip)
  large = tmp_path / "large.jpg"
  Image.new("RGB", (2000, 1000)).save(large)
  bad = [str(truncated), str(not_an_image), str(tmp_path), str(strip), str(large)]
  lines = good[:2] + [str(corrupt)] + bad + good[2:]
  runs = {decode: run_pipeline(tmp_path / decode, lines, task="image_classification",
                               architecture="resnet18", models_dir=models_dir, batch_size=4,
                               beam_args=(f"--decode={decode}", "--max_image_pixels=1500000"))
          for decode in ("cpu", "device")}
  dead = {decode: {d["input"]: d for d in map(json.loads, out["dead_letters"])}
          for decode, out in runs.items()}
  assert set(dead["device"]) == set(dead["cpu"]) == {str(corrupt), *bad}
  for path in bad[1:]:  # refused in the parse step, as the cpu path refuses them
    assert dead["device"][path] == dead["cpu"][path], path
  # the truncated one too, by the cheap check rather than a decode
  assert dead["device"][str(truncated)]["reason"] == (
      "corrupt or truncated JPEG image: no end-of-image marker after its scan data (20000 bytes)")
  assert dead["cpu"][str(truncated)]["reason"].startswith(
      "corrupt or truncated JPEG image: image file is truncated")
  assert dead["device"][str(large)]["reason"] == (
      "image too large: 2000x1000 is 2 megapixels, the limit is 1.5 (--max_image_pixels)")
  assert dead["device"][str(corrupt)] == {
      "input": str(corrupt), "stage": "decode",
      "reason": "corrupt or truncated JPEG image: Invalid JPEG file structure: two SOF markers"}
  assert dead["cpu"][str(corrupt)]["reason"].startswith("corrupt or truncated JPEG image: ")
  assert sorted(runs["device"]["predictions"]) == sorted(runs["cpu"]["predictions"])
  assert len(runs["device"]["predictions"]) == len(good)
  metrics, cpu_metrics = runs["device"]["record"].metrics, runs["cpu"]["record"].metrics
  # the corrupt file reached the model call: Beam counted it, and so did the kit
  assert metrics["num_inferences"] == len(good) + 1
  assert metrics["dead_lettered"] == len(bad) + 1
  assert metrics["dead_lettered_after_batching"] == 1
  assert (metrics["num_inferences"] - metrics["dead_lettered_after_batching"]
          + metrics["dead_lettered"]) == len(lines)
  assert cpu_metrics["num_inferences"] == len(good)
  assert cpu_metrics["dead_lettered_after_batching"] == 0
