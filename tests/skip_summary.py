"""No silent skips: a pytest plugin (loaded by tests/conftest.py) that ends every run with one
line naming each group of skipped tests, the reason, and the one command that installs what is
missing. Under CI (CI=true) a skip for a missing program fails the run, even one that bypassed
tests/servers.py's require_binary (which already fails there).
"""
from __future__ import annotations

import collections
import os

import pytest

from tests.servers import INSTALL_COMMAND, MISSING_MARK

PREFIX = "skipped:"


def under_ci() -> bool:
  return os.environ.get("CI", "").lower() not in ("", "0", "false")


def _reason(report: pytest.TestReport) -> str:
  longrepr = report.longrepr
  reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
  return reason.removeprefix("Skipped: ").strip()


def _skips(stats: dict) -> list[tuple[str, str]]:
  """(test file, reason) of every skipped test, xfails aside."""
  return [(report.nodeid.split("::")[0], _reason(report)) for report in stats.get("skipped", [])
          if not hasattr(report, "wasxfail")]


def _is_missing_program(reason: str) -> bool:
  return MISSING_MARK in reason


def summary_line(skips: list[tuple[str, str]]) -> str | None:
  """One line: per reason, the test files (with counts) it skipped; then the install command
  when a program is missing."""
  if not skips:
    return None
  by_reason: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
  for path, reason in skips:
    by_reason[reason][path] += 1
  groups = []
  for reason, files in by_reason.items():
    where = ", ".join(f"{path} ({n})" if n > 1 else path for path, n in files.items())
    short = reason.replace(f" ({INSTALL_COMMAND} installs it)", "")
    groups.append(f"{where}: {short}")
  line = f"{PREFIX} {len(skips)} test(s): " + "; ".join(groups)
  if any(_is_missing_program(reason) for _, reason in skips):
    line += f". Install what is missing: {INSTALL_COMMAND}"
  return line


def pytest_terminal_summary(terminalreporter, exitstatus, config):
  line = summary_line(_skips(terminalreporter.stats))
  if line is None:
    terminalreporter.write_line(f"{PREFIX} none")
  else:
    if under_ci() and "Install what is missing" in line:
      line += " (CI=true: a missing program fails the run)"
    terminalreporter.write_sep("-", "skipped tests")
    terminalreporter.write_line(line, yellow=True, bold=True)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
  reporter = session.config.pluginmanager.get_plugin("terminalreporter")
  if not under_ci() or reporter is None:
    return
  if any(_is_missing_program(reason) for _, reason in _skips(reporter.stats)):
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
