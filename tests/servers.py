"""Real servers on loopback for the publishing tests, each started in a temp folder on a free
port and stopped at the end: InfluxDB 1.x (Debian's influxdb), VictoriaMetrics (speaks the
InfluxDB v2 write protocol), the BigQuery emulator (PyPI bqemulator), and Google's Pub/Sub
emulator for the streaming launches. Plus two misbehaving
servers for fault tests: one that answers HTTP 500, one that accepts and never answers.

`make test` installs their Debian packages first where it can (root, or sudo without a
password: infra/apt-install.sh). A missing binary skips the tests that need it locally, but fails
them under CI (CI=true), where .ci/run installs every server (`make test-servers`). Every test
that needs an installed program goes through `require_binary`, so the rule holds everywhere and
the end-of-run summary (tests/skip_summary.py) can name the one command that installs what is
missing.
"""
from __future__ import annotations

import contextlib
import http.server
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


INSTALL_COMMAND = "make test-servers"
MISSING_MARK = f"is not installed ({INSTALL_COMMAND} installs it)"


def require_binary(name: str, *alternatives: str) -> str:
  """The path of `name` (or of the first alternative found) on PATH or beside this Python.
  Missing: the test is skipped locally and fails under CI."""
  for candidate in (name, *alternatives):
    path = (shutil.which(candidate)
            or shutil.which(candidate, path=os.path.dirname(sys.executable)))
    if path:
      return path
  message = f"{name} {MISSING_MARK}"
  if os.environ.get("CI", "").lower() not in ("", "0", "false"):
    pytest.fail(message)
  pytest.skip(message)


def wait_until(url: str, process: subprocess.Popen, log: pathlib.Path, timeout_s: float = 60,
               ok=(200, 204)) -> None:
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    if process.poll() is not None:
      raise RuntimeError(f"{process.args[0]} exited: {log.read_text()[-2000:]}")
    with contextlib.suppress(requests.RequestException):
      if requests.get(url, timeout=1).status_code in ok:
        return
    time.sleep(0.2)
  raise RuntimeError(f"{url} not ready after {timeout_s}s: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def serve(args: list[str], ready_url: str, folder: pathlib.Path, env=None):
  log = folder / "server.log"
  with open(log, "wb") as out:
    process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=folder,
                               env={**os.environ, **(env or {})})
  try:
    wait_until(ready_url, process, log)
    yield
  finally:
    process.terminate()
    try:
      process.wait(timeout=10)
    except subprocess.TimeoutExpired:
      process.kill()


@contextlib.contextmanager
def influxdb_v1(folder: pathlib.Path, auth: bool = False):
  """With auth, the server requires users: the first `CREATE USER ... WITH ALL PRIVILEGES`
  (allowed without credentials while there is no user) creates the admin."""
  binary = require_binary("influxd")
  http_port, rpc_port = free_port(), free_port()
  config = folder / "influxdb.conf"
  config.write_text(f"""
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"
[meta]
  dir = "{folder}/meta"
[data]
  dir = "{folder}/data"
  wal-dir = "{folder}/wal"
[http]
  bind-address = "127.0.0.1:{http_port}"
  log-enabled = false
  auth-enabled = {str(auth).lower()}
""")
  url = f"http://127.0.0.1:{http_port}"
  with serve([binary, "-config", str(config)], f"{url}/ping", folder):
    yield url


@contextlib.contextmanager
def victoria_metrics(folder: pathlib.Path, auth: tuple[str, str] | None = None):
  """With auth=(user, password), every endpoint but /health requires HTTP basic auth."""
  binary = require_binary("victoria-metrics")
  port = free_port()
  url = f"http://127.0.0.1:{port}"
  extra = [f"-httpAuth.username={auth[0]}", f"-httpAuth.password={auth[1]}"] if auth else []
  # Dedup at 1ms keeps one sample per series and timestamp, as InfluxDB does.
  with serve([binary, f"-storageDataPath={folder}/vm", f"-httpListenAddr=127.0.0.1:{port}",
              "-dedup.minScrapeInterval=1ms", "-loggerLevel=ERROR", *extra],
             f"{url}/health", folder):
    yield url


@contextlib.contextmanager
def bigquery_emulator(folder: pathlib.Path):
  binary = require_binary("bqemulator")
  home = folder / "home"
  home.mkdir()
  # The emulator's DuckDB needs its spatial extension registered from the PyPI wheel (offline).
  import duckdb
  import duckdb_extension_spatial
  extension = next(pathlib.Path(duckdb_extension_spatial.__file__).parent.rglob(
      "spatial.duckdb_extension"))
  subprocess.run([sys.executable, "-c",
                  f"import duckdb; duckdb.connect().execute(\"INSTALL '{extension}'\")"],
                 env={**os.environ, "HOME": str(home)}, check=True)
  del duckdb
  rest, grpc = free_port(), free_port()
  url = f"http://127.0.0.1:{rest}"
  with serve([binary, "start", "--rest-host", "127.0.0.1", "--rest-port", str(rest),
              "--grpc-host", "127.0.0.1", "--grpc-port", str(grpc), "--project", "test"],
             f"{url}/healthz", folder, env={"HOME": str(home)}):
    yield url


class _Always500(http.server.BaseHTTPRequestHandler):
  def _fail(self):
    length = int(self.headers.get("Content-Length") or 0)
    self.rfile.read(length)
    self.send_response(500)
    self.end_headers()
    self.wfile.write(b"internal error (test server)")

  do_GET = do_POST = do_PUT = _fail

  def log_message(self, *args):
    pass


@contextlib.contextmanager
def _http_server(handler: type[http.server.BaseHTTPRequestHandler]):
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    yield f"http://127.0.0.1:{server.server_address[1]}"
  finally:
    server.shutdown()


def http_500():
  return _http_server(_Always500)


@contextlib.contextmanager
def hanging_server():
  """Accepts connections and never answers: a client without a timeout would wait forever."""
  listener = socket.socket()
  listener.bind(("127.0.0.1", 0))
  listener.listen(16)
  held: list[socket.socket] = []
  stop = threading.Event()

  def accept():
    listener.settimeout(0.2)
    while not stop.is_set():
      with contextlib.suppress(OSError):
        held.append(listener.accept()[0])

  thread = threading.Thread(target=accept, daemon=True)
  thread.start()
  try:
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
  finally:
    stop.set()
    thread.join()
    for conn in held:
      conn.close()
    listener.close()


@contextlib.contextmanager
def rewriting_proxy(upstream: str, path_suffix: str, answer: dict):
  """Forwards every request to `upstream` (a real server), except that requests whose path
  ends with `path_suffix` (query string aside) get `answer` as a 200 JSON body."""
  import json as json_module

  class Proxy(http.server.BaseHTTPRequestHandler):
    def _forward(self):
      body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
      if self.path.split("?")[0].endswith(path_suffix):
        status, payload, kind = 200, json_module.dumps(answer).encode(), "application/json"
      else:
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        response = requests.request(self.command, upstream + self.path, data=body or None,
                                    headers=headers, timeout=30)
        status, payload = response.status_code, response.content
        kind = response.headers.get("Content-Type", "application/json")
      self.send_response(status)
      self.send_header("Content-Type", kind)
      self.send_header("Content-Length", str(len(payload)))
      self.end_headers()
      self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

    def log_message(self, *args):
      pass

  with _http_server(Proxy) as url:
    yield url


def closed_port_url() -> str:
  return f"http://127.0.0.1:{free_port()}"


# Google's Pub/Sub emulator: Debian package google-cloud-cli-pubsub-emulator (Google's apt
# repository, part of this machine image), a Java program outside PATH.
PUBSUB_EMULATOR = "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator"


@contextlib.contextmanager
def pubsub_emulator(folder: pathlib.Path):
  """Yields host:port, the value for PUBSUB_EMULATOR_HOST (google-cloud-pubsub honours it)."""
  binary = require_binary("cloud-pubsub-emulator", PUBSUB_EMULATOR)
  port = free_port()
  with serve([binary, "--host=127.0.0.1", f"--port={port}"], f"http://127.0.0.1:{port}/",
             folder):
    yield f"127.0.0.1:{port}"
