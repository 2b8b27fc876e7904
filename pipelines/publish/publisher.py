"""Sends run records to every configured target and records the outcome on the run.

`python -m pipelines.publish` (`make publish`) resends everything not yet published;
`--run ID` sends one run again (idempotent, so no duplicates either way).
"""
from __future__ import annotations

import argparse
import pathlib
import sys
from typing import Any, Callable

from pipelines import matrix, results_store, run_record
from pipelines.publish import PublishError, bigquery, influx, settings

Target = tuple[str, str, Callable[[dict[str, Any]], Any]]  # name, description, send(record)


def configured_targets() -> list[Target]:
  targets: list[Target] = []
  benchmarks = matrix.load()
  influx_settings = settings.influx()
  if influx_settings:
    targets.append(("influxdb", influx_settings.describe(), lambda r: influx.publish(
        r, benchmarks[r["benchmark"]].influx_measurement, influx_settings)))
  bq_settings = settings.bigquery()
  if bq_settings:
    targets.append(("bigquery", bq_settings.describe(), lambda r: bigquery.publish(
        r, benchmarks[r["benchmark"]].bigquery_table, bq_settings)))
  return targets


def is_published(record: dict[str, Any], target: str) -> bool:
  return record.get("publish", {}).get(target, {}).get("status") == "ok"


def publish_record(record: dict[str, Any], targets: list[Target], root: pathlib.Path,
                   force: bool = False) -> list[str]:
  """Publishes to each target not yet done (all with force); saves the outcome on the record.
  Returns the failure messages."""
  failures = []
  if record["status"] != "succeeded":
    return failures  # a failed run has no numbers worth charting
  for name, description, send in targets:
    if is_published(record, name) and not force:
      continue
    try:
      send(record)
      outcome = {"status": "ok", "target": description}
    except PublishError as e:
      outcome = {"status": "failed", "target": description, "error": str(e)}
      failures.append(f"{record['benchmark']} run {record['run_id']}: {e}")
    record.setdefault("publish", {})[name] = {**outcome, "at": run_record.utc_now()}
    results_store.save(record, root)
  return failures


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--run", help="publish this run id (prefix) again, even if already sent")
  parser.add_argument("--results-dir", type=pathlib.Path, default=results_store.DEFAULT_DIR)
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
    records = [results_store.find(args.run, args.results_dir)]
  else:
    records = [r for r in results_store.load_all(args.results_dir)
               if r["status"] == "succeeded"
               and not all(is_published(r, name) for name, _, _ in targets)]
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
