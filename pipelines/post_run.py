"""The steps after a run's record is saved (the measurement is done by then): the checks of
what the run changed against the reference (its optimization against none, DECODE=device
against PIL), its ceilings, then publishing. Each step's figures go into the record, saved
after each; a step that fails says why in the record and the run stays good; Ctrl-C or SIGTERM
during them keeps the record and says so in it (metadata.post_run_interrupted_by), and the
command exits 128 + the signal.
"""
from __future__ import annotations

import dataclasses
import logging
import pathlib
import sys
from typing import Any, Callable

from pipelines import interrupts, launch
from pipelines.plan import RunPlan
from pipelines.record import build, ledger, store
from pipelines.record.schema import Record
from pipelines.worker import optimizations

CEILING_ITEMS = 64  # the run's own inputs a decode ceiling is timed on (repeated as needed)


@dataclasses.dataclass(frozen=True)
class Step:
  what: str  # in a line: "agreement check"
  applies: Callable[[RunPlan, Record], bool]
  measure: Callable[[RunPlan, Record], dict[str, Any] | None]
  add: Callable[[Record, dict[str, Any] | None], None]


def _agreement(plan: RunPlan, record: Record) -> dict[str, Any] | None:
  from pipelines import agreement
  return agreement.check(plan)


def _decode_check(plan: RunPlan, record: Record) -> dict[str, Any] | None:
  from pipelines import agreement
  return agreement.check_decode(plan)


def _ceilings(plan: RunPlan, record: Record) -> dict[str, Any] | None:
  from pipelines import agreement, ceilings
  from pipelines.worker import images
  datas = agreement.first_usable(plan.input_lines, CEILING_ITEMS,
                                 lambda line: images.read_bytes(line.decode("utf-8").strip()))
  if not datas:
    return {"note": "not measured: every input was dead-lettered"}
  return ceilings.measure(plan, datas, record.metrics.get("steady_throughput_per_s"))


STEPS = (
    Step("agreement check",
         lambda plan, record: record.succeeded and plan.optimization != optimizations.NONE,
         _agreement, build.add_agreement),
    Step("decode check", lambda plan, record: record.succeeded and plan.decode == "device",
         _decode_check, build.add_decode_check),
    # Where a decode stage can be timed apart (image classification), on the run's own
    # hardware: a GPU benchmark, or a run that decodes on the model's device.
    Step("ceiling measurement",
         lambda plan, record: (record.succeeded and plan.local and not plan.in_image
                               and "device" in plan.task.decoders
                               and (plan.bench.device == "GPU" or plan.decode == "device")),
         _ceilings, build.add_ceilings),
)


def run(plan: RunPlan, record: Record) -> None:
  pending = [step for step in STEPS if step.applies(plan, record)]
  try:
    with interrupts.stoppable():
      for step in list(pending):
        step.add(record, _guarded(step, plan, record))
        store.save(record, plan.results_dir)
        pending.remove(step)
      if "ceilings" in record.metadata:  # what bounds the run, in words
        print(f"{plan.bench.name}: {record.metadata['ceilings']['in_words']}")
      publish(record, plan.results_dir)
  except interrupts.Stopped as e:
    record.metadata["post_run_interrupted_by"] = e.signal_name
    for step in pending:
      step.add(record, {"items": 0, "passed": None, "note": (
          f"{step.what} interrupted by {e.signal_name}: the measurement stands, unchecked")})
    store.save(record, plan.results_dir)
    print(f"{plan.bench.name}: post-run steps interrupted by {e.signal_name}; the record is "
          "saved", file=sys.stderr)


def _guarded(step: Step, plan: RunPlan, record: Record) -> dict[str, Any] | None:
  """The step's figures; one that fails to run says why in the record."""
  try:
    return step.measure(plan, record)
  except Exception as e:  # noqa: BLE001 - the measurement is done; say why it is unchecked
    logging.exception("%s of %s failed", step.what, plan.bench.name)
    return {"items": 0, "passed": None, "note": f"{step.what} failed: {launch.error_line(e)}"}


def publish(record: Record, results_dir: pathlib.Path) -> None:
  """Sends the saved record to the configured stores. A failure is kept in the run's ledger
  and reported; the run itself stays good and `make publish` resends it later."""
  from pipelines.publish import publisher, settings
  try:
    targets = publisher.configured_targets()
  except settings.SettingsError as e:
    print(f"warning: not published: {e}", file=sys.stderr)
    return
  for failure in publisher.publish_record(record, targets, results_dir):
    print(f"warning: not published: {failure}; `make publish` will retry", file=sys.stderr)
  for entry in ledger.entries(results_dir, record).values():
    if entry.get("status") == "ok":
      print(f"published to {entry['target']}")
