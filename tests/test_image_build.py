"""The worker image path for real, without a Docker daemon or a remote registry (`make test-images`,
not part of `make test`: a cold build takes many minutes): the stand-in base (`make base-image`),
the CPU ResNet image built by buildah from it, pushed by `make push` to Debian's docker-registry
on loopback, the recorded digest served by the registry, the image's content checked inside it,
and benchmarks run with their SDK workers inside it (IN_IMAGE=1) as one n1-standard-2 worker.
The GPU image is built and checked too (its benchmark needs a GPU). Needs root and
`make image-tools`; under CI=true a missing tool fails instead of skipping."""
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from pipelines import data, dataflow, matrix, run
from pipelines.matrix import REPO_ROOT
from pipelines.record import store
from tests.dataflow_double import dataflow_double, fake_gcs
from tests.test_dataflow_double import JOB_METRICS, SETTINGS, launch_args

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


# Cold builds write about 7.5 GB of layers for cpu-resnet and 7.3 GB for gpu, and the push about
# 3.5 GB of compressed blobs into the registry's folder; a registry out of disk answers the push
# with a bare HTTP 500, a build out of disk fails half-way through pip.
NEEDED_FREE_GB = 20
STORAGE_ROOT = pathlib.Path("/var/lib/containers/storage")  # infra/containers/storage.conf


def make(*args: str, cwd: pathlib.Path = REPO_ROOT, timeout: int = 3600,
         diagnose=lambda: ""):
  venv = pathlib.Path(sys.executable).parent.parent
  result = subprocess.run(["make", *args, f"VENV={venv}"], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout,
                          env={**os.environ, **CONTAINERS_ENV, "PYTHON": sys.executable})
  assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:], diagnose())
  return result


def free_gb(path: pathlib.Path) -> float:
  while not path.exists():
    path = path.parent
  return shutil.disk_usage(path).free / 1e9


def require_free_disk(*paths: pathlib.Path) -> None:
  """Fails at once, saying so, where the build and push cannot fit (not 10 minutes later with
  the registry's HTTP 500)."""
  short = {str(p): round(free_gb(p), 1) for p in paths if free_gb(p) < NEEDED_FREE_GB}
  assert not short, (f"test-images needs {NEEDED_FREE_GB} GB free for the image builds and "
                     f"push; free GB: {short} (untagged images: `podman image prune`, with "
                     "CONTAINERS_STORAGE_CONF=infra/containers/storage.conf)")


REGISTRY_LOGS: dict[str, pathlib.Path] = {}


def registry_diagnosis(registry: str) -> str:
  """What the registry logged and the disk it writes to: a push's HTTP 500 says neither."""
  log = REGISTRY_LOGS[registry]
  return (f"registry log (last 3000 chars): {log.read_text()[-3000:]}\n"
          f"free GB beside the registry's data: {free_gb(log.parent):.1f}, in the container "
          f"store: {free_gb(STORAGE_ROOT):.1f}")


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
  require_free_disk(folder, STORAGE_ROOT)
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
    REGISTRY_LOGS[f"127.0.0.1:{port}"] = folder / "registry.log"
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
  make("push", f"IMAGES={FAMILY}", *build, cwd=work, timeout=1800,
       diagnose=lambda: registry_diagnosis(registry))
  fields = dataflow.read_digest(work / "build" / f"image-{FAMILY}.digest")
  yield {**fields, "build_dir": work / "build",
         "pinned": f"{fields['image'].rsplit(':', 1)[0]}@{fields['digest']}"}
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


def test_a_dataflow_launch_uses_the_digest_the_registry_serves(pushed, registry, tmp_path,
                                                              monkeypatch):
  """Through the Dataflow API double (tests/test_dataflow_double.py), with the digest `make push`
  recorded against the real loopback registry."""
  (tmp_path / "gcs").mkdir()
  with fake_gcs(tmp_path / "gcs") as gcs, dataflow_double() as double:
    double.metrics = list(JOB_METRICS)
    env = {**SETTINGS, "REGISTRY": f"{registry}/bench", "IMAGE_TAG": TAG,
           "STORAGE_EMULATOR_HOST": gcs, "BENCH_BUILD_DIR": str(pushed["build_dir"])}
    for name, value in env.items():
      monkeypatch.setenv(name, value)
    for name in ("INFLUXDB_URL", "BIGQUERY_DATASET"):
      monkeypatch.delenv(name, raising=False)
    assert run.main(launch_args(double, tmp_path / "results")) == 0
    (job,) = double.jobs.values()
  pool = job["environment"]["workerPools"][0]
  assert pool["sdkHarnessContainerImages"][0]["containerImage"] == pushed["pinned"]


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


def test_the_boot_stand_in_refuses_a_worker_without_its_runner_endpoints(pushed):
  done = in_image(pushed["image"], "/opt/apache/beam/boot", "--id=1")
  assert done.returncode == 1
  assert "one SDK worker given --id, --provision_endpoint and --control_endpoint" in done.stderr


# --- benchmarks with their SDK workers in the image (IN_IMAGE=1) -------------------------------

@pytest.fixture
def in_image_env(pushed, tmp_path, monkeypatch):
  """The launcher's environment for IN_IMAGE=1 runs of the pushed image; returns the data and
  results folders (6 generated images)."""
  monkeypatch.setenv("BENCH_BUILD_DIR", str(pushed["build_dir"]))
  for name, value in CONTAINERS_ENV.items():
    monkeypatch.setenv(name, value)
  data.write_images(tmp_path / "data", 6)
  return {"data": tmp_path / "data", "results": tmp_path / "results"}


def launch(where: dict, *args: str) -> int:
  return run.main(["resnet101", "--items", "6", "--data-dir", str(where["data"]),
                   "--results-dir", str(where["results"]), *args])


def containers_named(prefix: str) -> list[str]:
  listed = subprocess.run(["podman", "ps", "-a", "--format", "{{.Names}}"], capture_output=True,
                          text=True, env={**os.environ, **CONTAINERS_ENV})
  return [n for n in listed.stdout.split() if n.startswith(prefix)]


def test_a_benchmark_runs_inside_the_image_as_one_n1_standard_2_worker(pushed, in_image_env):
  assert launch(in_image_env, "--in-image") == 0
  (record,) = store.load_all(in_image_env["results"])
  meta, asked = record.metadata, record.plan
  assert record.status == "succeeded" and record.metrics["num_inferences"] == 6
  assert asked["in_image"] is True
  assert asked["image"] == pushed["pinned"]  # the digest the registry serves
  # the workers are the container's processes: its hostname, its versions, the image's models
  assert meta["worker_hostnames"] == [f"bench-{record.run_id}"] != [meta["launcher_hostname"]]
  assert meta["versions_source"] == "workers"
  for key in ("torch", "apache-beam", "python"):
    assert meta["versions"][key] == asked["image_versions"][key]
  assert asked["model_files"]["model_state_dict_path"] == "/opt/models/resnet101.pth"
  layout = matrix.get("resnet101").layout
  assert meta["processes_loaded_model"] == layout.processes
  # under n1-standard-2's limits, with its peak memory read from the container's cgroup
  limits, used = asked["container"], meta["container_memory"]
  assert limits == {"machine_type": "n1-standard-2", "cpus": 2, "memory_limit_mib": 7680}
  assert 100 < used["peak_memory_mib"] < limits["memory_limit_mib"] and used["oom_kills"] == 0
  assert asked["harness_threads"] == 1
  # the worker share counts the container's start and the SDK process's own (#18)
  m = record.metrics
  assert m["worker_share_launch_s"] > 0 and m["worker_share_process_start_s"] > 0
  assert m["worker_share_s"] > m["worker_share_launch_s"] + m["worker_share_model_load_s"]
  assert containers_named(f"bench-{record.run_id}") == []  # removed after the run


def test_the_image_and_the_host_predict_the_same_on_the_same_inputs(pushed, in_image_env,
                                                                    tmp_path):
  models = tmp_path / "models"  # the image's own weights, for the host run
  models.mkdir()
  copied = subprocess.run(["podman", "run", "--rm", "--network", "none", "-v", f"{models}:/out",
                           "--entrypoint", "cp", pushed["pinned"], "/opt/models/resnet101.pth",
                           "/out/"], capture_output=True, text=True,
                          env={**os.environ, **CONTAINERS_ENV})
  assert copied.returncode == 0, copied.stderr
  assert launch(in_image_env, "--in-image") == 0
  assert launch(in_image_env, "--models-dir", str(models)) == 0
  in_box, on_host = sorted(store.load_all(in_image_env["results"]),
                           key=lambda r: r.plan.get("in_image", False), reverse=True)
  assert in_box.plan["in_image"] and not on_host.plan.get("in_image")
  assert predictions(in_image_env["results"], in_box) == predictions(
      in_image_env["results"], on_host)


def predictions(results: pathlib.Path, record: dict) -> list[str]:
  folder = results / "runs" / record.run_id / "output"
  lines = sorted(line for f in folder.glob("predictions-*") for line in f.read_text().splitlines())
  assert len(lines) == 6
  return lines


def broken_image(pushed, tag: str, remove: str) -> pathlib.Path:
  """The pushed image less one file, as a Dockerfile mistake would leave it; returns a build
  folder whose digest file names it."""
  env = {**os.environ, **CONTAINERS_ENV}
  ctr = subprocess.run(["buildah", "from", "--pull=never", pushed["pinned"]], capture_output=True,
                       text=True, env=env, check=True).stdout.strip()
  try:
    subprocess.run(["buildah", "run", ctr, "--", "rm", remove], env=env, check=True)
    subprocess.run(["buildah", "commit", "--quiet", ctr, f"localhost/bench-broken:{tag}"],
                   env=env, check=True, capture_output=True)
  finally:
    subprocess.run(["buildah", "rm", ctr], env=env, capture_output=True)
  digest = subprocess.run(["podman", "image", "inspect", "--format", "{{.Digest}}",
                           f"localhost/bench-broken:{tag}"], capture_output=True, text=True,
                          env=env, check=True).stdout.strip()
  folder = pushed["build_dir"].parent / f"broken-{tag}"
  dataflow.write_digest(folder / f"image-{FAMILY}.digest", f"localhost/bench-broken:{tag}", digest)
  return folder


@pytest.mark.parametrize("tag,remove,says", [
    ("model", "/opt/models/resnet101.pth", "lacks /opt/models/resnet101.pth"),
    ("module", "/opt/bench/pipelines/worker/tasks/image_classification.py",
     "cannot import pipelines.worker.tasks.image_classification (No module named "
     "'pipelines.worker.tasks.image_classification')"),
])
def test_an_image_missing_a_model_or_a_worker_module_is_refused_before_launch(
    pushed, in_image_env, monkeypatch, capsys, tag, remove, says):
  monkeypatch.setenv("BENCH_BUILD_DIR", str(broken_image(pushed, tag, remove)))
  try:
    assert launch(in_image_env, "--in-image") == 2
  finally:
    subprocess.run(["buildah", "rmi", f"localhost/bench-broken:{tag}"], capture_output=True,
                   env={**os.environ, **CONTAINERS_ENV})
  (line,) = capsys.readouterr().err.strip().splitlines()
  assert says in line, line
  assert not (in_image_env["results"] / "records").exists()  # nothing ran
  assert containers_named("bench-") == []


def test_a_worker_the_oom_killer_ends_fails_the_run_with_the_reason(pushed, in_image_env,
                                                                    monkeypatch, tmp_path):
  # A matrix whose memory estimate is wrong (resnet101 at 300 MiB on a 0.75 GB machine; one
  # process really peaks near 1.2 GB): the arithmetic lets 1x2 through, the kernel does not.
  text = (REPO_ROOT / "infra/benchmarks.toml").read_text()
  text = re.sub(r"(\[machine_types\.n1-standard-2\]\nvcpus = 2\nmemory_gb = )7\.5",
                r"\g<1>0.75", text)
  text = re.sub(r"(?m)^reserved_gb = 0\.5$", "reserved_gb = 0.25", text)
  text = re.sub(r"(?m)^resnet101 = \d+$", "resnet101 = 300", text)
  (tmp_path / "matrix.toml").write_text(text)
  monkeypatch.setenv("BENCHMARK_MATRIX", str(tmp_path / "matrix.toml"))
  assert launch(in_image_env, "--in-image", "--layout", "1x2") == 1
  (record,) = store.load_all(in_image_env["results"])
  assert record.status == "failed"
  assert record.error.startswith("OutOfMemory: the OOM killer ended an SDK worker process "
                                    "in the n1-standard-2 container (768 MiB")
  assert record.metadata["container_memory"]["oom_kills"] >= 1
  assert containers_named(f"bench-{record.run_id}") == []


def test_the_gpu_image_builds_with_cuda_torch_and_its_model():
  build = ["BUILDER=buildah", "IMAGE_TAG=test-images", f"BASE_IMAGE={base_image()}",
           "TORCH_FROM=pypi", "IMAGE_WEIGHTS=random"]
  make("base-image")
  make("image-gpu", *build,
       diagnose=lambda: f"free GB in the container store: {free_gb(STORAGE_ROOT):.1f}")
  done = in_image("local/beam-bench-gpu:test-images", "python", "-c",
                  "import os, torch; print(torch.backends.cuda.is_built(), torch.version.cuda, "
                  "sorted(os.listdir('/opt/models')))")
  assert done.returncode == 0, done.stderr[-3000:]
  built, cuda, models = done.stdout.split(" ", 2)
  assert built == "True" and cuda.split(".")[0].isdigit()
  assert "'resnet152.pth'" in models and "'fasterrcnn_resnet50_fpn.pth'" in models


def test_a_folder_with_a_colon_is_refused_before_launch(pushed, in_image_env, tmp_path, capsys):
  results = tmp_path / "re:sults"  # `-v SRC:DST:MODE` would split it
  assert run.main(["resnet101", "--items", "2", "--in-image", "--data-dir",
                   str(in_image_env["data"]), "--results-dir", str(results)]) == 2
  (line,) = capsys.readouterr().err.strip().splitlines()
  assert "a ':' in its name cannot be mounted" in line
  assert containers_named("bench-") == []


def test_an_optimization_runs_where_the_image_loads_the_model(pushed, in_image_env):
  assert launch(in_image_env, "--in-image", "--optimize", "channels_last") == 0
  (record,) = store.load_all(in_image_env["results"])
  assert record.status == "succeeded"
  assert record.metadata["optimization_ran"] == "channels_last"  # the container's workers said so
  assert record.metadata["worker_hostnames"] == [f"bench-{record.run_id}"]
  assert record.metrics["optimize_s"] is not None


def test_an_optimization_the_image_cannot_run_is_refused_before_launch(pushed, in_image_env,
                                                                       capsys):
  # The stand-in base (Debian minbase) has no C++ compiler, which inductor needs; Beam's own
  # SDK images (sdks/python/container/Dockerfile: FROM python:<version>-bullseye) have g++.
  assert launch(in_image_env, "--in-image", "--optimize", "compile") == 2
  (line,) = capsys.readouterr().err.strip().splitlines()
  assert "OPTIMIZE=compile cannot run in image" in line and "no C++ compiler" in line, line
  assert not (in_image_env["results"] / "records").exists()
  assert containers_named("bench-") == []
