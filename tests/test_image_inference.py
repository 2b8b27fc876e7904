"""Image classification's inference function (image_inference.py), on the CPU: both decode
modes give Beam's default function's logits, brought to the CPU in one copy per batch;
--pin_memory pins nothing without CUDA; decoding follows the model, never Beam's device name."""
from __future__ import annotations

import pytest
import torch
from apache_beam.ml.inference.pytorch_inference import default_tensor_inference_fn

from pipelines.worker import dead_letter, image_inference, images
from pipelines.worker.models import load_model
from pipelines.worker.tasks import image_classification
from tests.test_device_decode import corrupt_in_the_middle


@pytest.fixture(scope="module")
def model(models_dir):
  return load_model(models_dir / "resnet18.pth", "resnet18").eval()


@pytest.fixture(scope="module")
def files(data_dir) -> list[bytes]:
  return [images.read_bytes(p) for p in (data_dir / "images.txt").read_text().split()[:4]]


def test_cpu_decode_gives_beams_logits_on_the_cpu_in_one_copy(model, files):
  batch = [image_classification.preprocess(f) for f in files]
  ours = image_inference.inference_fn("cpu")(batch, model, torch.device("cpu"), {}, "m.pth")
  beams = default_tensor_inference_fn(batch, model, torch.device("cpu"), {}, "m.pth")
  assert [r.example for r in ours] == batch and {r.model_id for r in ours} == {"m.pth"}
  assert torch.equal(torch.stack([r.inference for r in ours]),
                     torch.stack([r.inference for r in beams]))
  assert all(r.inference.device.type == "cpu" and r.inference.dtype == torch.float32
             for r in ours)
  # rows of one tensor: the batch came back in one copy, not one per element
  assert len({r.inference.untyped_storage().data_ptr() for r in ours}) == 1


def test_pin_memory_without_cuda_pins_nothing_and_changes_nothing(model, files, monkeypatch):
  batch = [image_classification.preprocess(f) for f in files]
  plain = image_inference.inference_fn("cpu", pin_memory=False)(batch, model, "cpu")

  def refuse(self, *args, **kwargs):
    raise AssertionError("pinned on a machine without CUDA")
  monkeypatch.setattr(torch.Tensor, "pin_memory", refuse)
  pinned = image_inference.inference_fn("cpu", pin_memory=True)(batch, model, "cpu")
  assert all(torch.equal(a.inference, b.inference) for a, b in zip(plain, pinned))


def test_device_decode_fails_only_the_bad_item_and_follows_the_model(model, files):
  """Beam names the device it was asked for; the model's weights say where it is: a CPU model
  decodes on the CPU even when Beam's device says cuda."""
  encoded = [image_classification.encoded(f) for f in files]
  encoded[1] = image_classification.encoded(corrupt_in_the_middle(files[1]))
  results = image_inference.inference_fn("device")(encoded, model, torch.device("cuda"))
  assert [r.example is e for r, e in zip(results, encoded)] == [True] * 4
  assert results[1].inference == dead_letter.Failed(
      "decode", "corrupt or truncated JPEG image: Invalid JPEG file structure: two SOF markers")
  cpu = image_inference.inference_fn("cpu")(
      [image_classification.preprocess(f) for i, f in enumerate(files) if i != 1], model, "cpu")
  for got, want in zip([r for i, r in enumerate(results) if i != 1], cpu):
    assert image_classification.top1(got.inference) == image_classification.top1(want.inference)
    assert (got.inference - want.inference).abs().max().item() < 1e-2


def test_a_batch_where_nothing_decodes_runs_no_model():
  def no_model(_):
    raise AssertionError("the model ran on an empty batch")
  no_model.parameters = lambda: iter(())
  results = image_inference.infer([torch.zeros(10, dtype=torch.uint8)], no_model, "cpu",
                                  decode="device")
  assert isinstance(results[0].inference, dead_letter.Failed)


def test_encoded_files_are_counted_in_bytes_without_a_python_object_per_byte(files):
  """Beam's get_num_bytes walks a tensor element by element: 0.16 s for a 100 kB file."""
  handler = image_inference.EncodedImagesHandler(state_dict_path="m.pth",
                                                 model_class=torch.nn.Identity)
  batch = [image_classification.encoded(f) for f in files]
  assert handler.get_num_bytes(batch) == sum(len(f) for f in files)


def test_an_unknown_decode_is_refused():
  with pytest.raises(ValueError, match="unknown decode 'gpu'; known: cpu, device"):
    image_inference.inference_fn("gpu")
