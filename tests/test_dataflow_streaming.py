"""A streaming benchmark launched on Dataflow (no --dry_run), against Google's Pub/Sub emulator,
the Dataflow API double and fake GCS: the launcher clears the subscription's backlog, publishes
the input list's lines to its topic, one message each, submits the streaming job and drains it
once the job's metrics account for every published item (dataflow/feed.py)."""
from __future__ import annotations

import json
import os
import signal
import threading
import uuid

import pytest
import requests
from google.cloud import dataflow as dataflow_api

from pipelines import dataflow, run
from pipelines.dataflow import feed
from tests.dataflow_double import user_counter
from tests.servers import pubsub_emulator
from tests.test_dataflow_double import (  # noqa: F401 - fixtures, used by name
  JOB_METRICS,
  cloud,
  double,
  gcs,
  launch_args,
  records,
)

PROJECT = "proj-123456"
LINES = [b"gs://bkt-x/img/0.jpg", b"gs://bkt-x/img/1.jpg", b"gs://bkt-x/img/2.jpg",
         b"gs://bkt-x/img/3.jpg", b"gs://bkt-x/img/4.jpg", b"gs://bkt-x/img/5.jpg"]


@pytest.fixture(scope="module")
def pubsub(tmp_path_factory):
  with pubsub_emulator(tmp_path_factory.mktemp("pubsub")) as host:
    yield host


@pytest.fixture
def subscription(pubsub, cloud, monkeypatch):  # noqa: F811 - the imported fixture
  """A fresh topic and subscription on the emulator, named in PUBSUB_SUBSCRIPTION."""
  from google.cloud import pubsub_v1
  monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub)
  name = uuid.uuid4().hex[:10]
  topic = f"projects/{PROJECT}/topics/items-{name}"
  path = f"projects/{PROJECT}/subscriptions/bench-{name}"
  pubsub_v1.PublisherClient().create_topic(name=topic)
  pubsub_v1.SubscriberClient().create_subscription(name=path, topic=topic)
  monkeypatch.setenv("PUBSUB_SUBSCRIPTION", path)
  return path


def upload(gcs: str, name: str, data: bytes) -> str:  # noqa: F811
  requests.post(f"{gcs}/upload/storage/v1/b/bkt-x/o", params={"uploadType": "media",
                                                               "name": name},
                data=data, timeout=10).raise_for_status()
  return f"gs://bkt-x/{name}"


def pull_all(path: str) -> list[bytes]:
  """Every message the subscription holds, acknowledged."""
  from google.cloud import pubsub_v1
  subscriber, got = pubsub_v1.SubscriberClient(), []
  while True:
    reply = subscriber.pull(request={"subscription": path, "max_messages": 100}, timeout=10)
    if not reply.received_messages:
      return got
    got += [m.message.data for m in reply.received_messages]
    subscriber.acknowledge(request={"subscription": path,
                                    "ack_ids": [m.ack_id for m in reply.received_messages]})


def job_counts(inferences: int, dead_lettered: int) -> list[dict]:
  """The finished-job metrics of test_dataflow_double, with these item counts."""
  return [*[m for m in JOB_METRICS if m["name"] != "num_inferences"],
          user_counter("num_inferences", inferences),
          user_counter("dead_lettered", dead_lettered, namespace="BenchmarkKit",
                       step="DeadLetter")]


def stream_launch(double, gcs, tmp_path):  # noqa: F811
  # An empty line is not an item (Beam's load job filters empty lines out too).
  source = upload(gcs, f"stream-{uuid.uuid4().hex[:6]}.txt", b"\n".join(LINES[:3] + [b""]
                                                                        + LINES[3:]) + b"\n")
  return run.main([*launch_args(double, tmp_path / "results", "small-rightfit"),
                   "--input", source])


def test_the_launcher_feeds_the_subscription_and_drains_the_job_once_every_item_is_done(
    cloud, double, gcs, subscription, tmp_path, capsys):  # noqa: F811
  from google.cloud import pubsub_v1
  topic = pubsub_v1.SubscriberClient().get_subscription(subscription=subscription).topic
  for stale in (b"left by an aborted run", b"and another"):
    pubsub_v1.PublisherClient().publish(topic, stale).result()
  double.script = ["JOB_STATE_PENDING", "JOB_STATE_RUNNING"]  # a streaming job never ends
  double.metrics = job_counts(inferences=5, dead_lettered=1)  # 6 items accounted for

  assert stream_launch(double, gcs, tmp_path) == 0

  (job_id,) = double.jobs
  assert dataflow_api.JobType(double.jobs[job_id]["type"]).name == "JOB_TYPE_STREAMING"
  assert double.drain_requests == [job_id] and double.cancel_requests == []
  # Exactly the input's items wait in the subscription: the stale messages were cleared.
  assert sorted(pull_all(subscription)) == sorted(LINES)
  (record,) = records(tmp_path / "results")
  assert record.status == "succeeded", record.error
  meta = record.metadata
  assert meta["job_state"] == "JOB_STATE_DRAINED" and meta["items_published"] == 6
  assert meta["stream"]["topic"] == topic and meta["stream"]["published"] == 6
  assert meta["stream"]["items_accounted"] == 6 and meta["stream"]["shortfall"] is None
  assert meta["stream"]["drained_because"] == "all 6 published items done"
  assert f"draining Dataflow job {job_id}: all 6 published items done" in capsys.readouterr().err


def test_a_job_that_never_catches_up_is_drained_at_the_timeout_and_the_record_says_so(
    cloud, double, gcs, subscription, tmp_path, monkeypatch):  # noqa: F811
  monkeypatch.setenv("DATAFLOW_STREAM_TIMEOUT_S", "1")
  double.script = ["JOB_STATE_PENDING", "JOB_STATE_RUNNING"]
  double.metrics = job_counts(inferences=2, dead_lettered=0)

  assert stream_launch(double, gcs, tmp_path) == 1

  (job_id,) = double.jobs
  assert double.drain_requests == [job_id]
  (record,) = records(tmp_path / "results")
  assert record.status == "failed"
  assert "ended with 2 of 6 published items done" in record.error
  assert "DATAFLOW_STREAM_TIMEOUT_S (1 s) passed" in record.error
  assert record.metrics["num_inferences"] == 2  # what it did is kept, marked failed


def test_a_subscription_that_does_not_exist_fails_before_anything_is_submitted(
    cloud, double, gcs, subscription, tmp_path, monkeypatch):  # noqa: F811
  missing = f"projects/{PROJECT}/subscriptions/never-made"
  monkeypatch.setenv("PUBSUB_SUBSCRIPTION", missing)

  assert stream_launch(double, gcs, tmp_path) == 1

  assert double.jobs == {}
  (record,) = records(tmp_path / "results")
  assert record.status == "failed"
  assert missing in record.error and "nothing was submitted" in record.error
  assert json.dumps(record.to_dict())  # a plain record, publishable as any failed run


def test_ctrl_c_while_feeding_stops_before_anything_is_submitted(subscription):
  """Clearing the subscription and publishing 50,000 messages take the client seconds; SIGINT
  0.2 s in stops it with the launcher's JobCancelled (a cancelled record, exit 130) instead of
  a traceback, wherever it lands in the feed."""
  lines = [f"gs://bkt-x/img/{i}.jpg".encode() for i in range(50_000)]
  # What SIGINT did before (under a non-interactive shell's `make test &`, it is ignored).
  before = signal.getsignal(signal.SIGINT)
  threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
  with pytest.raises(dataflow.JobCancelled,
                     match=f"interrupted by SIGINT while feeding {subscription}"):
    feed.feed(subscription, lines)
  assert signal.getsignal(signal.SIGINT) is before  # the handler is restored


@pytest.mark.parametrize("value", ["abc", "0", "-5", "inf"])
def test_a_bad_stream_timeout_fails_before_anything_is_published_or_submitted(
    cloud, double, gcs, subscription, tmp_path, monkeypatch, value):  # noqa: F811
  monkeypatch.setenv("DATAFLOW_STREAM_TIMEOUT_S", value)

  assert stream_launch(double, gcs, tmp_path) == 1

  assert double.jobs == {} and pull_all(subscription) == []
  (record,) = records(tmp_path / "results")
  assert "DATAFLOW_STREAM_TIMEOUT_S must be a number of seconds above 0" in record.error
