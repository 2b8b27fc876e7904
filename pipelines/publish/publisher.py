"""Sends run records to every configured target and keeps the outcome in the run's ledger
(record/ledger.py): publishers only read records.

`python -m pipelines.publish` (`make publish`) resends everything not yet published;
`--run ID` sends one run again (idempotent, so no duplicates either way).

Sends are idempotent, so a later failed resend (`make publish RUN=<id>`, e.g. while the server
is down) does not undo an earlier delivery: the run stays published, the failure is reported
(exit status 1) and kept in the ledger's attempts. A delivery counts for the target it went to,
so a run delivered only to a server since replaced in .env is sent to the new one.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
from typing import Any, Callable

from pipelines.publish import PublishError, bigquery, influx, metrics_rows, settings
from pipelines.record import build, ledger, store
from pipelines.record.schema import Record

Target = tuple[str, str, Callable[[Record], Any]]  # name, description, send(record)


def configured_targets() -> list[Target]:
  targets: list[Target] = []
  influx_settings = settings.influx()
  if influx_settings:
    targets.append(("influxdb", influx_settings.describe(), lambda r: influx.publish(
        r, metrics_rows.series_name(r, "influx_measurement"), influx_settings)))
  bq_settings = settings.bigquery()
  if bq_settings:
    targets.append(("bigquery", bq_settings.describe(), lambda r: bigquery.publish(
        r, metrics_rows.series_name(r, "bigquery_table"), bq_settings)))
  return targets


def publish_record(record: Record, targets: list[Target], root: pathlib.Path,
                   force: bool = False) -> list[str]:
  """Publishes to each target not yet done (all with force); keeps each outcome in the run's
  ledger. Returns the failure messages."""
  failures = []
  if not record.succeeded:
    return failures  # a failed run has no numbers worth charting
  for name, description, send in targets:
    if ledger.is_published(root, record, name, description) and not force:
      continue
    try:
      send(record)
      attempt = {"status": "ok", "target": description, "error": None}
    except PublishError as e:
      attempt = {"status": "failed", "target": description, "error": str(e)}
    entry = ledger.record_attempt(root, record, name, {**attempt, "at": build.utc_now()})
    if attempt["status"] == "failed":
      kept = (" (an earlier attempt delivered it there: the run stays published)"
              if entry["status"] == "ok" else "")
      failures.append(f"{record.benchmark} run {record.run_id}: {attempt['error']}{kept}")
  return failures


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--run", help="publish this run id (prefix) again, even if already sent")
  parser.add_argument("--results-dir", type=pathlib.Path, default=store.DEFAULT_DIR)
  args = parser.parse_args(argv)
  try:
    targets = configured_targets()
  except settings.SettingsError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if not targets:
    print("nothing to publish to: set INFLUXDB_URL and/or BIGQUERY_DATASET (see .env.example)")
    return 2
  if args.run:
    try:
      record = store.find(args.run, args.results_dir)
    except store.UnknownRun as e:
      print(f"error: {e}", file=sys.stderr)
      return 2
    if not record.succeeded:
      print(f"error: {record.benchmark} run {record.run_id} {record.status}: not "
            "published (only succeeded runs are published)", file=sys.stderr)
      return 2
    records = [record]
  else:
    records = [r for r in store.load_all(args.results_dir)
               if r.succeeded and not all(ledger.is_published(args.results_dir, r, name, d)
                                          for name, d, _ in targets)]
  failures, failed_runs = [], 0
  for record in records:
    record_failures = publish_record(record, targets, args.results_dir, force=bool(args.run))
    failures += record_failures
    failed_runs += bool(record_failures)
  print(f"published {len(records) - failed_runs} of {len(records)} run(s) to: "
        + "; ".join(description for _, description, _ in targets))
  for failure in failures:
    print(f"error: {failure}", file=sys.stderr)
  return 1 if failures else 0
