"""One Dataflow worker in a box: a worker image run by podman (or docker) as Beam's worker pool,
under the machine type's CPU and memory limits, for a local run with IN_IMAGE=1.

Why the worker pool and `--environment_type=EXTERNAL` (not DOCKER): on Dataflow the launcher
runs elsewhere and the worker VM starts the image's own boot, which starts one SDK process per
worker id and runs `sdk_worker_main` in each. EXTERNAL does the same here: the container runs
the image's entrypoint (`/opt/apache/beam/boot --worker_pool`), the FnApiRunner on the host asks
it for P workers, and the boot starts each SDK process with the job's pipeline options, inside
one container that holds all P of them, as one VM does. DOCKER would start one container per SDK
process (P containers, P memory limits, a shared VM nowhere), and needs a Docker CLI.

What the container gets from the host: the run folder (input list, outputs, progress tallies)
read-write and the folder of the input images read-only, at the same paths (on Dataflow, the
job's bucket), and the host's network namespace, for the runner's gRPC ports on loopback. Its
code, Beam, torch and models are the image's own; a dead HTTP proxy and the model hubs' offline
switches make any download attempt fail rather than reach out.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import socket
import subprocess
import time
from typing import Any

from pipelines import interrupts

POOL_START_TIMEOUT_S = 120.0
# Inside the image: the modules every SDK process imports, then a check that each model file
# is there. Prints one JSON line: what is missing, and the image's versions.
_PREFLIGHT = r"""
import importlib, json, os, platform, sys
out = {"missing_modules": [], "missing_files": []}
for name in sys.argv[2:]:
  try:
    importlib.import_module(name)
  except ImportError as e:
    out["missing_modules"].append(f"{name} ({e})")
asked = json.loads(sys.argv[1])
for path in asked["files"]:
  if not os.path.isfile(path):
    out["missing_files"].append(path)
if asked["optimization"] and not out["missing_modules"]:
  from pipelines.worker.optimizations import unavailable
  name, task, device = asked["optimization"]
  out["optimization_unavailable"] = unavailable(name, task, device=device)
try:
  import apache_beam, torch
  out["versions"] = {"python": platform.python_version(), "apache-beam": apache_beam.__version__,
                     "torch": torch.__version__, "cuda": torch.version.cuda or "none"}
  out["cuda_usable"] = torch.cuda.is_available()
except ImportError:
  pass
print(json.dumps(out))
"""


class ContainerError(RuntimeError):
  """The worker container could not start or be read: one line."""


class ImageIncomplete(ContainerError):
  """The image lacks a model file or a module the workers import: caught before launch."""


class OutOfMemory(interrupts.WorkerDied):
  """The kernel's OOM killer ended an SDK process inside the machine type's memory limit."""


def cli() -> str:
  """The container CLI: CONTAINER_CLI, else podman, else docker."""
  chosen = os.environ.get("CONTAINER_CLI") or next(
      (c for c in ("podman", "docker") if shutil.which(c)), "")
  if not chosen or not shutil.which(chosen):
    raise ContainerError("IN_IMAGE=1 needs podman or docker (make image-tools installs podman)")
  return chosen


def _run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
  return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


def pull(image: str) -> None:
  """Makes `image` (name@sha256:...) local the way a Dataflow worker does, from its registry.
  Loopback registries serve plain HTTP, as `make push` uses them: podman needs telling, docker
  treats 127.0.0.0/8 as insecure already. `image inspect` is the existence check both CLIs have."""
  command = cli()
  if _run([command, "image", "inspect", image]).returncode == 0:
    return
  plain = image.split("/", 1)[0].startswith(("127.0.0.1:", "localhost:"))
  tls = ["--tls-verify=false"] if plain and pathlib.Path(command).name == "podman" else []
  done = _run([command, "pull", "--quiet", *tls, image], timeout=3600)
  if done.returncode:
    raise ContainerError(f"could not pull {image}: {_last_line(done.stderr)}")


def gpu_flags(command: str) -> list[str]:
  """What hands the machine's GPUs to a container: docker's --gpus, podman's CDI device (the
  NVIDIA Container Toolkit's `nvidia-ctk cdi generate` writes the spec it needs)."""
  return ["--gpus", "all"] if pathlib.Path(command).name == "docker" else [
      "--device", "nvidia.com/gpu=all"]


def preflight(image: str, files: list[str], modules: list[str], gpu: bool = False,
              optimization: tuple[str, str] | None = None) -> dict[str, str]:
  """Checks, in a throwaway container of `image` with no network, that the workers' modules
  import, the model files exist, (gpu) CUDA is usable and (optimization: name, task) the
  image can run that optimization; returns the image's versions.
  ImageIncomplete names what is missing, in one line."""
  command = cli()
  done = _run([command, "run", "--rm", "--network", "none", *(gpu_flags(command) if gpu else []),
               "--entrypoint", "python", image, "-c", _PREFLIGHT,
               json.dumps({"files": files, "optimization": optimization}), *modules],
              timeout=300)
  last = done.stdout.strip().splitlines()[-1:] or [""]
  try:
    found = json.loads(last[0])
  except json.JSONDecodeError:
    raise ContainerError(f"image {image} could not be checked: "
                         f"{_last_line(done.stderr) or 'exit ' + str(done.returncode)}") from None
  if found["missing_files"]:
    raise ImageIncomplete(f"image {image} lacks {', '.join(found['missing_files'])}: rebuild it "
                          "with its family's models (make image-<family>), then make push")
  if found["missing_modules"]:
    raise ImageIncomplete(f"image {image} cannot import {'; '.join(found['missing_modules'])}: "
                          "the Dockerfile must copy every module the workers import "
                          "(pipelines/worker/)")
  if found.get("optimization_unavailable"):
    raise ImageIncomplete(f"OPTIMIZE={optimization[0]} cannot run in image {image}: "
                          f"{found['optimization_unavailable']}")
  if gpu and not found.get("cuda_usable"):
    raise ContainerError(f"the container of {image} sees no usable CUDA device (torch "
                         f"{found.get('versions', {}).get('torch')}): the GPU must be handed "
                         f"to it ({' '.join(gpu_flags(command))})")
  return found.get("versions", {})


def _last_line(text: str) -> str:
  lines = [line for line in text.strip().splitlines() if line.strip()]
  return lines[-1].strip() if lines else ""


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@dataclasses.dataclass(frozen=True)
class Limits:
  """A machine type's shape applied to the container."""
  machine_type: str
  cpus: int
  memory_mib: int

  @classmethod
  def of(cls, machine) -> "Limits":
    """A matrix MachineType's CPUs and memory, as one Dataflow worker of it has them."""
    return cls(machine.name, machine.vcpus, int(machine.memory_gb * 1024))

  def as_dict(self) -> dict[str, Any]:
    return {"machine_type": self.machine_type, "cpus": self.cpus,
            "memory_limit_mib": self.memory_mib}


class WorkerContainer:
  """The image's worker pool in one container; start(), memory(), stop()."""

  def __init__(self, image: str, name: str, limits: Limits, port: int,
               mounts: list[tuple[pathlib.Path, str]], env: dict[str, str], gpu: bool = False):
    self.image, self.name, self.limits, self.port = image, name, limits, port
    self.mounts, self.env, self.gpu = mounts, env, gpu
    self.cli = cli()

  def start(self) -> None:
    # its own hostname (as a Dataflow VM has), so the record tells its workers from the launcher
    args = [self.cli, "run", "-d", "--name", self.name, "--hostname", self.name,
            "--network", "host",
            "--cpus", str(self.limits.cpus), "--memory", f"{self.limits.memory_mib}m",
            "--memory-swap", f"{self.limits.memory_mib}m",  # no swap: a Dataflow VM has none
            "-e", f"BEAM_WORKER_POOL_PORT={self.port}",
            "-e", "HTTP_PROXY=http://127.0.0.1:9", "-e", "HTTPS_PROXY=http://127.0.0.1:9",
            "-e", "HF_HUB_OFFLINE=1", "-e", "TRANSFORMERS_OFFLINE=1",
            *(gpu_flags(self.cli) if self.gpu else [])]
    for name, value in self.env.items():
      args += ["-e", f"{name}={value}"]
    for path, mode in self.mounts:
      args += ["-v", f"{path}:{path}:{mode}"]
    started = _run([*args, self.image, "--worker_pool"], timeout=300)
    if started.returncode:
      raise ContainerError(f"could not start {self.image}: {_last_line(started.stderr)}")
    self._wait_ready()

  def _wait_ready(self) -> None:
    deadline = time.monotonic() + POOL_START_TIMEOUT_S
    while time.monotonic() < deadline:
      try:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1):
          return
      except OSError:
        pass
      if not self.running():
        raise ContainerError(f"the worker pool in {self.image} exited before it listened: "
                             f"{_last_line(self.logs()) or 'no output'}")
      time.sleep(0.1)
    raise ContainerError(f"the worker pool in {self.image} did not listen on port {self.port} "
                         f"within {POOL_START_TIMEOUT_S:.0f} s")

  def running(self) -> bool:
    state = _run([self.cli, "inspect", "--format", "{{.State.Running}}", self.name])
    return state.stdout.strip() == "true"

  def logs(self) -> str:
    done = _run([self.cli, "logs", self.name])
    return done.stdout + done.stderr

  def memory(self) -> dict[str, Any]:
    """Peak memory and OOM kills of the container's cgroup (v1 or v2), read inside it."""
    done = _run([self.cli, "exec", self.name, "sh", "-c",
                 "cd /sys/fs/cgroup; if [ -f memory.peak ] || [ -f memory.events ]; then "
                 "echo v2; cat memory.peak 2>/dev/null || echo -; cat memory.events; else "
                 "echo v1; cat memory/memory.max_usage_in_bytes memory/memory.oom_control; fi"])
    lines = done.stdout.split("\n")
    if done.returncode or not lines or lines[0] not in ("v1", "v2"):
      return {}
    fields = dict(line.split()[:2] for line in lines[2:] if len(line.split()) >= 2)
    peak = lines[1].strip()
    return {"peak_memory_mib": round(int(peak) / 2**20, 1) if peak.isdigit() else None,
            "oom_kills": int(fields.get("oom_kill", 0))}

  def stop(self) -> None:
    # SIGKILL first: the pool is the container's PID 1, which ignores SIGTERM, so a plain
    # `rm -f` waits out the 10 s stop timeout after every run
    _run([self.cli, "kill", self.name], timeout=60)
    _run([self.cli, "rm", "-f", self.name], timeout=60)
