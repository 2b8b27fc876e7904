"""Fault injection: hostile input and broken results stores, through the real launcher.

Every run that starts must end with a record where num_inferences == inputs - dead_lettered;
every run that cannot start must say why in one line and leave nothing behind. Full and
read-only disks are real: a small tmpfs mounted for the test.
"""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import subprocess

import pytest
from PIL import Image

from pipelines import data, run
from pipelines.matrix import REPO_ROOT
from pipelines.record import build as record_build
from pipelines.record import schema, store

SMALL_MATRIX = REPO_ROOT / "tests" / "small-matrix.toml"


@pytest.fixture
def kit(tmp_path, models_dir, data_dir, monkeypatch):
  """Runs the launcher on the small matrix; returns (exit code, the run's record or None)."""
  monkeypatch.setenv("BENCHMARK_MATRIX", str(SMALL_MATRIX))
  for name in ("INFLUXDB_URL", "BIGQUERY_DATASET"):
    monkeypatch.delenv(name, raising=False)
  results = tmp_path / "results"

  def bench(name: str, *args: str, results_dir: pathlib.Path = results):
    def records() -> list[dict]:
      return store.load_all(results_dir) if results_dir.exists() else []
    before = {r.run_id for r in records()}
    code = run.main([name, "--models-dir", str(models_dir), "--data-dir", str(data_dir),
                     "--results-dir", str(results_dir), *args])
    # This run's record: two runs within one second sort by their random run ids.
    new = [r for r in records() if r.run_id not in before]
    return code, (new[-1] if new else None)
  bench.results = results
  return bench


def assert_accounted(record: dict, inputs: int, dead: int) -> None:
  metrics = record.metrics
  assert metrics["dead_lettered"] == dead
  assert metrics["num_inferences"] == inputs - dead
  assert record.plan["items"] == inputs


def dead_letters(results: pathlib.Path, record: dict) -> list[dict]:
  out = results / "runs" / record.run_id / "output"
  return [json.loads(line) for f in sorted(out.glob("dead_letter*"))
          for line in f.read_text().splitlines()]


def predictions(results: pathlib.Path, record: dict) -> list[dict]:
  out = results / "runs" / record.run_id / "output"
  return [json.loads(line) for f in sorted(out.glob("predictions*"))
          for line in f.read_text().splitlines()]


# --- 1. undecodable text is an input error, not a crashed run --------------------------------

def test_a_non_utf8_line_is_dead_lettered_and_the_rest_run(kit, tmp_path, data_dir):
  good = (data_dir / "sentences.txt").read_bytes().split(b"\n")[:5]
  source = tmp_path / "sentences.txt"
  source.write_bytes(b"\n".join(good[:2] + [b"Caf\xe9 au lait is hot."] + good[2:]) + b"\n")
  code, record = kit("small-bert", "--input", str(source))
  assert code == 0 and record.status == "succeeded"
  assert_accounted(record, inputs=6, dead=1)
  (dead,) = dead_letters(kit.results, record)
  assert dead["stage"] == "read"
  assert dead["reason"] == "not valid UTF-8: byte 0xe9 at offset 3"
  assert dead["input"] == "Caf\\xe9 au lait is hot."


def test_a_non_utf8_line_outside_items_does_not_matter(kit, tmp_path, data_dir):
  good = (data_dir / "sentences.txt").read_bytes().split(b"\n")[:4]
  source = tmp_path / "sentences.txt"
  source.write_bytes(b"\n".join(good + [b"\xff\xfe broken"]) + b"\n")
  code, record = kit("small-bert", "--input", str(source), "--items", "4")
  assert code == 0
  assert_accounted(record, inputs=4, dead=0)


def test_lines_split_on_newlines_only(kit, tmp_path, data_dir):
  good = (data_dir / "sentences.txt").read_text().splitlines()[:5]
  good[1] = good[1].replace(" ", " \u2028", 1)  # a line separator inside a sentence
  good[3] = good[3].replace(" ", " \f", 1)  # a form feed inside a sentence
  source = tmp_path / "sentences.txt"
  source.write_bytes("\r\n".join(good).encode() + b"\r\n")
  code, record = kit("small-bert", "--input", str(source))
  assert code == 0
  assert_accounted(record, inputs=5, dead=0)


# --- 2. a finished run never loses its results -------------------------------------------------

@contextlib.contextmanager
def tmpfs(folder: pathlib.Path, size: str):
  folder.mkdir(parents=True, exist_ok=True)
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                           capture_output=True, text=True)
  if mounted.returncode != 0:
    message = f"cannot mount a tmpfs here ({mounted.stderr.strip()}): needs root"
    if os.environ.get("CI"):
      pytest.fail(message)
    pytest.skip(message)
  try:
    yield folder
  finally:
    subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: pathlib.Path) -> None:
  with contextlib.suppress(OSError), open(folder / "filler", "wb") as f:
    while True:
      f.write(b"\0" * 65536)
      f.flush()


def remount_read_only(folder: pathlib.Path) -> None:
  subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)


@pytest.mark.parametrize("breakage", [fill, remount_read_only], ids=["disk_full", "read_only"])
def test_a_store_that_breaks_during_the_run_loses_nothing(kit, tmp_path, monkeypatch, capsys,
                                                          breakage):
  records = kit.results / "records"
  build = record_build.build

  def build_then_break(*args):  # the store breaks while the pipeline runs
    record = build(*args)
    breakage(records)
    return record

  monkeypatch.setattr(record_build, "build", build_then_break)
  monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "fallback"))
  (tmp_path / "fallback").mkdir()
  with tmpfs(records, "256k"):
    code, _ = kit("small-resnet")
    leftovers = [p.name for p in records.iterdir() if p.name != "filler"]
  assert code == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert err[-1].startswith("error: small-resnet: could not write the run record to")
  assert leftovers == []  # no partial record, no .tmp
  (saved,) = store.load_all(tmp_path / "fallback" / "beam-bench-results")
  assert str(tmp_path / "fallback") in err[-1]
  assert saved.status == "succeeded"
  assert_accounted(saved, inputs=6, dead=0)


def test_the_record_goes_to_stderr_when_no_folder_takes_it(kit, tmp_path, monkeypatch, capsys):
  records = kit.results / "records"
  build = record_build.build

  def build_then_fill(*args):
    record = build(*args)
    fill(records)
    return record

  monkeypatch.setattr(record_build, "build", build_then_fill)
  with tmpfs(records, "256k"), tmpfs(tmp_path / "fallback", "64k") as fallback:
    fill(fallback)
    monkeypatch.setattr("tempfile.tempdir", str(fallback))
    code, _ = kit("small-resnet")
  assert code == 1
  err = capsys.readouterr().err
  assert "the record's full JSON is printed above" in err.strip().splitlines()[-1]
  start = err.index('{\n  "benchmark"')
  record = schema.from_dict(json.loads(err[start:err.index("\n}\n", start) + 2]))
  assert_accounted(record, inputs=6, dead=0)


def test_an_unwritable_store_is_refused_before_any_work(kit, tmp_path, capsys):
  records = kit.results / "records"
  with tmpfs(records, "64k"):
    remount_read_only(records)
    code, _ = kit("small-resnet")
  assert code == 2
  (line,) = capsys.readouterr().err.strip().splitlines()
  assert "is not writable (Read-only file system)" in line
  assert not (kit.results / "runs").exists()


# --- 3. arguments are validated ----------------------------------------------------------------

@pytest.mark.parametrize("args", [["--items", "-1"], ["--items", "0"], ["--batch-size", "0"],
                                  ["--items", "many"], ["--itmes", "4"], ["--batch_size", "4"],
                                  ["--item", "4"]])
def test_bad_arguments_are_errors(kit, capsys, args):
  with pytest.raises(SystemExit) as exit_:
    kit("small-resnet", *args)
  assert exit_.value.code == 2
  err = capsys.readouterr().err
  assert "error:" in err
  assert not kit.results.exists()


def test_beams_own_flags_still_work(kit):
  code, record = kit("small-resnet", "--job_name=fault-test", "--items", "2")
  assert code == 0
  assert_accounted(record, inputs=2, dead=0)


def test_layout_flags_must_go_through_the_layout(kit, capsys):
  with pytest.raises(SystemExit) as exit_:
    kit("small-resnet", "--direct_num_workers=2")
  assert exit_.value.code == 2
  assert "use --layout/LAYOUT=PxT" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["directory", "binary", "missing"])
def test_a_bad_input_path_is_a_clear_error(kit, tmp_path, capsys, data_dir, kind):
  source = {"directory": tmp_path, "binary": data_dir / "images" / "image_00000.jpg",
            "missing": tmp_path / "nope.txt"}[kind]
  code, record = kit("small-resnet", "--input", str(source))
  assert code == 2 and record is None
  (line,) = capsys.readouterr().err.strip().splitlines()
  assert {"directory": "is a directory", "binary": "is a binary file",
          "missing": "does not exist"}[kind] in line
  assert "make data" not in line  # the hint is for the generated data only
  assert not (kit.results / "runs").exists()


def test_missing_default_data_hints_make_data(kit, tmp_path, capsys, models_dir):
  code = run.main(["small-resnet", "--data-dir", str(tmp_path / "none"), "--models-dir",
                   str(models_dir), "--results-dir", str(kit.results)])
  assert code == 2
  assert "run `make data` first" in capsys.readouterr().err


def test_a_run_that_cannot_start_leaves_no_run_folder(kit, tmp_path, capsys):
  code, _ = kit("small-resnet", "--models-dir", str(tmp_path / "no-models"))
  assert code == 2
  assert "run `make models` first" in capsys.readouterr().err
  assert not (kit.results / "runs").exists()


# --- 4. concurrent runs don't interfere --------------------------------------------------------

def test_generated_lists_never_shrink(tmp_path, models_dir):
  vocab = models_dir / "bert-uncased-vocab.txt"
  images = data.write_images(tmp_path, 5)
  sentences = data.write_sentences(tmp_path, 5, vocab)
  first = images.read_text(), sentences.read_text()
  data.write_images(tmp_path, 2)  # another shell's `make data N=2`
  data.write_sentences(tmp_path, 2, vocab)
  assert (images.read_text(), sentences.read_text()) == first
  data.write_sentences(tmp_path, 7, vocab)
  assert sentences.read_text().startswith(first[1])  # growing keeps the first items
  assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_running_benchmark_reads_its_own_copy(kit, tmp_path, data_dir):
  source = tmp_path / "images.txt"
  source.write_text((data_dir / "images.txt").read_text())
  code, record = kit("small-resnet", "--input", str(source), "--items", "4")
  source.write_text("")  # rewritten after launch: the run kept its copy
  assert record.plan["input"] == str(source)
  copy = pathlib.Path(record.metadata["input_copy"])
  assert copy.parent == kit.results / "runs" / record.run_id
  assert len(copy.read_text().splitlines()) == 4


# --- 6. readable, unambiguous outputs ----------------------------------------------------------

def test_paths_with_commas_and_huge_images(kit, tmp_path, data_dir):
  first = pathlib.Path((data_dir / "images.txt").read_text().split()[0])
  comma = tmp_path / "a, b \"quoted\".jpg"
  comma.write_bytes(first.read_bytes())
  huge = tmp_path / "huge.png"
  Image.new("L", (8000, 6500)).save(huge)  # 52 megapixels, a few hundred kB on disk
  notes = tmp_path / "notes.jpg"
  notes.write_text("not a JPEG")
  source = tmp_path / "images.txt"
  source.write_text(f"{comma}\n{huge}\n{notes}\n{first}\n")
  code, record = kit("small-resnet", "--input", str(source))
  assert code == 0
  assert_accounted(record, inputs=4, dead=2)
  assert {p["input"] for p in predictions(kit.results, record)} == {str(comma), str(first)}
  reasons = {d["input"]: d["reason"] for d in dead_letters(kit.results, record)}
  assert reasons[str(huge)] == ("image too large: 8000x6500 is 52 megapixels, the limit is 50 "
                                "(--max_image_pixels)")
  assert reasons[str(notes)] == "not an image file (10 bytes Pillow cannot identify)"


def test_the_pixel_limit_is_configurable(kit):
  code, record = kit("small-resnet", "--max_image_pixels=500000")
  assert code == 0
  # The generated set cycles through 12 sizes; the first six include 1024x768 and 768x1024
  # (786k pixels), 1024x683 (699k) and 800x800 (640k): dead-lettered, the rest run.
  assert_accounted(record, inputs=6, dead=4)


def test_a_failed_run_keeps_one_line_and_its_whole_error_in_a_log(kit, tmp_path, models_dir,
                                                                  data_dir):
  """A model that cannot be loaded fails the run inside Beam's workers; Beam wraps the worker's
  traceback in its own message (kilobytes). The record keeps the first line and the cause; the
  whole text is in a log beside the records."""
  broken = tmp_path / "models"
  shutil.copytree(models_dir, broken)
  (broken / "resnet18.pth").write_bytes(b"not a state dict")
  code, record = kit("small-resnet", "--models-dir", str(broken))  # the later folder wins
  assert code == 1 and record.status == "failed"
  assert "\n" not in record.error and len(record.error) <= 400, record.error
  log = pathlib.Path(record.metadata["error_log"])
  assert log.parent == kit.results / "logs" and "Traceback" in log.read_text()
  assert len(log.read_text()) > len(record.error)
