"""A password in an InfluxDB URL that is not perfectly formed (no scheme; an unencoded '/', '#',
'?' or '@' in it) never reaches stdout, stderr, a record, the report or `make doctor`. Checked
against real servers on loopback."""
# ruff: noqa: F811 - the fixtures imported from test_publish are these tests' parameters
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import requests

from pipelines.matrix import REPO_ROOT
from pipelines.post_run import publish as publish_after_run
from pipelines.publish import metrics_rows, publisher
from pipelines.report import __main__ as report_cli
from tests import servers
from tests import test_publish as pub
from tests.records import make_record
from tests.test_publish import no_targets, results  # noqa: F401 - fixtures

# As a password manager makes them: reserved URL characters, unencoded.
PASSWORDS = ["k9Q/zR7w", "k9Q#zR7w", "k9Q?zR7w@m2X"]


@pytest.fixture
def env(no_targets):
  """No publishing target from the caller's environment, a short publish timeout."""
  return no_targets


def doctor_output() -> str:
  """`make doctor` runs exactly this, with the environment (as patched) on top of .env."""
  done = subprocess.run([sys.executable, "-m", "pipelines.doctor"], cwd=REPO_ROOT,
                        env=dict(os.environ), capture_output=True, text=True, timeout=60)
  assert done.returncode == 0, done.stderr
  return done.stdout + done.stderr


def report_output(results, capsys) -> str:
  assert report_cli.main(["--results-dir", str(results)]) == 0
  out = capsys.readouterr()
  # The page's plots are base64 PNGs: a three-letter piece of a password turns up in them by
  # chance (1 in ~40 runs), so the search skips the image data.
  page = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:image/png;base64,",
                (results / "report.html").read_text())
  return out.out + out.err + page


def everywhere(out, record, results, capsys, doctor: str) -> dict[str, str]:
  """Every place a secret could reach: the run's output, its record, the report, doctor."""
  return {"stdout": out.out, "stderr": out.err,
          "record": json.dumps(pub.reload(record, results).to_dict()),
          "ledger": json.dumps(pub.ledger_of(record, results)),
          "report": report_output(results, capsys), "doctor": doctor}


def assert_never_shown(password: str, texts: dict[str, str]) -> None:
  """Neither the password nor a piece of it cut at a reserved character."""
  pieces = [password] + [p for p in re.split(r"[/#?@]", password) if len(p) >= 3]
  leaks = [(where, piece) for where, text in texts.items() for piece in pieces if piece in text]
  assert not leaks, leaks


@pytest.mark.parametrize("password", PASSWORDS)
def test_influxdb_v1_password_with_reserved_characters_is_sent_and_never_shown(
    password, tmp_path, results, env, capsys):
  with servers.influxdb_v1(tmp_path, auth=True) as url:
    requests.post(f"{url}/query", params={"q": f"CREATE USER kit WITH PASSWORD '{password}' "
                                               "WITH ALL PRIVILEGES"}, timeout=5)
    pub.create_db(url, auth=("kit", password))
    pub.influx_v1_env(env, f"http://kit:{password}@{url.removeprefix('http://')}")
    record = make_record(results)
    assert publisher.main(["--results-dir", str(results)]) == 0
    stored = pub.influx_query(url, f'SELECT * FROM "{pub.TUNED_MEASUREMENT}"',
                              auth=("kit", password))
    doctor = doctor_output()
  assert len(stored) == len(metrics_rows.published_metrics(record))  # the password worked
  assert publisher.main(["--results-dir", str(results), "--run", record.run_id]) == 1
  out = capsys.readouterr()
  assert f"InfluxDB v1 at {url} (beam_test_metrics)" in out.out
  assert "ConnectionError" in out.err  # the server is gone: the error path is redacted too
  assert f"InfluxDB v1 at {url} (db beam_test_metrics, password set (hidden))" in doctor
  assert "password set (hidden)" in doctor and "reachable (HTTP 204" in doctor
  assert_never_shown(password, everywhere(out, record, results, capsys, doctor))


def test_influxdb_v2_password_with_reserved_characters_is_sent_and_never_shown(
    tmp_path, results, env, capsys):
  password = "k9Q#zR7w/x?y@m2X"
  with servers.victoria_metrics(tmp_path, auth=("kit", password)) as url:
    env.setenv("INFLUXDB_URL", f"http://kit:{password}@{url.removeprefix('http://')}")
    env.setenv("INFLUXDB_BUCKET", "beam")
    record = make_record(results)
    assert publisher.main(["--results-dir", str(results)]) == 0
    exported = pub.vm_export(url, pub.TUNED_MEASUREMENT, pub.KIT_STEP + "num_inferences",
                         auth=("kit", password))
    doctor = doctor_output()
  assert [line["values"] for line in exported] == [[64.0]]
  # The server is gone: influxdb-client's own error message goes through the redaction.
  assert publisher.main(["--results-dir", str(results), "--run", record.run_id]) == 1
  out = capsys.readouterr()
  assert "InfluxDB v2 at http://127.0.0.1" in out.err
  assert_never_shown(password, everywhere(out, record, results, capsys, doctor))


def test_url_without_a_scheme_is_refused_in_one_line_that_hides_the_password(
    tmp_path, results, env, capsys):
  password = "k9Q/zR7w"
  with servers.influxdb_v1(tmp_path) as url:  # a real server behind it: nothing reaches it
    pub.create_db(url)
    host = url.removeprefix("http://")
    pub.influx_v1_env(env, f"kit:{password}@{host}")
    record = make_record(results)
    assert publisher.main(["--results-dir", str(results)]) == 2
    publish_after_run(record, results)  # the post-run step of the launcher
    doctor = doctor_output()
    assert pub.influx_v1_points(url) == []
  out = capsys.readouterr()
  refusal = f"INFLUXDB_URL must start with http:// or https:// (got '***@{host}')"
  assert out.err.splitlines() == [f"error: {refusal}", f"warning: not published: {refusal}"]
  assert f"InfluxDB misconfigured: {refusal}" in doctor
  assert not pub.ledger_of(record, results)  # no attempt was made
  assert_never_shown(password, everywhere(out, record, results, capsys, doctor))


def test_records_written_before_keep_no_password_cut_at_a_reserved_character(results, env):
  url = servers.closed_port_url()
  host = url.removeprefix("http://")
  record = make_record(results)
  old = {**record.to_dict(), "schema_version": 1, "publish": {"influxdb": {
      # as an earlier version stored it: inside the record, the password in the URL
      "status": "failed", "target": f"InfluxDB v1 at http://kit:k9Q/zR7w@{host} (db)",
      "error": f"InfluxDB v1 at kit:k9Q#zR7w@{host} (db): ConnectionError",
      "at": "2026-11-01T00:00:00+00:00"}}}
  from pipelines.record import store
  store.path_for(record, results).write_text(json.dumps(old))
  pub.influx_v1_env(env, url)
  assert publisher.main(["--results-dir", str(results)]) == 1  # down: the attempt is recorded
  saved = json.dumps(pub.ledger_of(record, results))
  assert "k9Q" not in saved and "zR7w" not in saved
