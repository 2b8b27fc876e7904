"""Make variables are text, never shell or Make code (issue 15): real `make` runs with hostile
values. Each run uses a copy of the kit's tree whose VENV holds a stand-in `python` that records
the arguments and settings it was started with, so a test sees exactly what reached the programs
and nothing Python-heavy runs."""
import json
import os
import pathlib
import shlex
import subprocess
import sys

import pytest

from pipelines.matrix import REPO_ROOT

SENTINEL = "pwned"
HOSTILE = f"1;touch {SENTINEL}"
RECORDED_ENV = ("INFLUXDB_PASSWORD", "PROJECT", "N")


@pytest.fixture
def kit(tmp_path):
  """A tree that runs the Makefile: the kit's sources linked, a stand-in venv of its own (one
  folder down, so that even a broken `make clean` could only reach this test's folder)."""
  root = tmp_path / "kit"
  root.mkdir()
  for name in ("Makefile", ".python-version", "pipelines", "infra", "requirements", "docker"):
    (root / name).symlink_to(REPO_ROOT / name)
  venv = root / "venv"
  (venv / "bin").mkdir(parents=True)
  (venv / "bin" / "python.py").write_text(
      "import json, os, sys\n"
      f"env = {{k: os.environ.get(k) for k in {RECORDED_ENV!r}}}\n"
      "record = {'argv': sys.argv[1:], 'env': env}\n"
      "with open('calls.jsonl', 'a') as f:\n"
      "  f.write(json.dumps(record) + '\\n')\n")
  python = venv / "bin" / "python"  # runs python.py beside it
  python.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$0.py" "$@"\n')
  python.chmod(0o755)
  for stamp in (".base", ".test"):  # newer than requirements/: `setup` has nothing to do
    (venv / stamp).touch()
  return root


def make(kit: pathlib.Path, *args: str, env: dict[str, str] | None = None):
  result = subprocess.run(["make", *args, "VENV=venv"], cwd=kit, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHON": sys.executable, **(env or {})})
  log = kit / "calls.jsonl"
  calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
  return result, calls


def assert_refused(result, calls, kit, variable: str):
  assert result.returncode == 2, result.stderr
  lines = result.stderr.splitlines()
  assert len(lines) == 1 and f"*** error: {variable} must be" in lines[0], result.stderr
  assert result.stdout == "" and calls == []  # nothing ran
  assert not (kit / SENTINEL).exists()


REFUSED = [
    ("bench-resnet101", "N"), ("bench-resnet101", "BATCH_SIZE"), ("bench-resnet101", "LAYOUT"),
    ("bench-bert-base", "BATCHING"), ("bench-resnet101", "RUNNER"), ("bench-resnet101", "PROFILE"),
    ("bench-all", "DRY_RUN"), ("models", "WEIGHTS"), ("data", "N"), ("perf", "REPEATS"),
    ("perf", "LAYOUTS"), ("perf", "PERF_BENCHMARKS"), ("sweep", "BENCH"), ("sweep", "BATCH_SIZES"),
    ("sweep", "BATCHINGS"), ("compare-profiles", "BENCH"), ("report", "FAIL_ON_REGRESSION"),
    ("compare", "CROSS_PROFILE"), ("push", "REGISTRY"), ("push", "IMAGE_TAG"),
    ("bench-resnet101", "OPTIMIZE"), ("sweep", "OPTIMIZATIONS"),
]


@pytest.mark.parametrize("goal,variable", REFUSED, ids=[f"{g}-{v}" for g, v in REFUSED])
def test_a_value_of_the_wrong_shape_is_refused_before_anything_runs(kit, goal, variable):
  extra = ["BENCH=resnet101"] if goal == "sweep" and variable != "BENCH" else []
  result, calls = make(kit, goal, f"{variable}={HOSTILE}", *extra)
  assert_refused(result, calls, kit, variable)
  assert f"not '{HOSTILE}'" in result.stderr


@pytest.mark.parametrize("source", ["environment", ".env", "make code"])
def test_n_is_refused_wherever_it_comes_from(kit, source):
  args, env = ["bench-resnet101"], {}
  if source == "environment":
    env["N"] = HOSTILE
  elif source == ".env":
    (kit / ".env").write_text(f"PROJECT=p\nN={HOSTILE}\n")
  else:  # Make would run this itself while exporting N
    args.append(f"N=$(shell touch {SENTINEL})")
  result, calls = make(kit, *args, env=env)
  assert_refused(result, calls, kit, "N")


def run_args(calls, module: str) -> list[str]:
  [call] = [c for c in calls if c["argv"][:2] == ["-m", module]]
  return call["argv"][2:]


# Free-form values (paths, run ids, URLs) reach the program as one argument, exactly as given.
PASSED = [
    ("bench-resnet101", ["INPUT=`touch pwned`"], "pipelines.run", ["--input", "`touch pwned`"]),
    ("bench-resnet101", ["INPUT=gs://bkt-x/my list.txt", "RUNNER=DataflowRunner"], "pipelines.run",
     ["--input", "gs://bkt-x/my list.txt"]),
    ("bench-all", ["RESULTS=r;touch pwned"], "pipelines.bench_all",
     ["--results-dir", "r;touch pwned"]),
    ("compare", ["A=a;touch pwned", "B=it's $(touch pwned)"], "pipelines.report.compare",
     ["--", "a;touch pwned", "it's $(touch pwned)"]),
    ("compare", ["A=--cross-profile"], "pipelines.report.compare", ["--", "--cross-profile"]),
    ("publish", ["RUN=$(shell touch pwned)", "RESULTS=my results"], "pipelines.publish",
     ["--results-dir", "my results", "--run", "$(shell touch pwned)"]),
    ("report", ["RESULTS=\"'`touch pwned`'\""], "pipelines.report",
     ["--results-dir", "\"'`touch pwned`'\""]),
    ("sweep", ["BENCH=resnet101", "RESULTS=$$(touch pwned)"], "pipelines.sweep",
     ["resnet101", "--results-dir", "$$(touch pwned)"]),
    ("compare-profiles", ["BENCH=bert-base", "RESULTS=x|touch pwned"], "pipelines.compare_profiles",
     ["bert-base", "--results-dir", "x|touch pwned"]),
]


@pytest.mark.parametrize("goal,args,module,expected", PASSED,
                         ids=[f"{p[0]}-{p[1][0].split('=')[0]}-{i}" for i, p in enumerate(PASSED)])
def test_a_free_form_value_reaches_the_program_as_one_argument(kit, goal, args, module, expected):
  result, calls = make(kit, goal, *args)
  assert result.returncode == 0, result.stderr
  argv = run_args(calls, module)
  assert " ".join(expected) in " ".join(argv) and all(e in argv for e in expected), argv
  assert not (kit / SENTINEL).exists()


def test_env_file_values_are_text(kit):
  """.env is read as `make doctor` reads it: a `$` or `#` in a password stays in it."""
  (kit / ".env").write_text(f"INFLUXDB_PASSWORD=pa$(shell touch {SENTINEL})#s s\n"
                            f"RESULTS=res;touch {SENTINEL}\n")
  result, calls = make(kit, "report")
  assert result.returncode == 0, result.stderr
  assert run_args(calls, "pipelines.report") == ["--results-dir", f"res;touch {SENTINEL}"]
  assert calls[0]["env"]["INFLUXDB_PASSWORD"] == f"pa$(shell touch {SENTINEL})#s s"
  assert not (kit / SENTINEL).exists()


def test_a_command_line_setting_reaches_the_programs_as_text(kit):
  result, calls = make(kit, "report", f"PROJECT=p$(shell touch {SENTINEL})")
  assert result.returncode == 0, result.stderr
  assert calls[0]["env"]["PROJECT"] == f"p$(shell touch {SENTINEL})"
  assert not (kit / SENTINEL).exists()


def test_the_goal_names_in_an_error_line_are_text(kit):
  result, calls = make(kit, "sweep", f'x";touch {SENTINEL};echo "')
  assert result.returncode == 2 and "needs BENCH=<name>" in result.stderr
  assert calls == [] and not (kit / SENTINEL).exists()


def test_clean_removes_exactly_the_results_folder_named(kit):
  results = kit / f"r;touch {SENTINEL}"
  (results / "x").mkdir(parents=True)
  (kit / "r").mkdir()
  result, _ = make(kit, "clean", f"RESULTS={results.name}")
  assert result.returncode == 0, result.stderr
  assert not results.exists() and (kit / "r").exists() and not (kit / SENTINEL).exists()


@pytest.mark.parametrize("variable,value", [("RESULTS", "{above}"), ("RESULTS", ".."),
                                            ("RESULTS", "./"), ("VENV", "{home}"), ("RESULTS", "")])
def test_clean_refuses_a_folder_that_holds_the_kit_or_home(kit, variable, value):
  home = kit.parent / "home"
  (home / "me").mkdir(parents=True)
  (kit / "data").mkdir()
  value = value.format(above=kit.parent, home=home)
  result = subprocess.run(["make", "clean", f"{variable}={value}"], cwd=kit, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHON": sys.executable,
                                                      "HOME": str(home / "me")})
  assert result.returncode == 2, result.stderr
  [line] = result.stderr.splitlines()
  assert "*** error:" in line and variable in line, line
  assert (kit / "data").exists() and (home / "me").exists()
