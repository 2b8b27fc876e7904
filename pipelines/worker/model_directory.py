"""The Gemma architectures (their published config) as the Hugging Face model directory vLLM
serves (config.json, model.safetensors, a tokenizer, generation_config.json), with the sidecar
`<name>.meta.json` beside it: the hub's files with pretrained weights, else seeded random
bfloat16 weights and a byte-level BPE trained here (Gemma's own tokenizer is gated on the hub)."""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil

import torch

from pipelines.worker.model_files import RANDOM_SEED, ModelMeta, file_sha256, write_meta

# The values of google/gemma-2b-it's published config.json (hidden_act "gelu" is its legacy value
# for the tanh approximation, which hidden_activation names); spelled out so it is written the
# same whatever transformers writes, and read alike by vLLM's transformers and the kit's.
_GEMMA_CONFIG = dict(
    architectures=["GemmaForCausalLM"], model_type="gemma", attention_bias=False,
    attention_dropout=0.0, bos_token_id=2, eos_token_id=1, pad_token_id=0, head_dim=256,
    hidden_act="gelu", hidden_activation="gelu_pytorch_tanh", hidden_size=2048,
    initializer_range=0.02, intermediate_size=16384, max_position_embeddings=8192,
    num_attention_heads=8, num_hidden_layers=18, num_key_value_heads=1, rms_norm_eps=1e-06,
    rope_scaling=None, rope_theta=10000.0, torch_dtype="bfloat16", use_cache=True,
    vocab_size=256000)
GEMMA_CONFIGS = {
    "gemma-2b-it": _GEMMA_CONFIG,
    # Tests only: the same architecture, small enough for a 2-core CI machine.
    "gemma-tiny": {**_GEMMA_CONFIG, "hidden_size": 64, "intermediate_size": 128,
                   "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 1,
                   "head_dim": 16, "vocab_size": 512},
}
_GEMMA_HUB_IDS = {"gemma-2b-it": "google/gemma-2b-it", "gemma-tiny": "kit-test/gemma-tiny"}
# What a pretrained Gemma directory takes from the hub (not the repo's 10 GB gemma-2b-it.gguf).
_GEMMA_HUB_FILES = ["config.json", "generation_config.json", "*.safetensors",
                    "model.safetensors.index.json", "tokenizer.json", "tokenizer.model",
                    "tokenizer_config.json", "special_tokens_map.json"]
# Gemma's special tokens at Gemma's ids (a random-weights directory's tokenizer keeps them).
GEMMA_SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>")  # ids 0, 1, 2, 3
GEMMA_TOKENIZER_MERGES = 8000  # the locally trained BPE's most tokens (then placeholders)
GEMMA_WEIGHTS_FILE = "model.safetensors"


def gemma_config_json(architecture: str) -> dict:
  """The config.json of a Gemma architecture (the published values for gemma-2b-it)."""
  return dict(GEMMA_CONFIGS[architecture])


def gemma_config(architecture: str):
  from transformers import GemmaConfig
  values = {k: v for k, v in gemma_config_json(architecture).items()
            if k not in ("architectures", "model_type", "torch_dtype", "hidden_activation")}
  return GemmaConfig(**{**values, "hidden_act": "gelu_pytorch_tanh"})


def build_gemma(architecture: str) -> torch.nn.Module:
  from transformers import GemmaForCausalLM
  return GemmaForCausalLM(gemma_config(architecture))


def write_model_directory(architecture: str, out_dir: pathlib.Path, weights: str
                          ) -> pathlib.Path:
  """Writes the `<architecture>/` model directory vLLM serves, and `<architecture>.meta.json`
  beside it (sha256 over the directory's files). Built in a temporary directory first, so a
  killed run never leaves a half-written model behind."""
  out_dir.mkdir(parents=True, exist_ok=True)
  path = out_dir / architecture
  tmp = out_dir / f".{architecture}.{os.getpid()}.tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  tmp.mkdir()
  try:
    if weights == "pretrained":
      source = _pretrained_directory(architecture, tmp)
    else:
      source = _random_directory(architecture, tmp)
    if path.exists():
      shutil.rmtree(path)
    os.replace(tmp, path)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  write_meta(path, ModelMeta(architecture, weights, source, _sha256_directory(path),
                             torch.__version__))
  return path


def _pretrained_directory(architecture: str, folder: pathlib.Path) -> str:
  """The hub's model directory (gated: needs an HF_TOKEN that accepted Gemma's terms; a
  pre-filled cache works offline). Never run here: the hub is unreachable."""
  from huggingface_hub import snapshot_download
  hub_id = _GEMMA_HUB_IDS[architecture]
  snapshot_download(hub_id, local_dir=folder, allow_patterns=_GEMMA_HUB_FILES)
  return f"huggingface:{hub_id}"


def _random_directory(architecture: str, folder: pathlib.Path) -> str:
  """config.json (the published values), seeded random bfloat16 weights in model.safetensors,
  generation_config.json, and a tokenizer trained here (Gemma's own is gated)."""
  from safetensors.torch import save_file
  config = gemma_config_json(architecture)
  torch.manual_seed(RANDOM_SEED)
  previous = torch.get_default_dtype()
  torch.set_default_dtype(torch.bfloat16)  # built in bfloat16: 5 GB for gemma-2b-it, not 10
  try:
    model = build_gemma(architecture)
  finally:
    torch.set_default_dtype(previous)
  # The output projection is the embedding (tie_word_embeddings), as in the published files.
  tensors = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
  save_file(tensors, str(folder / GEMMA_WEIGHTS_FILE), metadata={"format": "pt"})
  os.chmod(folder / GEMMA_WEIGHTS_FILE, 0o644)  # safetensors writes it owner-only
  del model, tensors
  (folder / "config.json").write_text(json.dumps(config, indent=2))
  (folder / "generation_config.json").write_text(json.dumps(
      {"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"],
       "pad_token_id": config["pad_token_id"]}, indent=2))
  trained = write_gemma_tokenizer(folder, config["vocab_size"],
                                  config["max_position_embeddings"])
  return (f"seeded-random:{RANDOM_SEED}; tokenizer: byte-level BPE trained here on generated "
          f"text ({trained} tokens, then placeholders up to {config['vocab_size']}; Gemma's "
          "special tokens at its ids), not Gemma's tokenizer (gated, hub unreachable)")


def _tokenizer_corpus(count: int = 20000):
  """Seeded English-like sentences of made-up words, to train the BPE on."""
  import random
  rng = random.Random(RANDOM_SEED)
  syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ou")]
  words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))) for _ in range(3000)]
  for _ in range(count):
    sentence = " ".join(rng.choice(words) for _ in range(rng.randint(4, 20)))
    yield f"{sentence[0].upper()}{sentence[1:]}{rng.choice('.,!?;:')} {rng.randint(0, 9999)}"


def write_gemma_tokenizer(folder: pathlib.Path, vocab_size: int, max_length: int) -> int:
  """tokenizer.json (+ tokenizer_config.json, special_tokens_map.json): a byte-level BPE with
  <pad>=0 <eos>=1 <bos>=2 <unk>=3 as Gemma has them, <bos> prepended as Gemma's tokenizer does,
  and placeholder tokens `<unusedN>` filling the vocab to the model's size (so every id the
  model can sample decodes). Returns how many tokens were trained."""
  from tokenizers import Tokenizer, decoders, pre_tokenizers, processors, trainers
  from tokenizers import models as bpe_models
  tokenizer = Tokenizer(bpe_models.BPE(unk_token="<unk>"))
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
      vocab_size=min(vocab_size, GEMMA_TOKENIZER_MERGES), show_progress=False,
      special_tokens=list(GEMMA_SPECIAL_TOKENS),
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tokenizer.train_from_iterator(_tokenizer_corpus(), trainer=trainer)
  tokenizer.post_processor = processors.TemplateProcessing(
      single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", 2)])
  data = json.loads(tokenizer.to_str())
  vocab = data["model"]["vocab"]
  trained = len(vocab)
  for i in range(trained, vocab_size):
    vocab[f"<unused{i - trained}>"] = i
  ids = [vocab[t] for t in GEMMA_SPECIAL_TOKENS]
  if ids != [0, 1, 2, 3]:
    raise RuntimeError(f"the trained tokenizer's special ids are {ids}, not Gemma's 0 1 2 3")
  (folder / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False))
  special = {"pad_token": "<pad>", "eos_token": "<eos>", "bos_token": "<bos>",
             "unk_token": "<unk>"}
  # PreTrainedTokenizerFast reads tokenizer.json as is, in transformers 4 (vLLM's) and 5.
  (folder / "tokenizer_config.json").write_text(json.dumps(
      {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_length,
       "add_bos_token": True, "add_eos_token": False, **special}, indent=2))
  (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
  return trained


def _sha256_directory(folder: pathlib.Path) -> str:
  """One digest over the directory: each file's relative path and sha256, in path order."""
  digest = hashlib.sha256()
  for path in sorted(p for p in folder.rglob("*") if p.is_file()):
    digest.update(f"{path.relative_to(folder).as_posix()}\0{file_sha256(path)}\n".encode())
  return digest.hexdigest()
