"""`make data` and the data a benchmark target generates: only the benchmark's own input list, at
the count its run takes; refused with one line, before anything is written, past the free disk;
an unchanged list is not rewritten."""
from __future__ import annotations

import logging
import pathlib

import pytest

from pipelines import data, matrix


@pytest.fixture
def vocab(tmp_path) -> pathlib.Path:
  path = tmp_path / "vocab.txt"
  path.write_text("[PAD]\nthe\ncat\nsat\non\nmat\n##s\n")
  return path


def test_a_benchmark_gets_only_its_tasks_list_at_its_own_count():
  every = matrix.load()
  assert data.counts(None, ["resnet101"]) == {"images.txt": every["resnet101"].local_items}
  assert data.counts(None, ["faster-rcnn-gpu"]) == {"scenes.txt": 64}
  assert data.counts("share", ["bert-base"]) == {"sentences.txt": 200}  # 50,000 / 250 workers
  assert data.counts(100_000, ["resnet101"]) == {"images.txt": 100_000}
  # each list at the most any of the named benchmarks takes
  assert data.counts(None, ["resnet101", "blip-clip-captioning", "bert-base"]) == {
      "images.txt": 256, "sentences.txt": 512}
  # the share depends on the profile's worker count: Beam's resnet152 job has 75 workers, as
  # the matrix; Beam's resnet152-gpu job has 30, and the GPU benchmark repeats its 512
  # distinct images past that (matrix `local.distinct`): 512 are generated either way
  assert data.counts("share", ["resnet152"], ["beam"]) == {"images.txt": 667}
  assert matrix.get("resnet152-gpu").distinct_items == 512
  assert data.counts("share", ["resnet152-gpu"], ["beam"]) == {"images.txt": 512}
  assert data.counts(None, ["resnet152-gpu"]) == {"images.txt": 512}
  assert data.counts(100, ["resnet152-gpu"]) == {"images.txt": 100}


def test_the_list_is_the_tasks_input_file():
  for bench in matrix.load().values():
    assert list(data.counts(None, [bench.name])) == [bench.task_spec.input_file]


def test_make_data_alone_makes_every_list_at_the_largest_count():
  every = matrix.load().values()
  largest = max(b.files_for(None) for b in every)
  assert data.counts(None) == dict.fromkeys(("images.txt", "scenes.txt", "sentences.txt"), largest)
  assert data.counts(7) == dict.fromkeys(("images.txt", "scenes.txt", "sentences.txt"), 7)
  assert set(data.counts("share").values()) == {max(b.share_items for b in every)}


def test_a_benchmark_run_generates_only_its_list(tmp_path, vocab, caplog):
  caplog.set_level(logging.INFO)
  out = tmp_path / "data"
  assert data.main(["--out", str(out), "--vocab", str(vocab), "--benchmark", "bert-base",
                    "--items", "9"]) == 0
  assert sorted(p.name for p in out.iterdir()) == ["sentences.txt"]
  assert len((out / "sentences.txt").read_text().splitlines()) == 9
  assert f"{out}/sentences.txt: 9 more sentences for bert-base at N=9, about" in caplog.text


def test_an_unchanged_list_is_not_rewritten(tmp_path, vocab):
  listing = data.write_sentences(tmp_path, 5, vocab)
  images = data.write_images(tmp_path, 2)
  before = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in (listing, images)]
  data.write_sentences(tmp_path, 3, vocab)  # lists only grow: the same 5 lines
  data.write_images(tmp_path, 2)
  assert [(p.stat().st_ino, p.stat().st_mtime_ns) for p in (listing, images)] == before
  data.write_sentences(tmp_path, 6, vocab)
  assert listing.stat().st_ino != before[0][0] and len(listing.read_text().splitlines()) == 6


def test_past_the_free_disk_nothing_is_generated(tmp_path, vocab, capsys):
  out = tmp_path / "data"
  n = data.free_bytes(tmp_path) // data.FILE_BYTES["images.txt"] + 1
  code = data.main(["--out", str(out), "--vocab", str(vocab), "--benchmark", "resnet101",
                    "--items", str(n)])
  assert code == 2
  [line] = capsys.readouterr().err.splitlines()
  assert line.startswith(f"error: data: resnet101 at N={n}: {n:,} more images would take about ")
  assert f"and {out}/ has " in line and "nothing generated; ask for fewer items (N=)" in line
  assert not out.exists()


def test_the_margin_is_kept_free(tmp_path, vocab, capsys, monkeypatch):
  """What fits the disk but not beside the margin is refused too; every list is named."""
  monkeypatch.setattr(data, "KEEP_FREE_BYTES", data.free_bytes(tmp_path))
  assert data.main(["--out", str(tmp_path / "d"), "--vocab", str(vocab), "--items", "3"]) == 2
  line = capsys.readouterr().err
  assert "every benchmark at N=3: 3 more images (" in line and "3 more sentences (" in line
  assert not (tmp_path / "d").exists()


def test_an_unknown_benchmark_is_one_line(tmp_path, capsys):
  assert data.main(["--out", str(tmp_path), "--benchmark", "resnet9"]) == 2
  [line] = capsys.readouterr().err.splitlines()
  assert line.startswith("error: data: unknown benchmark resnet9; known: resnet101, ")


def test_the_estimate_matches_what_is_written(tmp_path):
  """Two rounds of the 12 image sizes: the bytes per item the estimate uses are close to what
  the generators write (scenes vary more: half are plain backgrounds, chosen at random; the first
  504 average 118 kB, the first 24 77 kB)."""
  for listing, write, low in (("images.txt", data.write_images, 0.85),
                              ("scenes.txt", data.write_scenes, 0.5)):
    new, estimate = data.needed_bytes(tmp_path, listing, 24)
    assert new == 24
    write(tmp_path, 24)
    folder = tmp_path / listing.removesuffix(".txt")
    written = sum(p.stat().st_size for p in folder.iterdir()) + (tmp_path / listing).stat().st_size
    assert low < written / estimate < 1.15, (listing, written, estimate)
    assert data.needed_bytes(tmp_path, listing, 24) == (0, 0)  # nothing more to write
