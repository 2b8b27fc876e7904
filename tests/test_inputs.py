"""Hostile and unusual inputs through the real launcher: special files, absurd images, rotated
and 16-bit images, sentences that hold BERT's special tokens, URLs as input lists, and the
temporary files a run leaves behind. The image inputs in --decode device go through the
pipeline itself (run_pipeline)."""
from __future__ import annotations

import json
import os
import pathlib
import resource
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.matrix import REPO_ROOT
from pipelines.record import store
from pipelines.worker import images, synthetic_images
from pipelines.worker.tasks import image_classification
from tests import test_faults
from tests.test_faults import SMALL_MATRIX, assert_accounted, dead_letters, predictions

kit = test_faults.kit  # the launcher on the small matrix (a fixture)

# The launcher's data segment is capped in the test below: a regression that reads /dev/zero
# or resizes a 1x30000 strip to 7.7 gigapixels gets a MemoryError, not the machine's OOM killer.
MEMORY_CAP = 3 * 1024**3
HANG_S = 240  # a FIFO opened for reading blocks until a writer comes: never, here


def _cap_memory():
  resource.setrlimit(resource.RLIMIT_DATA, (MEMORY_CAP, MEMORY_CAP))


def launch_capped(tmp_path, models_dir, data_dir, *args: str) -> subprocess.CompletedProcess:
  """The launcher in a child process with a memory cap and a time limit."""
  env = {**os.environ, "BENCHMARK_MATRIX": str(SMALL_MATRIX)}
  for name in ("INFLUXDB_URL", "BIGQUERY_DATASET"):
    env.pop(name, None)
  child = subprocess.Popen(
      [sys.executable, "-m", "pipelines.run", *args, "--models-dir", str(models_dir),
       "--data-dir", str(data_dir), "--results-dir", str(tmp_path / "results")],
      cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      preexec_fn=_cap_memory, start_new_session=True)
  try:
    out, err = child.communicate(timeout=HANG_S)
  except subprocess.TimeoutExpired:
    os.killpg(child.pid, signal.SIGKILL)
    child.communicate()
    pytest.fail(f"the run hung for {HANG_S} s")
  return subprocess.CompletedProcess(child.args, child.returncode, out, err)


def test_special_files_and_absurd_images_are_dead_lettered_unread(tmp_path, models_dir,
                                                                  data_dir):
  good = (data_dir / "images.txt").read_text().split()[:2]
  fifo = tmp_path / "photo.jpg"
  os.mkfifo(fifo)
  strip = tmp_path / "strip.png"
  Image.new("L", (1, 30000)).save(strip)  # 202 bytes; resized for the model: 256x7680000
  assert strip.stat().st_size < 1000
  source = tmp_path / "images.txt"
  source.write_text("\n".join([good[0], str(fifo), "/dev/zero", "/dev/urandom", str(strip),
                               str(tmp_path), good[1]]) + "\n")
  result = launch_capped(tmp_path, models_dir, data_dir, "small-resnet", "--input", str(source))
  assert result.returncode == 0, result.stderr[-3000:]
  (record,) = store.load_all(tmp_path / "results")
  assert_accounted(record, inputs=7, dead=5)
  reasons = {d["input"]: d["reason"] for d in dead_letters(tmp_path / "results", record)}
  assert reasons == {
      str(fifo): "not a regular file (fifo)",
      "/dev/zero": "not a regular file (character device)",
      "/dev/urandom": "not a regular file (character device)",
      str(tmp_path): "not a regular file (directory)",
      str(strip): "aspect ratio too extreme: 1x30000 resizes to 256x7680000 (1966 megapixels) "
                  "before the 224x224 crop, the limit is 50 (--max_image_pixels)",
  }


def test_reads_stop_at_the_byte_limit(kit, tmp_path, data_dir):
  good = pathlib.Path((data_dir / "images.txt").read_text().split()[0])
  limit = good.stat().st_size + 10
  padded = tmp_path / "padded.jpg"  # a valid JPEG with trailing bytes, one over the limit
  padded.write_bytes(good.read_bytes() + b"\0" * 11)
  source = tmp_path / "images.txt"
  source.write_text(f"{good}\n{padded}\n")
  code, record = kit("small-resnet", "--input", str(source), f"--max_image_bytes={limit}")
  assert code == 0
  assert_accounted(record, inputs=2, dead=1)
  (dead,) = dead_letters(kit.results, record)
  assert dead == {"input": str(padded), "stage": "decode",
                  "reason": f"file too large: {limit + 1} bytes, the limit is {limit} "
                            "(--max_image_bytes)"}


def _turned_and_16_bit(tmp_path) -> list[tuple[pathlib.Path, pathlib.Path]]:
  """(image, reference) pairs: a photo stored sideways with an EXIF orientation and the same
  decoded pixels turned upright; a 16-bit mid-grey PNG and TIFF and the 8-bit grey."""
  photo = synthetic_images.image(3, 3)  # 640 x 480
  pairs = []
  for orientation, upright in ((6, Image.Transpose.ROTATE_270), (8, Image.Transpose.ROTATE_90)):
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored = tmp_path / f"orientation-{orientation}.jpg"
    photo.save(stored, exif=exif.tobytes(), quality=90)
    reference = tmp_path / f"upright-{orientation}.png"  # the same decoded pixels, turned
    Image.open(stored).transpose(upright).save(reference)
    pairs.append((stored, reference))
  grey16 = Image.fromarray(np.full((300, 400), 128 * 257, dtype=np.uint16))
  assert grey16.mode == "I;16"
  grey16.save(tmp_path / "grey16.png")
  grey16.save(tmp_path / "grey16.tif")
  Image.new("L", (400, 300), 128).save(tmp_path / "grey8.png")
  return pairs + [(tmp_path / "grey16.png", tmp_path / "grey8.png"),
                  (tmp_path / "grey16.tif", tmp_path / "grey8.png")]


def test_orientation_and_16_bit_greys_are_seen_as_a_viewer_shows_them(kit, tmp_path):
  """A phone photo stored sideways with an EXIF orientation, and a 16-bit mid-grey, give the
  tensors (and so the predictions) of the upright and the 8-bit image."""
  pairs = _turned_and_16_bit(tmp_path)
  for image, reference in pairs:
    assert torch.equal(*(image_classification.preprocess(
        images.read_bytes(str(p))) for p in (image, reference))), image.name
  source = tmp_path / "images.txt"
  paths = sorted({str(p) for pair in pairs for p in pair})
  source.write_text("\n".join(paths) + "\n")
  code, record = kit("small-resnet", "--input", str(source))
  assert code == 0
  assert_accounted(record, inputs=len(paths), dead=0)
  classes = {p["input"]: p["class"] for p in predictions(kit.results, record)}
  for image, reference in pairs:
    assert classes[str(image)] == classes[str(reference)], image.name


def test_device_decode_sees_them_as_the_cpu_path_does(tmp_path, models_dir):
  """--decode device (here on the CPU): the cpu path's tensors, within the one 8-bit level its
  resize may differ by (test_device_decode.py), for the turned photos and the 16-bit greys, and
  their references' predictions."""
  from pipelines.worker import device_decode
  from tests.conftest import run_pipeline
  from tests.test_device_decode import ONE_LEVEL
  pairs = _turned_and_16_bit(tmp_path)
  paths = sorted({str(p) for pair in pairs for p in pair})
  decoded, failed = device_decode.decode_batch([images.read_bytes(p) for p in paths], "cpu")
  assert failed == {}
  for path, got in zip(paths, decoded):
    want = image_classification.preprocess(images.read_bytes(path))
    assert (got - want).abs().max().item() <= ONE_LEVEL + 1e-6, path
  out = run_pipeline(tmp_path / "run", paths, task="image_classification",
                     architecture="resnet18", models_dir=models_dir, batch_size=3,
                     beam_args=("--decode=device",))
  assert out["dead_letters"] == [] and out["record"].metrics["num_inferences"] == len(paths)
  classes = {p["input"]: p["class"] for p in map(json.loads, out["predictions"])}
  for image, reference in pairs:
    assert classes[str(image)] == classes[str(reference)], image.name


def test_device_decode_refuses_special_files_and_absurd_images_unread(tmp_path, models_dir,
                                                                      data_dir):
  """The parse step's checks in --decode device, in this process: nothing is opened that is not
  a regular file, nothing is decoded whose header is too large."""
  from tests.conftest import run_pipeline
  good = (data_dir / "images.txt").read_text().split()[:2]
  fifo = tmp_path / "photo.jpg"
  os.mkfifo(fifo)
  strip = tmp_path / "strip.png"
  Image.new("L", (1, 30000)).save(strip)
  lines = [good[0], str(fifo), "/dev/zero", str(strip), str(tmp_path), good[1]]
  out = run_pipeline(tmp_path / "run", lines, task="image_classification",
                     architecture="resnet18", models_dir=models_dir, batch_size=2,
                     beam_args=("--decode=device",))
  reasons = {d["input"]: d["reason"] for d in map(json.loads, out["dead_letters"])}
  assert reasons == {
      str(fifo): "not a regular file (fifo)",
      "/dev/zero": "not a regular file (character device)",
      str(tmp_path): "not a regular file (directory)",
      str(strip): "aspect ratio too extreme: 1x30000 resizes to 256x7680000 (1966 megapixels) "
                  "before the 224x224 crop, the limit is 50 (--max_image_pixels)",
  }
  assert out["record"].metrics["num_inferences"] == 2
  assert out["record"].metrics["dead_lettered_after_batching"] == 0


def test_sentences_holding_special_tokens(kit, tmp_path, data_dir):
  good = (data_dir / "sentences.txt").read_text().splitlines()[:2]
  premasked = ["The cat sat on the [MASK].", "hello [MASK]"]
  lowercase = "A [mask] in lower case is text."  # the tokenizer matches [MASK] exactly
  refused = ["Two [MASK] and [MASK].", "First part [SEP] second part.", "An [UNK] word here.",
             "glued[CLS]together words"]
  source = tmp_path / "sentences.txt"
  source.write_text("\n".join(good + premasked + [lowercase] + refused) + "\n")
  code, record = kit("small-bert", "--input", str(source))
  assert code == 0
  assert_accounted(record, inputs=9, dead=4)
  inputs = {p["input"] for p in predictions(kit.results, record)}
  assert set(premasked) <= inputs  # used as is: no 'hello [MASK]]'
  assert "A [mask] in lower case is [MASK]." in inputs
  reasons = {d["input"]: d["reason"] for d in dead_letters(kit.results, record)}
  special = "the tokenizer would read them as control tokens, not text"
  assert reasons == {
      refused[0]: "holds 2 [MASK] tokens: a sentence may give at most one (it is then used "
                  "as is)",
      refused[1]: f"holds BERT's special token(s) [SEP]: {special}",
      refused[2]: f"holds BERT's special token(s) [UNK]: {special}",
      refused[3]: f"holds BERT's special token(s) [CLS]: {special}",
  }


def test_a_url_as_local_input_is_named_as_typed(kit, capsys):
  code, record = kit("small-resnet", "--input", "gs://nope/list.txt")
  assert code == 2 and record is None
  (line,) = capsys.readouterr().err.strip().splitlines()
  assert line.startswith("error: small-resnet: gs://nope/list.txt is not a local file: a local "
                         "run reads its input list from this machine")
  assert "RUNNER=DataflowRunner" in line
  assert not (kit.results / "runs").exists()


def test_bert_workers_leave_nothing_in_the_temporary_folder(kit, tmp_path, monkeypatch):
  fresh = tmp_path / "tmp"
  fresh.mkdir()
  monkeypatch.setenv("TMPDIR", str(fresh))  # the SDK worker processes
  monkeypatch.setattr("tempfile.tempdir", str(fresh))  # this process (gettempdir caches)
  code, record = kit("small-bert", "--layout", "2x1")
  assert code == 0
  assert record.plan["processes"] == 2
  assert sorted(p.name for p in fresh.iterdir()) == []
