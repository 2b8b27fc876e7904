"""No silent skips: a run whose servers are missing ends with one line naming the skipped groups,
the reason and `make test-servers`; under CI the same run fails. The missing programs are
simulated by a PATH without them (tests/servers.py also looks beside sys.executable, which holds
none of them), in a pytest subprocess on a tiny test file."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

from pipelines.matrix import REPO_ROOT
from tests import skip_summary

TINY = '''
from tests import servers

def test_influx(tmp_path):
    with servers.influxdb_v1(tmp_path):
        pass

def test_victoria(tmp_path):
    with servers.victoria_metrics(tmp_path):
        pass

def test_browser():
    servers.require_binary("chromium", "chromium-browser")

def test_plain():
    assert True
'''


def run_tiny(tmp_path: pathlib.Path, ci: bool) -> subprocess.CompletedProcess:
  for name in ("influxd", "victoria-metrics", "chromium", "chromium-browser"):
    assert not (pathlib.Path(sys.executable).parent / name).exists(), name
  (tmp_path / "test_tiny.py").write_text(TINY)
  empty_bin = tmp_path / "bin"
  empty_bin.mkdir(exist_ok=True)
  env = {k: v for k, v in os.environ.items() if k != "CI"}
  env.update(PATH=str(empty_bin), PYTHONPATH=str(REPO_ROOT), **({"CI": "true"} if ci else {}))
  return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                         "-p", "tests.skip_summary", "-q", str(tmp_path / "test_tiny.py")],
                        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)


def summary_lines(output: str) -> list[str]:
  return [line for line in output.splitlines() if line.startswith(skip_summary.PREFIX)]


def test_missing_servers_are_named_with_the_install_command(tmp_path):
  result = run_tiny(tmp_path, ci=False)
  assert result.returncode == 0, result.stdout + result.stderr
  [line] = summary_lines(result.stdout)
  assert line.startswith("skipped: 3 test(s): ")
  for reason in ("influxd is not installed", "victoria-metrics is not installed",
                 "chromium is not installed"):
    assert reason in line
  assert line.count("test_tiny.py") == 3  # one group per reason, each naming its tests
  assert line.endswith("Install what is missing: make test-servers")
  assert "1 passed, 3 skipped" in result.stdout


def test_under_ci_a_missing_server_fails_the_run(tmp_path):
  result = run_tiny(tmp_path, ci=True)
  assert result.returncode == 1, result.stdout + result.stderr
  assert "3 failed, 1 passed" in result.stdout
  assert "influxd is not installed (make test-servers installs it)" in result.stdout


def test_under_ci_any_skip_for_a_missing_program_fails(tmp_path):
  """The safety net: a skip that bypasses require_binary still fails the CI run."""
  (tmp_path / "test_bypass.py").write_text(
      "import pytest\n"
      "from tests.servers import MISSING_MARK\n"
      "def test_x():\n"
      "    pytest.skip('foo ' + MISSING_MARK)\n")
  env = {**os.environ, "CI": "true", "PYTHONPATH": str(REPO_ROOT)}
  result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p",
                           "tests.skip_summary", "-q", str(tmp_path / "test_bypass.py")],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert result.returncode == 1, result.stdout
  assert "CI=true: a missing program fails the run" in result.stdout


def test_summary_groups_by_reason():
  line = skip_summary.summary_line([
      ("tests/a.py", "x is not installed (make test-servers installs it)"),
      ("tests/a.py", "x is not installed (make test-servers installs it)"),
      ("tests/b.py", "x is not installed (make test-servers installs it)"),
      ("tests/c.py", "this machine has a GPU")])
  assert line == ("skipped: 4 test(s): tests/a.py (2), tests/b.py: x is not installed; "
                  "tests/c.py: this machine has a GPU. Install what is missing: make test-servers")
  assert skip_summary.summary_line([("tests/c.py", "this machine has a GPU")]) == (
      "skipped: 1 test(s): tests/c.py: this machine has a GPU")
  assert skip_summary.summary_line([]) is None


def test_a_run_without_skips_says_so(tmp_path):
  (tmp_path / "test_ok.py").write_text("def test_ok():\n    assert True\n")
  result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p",
                           "tests.skip_summary", "-q", str(tmp_path / "test_ok.py")],
                          cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stdout
  assert summary_lines(result.stdout) == ["skipped: none"]
