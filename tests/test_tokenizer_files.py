"""Every `make bench-*` writes the tokenizer files again (through `make models`): an unchanged
file is left as it is, a changed one is replaced in one step, so a run starting in another shell
never reads a partial vocab."""
from __future__ import annotations

import hashlib
import os
import threading

import pytest

from pipelines.worker import tokenizer_files


def identity(path):
  stat = path.stat()
  return stat.st_ino, stat.st_mtime_ns


def test_unchanged_tokenizer_files_are_not_rewritten(tmp_path):
  vocab = tokenizer_files.write_vocab(tmp_path, "random")
  bpe = tokenizer_files.write_clip_bpe(tmp_path)
  before = [identity(p) for p in (vocab, *bpe)]
  assert tokenizer_files.write_vocab(tmp_path, "random") == vocab
  assert tokenizer_files.write_clip_bpe(tmp_path) == bpe
  assert [identity(p) for p in (vocab, *bpe)] == before
  assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (vocab, *bpe))


def test_a_changed_vocab_is_replaced_whole(tmp_path):
  vocab = tokenizer_files.write_vocab(tmp_path, "random")
  vocab.write_text("[PAD]\n")  # damaged, or another kit's
  inode = vocab.stat().st_ino
  tokenizer_files.write_vocab(tmp_path, "random")
  assert hashlib.md5(vocab.read_bytes()).hexdigest() == tokenizer_files.VOCAB_MD5
  assert vocab.stat().st_ino != inode  # a new file took the old one's name
  assert [p.name for p in tmp_path.iterdir()] == [vocab.name]  # no temp file left


def test_write_if_changed_says_whether_it_wrote(tmp_path):
  path = tmp_path / "f.txt"
  assert tokenizer_files.write_if_changed(path, b"a\n")
  before = identity(path)
  assert not tokenizer_files.write_if_changed(path, b"a\n")
  assert identity(path) == before
  assert tokenizer_files.write_if_changed(path, b"b\n") and path.read_bytes() == b"b\n"


def test_a_concurrent_reader_never_sees_a_partial_file(tmp_path):
  """One thread rewrites a 2 MB file back and forth between two contents while another reads
  it: every read is one of the two whole files."""
  path = tmp_path / "vocab.txt"
  old, new = b"a" * 2_000_000, b"b" * 1_500_000
  tokenizer_files.write_if_changed(path, old)
  stop, seen = threading.Event(), []

  def read():
    while not stop.is_set():
      seen.append(path.read_bytes())

  reader = threading.Thread(target=read)
  reader.start()
  try:
    for i in range(60):
      tokenizer_files.write_if_changed(path, new if i % 2 == 0 else old)
  finally:
    stop.set()
    reader.join()
  assert seen and {len(data) for data in seen} <= {len(old), len(new)}
  assert all(data in (old, new) for data in seen)


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
  path = tmp_path / "merges.txt"
  tokenizer_files.write_if_changed(path, b"old\n")

  def fail(*args):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(os, "replace", fail)
  with pytest.raises(OSError):
    tokenizer_files.write_if_changed(path, b"new\n")
  assert path.read_bytes() == b"old\n"
  assert [p.name for p in tmp_path.iterdir()] == ["merges.txt"]
