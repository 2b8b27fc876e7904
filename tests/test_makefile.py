"""The Makefile is the front door: every documented target exists and passes the right flags."""
import subprocess

import pytest

from pipelines import matrix
from pipelines.matrix import REPO_ROOT


def make(*args: str) -> str:
  result = subprocess.run(["make", "-n", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=60)
  assert result.returncode == 0, result.stderr
  return result.stdout


@pytest.mark.parametrize("name", sorted(matrix.load()))
def test_each_benchmark_target_runs_its_benchmark(name):
  assert f"-m pipelines.run {name} --runner DirectRunner" in make(f"bench-{name}")
  assert f"-m pipelines.run {name} --runner DirectRunner --results-dir results --items 7" in make(
      f"bench-{name}", "N=7")


def test_dataflow_dry_run_flags_reach_the_launcher():
  out = make("bench-bert-base", "RUNNER=DataflowRunner", "DRY_RUN=1", "BATCH_SIZE=4",
             "INPUT=gs://bkt-x/mine.txt")
  assert "--runner DataflowRunner" in out and "--batch-size 4" in out and "--dry-run" in out
  assert "--input gs://bkt-x/mine.txt" in out
  assert "pipelines.data" not in out  # Dataflow reads its own datasets


def test_help_lists_every_entry_point():
  out = subprocess.run(["make"], cwd=REPO_ROOT, capture_output=True, text=True).stdout
  # Names are compared whole: "data" must be a listed target, not a word of "datasets".
  targets_text = out.split("Targets:")[1].split("Variables")[0]
  lines = {line.split()[0]: line for line in targets_text.splitlines() if line.strip()}
  for target in ("setup", "data", "models", "bench-all", "bench-<name>", "perf", "test", "lint",
                 "clean", "images", "image-cpu", "image-<name>", "push", "publish", "report",
                 "compare", "gpu-check", "test-servers", "doctor"):
    assert target in lines, target
  assert lines["bench-<name>"].split("names: ")[1].split() == list(matrix.load())
  assert lines["image-<name>"].split("names: ")[1].split() == [
      "cpu-bert", "cpu-captioning", "cpu-resnet", "gpu", "vllm-gpu"]
  listed = {line.split()[0] for line in out.split("Variables")[1].splitlines()[1:] if line.strip()}
  for variable in ("RUNNER", "N", "BATCH_SIZE", "WEIGHTS", "DRY_RUN", "REGISTRY"):
    assert variable in listed, variable


def test_push_records_the_tag_and_digest_a_launch_uses(tmp_path):
  """`make push` with a stand-in builder (buildah's --digestfile interface): each image's file
  holds the pushed tag and its digest, which dataflow.pinned_image then launches by."""
  import os
  import pathlib
  import sys

  from pipelines import dataflow
  for name in ("Makefile", ".python-version", "pipelines", "infra", "requirements"):
    (tmp_path / name).symlink_to(REPO_ROOT / name)
  builder = tmp_path / "fake-builder"
  builder.write_text("#!/bin/sh\n# push --digestfile FILE REF\n"
                     "printf 'sha256:%064d' 7 > \"$3\"\necho \"pushed $4\" >> pushed.log\n")
  builder.chmod(0o755)
  venv = pathlib.Path(sys.executable).parent.parent
  result = subprocess.run(["make", "push", f"BUILDER={builder}", "REGISTRY=reg.example/p",
                           "IMAGE_TAG=t1", f"VENV={venv}"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHON": sys.executable})
  assert result.returncode == 0, result.stderr
  assert (tmp_path / "pushed.log").read_text().split() == [
      "pushed", "reg.example/p/beam-bench-cpu-bert:t1",
      "pushed", "reg.example/p/beam-bench-cpu-captioning:t1",
      "pushed", "reg.example/p/beam-bench-cpu-resnet:t1",
      "pushed", "reg.example/p/beam-bench-gpu:t1",
      "pushed", "reg.example/p/beam-bench-vllm-gpu:t1"]
  fields = dataflow.read_digest(tmp_path / "build" / "image-cpu-resnet.digest")
  assert fields == {"image": "reg.example/p/beam-bench-cpu-resnet:t1",
                    "digest": "sha256:" + "0" * 63 + "7"}


def test_daemonless_builders_get_local_storage_cache_flags_and_the_ca_mount_only_at_build():
  """podman/buildah: layer cache, chroot isolation, no pull of a named local base, the host CA
  bundle mounted into RUN steps; the Dockerfile defaults (Dataflow's) unless asked otherwise."""
  out = make("image-cpu-resnet", "BUILDER=buildah", "BASE_IMAGE=localhost/standin:1",
             "TORCH_FROM=pypi", "IMAGE_WEIGHTS=random")
  assert out.startswith("buildah build --layers --isolation chroot --pull=never -v ")
  assert ":/etc/ssl/certs/ca-certificates.crt:ro" in out
  for arg in ("BASE_IMAGE=localhost/standin:1", "WEIGHTS=random",
              "TORCH_INDEX_URL=https://pypi.org/simple", "TORCH_LOCAL_VERSION= "):
    assert arg in out.replace("'", ""), arg
  default = make("image-cpu-resnet")
  assert default.startswith("docker build ")
  for absent in ("BASE_IMAGE=", "TORCH_INDEX_URL", "TORCH_LOCAL_VERSION", "-v ", "--layers"):
    assert absent not in default, absent
  assert "WEIGHTS=pretrained" in default.replace("'", "")
  folder = make("image-gpu", "BUILDER=podman", "TORCH_FROM=/srv/wheels")
  assert "-v /srv/wheels:/wheels:ro" in folder and "TORCH_FIND_LINKS=/wheels" in folder
  assert "TORCH_CUDA_MAJOR=13" in folder and "--pull=missing" in folder


def test_push_turns_tls_verification_off_for_loopback_registries_only():
  assert "--tls-verify=false" in make("push", "BUILDER=buildah", "REGISTRY=127.0.0.1:5000/b")
  assert "--tls-verify=false" not in make("push", "BUILDER=buildah", "REGISTRY=reg.example/p")


def test_the_vllm_image_gets_the_hub_token_as_a_build_secret_and_asks_for_it_up_front(tmp_path):
  """Pretrained Gemma is gated: its token goes in as a build secret (never a build arg, which
  would stay in the image's history), only to the vLLM image, and a pretrained build without it
  is refused before anything runs."""
  token = tmp_path / "hf token"
  token.write_text("hf_x\n")
  out = make("image-vllm-gpu", "BUILDER=podman", f"HF_TOKEN_FILE={token}")
  assert f"--secret 'id=hf_token,src={token}'" in out and "hf_x" not in out
  assert "--secret" not in make("image-gpu", f"HF_TOKEN_FILE={token}")
  assert "--secret" not in make("image-vllm-gpu", "IMAGE_WEIGHTS=random")
  for args, said in ((["image-vllm-gpu"], "needs HF_TOKEN_FILE="),
                     (["image-vllm-gpu", f"HF_TOKEN_FILE={tmp_path}/none"], "is not a file")):
    refused = subprocess.run(["make", "-n", *args], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 2 and said in refused.stderr, refused.stderr


def test_make_images_builds_every_image_it_can_and_names_the_one_left_out(tmp_path):
  built = lambda out: [line.split("beam-bench-")[1].split(":")[0]  # noqa: E731
                       for line in out.splitlines() if line.startswith("docker build ")]
  out = make("images")
  assert built(out) == ["cpu-bert", "cpu-captioning", "cpu-resnet", "gpu"]
  assert out.splitlines()[-1] == (
      "echo \"images: left out vllm-gpu: pretrained Gemma needs HF_TOKEN_FILE=<a file holding a "
      "Hugging Face token that accepted Gemma's terms>, or IMAGE_WEIGHTS=random\"")
  every = ["cpu-bert", "cpu-captioning", "cpu-resnet", "gpu", "vllm-gpu"]
  random = make("images", "IMAGE_WEIGHTS=random")
  assert built(random) == every and "left out" not in random
  token = tmp_path / "token"
  token.write_text("hf_x\n")
  assert built(make("images", f"HF_TOKEN_FILE={token}")) == every
  # `make images push` pushes what it built; `make push` alone, every image
  assert "for variant in  cpu-bert  cpu-captioning  cpu-resnet  gpu; do" in make(
      "images", "push", "REGISTRY=reg.example/p")
  assert "gpu  vllm-gpu; do" in make("push", "REGISTRY=reg.example/p")
  refused = subprocess.run(["make", "-n", "images", "image-vllm-gpu"], cwd=REPO_ROOT,
                           capture_output=True, text=True, timeout=60)
  assert refused.returncode == 2 and "needs HF_TOKEN_FILE=" in refused.stderr


def data_line(*args: str) -> str:
  lines = make(*args).replace("\\\n", " ").splitlines()  # continued lines joined
  [line] = [line for line in lines if "-m pipelines.data " in line]
  return " ".join(line.split("-m pipelines.data ")[1].split())


def test_a_benchmark_target_generates_only_its_own_list_at_its_count():
  assert data_line("bench-resnet101", "N=100000") == (
      "--out data --items 100000 --profile tuned --benchmark resnet101")
  assert data_line("bench-bert-base", "N=share") == (
      "--out data --items share --profile tuned --benchmark bert-base")
  assert data_line("bench-bert-base", "bench-resnet101", "PROFILE=beam") == (
      "--out data --profile beam --benchmark bert-base --benchmark resnet101")
  assert data_line("sweep", "BENCH=bert-large") == (
      "--out data --profile tuned --benchmark bert-large")
  assert data_line("compare-profiles", "BENCH=resnet152", "N=share") == (
      "--out data --items share --profile tuned --profile beam --benchmark resnet152")
  assert data_line("perf", "PERF_BENCHMARKS=resnet101 bert-base") == (
      "--out data --profile tuned --benchmark bert-base --benchmark resnet101")
  assert data_line("plan-check", "BENCH=resnet101", "N=3") == (
      "--out data --items 12 --profile tuned --benchmark resnet101")
  every = " ".join(f"--benchmark {name}" for name in sorted(matrix.load()))
  assert data_line("bench-all").endswith(f"--profile tuned {every}")
  # `make data` alone, or beside a benchmark: every list (the launcher's hint `make data N=...`)
  assert data_line("data", "N=7") == "--out data --items 7"
  assert data_line("data", "bench-resnet101") == "--out data"


def test_a_local_run_of_its_own_input_list_generates_no_data():
  out = make("bench-resnet101", "INPUT=mine.txt")
  assert "pipelines.data" not in out and "pipelines.worker.models" in out
