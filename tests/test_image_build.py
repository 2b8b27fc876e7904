"""The worker image path for real, without a Docker daemon or a remote registry (`make test-images`,
not part of `make test`: a cold build takes many minutes): the stand-in base (`make base-image`),
the CPU ResNet image built by buildah from it, pushed by `make push` to Debian's docker-registry
on loopback, the recorded digest served by the registry, and the image's content checked inside
it. Needs root and `make image-tools`; under CI=true a missing tool fails instead of skipping."""
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from pipelines import dataflow, matrix
from pipelines.matrix import REPO_ROOT

TOOLS = ("buildah", "podman", "debootstrap", "docker-registry")
FAMILY = "cpu-resnet"
TAG = "test-images"
CONTAINERS_ENV = {"CONTAINERS_STORAGE_CONF": str(REPO_ROOT / "infra/containers/storage.conf"),
                  "CONTAINERS_CONF": str(REPO_ROOT / "infra/containers/containers.conf")}
MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json, "
                  "application/vnd.docker.distribution.manifest.v2+json")


def _missing() -> str | None:
  if os.geteuid() != 0:
    return "image builds here run as root (buildah --isolation chroot)"
  absent = [t for t in TOOLS if not shutil.which(t)]
  return f"missing {' '.join(absent)} (make image-tools installs them)" if absent else None


why_not = _missing()
if why_not and os.environ.get("CI") == "true":
  raise RuntimeError(f"test_image_build: {why_not}")
pytestmark = pytest.mark.skipif(bool(why_not), reason=why_not or "")


def make(*args: str, cwd: pathlib.Path = REPO_ROOT, timeout: int = 3600):
  venv = pathlib.Path(sys.executable).parent.parent
  result = subprocess.run(["make", *args, f"VENV={venv}"], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout,
                          env={**os.environ, **CONTAINERS_ENV, "PYTHON": sys.executable})
  assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
  return result


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
  """Debian's docker-registry on a free loopback port, storing in a temp folder."""
  folder = tmp_path_factory.mktemp("registry")
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  config = folder / "config.yml"
  config.write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
                    f"    rootdirectory: {folder / 'data'}\nhttp:\n  addr: 127.0.0.1:{port}\n")
  log = (folder / "registry.log").open("w")
  server = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=log)
  try:
    for _ in range(100):
      try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
        break
      except OSError:
        assert server.poll() is None, (folder / "registry.log").read_text()
        time.sleep(0.1)
    yield f"127.0.0.1:{port}"
  finally:
    server.terminate()
    server.wait(timeout=30)
    shutil.rmtree(folder / "data", ignore_errors=True)  # gigabytes of pushed layers


@pytest.fixture(scope="module")
def pushed(registry, tmp_path_factory):
  """Builds the CPU ResNet image from the stand-in base and pushes it with `make push`; returns
  the recorded digest file's fields."""
  make("base-image")
  build = ["BUILDER=buildah", f"REGISTRY={registry}/bench", f"IMAGE_TAG={TAG}",
           f"BASE_IMAGE={base_image()}", "TORCH_FROM=pypi", "IMAGE_WEIGHTS=random"]
  make(f"image-{FAMILY}", *build)
  # push from a scratch folder so the user's build/image-*.digest stay as they are
  work = tmp_path_factory.mktemp("push")
  for name in ("Makefile", ".python-version", "pipelines", "infra", "requirements"):
    (work / name).symlink_to(REPO_ROOT / name)
  make("push", f"IMAGES={FAMILY}", *build, cwd=work, timeout=1800)
  yield dataflow.read_digest(work / "build" / f"image-{FAMILY}.digest")
  # the tag names this run's port; its layers stay in the cache for the next build
  subprocess.run(["buildah", "rmi", f"{registry}/bench/beam-bench-{FAMILY}:{TAG}"],
                 capture_output=True, env={**os.environ, **CONTAINERS_ENV})


def base_image() -> str:
  python = (REPO_ROOT / ".python-version").read_text().strip()
  beam = next(line.split("==")[1] for line in (REPO_ROOT / "requirements/worker.txt").read_text()
              .splitlines() if line.startswith("apache-beam=="))
  return f"localhost/beam-sdk-standin:py{python}-beam{beam}"


def in_image(ref: str, *command: str) -> subprocess.CompletedProcess:
  """Runs a command inside the image with its own entrypoint replaced, no network, no host paths."""
  return subprocess.run(["podman", "run", "--rm", "--network", "none", "--entrypoint", command[0],
                         ref, *command[1:]], capture_output=True, text=True, timeout=600,
                        env={**os.environ, **CONTAINERS_ENV})


def test_push_records_a_digest_the_registry_serves(pushed, registry):
  assert pushed["image"] == f"{registry}/bench/beam-bench-{FAMILY}:{TAG}"
  request = urllib.request.Request(
    f"http://{registry}/v2/bench/beam-bench-{FAMILY}/manifests/{TAG}",
    headers={"Accept": MANIFEST_TYPES}, method="GET")
  with urllib.request.urlopen(request, timeout=30) as response:
    served = response.headers["Docker-Content-Digest"]
    manifest = json.loads(response.read())
  assert served == pushed["digest"]
  assert manifest["layers"]
  # and by digest, the way a launch names it (image@sha256:...)
  by_digest = urllib.request.Request(
    f"http://{registry}/v2/bench/beam-bench-{FAMILY}/manifests/{pushed['digest']}",
    headers={"Accept": MANIFEST_TYPES}, method="HEAD")
  with urllib.request.urlopen(by_digest, timeout=30) as response:
    assert response.status == 200


def test_the_worker_entry_points_import_from_the_image_alone(pushed):
  done = in_image(pushed["image"], "python", "-c",
                  "import pipelines.worker.pipeline, pipelines.worker.handler, apache_beam, torch; "
                  "print(apache_beam.__version__, torch.__version__)")
  assert done.returncode == 0, done.stderr[-3000:]
  beam = next(line.split("==")[1] for line in (REPO_ROOT / "requirements/worker.txt").read_text()
              .splitlines() if line.startswith("apache-beam=="))
  assert done.stdout.split()[0] == beam


def test_the_image_holds_its_familys_models_and_no_launcher_code(pushed):
  listed = in_image(pushed["image"], "ls", "/opt/models")
  assert listed.returncode == 0, listed.stderr
  for model in matrix.models(FAMILY):
    assert f"{model}.pth" in listed.stdout.split(), listed.stdout
  launcher = in_image(pushed["image"], "python", "-c", "import pipelines.run")
  assert launcher.returncode != 0
  assert "No module named 'pipelines.run'" in launcher.stderr


def test_the_boot_stand_in_refuses_everything_but_the_worker_pool(pushed):
  done = in_image(pushed["image"], "/opt/apache/beam/boot", "--id=1")
  assert done.returncode == 2
  assert "only --worker_pool" in done.stderr
