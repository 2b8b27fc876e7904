"""Real Dataflow launches (no --dry_run) through the kit's launcher and Beam's DataflowRunner,
against local doubles of Google Cloud: the Dataflow v1b3 REST API (tests/dataflow_double.py)
and GCS (fake-gcs-server). Beam stages the pipeline to the fake bucket, creates the job, the
launcher watches it, reads its metrics and its own figures, and cancels it when interrupted."""
from __future__ import annotations

import collections
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests

from pipelines import dataflow, preflight, run
from pipelines.matrix import REPO_ROOT
from pipelines.record import store
from pipelines.record.schema import Record
from pipelines.worker import worker_facts
from tests.dataflow_double import (
  dataflow_double,
  fake_gcs,
  resource_metric,
  user_counter,
  user_distribution,
)

SETTINGS = {"PROJECT": "proj-123456", "REGION": "us-central1",
            "TEMP_LOCATION": "gs://bkt-x/tmp", "REGISTRY": "us-docker.pkg.dev/proj-123456/bench",
            "IMAGE_TAG": "0123abcd",
            "BENCHMARK_MATRIX": str(REPO_ROOT / "tests" / "small-matrix.toml"),
            "DATAFLOW_POLL_S": "0.2", "DATAFLOW_API_RETRIES": "3"}
DIGEST = "sha256:" + "ab" * 32
IMAGE = "us-docker.pkg.dev/proj-123456/bench/beam-bench-cpu-resnet"

# What a finished small-resnet job reports: 1,000 images in 500 batches of 2 on 2 workers
# (4 SDK processes, 4 model loads), and what Dataflow metered: 2 n1-standard-2 workers (2 vCPU,
# 7.5 GB, 50 GB disk) for 420 s each.
JOB_METRICS = [
    user_counter("num_inferences", 1000),
    user_distribution("inference_request_batch_size", 1000, 500, 2, 2),
    user_distribution("inference_batch_latency_micro_secs", 500 * 20_000, 500, 15_000, 30_000),
    user_distribution("load_model_latency_milli_secs", 4 * 1_500, 4, 1_200, 1_800),
    user_counter("model_loaded_on_cpu", 4, namespace="BenchmarkKit", step="RunInference"),
    user_counter("model_weights_pretrained", 4, namespace="BenchmarkKit", step="RunInference"),
    # Worker facts, 2 model loads per worker; the service sums a counter over workers.
    *[user_counter(name, count, namespace="BenchmarkKit", step="RunInference")
      for name, count in collections.Counter(
          name for worker in ("beam-bench-small-resn-11290130-abcd-harness-x1y2",
                              "beam-bench-small-resn-11290130-abcd-harness-z3w4")
          for name in worker_facts.counter_names(
              {"torch": "2.14.1+cpu", "cuda": "none", "hostname": worker,
               "python": "3.11.14", "apache-beam": "2.77.0"}) * 2).items()],
    # Each of the 4 SDK processes (2 per worker) reports its torch threads (process_stats).
    *[user_distribution(f"process/{worker}:{pid}/intra_op_threads", 2, 1, 2, 2,
                        namespace="BenchmarkKit", step="RunInference")
      for worker in ("x1y2", "z3w4") for pid in (11, 12)],
    resource_metric("TotalVcpuTime", 2 * 2 * 420),
    resource_metric("TotalMemoryUsage", 2 * 7680 * 420),
    resource_metric("TotalPdUsage", 2 * 50 * 420),
]
EXPECTED_COST = (1680 / 3600 * 0.056 + 2 * 7680 * 420 / 1000 / 3600 * 0.003557
                 + 42000 / 3600 * 0.000054)


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
  with fake_gcs(tmp_path_factory.mktemp("gcs")) as url:
    yield url


@pytest.fixture
def double():
  with dataflow_double() as d:
    d.metrics = list(JOB_METRICS)
    yield d


@pytest.fixture
def cloud(monkeypatch, gcs, tmp_path):
  """The launch's environment: settings, the storage double, a pushed digest for the tag."""
  build = tmp_path / "build"
  dataflow.write_digest(build / "image-cpu-resnet.digest", f"{IMAGE}:0123abcd",
                        f"{IMAGE}@{DIGEST}")
  env = {**SETTINGS, "STORAGE_EMULATOR_HOST": gcs, "BENCH_BUILD_DIR": str(build)}
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  for name in ("INFLUXDB_URL", "BIGQUERY_DATASET"):
    monkeypatch.delenv(name, raising=False)
  return env


def launch_args(double, results: pathlib.Path, bench: str = "small-resnet") -> list[str]:
  return [bench, "--runner", "DataflowRunner", "--results-dir", str(results),
          f"--dataflow_endpoint={double.url}", "--no_auth"]


def records(results: pathlib.Path) -> list[Record]:
  return store.load_all(results)


def test_a_finished_job_gives_the_seed_metrics_and_job_based_figures(cloud, double, gcs,
                                                                      tmp_path, capsys):
  double.window_s = 250.0
  assert run.main(launch_args(double, tmp_path / "results")) == 0
  (record,) = records(tmp_path / "results")
  m, meta = record.metrics, record.metadata
  assert record.status == "succeeded"
  (job_id,) = double.jobs
  assert meta["job_id"] == job_id and job_id in meta["console_url"]
  # The image went out by digest, the job was staged to the storage double.
  pool = double.jobs[job_id]["environment"]["workerPools"][0]
  assert pool["sdkHarnessContainerImages"][0]["containerImage"] == f"{IMAGE}@{DIGEST}"
  assert record.plan["image"] == f"{IMAGE}@{DIGEST}" and meta["image_digest"] == DIGEST
  staged = requests.get(f"{gcs}/storage/v1/b/bkt-x/o", timeout=10).json()["items"]
  staged_for_job = [o["name"] for o in staged
                    if f"beam-bench-small-resnet-{record.run_id}" in o["name"]]
  assert any(name.endswith("/pipeline.pb") for name in staged_for_job), staged_for_job
  # The seed's metrics, from the job's metrics.
  assert m["num_inferences"] == 1000
  assert m["mean_inference_request_batch_size"] == 2
  assert m["mean_inference_batch_latency_micro_secs"] == 20_000
  assert m["mean_load_model_latency_milli_secs"] == 1_500
  assert meta["device_used"] == "CPU" and meta["weights"] == "pretrained"
  # Versions, threads and hosts as the workers reported them, not the launcher's.
  assert meta["versions"]["torch"] == "2.14.1+cpu" and meta["versions"]["cuda"] == "none"
  assert meta["torch_threads"] == 2 and meta["hostname"] == "2 workers"
  assert len(meta["worker_hostnames"]) == 2
  assert meta["worker_facts"]["torch"] == {"2.14.1+cpu": 4}
  assert record.plan["items"] == 1000  # the matrix dataset's size
  # Throughput over the job's own window (worker messages), not launch to finish.
  assert m["job_window_s"] == 250.0 and meta["job_window_source"] == "worker messages"
  assert m["throughput_per_s"] == pytest.approx(1000 / 250)
  assert m["wall_time_s"] < 250 and "launch_to_finish_s" not in m  # once, as wall_time_s
  assert meta["throughput_basis"] == "job window"
  # Cost from the metered resources, as Beam's cost benchmark computes it.
  assert m["vcpu_hours"] == pytest.approx(1680 / 3600)
  assert m["memory_gb_hours"] == pytest.approx(2 * 7.68 * 420 / 3600)
  assert m["pd_gb_hours"] == pytest.approx(42000 / 3600)
  assert m["gpu_hours"] is None
  assert m["cost_usd"] == pytest.approx(EXPECTED_COST)
  assert m["cost_per_1k_inferences_usd"] == pytest.approx(EXPECTED_COST)
  assert double.cancel_requests == []
  print(f"\nDOUBLE RUN: throughput {m['throughput_per_s']:.3f}/s over a {m['job_window_s']} s "
        f"job window; launch-to-finish {m['wall_time_s']:.2f} s "
        f"({1000 / m['wall_time_s']:.1f}/s); cost {m['cost_usd']:.6f} USD",
        file=sys.__stderr__)


def test_a_failed_job_gives_a_failed_record_with_the_job_id(cloud, double, tmp_path):
  double.script = ["JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_FAILED"]
  assert run.main(launch_args(double, tmp_path / "results")) == 1
  (record,) = records(tmp_path / "results")
  (job_id,) = double.jobs
  assert record.status == "failed"
  assert record.metadata["job_id"] == job_id
  assert job_id in record.error and "JOB_STATE_FAILED" in record.error
  assert "RuntimeError: worker died" in record.error
  assert double.cancel_requests == []


@pytest.mark.parametrize("outage", ["port closed", "503"])
def test_an_unreachable_api_gives_a_failed_record_after_bounded_retries(cloud, double,
                                                                       tmp_path, outage):
  double.script = ["JOB_STATE_PENDING", "JOB_STATE_RUNNING"]  # never ends by itself

  def break_api():
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
      if sum(method == "GET" for method, _ in double.requests) >= 3:
        break
      time.sleep(0.05)
    if outage == "503":
      double.failing = True
    else:
      double.stop()

  breaker = threading.Thread(target=break_api, daemon=True)
  breaker.start()
  start = time.monotonic()
  assert run.main(launch_args(double, tmp_path / "results")) == 1
  assert time.monotonic() - start < 60  # bounded: 3 failed polls, backing off from 0.2 s
  breaker.join()
  (record,) = records(tmp_path / "results")
  (job_id,) = double.jobs
  assert record.status == "failed"
  assert record.metadata["job_id"] == job_id
  assert record.error.startswith("JobUnreachable: the Dataflow API did not answer 3 polls")
  assert record.metadata["console_url"] in record.error


def test_a_tag_that_was_never_pushed_is_refused_before_submission(cloud, double, tmp_path,
                                                                  capsys, monkeypatch):
  monkeypatch.setenv("BENCH_BUILD_DIR", str(tmp_path / "no-build"))
  assert run.main(launch_args(double, tmp_path / "results")) == 2
  err = capsys.readouterr().err
  assert "beam-bench-cpu-resnet:0123abcd was never pushed" in err
  assert "make image-cpu-resnet push" in err
  assert double.requests == [] and not (tmp_path / "results" / "records").exists()


def test_a_digest_recorded_for_another_tag_is_stale(cloud, double, tmp_path, capsys,
                                                    monkeypatch):
  monkeypatch.setenv("IMAGE_TAG", "fffffff00000")
  assert run.main(launch_args(double, tmp_path / "results")) == 2
  err = capsys.readouterr().err
  assert f"records {IMAGE}:0123abcd, not {IMAGE}:fffffff00000" in err
  assert double.requests == []


def test_a_dry_run_uses_the_digest_when_there_is_one(cloud, tmp_path):
  assert run.main(["small-resnet", "--runner", "DataflowRunner", "--dry-run",
                   "--results-dir", str(tmp_path)]) == 0
  job = json.loads((tmp_path / "dataflow-jobs" / "small-resnet.json").read_text())
  assert job["container_images"] == [f"{IMAGE}@{DIGEST}"]


# --- interrupts: real processes, real signals ----------------------------------------------

def _wait_for_running_job(double, process, timeout_s=120):
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    gets = [p for m, p in double.requests if m == "GET" and p.rsplit("/", 2)[-2] == "jobs"]
    if len(gets) >= 2:
      return
    assert process.poll() is None, process.communicate()[0][-3000:]
    time.sleep(0.1)
  raise AssertionError(f"no job polled within {timeout_s}s: {double.requests[:5]}")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_cancels_the_job_and_records_it(cloud, double, tmp_path, signum):
  double.script = ["JOB_STATE_PENDING", "JOB_STATE_RUNNING"]
  results = tmp_path / "results"
  process = subprocess.Popen([sys.executable, "-m", "pipelines.run",
                              *launch_args(double, results)], cwd=REPO_ROOT,
                             env={**os.environ, **cloud}, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
  _wait_for_running_job(double, process)
  process.send_signal(signum)
  out, _ = process.communicate(timeout=120)
  assert process.returncode == 128 + signum, out  # 130 for SIGINT, 143 for SIGTERM
  (job_id,) = double.jobs
  assert double.cancel_requests == [job_id]
  url = f"https://console.cloud.google.com/dataflow/jobs/us-central1/{job_id}?project=proj-123456"
  assert f"cancelled Dataflow job {job_id} ({url})" in out
  assert f"Dataflow job: {url}" in out and "Dataflow job RUNNING, " in out  # the status line
  (record,) = records(results)
  assert record.status == "cancelled" and record.metrics["partial"] is True
  assert record.metadata["job_id"] == job_id
  assert signal.Signals(signum).name in record.error


def test_ctrl_c_stops_bench_all_after_cancelling_the_running_job(cloud, double, tmp_path):
  """Ctrl-C reaches the whole foreground process group: bench-all and its child."""
  double.script = ["JOB_STATE_PENDING", "JOB_STATE_RUNNING"]
  results = tmp_path / "results"
  process = subprocess.Popen([sys.executable, "-m", "pipelines.bench_all",
                              "--runner", "DataflowRunner", "--results-dir", str(results),
                              f"--dataflow_endpoint={double.url}", "--no_auth"],
                             cwd=REPO_ROOT, env={**os.environ, **cloud},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
  _wait_for_running_job(double, process)
  os.killpg(process.pid, signal.SIGINT)
  out, _ = process.communicate(timeout=120)
  assert process.returncode == 130, out
  (job_id,) = double.jobs  # the second benchmark (small-bert) never launched
  assert double.cancel_requests == [job_id]
  assert "no further benchmark started" in out
  assert [r.status for r in records(results)] == ["cancelled"]


@pytest.fixture(params=["nothing listens", "never answers"])
def unreachable_storage(request):
  """A storage endpoint on loopback that refuses connections, or accepts and never answers."""
  with socket.socket() as listener:
    listener.bind(("127.0.0.1", 0))
    if request.param == "never answers":
      listener.listen(16)  # the kernel completes connections; nobody reads them
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def _launch_in_background(cloud, double, results, **env):
  return subprocess.Popen([sys.executable, "-m", "pipelines.run", *launch_args(double, results)],
                          cwd=REPO_ROOT, env={**os.environ, **cloud, **env},
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_unreachable_storage_fails_the_launch_in_bounded_time(cloud, double, tmp_path,
                                                              unreachable_storage):
  results = tmp_path / "results"
  start = time.monotonic()
  process = _launch_in_background(cloud, double, results, DATAFLOW_SUBMIT_TIMEOUT_S="6",
                                  DATAFLOW_STATUS_S="2",
                                  STORAGE_EMULATOR_HOST=unreachable_storage)
  out, _ = process.communicate(timeout=120)
  assert process.returncode == 1, out
  assert time.monotonic() - start < 60
  assert "to gs://bkt-x/tmp and submitting it: 0m02s elapsed" in out  # progress while waiting
  assert "Traceback" not in out, out
  (record,) = records(results)
  assert record.status == "failed"
  assert record.error.startswith("SubmitTimeout: staging job beam-bench-small-resnet-")
  assert "did not finish in 6 s (DATAFLOW_SUBMIT_TIMEOUT_S)" in record.error
  assert double.jobs == {}


def test_an_interrupt_while_staging_writes_a_record(cloud, double, tmp_path, unreachable_storage):
  results = tmp_path / "results"
  process = _launch_in_background(cloud, double, results, DATAFLOW_STATUS_S="1",
                                  STORAGE_EMULATOR_HOST=unreachable_storage)
  lines = []
  for line in process.stdout:  # the first progress line: staging has started
    lines.append(line)
    if "submitting it: " in line:
      break
  process.send_signal(signal.SIGINT)
  out, _ = process.communicate(timeout=120)
  out = "".join(lines) + out
  assert process.returncode == 130, out
  assert "Traceback" not in out, out
  (record,) = records(results)
  assert record.status == "cancelled" and record.metrics["partial"] is True
  assert record.error.startswith("interrupted by SIGINT while staging job beam-bench-")
  assert double.jobs == {}


def test_items_requested_on_dataflow(tmp_path):
  from pipelines import matrix
  bench = matrix.load(REPO_ROOT / "tests" / "small-matrix.toml")["small-resnet"]
  listing = tmp_path / "mine.txt"
  listing.write_bytes(b"gs://b/1.jpg\ngs://b/2.jpg\r\ngs://b/3.jpg\n")
  assert preflight.items_requested(bench, None) == bench.dataset_items
  assert preflight.items_requested(bench, str(listing)) == 3  # a local list: its lines
  assert preflight.items_requested(bench, "gs://bkt-x/mine.txt") is None  # not read: unknown


def test_worker_facts_survive_the_metric_name_encoding():
  facts = {"torch": "2.14.1+cu128", "hostname": "host_1.example", "cuda": "12.8"}
  names = worker_facts.counter_names(facts)
  assert all(re.fullmatch(r"[A-Za-z0-9._-]+", n) for n in names), names
  decoded = worker_facts.decode({n: 3 for n in names})
  assert {k: worker_facts.single(v) for k, v in decoded.items()} == facts
