"""`make doctor`: one screen, offline, always exit 0, no secret on it. Publishing targets are
checked against a real InfluxDB (reachable) and an unused port (unreachable)."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

from pipelines import dataflow, doctor, matrix
from pipelines.matrix import REPO_ROOT
from pipelines.worker import models, tokenizer_files
from tests import servers

TOKEN = "tok-9f8e7d6c5b4a"
PASSWORD = "pw-s3cr3t-4711"
URL_PASSWORD = "urlpw-0xdeadbeef"


def checkout(tmp_path: pathlib.Path, *, images: int = 20, sentences: int | None = None,
             skip_model: str | None = None) -> pathlib.Path:
  """A fake checkout: model files with sidecars (content is never loaded), data lists."""
  root = tmp_path / "checkout"
  (root / "models").mkdir(parents=True)
  (root / "data").mkdir()
  for name in matrix.models():
    if name == skip_model:
      continue
    path = root / "models" / f"{name}.pth"
    path.write_bytes(b"\0" * 2_000_000)
    pathlib.Path(models.meta_path(str(path))).write_text(json.dumps(dict(
        architecture=name, weights="random", source="seed", sha256="x", torch_version="t")))
  (root / "models" / tokenizer_files.VOCAB_FILE).write_text("[PAD]\n")
  (root / "data" / "images.txt").write_text("".join(f"/img/{i}.jpg\n" for i in range(images)))
  if sentences is not None:
    (root / "data" / "sentences.txt").write_text("a sentence here\n" * sentences)
  return root


def test_without_settings(tmp_path):
  root = checkout(tmp_path, images=300, skip_model="resnet152")
  text = doctor.screen(root, env={})
  lines = text.splitlines()
  assert "(no .env: local runs, no publishing)" in lines[0]
  assert any(line.startswith("Python      3.11") for line in lines)
  assert "resnet101 (2 MB, random weights)" in text
  assert "missing: resnet152 (make models)" in text
  assert ("data/images.txt: 300 items; data/scenes.txt: missing (make data); "
          "data/sentences.txt: missing (make data)") in text
  assert "CUDA        not available" in text and "NVML        unavailable" in text
  # what OPTIMIZE= can run here: this machine has g++ and the x86 quantized engine
  (optimize,) = [line for line in lines if line.startswith("OPTIMIZE=   ")]
  assert "none, channels_last, freeze, compile, bf16, int8, bf16_channels_last; bf16 " in optimize
  assert "fp16: fp16 is a GPU precision" in optimize
  bench = {line[doctor.WIDTH:].split()[0]: line for line in lines
           if " ready" in line or "cannot run:" in line}
  assert list(bench) == list(matrix.load())  # one line per benchmark of the matrix
  assert "ready" in bench["resnet101"] and "N<=" not in bench["resnet101"]
  assert "models/resnet152.pth does not exist: run `make models` first" in bench["resnet152"]
  assert "needs a CUDA GPU" in bench["resnet152-gpu"]
  assert "data/sentences.txt does not exist: run `make data` first" in bench["bert-base"]
  assert "InfluxDB not configured" in text and "BigQuery not configured" in text
  assert "missing PROJECT, REGION, TEMP_LOCATION, REGISTRY" in text
  used = {b.image for b in matrix.load().values()}
  assert "; ".join(f"{v}: not pushed" for v in matrix.IMAGE_NAMES if v in used) in text
  assert "cpu-resnet: not pushed; cpu-bert: not pushed; " in text


def test_few_items_say_how_many_can_run(tmp_path):
  root = checkout(tmp_path, images=16, sentences=16)
  text = doctor.screen(root, env={})
  assert "resnet101      ready with N<=16 (default 256 items: make data for all)" in text


def test_with_settings_reachable_unreachable_and_no_secret(tmp_path):
  root = checkout(tmp_path)
  dataflow.write_digest(root / "build" / "image-cpu-resnet.digest",
                        "reg/beam-bench-cpu-resnet:t1", "sha256:" + "a" * 64)
  (root / ".env").write_text(f"PROJECT=proj-123456\nREGION=us-central1\n"
                             f"INFLUXDB_TOKEN={TOKEN}\n")  # read as make would export it
  unused = servers.closed_port_url()
  (tmp_path / "influx").mkdir()
  with servers.influxdb_v1(tmp_path / "influx") as url:
    host = url.removeprefix("http://")
    env = {"INFLUXDB_URL": f"http://alice:{URL_PASSWORD}@{host}", "INFLUXDB_API": "v1",
           "INFLUXDB_DB": "beam_test_metrics", "INFLUXDB_USER": "alice",
           "INFLUXDB_PASSWORD": PASSWORD,
           "BIGQUERY_DATASET": "beam_run_inference", "BIGQUERY_EMULATOR_URL": unused,
           "TEMP_LOCATION": "gs://bkt-x/tmp"}
    start = time.perf_counter()
    text = doctor.screen(root, env=env)
    elapsed = time.perf_counter() - start
  for secret in (TOKEN, PASSWORD, URL_PASSWORD):
    assert secret not in text
  influx = next(line for line in text.splitlines() if "InfluxDB" in line)
  assert influx.startswith("publishing  InfluxDB v1 at http://127.0.0.1:")  # no credentials
  assert "db beam_test_metrics, token set (hidden), password set (hidden)" in influx
  assert "reachable (HTTP 204" in influx and "unreachable" not in influx
  bigquery = next(line for line in text.splitlines() if "BigQuery" in line)
  assert f"BigQuery proj-123456.beam_run_inference at {unused}: unreachable" in bigquery
  assert "Dataflow    missing REGISTRY:" in text
  assert "PROJECT=proj-123456, REGION=us-central1, TEMP_LOCATION=gs://bkt-x/tmp" in text
  assert (f"cpu-resnet: reg/beam-bench-cpu-resnet:t1@sha256:{'a' * 64}; cpu-bert: not pushed; "
          "cpu-captioning: not pushed; gpu: not pushed; vllm-gpu: not pushed") in text
  assert elapsed < 10


def test_unanswering_target_is_reported_within_the_budget(tmp_path):
  root = checkout(tmp_path)
  with servers.hanging_server() as url:
    start = time.perf_counter()
    text = doctor.screen(root, env={"INFLUXDB_URL": url, "INFLUXDB_BUCKET": "b",
                                    "INFLUXDB_TOKEN": TOKEN})
    assert time.perf_counter() - start < 8
  assert "unreachable (no answer within 1 s)" in text
  assert TOKEN not in text


def test_misconfigured_settings_are_shown_not_fatal(tmp_path):
  text = doctor.screen(checkout(tmp_path), env={"INFLUXDB_URL": "http://h:8086",
                                                "INFLUXDB_API": "v2"})
  assert "InfluxDB misconfigured: INFLUXDB_URL is set with INFLUXDB_API=v2 but " in text


def test_redact_url():
  assert doctor.redact_url("http://u:p@host:8086/x") == "http://***@host:8086/x"
  assert doctor.redact_url("https://token@host") == "https://***@host"
  assert doctor.redact_url("http://host:8086") == "http://host:8086"
  assert doctor.redact_url("http://u:Pa/ss#x@host:8086") == "http://***@host:8086"
  assert doctor.redact_url("u:Secret@host:8086") == "***@host:8086"  # no scheme


def test_the_command_exits_0_in_under_10_seconds():
  env = {**os.environ, "INFLUXDB_URL": "http://h", "INFLUXDB_API": "bogus",
         "INFLUXDB_TOKEN": TOKEN}
  start = time.perf_counter()
  result = subprocess.run([sys.executable, "-m", "pipelines.doctor"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
  elapsed = time.perf_counter() - start
  assert result.returncode == 0, result.stderr
  assert "INFLUXDB_API must be v1 or v2" in result.stdout
  assert TOKEN not in result.stdout + result.stderr
  assert elapsed < 10, elapsed


def test_digests_are_read_where_launches_read_them_and_stale_ones_flagged(tmp_path):
  build = tmp_path / "elsewhere"
  dataflow.write_digest(build / "image-cpu-resnet.digest", "reg.example/p/beam-bench-cpu-resnet:t2",
                        "sha256:" + "1" * 64)
  dataflow.write_digest(build / "image-cpu-bert.digest", "reg.example/p/beam-bench-cpu-bert:t1",
                        "sha256:" + "2" * 64)  # pushed for an older tag
  (build / "image-gpu.digest").write_text("garbage\n")
  env = {**os.environ, "BENCH_BUILD_DIR": str(build), "REGISTRY": "reg.example/p",
         "IMAGE_TAG": "t2"}
  result = subprocess.run([sys.executable, "-m", "pipelines.doctor"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  (images,) = [line for line in result.stdout.splitlines() if line.startswith("images")]
  assert images == (
      f"images      cpu-resnet: reg.example/p/beam-bench-cpu-resnet:t2@sha256:{'1' * 64}; "
      "cpu-bert: stale: pushed reg.example/p/beam-bench-cpu-bert:t1, the settings launch "
      "reg.example/p/beam-bench-cpu-bert:t2; cpu-captioning: not pushed; "
      "gpu: unreadable digest file; vllm-gpu: not pushed (make images push)")


def test_a_setting_the_launch_would_refuse_is_named_as_a_refusal(tmp_path):
  env = {"PROJECT": "proj-123456", "REGION": "us-central1", "TEMP_LOCATION": "gs://b/t",
         "REGISTRY": "reg", "IMAGE_TAG": "t1"}
  lines = doctor.dataflow_section(env, tmp_path)
  assert lines[0].startswith("Dataflow    RUNNER=DataflowRunner refuses to launch: "
                             "TEMP_LOCATION must be gs://BUCKET[/PATH]"), lines[0]
  assert "settings complete" in doctor.dataflow_section(
      {**env, "TEMP_LOCATION": "gs://bkt-x/tmp"}, tmp_path)[0]


def bigquery_line(env: dict[str, str], **kwargs) -> str:
  [line] = [line for line in doctor.publishing_section(env, **kwargs) if "BigQuery" in line]
  return line


def test_a_missing_bigquery_dataset_is_named_with_the_fix(tmp_path):
  """Against the real emulator: a missing dataset is said to be missing (not 'reachable (HTTP
  404)'), with the two ways to fix it; an existing one is said to exist."""
  with servers.bigquery_emulator(tmp_path) as url:
    env = {"BIGQUERY_DATASET": "beam_run_inference", "BIGQUERY_PROJECT": "test",
           "BIGQUERY_EMULATOR_URL": url}
    missing = bigquery_line(env)
    creates = bigquery_line({**env, "BIGQUERY_CREATE_DATASET": "1"})
    from pipelines.publish import bigquery, settings
    client = bigquery.client(settings.bigquery(env))
    client.create_dataset("test.beam_run_inference")
    exists = bigquery_line(env)
    elsewhere = bigquery_line({**env, "BIGQUERY_EMULATOR_URL": url + "/not-the-api"})
  assert missing == (
      f"            BigQuery test.beam_run_inference at {url}: reachable, but dataset "
      "test.beam_run_inference does not exist: create it, or set BIGQUERY_CREATE_DATASET=1 "
      "and `make publish` creates it")
  assert creates.endswith("reachable; dataset test.beam_run_inference does not exist yet: "
                          "`make publish` creates it (BIGQUERY_CREATE_DATASET=1)")
  assert f"at {url}: dataset test.beam_run_inference exists (" in exists
  assert "reachable (HTTP 404, " in elsewhere and "not BigQuery's API" in elsewhere


def test_real_bigquery_is_not_called(tmp_path):
  """Without an emulator the target is Google's API: the doctor is offline and says so."""
  asked = []

  def probe(urls):
    asked.extend(urls.values())
    return doctor.probe_all(urls)

  env = {"BIGQUERY_DATASET": "beam_run_inference", "PROJECT": "proj-123456"}
  assert bigquery_line(env, probe_urls=probe) == (
      "            BigQuery proj-123456.beam_run_inference at https://bigquery.googleapis.com: "
      "not checked: doctor is offline; `make publish` will tell")
  assert asked == []
  text = doctor.screen(checkout(tmp_path), env={**env, "INFLUXDB_URL": servers.closed_port_url(),
                                                "INFLUXDB_BUCKET": "b", "INFLUXDB_TOKEN": TOKEN})
  assert "googleapis.com: not checked: doctor is offline" in text


def test_the_doctor_is_split_by_job():
  folder = REPO_ROOT / "pipelines" / "doctor"
  sizes = {p.name: len(p.read_text().splitlines()) for p in folder.glob("*.py")}
  assert max(sizes.values()) < 300, sizes
