"""Through make every failure exits 2 (GNU make's own status), so each program's recipe ends a
failure with one line naming the program's own exit code and what it means
(infra/explain-exit.sh), and signals reach the program as they did when make ran it directly:
Ctrl-C once, from the terminal; a SIGTERM sent to make, passed on. Real `make` runs on a copy of
the kit whose venv `python` is a stand-in that exits with the code a test asks for."""
from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from pipelines.matrix import REPO_ROOT

# The stand-in: `python -m MODULE ...` exits FAKE_RC when MODULE is FAKE_MODULE (0 otherwise),
# or with FAKE_WAIT runs until a signal, logging the signals it gets.
STAND_IN = """#!/usr/bin/env bash
[ "$2" = "${FAKE_MODULE:-}" ] || exit 0
trap 'echo INT >> signals; exit 130' INT
trap 'echo TERM >> signals; exit 143' TERM
echo "$$" > started
if [ -n "${FAKE_WAIT:-}" ]; then while :; do sleep 0.05; done; fi
exit "${FAKE_RC:-0}"
"""
NOTE = "(make itself exits 2 for any failure)"


@pytest.fixture
def kit(tmp_path):
  root = tmp_path / "kit"
  root.mkdir()
  for name in ("Makefile", ".python-version", "pipelines", "infra", "requirements", "docker"):
    (root / name).symlink_to(REPO_ROOT / name)
  python = root / "venv" / "bin" / "python"
  python.parent.mkdir(parents=True)
  python.write_text(STAND_IN)
  python.chmod(0o755)
  for stamp in (".base", ".test"):  # newer than requirements/: `setup` has nothing to do
    (root / "venv" / stamp).touch()
  return root


def env_for(**fake: str) -> dict[str, str]:
  env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
  return {**env, "PYTHON": sys.executable, **{f"FAKE_{k.upper()}": v for k, v in fake.items()}}


def make(kit: pathlib.Path, *args: str, **fake: str) -> subprocess.CompletedProcess:
  return subprocess.run(["make", *args, "VENV=venv"], cwd=kit, capture_output=True, text=True,
                        timeout=60, env=env_for(**fake))


CASES = [
    (["bench-resnet101", "INPUT=in.txt"], "pipelines.run", 1,
     "pipelines.run exited 1: the run failed; its record is saved"),
    (["bench-resnet101", "INPUT=in.txt"], "pipelines.run", 2,
     "pipelines.run exited 2: refused before anything ran"),
    (["bench-all", "RUNNER=DataflowRunner"], "pipelines.bench_all", 130,
     "pipelines.bench_all exited 130: interrupted (SIGINT: Ctrl-C)"),
    (["report"], "pipelines.report", 3,
     "pipelines.report exited 3: a regression is flagged (FAIL_ON_REGRESSION=1)"),
    (["publish"], "pipelines.publish", 1,
     "pipelines.publish exited 1: a run was not delivered; the attempt is on its record"),
    (["compare"], "pipelines.report.compare", 1,
     "pipelines.report.compare exited 1: it failed: see the lines above"),
    (["plan", "BENCH=resnet101"], "pipelines.capacity", 2,
     "pipelines.capacity exited 2: refused before anything ran"),
    (["sweep", "BENCH=bert-base"], "pipelines.data", 2,  # its data, refused for the disk
     "pipelines.data exited 2: refused before anything ran"),
    (["sweep", "BENCH=bert-base"], "pipelines.sweep", 137,
     "pipelines.sweep exited 137: killed by SIGKILL"),
]


@pytest.mark.parametrize("args,module,code,line", CASES,
                         ids=[f"{c[1]}-{c[2]}" for c in CASES])
def test_a_failure_ends_with_the_programs_own_exit_code(kit, args, module, code, line):
  done = make(kit, *args, module=module, rc=str(code))
  assert done.returncode == 2  # make's own, whatever the program returned
  ours, makes = done.stderr.splitlines()[-2:]
  assert ours == f"{line} {NOTE}"
  assert makes.startswith("make: *** [Makefile:") and makes.endswith(f"Error {code}")


def test_a_success_adds_no_line(kit):
  done = make(kit, "report", module="pipelines.report", rc="0")
  assert done.returncode == 0 and done.stderr == ""


def wait_for(path: pathlib.Path, process: subprocess.Popen) -> None:
  deadline = time.monotonic() + 30
  while not path.exists():
    assert process.poll() is None, process.communicate()
    assert time.monotonic() < deadline, "the stand-in never started"
    time.sleep(0.05)


def start_waiting(kit: pathlib.Path) -> subprocess.Popen:
  # its own session: the process group a terminal's Ctrl-C would reach
  process = subprocess.Popen(["make", "report", "VENV=venv"], cwd=kit, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True,
                             env=env_for(module="pipelines.report", wait="1"))
  wait_for(kit / "started", process)
  return process


def test_ctrl_c_reaches_the_program_once_and_its_code_is_named(kit):
  process = start_waiting(kit)
  os.killpg(process.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
  _, stderr = process.communicate(timeout=30)
  assert (kit / "signals").read_text().split() == ["INT"]
  assert f"pipelines.report exited 130: interrupted (SIGINT: Ctrl-C) {NOTE}" in stderr


def test_a_sigterm_to_make_reaches_the_program(kit):
  """Make passes a SIGTERM on to its child, the recipe's script, which passes it on."""
  process = start_waiting(kit)
  process.send_signal(signal.SIGTERM)  # make alone, not its process group
  _, stderr = process.communicate(timeout=30)
  assert (kit / "signals").read_text().split() == ["TERM"]
  assert f"pipelines.report exited 143: stopped (SIGTERM) {NOTE}" in stderr
  pid = int((kit / "started").read_text())
  with pytest.raises(ProcessLookupError):
    os.kill(pid, 0)  # not left running


@pytest.mark.parametrize("args", [
    ["bench-resnet101"], ["bench-all"], ["perf"], ["sweep", "BENCH=resnet101"],
    ["compare-profiles", "BENCH=resnet101"], ["plan", "BENCH=resnet101"],
    ["plan-check", "BENCH=resnet101", "N=2"], ["publish"], ["report"], ["compare"], ["data"]],
    ids=lambda args: args[0])
def test_every_program_recipe_explains_its_exit_code(args):
  done = subprocess.run(["make", "-n", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                        timeout=60, env=env_for())
  assert done.returncode == 0, done.stderr
  programs = [line for line in done.stdout.splitlines()
              if " -m pipelines." in line and "pipelines.worker.models" not in line]
  assert programs and all(line.lstrip().startswith("infra/explain-exit.sh ") for line in programs)
