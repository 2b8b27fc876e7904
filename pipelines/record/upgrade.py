"""Older record shapes, read as today's: the one place that knows them (as pyperf keeps its
format's upgrades in one loader). Records on disk are never rewritten; they are upgraded each
time they are read.

Version 1 (until 2026-12): the plan's settings were spread over `metadata` too (runner, profile,
layout, batching, series names, the Dataflow shape...), `metadata.optimization` was what the
workers ran, `plan.optimization_override` said whether OPTIMIZE= differed from the profile's
choice, and publishing outcomes lived in the record (`publish`). The oldest version 1 records
have no `plan` at all, and lack fields added later (profile: they ran the tuned settings;
layout: unrecorded).
"""
from __future__ import annotations

from typing import Any

from pipelines.record.schema import SCHEMA_VERSION

# version 1 metadata key -> version 2 plan key
_PLAN_KEYS = {
    "runner": "runner", "task": "task", "model": "model", "profile": "profile",
    "inference_step": "inference_step", "source": "source", "device_requested": "device",
    "batch_size": "batch_size", "batching": "batching", "layout": "layout",
    "processes": "processes", "threads": "threads", "interop_threads": "interop_threads",
    "harness_threads": "harness_threads", "input": "input", "items_requested": "items",
    "machine_type": "machine_type", "num_workers": "workers", "accelerator": "accelerator",
    "accelerator_count": "accelerator_count", "disk_size_gb": "disk_size_gb",
    "image": "image", "image_versions": "image_versions", "in_image": "in_image",
    "region": "region",
}
_DATAFLOW_KEYS = {"dataflow_machine_type": "machine_type", "dataflow_workers": "workers",
                  "dataflow_autoscaling_algorithm": "autoscaling_algorithm",
                  "dataflow_disk_size_gb": "disk_size_gb",
                  "dataflow_accelerator": "accelerator",
                  "dataflow_accelerator_count": "accelerator_count"}
_SERIES_KEYS = ("influx_measurement", "bigquery_table")


def upgrade(data: Any) -> Any:
  """`data` in today's shape; anything that is not a version 1 record is returned as it is
  (schema.problem says what is wrong with it)."""
  if not isinstance(data, dict) or data.get("schema_version") != 1 or isinstance(
      data.get("schema_version"), bool):
    return data
  metadata = data.get("metadata")
  plan = data.get("plan", {})
  if not isinstance(metadata, dict) or not isinstance(plan, dict):
    return {**data, "schema_version": SCHEMA_VERSION}
  metadata, plan = dict(metadata), dict(plan)
  for old, new in _PLAN_KEYS.items():
    if old in metadata:
      value = metadata.pop(old)
      plan.setdefault(new, value)
  if "model_state_dict_path" in metadata:
    plan.setdefault("model_files", {"model_state_dict_path": metadata.pop(
        "model_state_dict_path")})
  dataflow = {new: metadata.pop(old) for old, new in _DATAFLOW_KEYS.items() if old in metadata}
  if dataflow:
    plan.setdefault("dataflow", dataflow)
  series = {k: metadata.pop(k) for k in _SERIES_KEYS if k in metadata}
  if series:
    plan.setdefault("series", series)
  aware = metadata.pop("length_aware_batching", None)
  plan.pop("length_aware_batching", None)
  if "sentence_batching" not in plan and aware is not None:
    plan["sentence_batching"] = "length" if aware else "padded"
  if "optimization" in metadata:  # what the workers ran (or, with no worker, what was asked)
    metadata["optimization_ran"] = metadata.pop("optimization")
  overridden = plan.pop("optimization_override", False)
  plan.setdefault("overrides", {"optimization": plan["optimization"]}
                  if overridden and plan.get("optimization") else {})
  plan.setdefault("benchmark", data.get("benchmark"))
  publish = data.get("publish")
  upgraded = {k: v for k, v in data.items() if k != "publish"}
  upgraded.update(schema_version=SCHEMA_VERSION, plan=plan, metadata=metadata,
                  legacy_publish=publish if isinstance(publish, dict) else {})
  return upgraded
