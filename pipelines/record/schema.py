"""The run record's shape (schema version 2) and what every reader may rely on in it.

A record is one JSON document per run (pipelines/record/build.py writes it):
  schema_version, run_id, benchmark, timestamp (UTC ISO start),
  status ('succeeded' | 'failed' | 'cancelled'), error (one line or None; the rest in a log),
  plan      the resolved plan, whole (RunPlan.as_record): what was asked and decided
  metrics   numbers only (None where not measured; metric_notes says why)
  gpu, latency_histogram, metric_notes
  metadata  what the run found out: the device and weights the workers really used, versions,
            git sha, hosts, per-process facts, the Dataflow job; no key of `plan` again
Publishing outcomes are not part of the record: they are kept in its ledger (ledger.py).
Older shapes are upgraded on load, in one place (upgrade.py); a damaged, foreign, newer or
non-finite record is skipped by every reader with a line naming its file and why.
"""
from __future__ import annotations

import dataclasses
import datetime
import math
import re
from typing import Any

from pipelines.worker.vocab import DEFAULT_INFERENCE_STEP, DEFAULT_PROFILE

SCHEMA_VERSION = 2
STATUSES = ("succeeded", "failed", "cancelled")
# Read by index somewhere; build.py writes them all, for failed runs too.
REQUIRED_METRICS = ("num_inferences", "dead_lettered", "mean_inference_request_batch_size",
                    "mean_inference_batch_latency_micro_secs",
                    "mean_load_model_latency_milli_secs", "throughput_per_s",
                    "throughput_per_s_excl_model_load")
SECTIONS = ("plan", "metrics", "metadata", "gpu")  # required objects
OPTIONAL_SECTIONS = ("latency_histogram", "metric_notes")
# Names that become parts of file names (records/<time>_<benchmark>_<run id>.json, the ledger):
# one path component each, of plain characters, bounded.
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
BENCHMARK = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# No metric of the kit is negative, and none is anywhere near this: 31 years in microseconds.
ABSURD = 1e15


@dataclasses.dataclass
class Record:
  run_id: str
  benchmark: str
  timestamp: str
  status: str
  error: str | None
  plan: dict[str, Any]
  metrics: dict[str, Any]
  metadata: dict[str, Any]
  gpu: dict[str, Any] = dataclasses.field(default_factory=dict)
  latency_histogram: dict[str, int] = dataclasses.field(default_factory=dict)
  metric_notes: dict[str, str] = dataclasses.field(default_factory=dict)
  schema_version: int = SCHEMA_VERSION
  # A version 1 record's own publish outcomes (it kept them inside): read by the ledger, never
  # written again.
  legacy_publish: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)

  # --- what readers ask of a record ---------------------------------------------------------
  @property
  def succeeded(self) -> bool:
    return self.status == "succeeded"

  @property
  def profile(self) -> str:
    return str(self.plan.get("profile") or DEFAULT_PROFILE)

  @property
  def runner(self) -> str:
    return str(self.plan.get("runner"))

  @property
  def local(self) -> bool:
    return self.runner != "DataflowRunner"

  @property
  def layout(self) -> str:
    return str(self.plan.get("layout") or "unrecorded")

  @property
  def machine_type(self) -> str:
    return str(self.plan.get("machine_type"))

  @property
  def in_image(self) -> bool:
    return bool(self.plan.get("in_image"))

  @property
  def optimization(self) -> str:
    """What the workers applied; what was asked where no worker said (nothing loaded)."""
    return str(self.metadata.get("optimization_ran") or self.plan.get("optimization") or "none")

  @property
  def device_used(self) -> str:
    return str(self.metadata.get("device_used"))

  @property
  def weights(self) -> str:
    return str(self.metadata.get("weights"))

  @property
  def inference_step(self) -> str:
    return str(self.plan.get("inference_step") or DEFAULT_INFERENCE_STEP)

  @property
  def overrides(self) -> dict[str, Any]:
    """The settings the run asked beyond its profile's (OPTIMIZE=, BATCH_SIZE=, N=, ...)."""
    return dict(self.plan.get("overrides") or {})

  def to_dict(self) -> dict[str, Any]:
    out = dataclasses.asdict(self)
    del out["legacy_publish"]
    return out


def from_dict(data: dict[str, Any]) -> Record:
  """A Record from a current-version dict that problem() found nothing wrong with."""
  fields = {f.name for f in dataclasses.fields(Record)}
  return Record(**{k: v for k, v in data.items() if k in fields})


def problem(record: Any) -> str | None:
  """Why a (current-version) record cannot be read by this kit, or None when it can."""
  if not isinstance(record, dict):
    return f"not a run record (a JSON {type(record).__name__}, not an object)"
  version = record.get("schema_version")
  if version is None:
    return "no schema_version: not a run record"
  if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
    return f"schema_version {version} is newer than this kit reads ({SCHEMA_VERSION})"
  if version != SCHEMA_VERSION or isinstance(version, bool):
    return f"schema_version {shown(version)} is not one this kit knows"
  for name in ("run_id", "benchmark", "timestamp", "status"):
    if not isinstance(record.get(name), str) or not record[name]:
      return f"no {name}" if name not in record else f"{name} is not a text"
  for name, pattern in (("run_id", RUN_ID), ("benchmark", BENCHMARK)):
    if not pattern.fullmatch(record[name]):
      return (f"{name} '{shown(record[name][:80])}' is not a name this kit writes (letters, "
              "digits, '-', '_' (and '.' in a benchmark), at most 64)")
  try:
    datetime.datetime.fromisoformat(record["timestamp"])
  except ValueError:
    return f"timestamp {shown(record['timestamp'][:80])} is not an ISO date and time"
  if record["status"] not in STATUSES:
    return f"status {shown(record['status'][:40])} is not one of {', '.join(STATUSES)}"
  if record.get("error") is not None and not isinstance(record["error"], str):
    return "error is not a text"
  for name in SECTIONS + OPTIONAL_SECTIONS:
    if (name in record or name in SECTIONS) and not isinstance(record.get(name), dict):
      return f"no {name}" if name not in record else f"{name} is not an object"
  metrics = record["metrics"]
  missing = [m for m in REQUIRED_METRICS if m not in metrics]
  if missing:
    return f"metrics lack {', '.join(missing)}"
  return metric_problem(metrics)


def metric_problem(metrics: dict[str, Any]) -> str | None:
  """Metrics that are not numbers, not finite, negative or absurd: such a record would chart,
  publish or compare a number that is not one."""
  odd = sorted(m for m, v in metrics.items()
               if v is not None and not isinstance(v, (int, float)))  # bool: `partial`
  if odd:
    return f"metrics {', '.join(odd)} are not numbers"
  wrong = sorted(m for m, v in metrics.items() if v is not None and not isinstance(v, bool)
                 and (not math.isfinite(v) or v < 0 or v > ABSURD))
  if wrong:
    return (f"metrics {', '.join(f'{m}={metrics[m]!r}' for m in wrong)} are not finite, "
            "negative or absurd")
  return None


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def shown(text: Any) -> str:
  """A value read from a record as it may be shown on a terminal: control characters (ANSI
  escapes among them) written as \\xNN, never sent raw."""
  return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))
