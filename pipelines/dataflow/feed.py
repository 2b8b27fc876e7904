"""A streaming benchmark on Dataflow, fed and ended by the launcher.

Beam's streaming benchmarks feed their topic with a second Dataflow job (ReadFromText of the
input list -> WriteToPubSub, one message per line) and cancel the main job after a fixed 30
minutes, whatever it did by then. The kit instead:
  1. clears the subscription's backlog (seek to now: a message left by an earlier or aborted
     run would be counted as one of this run's items),
  2. publishes the input's lines to the subscription's topic, one message per line, as Beam's
     load job writes them, before the job is submitted (nothing is billed if publishing fails),
  3. drains the job once its workers have accounted for every published item (inferences plus
     dead-lettered inputs, from the job's metrics), or once DATAFLOW_STREAM_TIMEOUT_S (default
     3600) has passed since the submission; the record then says how many items were done.
Settings: PUBSUB_SUBSCRIPTION (projects/P/subscriptions/S); the topic is the subscription's own.
PUBSUB_EMULATOR_HOST points the client at the Pub/Sub emulator (the tests do)."""
from __future__ import annotations

import concurrent.futures
import os
import sys
import time
from typing import Any, Mapping

from pipelines.dataflow.watch import JobCancelled, stop_requests
from pipelines.text_lines import split_lines
from pipelines.worker import beam_metrics

PUBLISH_NOTE_EVERY = 10_000  # a progress line every this many messages


class FeedError(RuntimeError):
  """The subscription could not be read, cleared or fed: nothing was submitted."""


def stream_timeout_s(env: Mapping[str, str] = os.environ) -> float:
  """DATAFLOW_STREAM_TIMEOUT_S, read before anything is published or submitted."""
  text = env.get("DATAFLOW_STREAM_TIMEOUT_S") or "3600"
  try:
    seconds = float(text)
  except ValueError:
    seconds = 0.0
  if not seconds > 0 or seconds == float("inf"):
    raise FeedError(f"DATAFLOW_STREAM_TIMEOUT_S must be a number of seconds above 0, not "
                    f"{text!r}: nothing was submitted")
  return seconds


def read_lines(source: str, options) -> list[bytes]:
  """The input list's non-empty lines (gs:// or a local path), split as Beam's text reader
  splits them. GCS is read as Beam stages a job: with the pipeline's credentials, or
  anonymously under --no_auth."""
  try:
    if source.startswith("gs://"):
      from apache_beam.io.gcp import gcsio
      from apache_beam.options.pipeline_options import GoogleCloudOptions
      client = gcsio.create_storage_client(
          options, not options.view_as(GoogleCloudOptions).no_auth)
      with gcsio.GcsIO(storage_client=client).open(source) as f:
        data = f.read()
    else:
      with open(source, "rb") as f:
        data = f.read()
  except Exception as e:  # noqa: BLE001 - one line naming the input
    raise FeedError(f"cannot read the streaming job's input {source}: {type(e).__name__}: "
                    f"{e}: nothing was submitted") from None
  return [line for line in split_lines(data) if line]


def feed(subscription: str, lines: list[bytes]) -> dict[str, Any]:
  """Clears `subscription`'s backlog, then publishes `lines` to its topic, one message each.
  Returns what the record keeps: topic, subscription, published, publish_s. Ctrl-C or SIGTERM
  stops it (JobCancelled: nothing was submitted)."""
  if not lines:
    raise FeedError("the streaming job's input has no items: nothing was submitted")
  with stop_requests() as stop:  # from here on, Ctrl-C is a cancelled run, not a traceback
    start = time.monotonic()
    topic = _cleared_topic(subscription)
    _stop_if_asked(stop, subscription)
    from google.cloud import pubsub_v1
    publisher = pubsub_v1.PublisherClient()
    futures = []
    for i, line in enumerate(lines, 1):
      _stop_if_asked(stop, subscription)
      futures.append(publisher.publish(topic, line))
      if i % PUBLISH_NOTE_EVERY == 0:
        print(f"publishing to {topic}: {i:,} of {len(lines):,}", file=sys.stderr, flush=True)
    for f in futures:
      while not f.done():
        _stop_if_asked(stop, subscription)
        concurrent.futures.wait([f], timeout=0.5)
      if f.exception():  # the subscription holds a partial feed: say so
        raise FeedError(f"publishing to {topic} failed ({type(f.exception()).__name__}: "
                        f"{f.exception()}): nothing was submitted; the next run clears the "
                        "backlog")
    publisher.stop()  # every message is sent: end the client's batching thread
  print(f"published {len(lines):,} items to {topic} ({time.monotonic() - start:.1f} s)",
        file=sys.stderr, flush=True)
  return {"topic": topic, "subscription": subscription, "published": len(lines),
          "publish_s": round(time.monotonic() - start, 3)}


def _cleared_topic(subscription: str) -> str:
  """The subscription's topic, after acknowledging every message it holds (seek to now)."""
  from google.api_core import exceptions
  from google.cloud import pubsub_v1
  from google.protobuf import timestamp_pb2
  subscriber = pubsub_v1.SubscriberClient()
  try:
    topic = subscriber.get_subscription(subscription=subscription, timeout=30).topic
    now = timestamp_pb2.Timestamp()
    now.GetCurrentTime()
    subscriber.seek(request={"subscription": subscription, "time": now}, timeout=30)
    return topic
  except exceptions.GoogleAPICallError as e:
    raise FeedError(f"PUBSUB_SUBSCRIPTION {subscription}: {e.message or e}: nothing was "
                    "submitted") from None
  finally:
    subscriber.close()


def _stop_if_asked(stop, subscription: str) -> None:
  if stop.event.is_set():
    raise JobCancelled(f"interrupted by {stop.signal_name} while feeding {subscription}: "
                       "nothing was submitted; the next run clears the backlog",
                       stop.signal_name)


def items_done(raw: dict[str, Any]) -> int:
  """Items the job has accounted for, from its metrics (beam_metrics.query): inferred or
  dead-lettered."""
  summary = beam_metrics.summarize(raw)
  return summary["num_inferences"] + summary["dead_lettered"]


class DrainWhenDone:
  """Asked by dataflow.watch at each poll of a running streaming job: why to drain it now, or
  None. Done is every published item inferred or dead-lettered, by the job's own metrics."""

  def __init__(self, published: int, timeout_s: float):
    self.published = published
    self.timeout_s = timeout_s
    self.started = time.monotonic()
    self.accounted = 0
    self.reason: str | None = None

  def __call__(self, result) -> str | None:
    try:
      self.accounted = items_done(beam_metrics.query(result))
    except Exception as e:  # noqa: BLE001 - metrics not yet readable: ask again next poll
      print(f"streaming job's metrics unreadable ({type(e).__name__}): polling on",
            file=sys.stderr, flush=True)
    elapsed = time.monotonic() - self.started
    if self.accounted >= self.published:
      self.reason = f"all {self.published:,} published items done"
    elif elapsed >= self.timeout_s:
      self.reason = (f"DATAFLOW_STREAM_TIMEOUT_S ({self.timeout_s:.0f} s) passed with "
                     f"{self.accounted:,} of {self.published:,} items done")
    return self.reason

  def shortfall(self, raw: dict[str, Any]) -> str | None:
    """The record's error when the job ended (`raw`: its final metrics) with fewer items done
    than were published."""
    self.accounted = accounted = items_done(raw)
    if accounted >= self.published:
      return None
    return (f"the streaming job ended with {accounted:,} of {self.published:,} published "
            f"items done ({self.reason or 'drained or stopped outside the launcher'}): its "
            "figures cover only those")

  def as_record(self) -> dict[str, Any]:
    return {"items_accounted": self.accounted, "drained_because": self.reason,
            "timeout_s": self.timeout_s}
