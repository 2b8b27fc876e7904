"""Sends run records to every configured target and records the outcome on the run.

`python -m pipelines.publish` (`make publish`) resends everything not yet published;
`--run ID` sends one run again (idempotent, so no duplicates either way).

What the record keeps, per target name ("influxdb", "bigquery"):

    record["publish"][name] = {
      "status": "ok" | "failed",  # "ok" once ANY attempt delivered the run to this target
      "target", "at", "error",    # of the latest attempt (error None when it succeeded)
      "last_attempt": "ok" | "failed",
      "attempts": [{"status", "target", "at", "error"}, ...],  # every attempt, oldest first
    }

Sends are idempotent, so a later failed resend (`make publish RUN=<id>`, e.g. while the server
is down) does not undo an earlier delivery: the run stays published, the failure is reported
(exit status 1) and kept in `attempts`. A delivery counts for the target it went to: "target"
describes the server (URL without credentials, database / dataset), so a run delivered only to
a server that has since been replaced in .env is not published to the new one and
`make publish` sends it there.
"""
from __future__ import annotations

import argparse
import pathlib
import re
import sys
from typing import Any, Callable, Optional

from pipelines import matrix, results_store, run_record
from pipelines.publish import PublishError, bigquery, influx, metrics_rows, settings

Target = tuple[str, str, Callable[[dict[str, Any]], Any]]  # name, description, send(record)


def configured_targets() -> list[Target]:
  targets: list[Target] = []
  benchmarks = matrix.load()
  influx_settings = settings.influx()
  if influx_settings:
    targets.append(("influxdb", influx_settings.describe(), lambda r: influx.publish(
        r, metrics_rows.series_name(_entry(benchmarks, r).influx_measurement, r),
        influx_settings)))
  bq_settings = settings.bigquery()
  if bq_settings:
    targets.append(("bigquery", bq_settings.describe(), lambda r: bigquery.publish(
        r, metrics_rows.series_name(_entry(benchmarks, r).bigquery_table, r),
        bq_settings)))
  return targets


def _entry(benchmarks: dict[str, matrix.Benchmark], record: dict[str, Any]) -> matrix.Benchmark:
  """The matrix entry naming the record's measurement and table; a record of a benchmark the
  matrix no longer holds cannot be published under any name."""
  if record["benchmark"] not in benchmarks:
    raise PublishError(f"benchmark '{record['benchmark']}' is not in the matrix "
                       f"({matrix.matrix_path().name}): no measurement or table to send it to")
  return benchmarks[record["benchmark"]]


def _scrub(text: Optional[str]) -> Optional[str]:
  """Credentials written inside a URL ('://user:pw@host', up to the last '@', or a URL without
  a scheme after 'at '), as records written before they were redacted may hold them."""
  if not text:
    return text
  return re.sub(r"\bat \S*@", "at ", re.sub(r"://\S*@", "://", text))


def attempts(record: dict[str, Any], name: str) -> list[dict[str, Any]]:
  """Every attempt to publish the run to target `name`, oldest first (a record written before
  attempts were kept counts its one stored outcome as one attempt)."""
  entry = record.get("publish", {}).get(name)
  if not entry:
    return []
  found = entry.get("attempts") or [entry]
  return [{"status": a.get("status"), "target": _scrub(a.get("target")), "at": a.get("at"),
           "error": _scrub(a.get("error"))} for a in found]


def is_published(record: dict[str, Any], name: str, target: Optional[str] = None) -> bool:
  """True once any attempt delivered the run to target `name` (to the server described by
  `target`, when given)."""
  return any(a["status"] == "ok" and (target is None or a["target"] == _scrub(target))
             for a in attempts(record, name))


def record_attempt(record: dict[str, Any], name: str, attempt: dict[str, Any]) -> dict:
  history = attempts(record, name) + [attempt]
  entry = {"status": "ok" if is_published({"publish": {name: {"attempts": history}}}, name,
                                          attempt["target"]) else "failed",
           "target": attempt["target"], "at": attempt["at"], "error": attempt["error"],
           "last_attempt": attempt["status"], "attempts": history}
  record.setdefault("publish", {})[name] = entry
  return entry


def publish_record(record: dict[str, Any], targets: list[Target], root: pathlib.Path,
                   force: bool = False) -> list[str]:
  """Publishes to each target not yet done (all with force); saves the outcome on the record.
  Returns the failure messages."""
  failures = []
  if record["status"] != "succeeded":
    return failures  # a failed run has no numbers worth charting
  for name, description, send in targets:
    if is_published(record, name, description) and not force:
      continue
    try:
      send(record)
      attempt = {"status": "ok", "target": description, "error": None}
    except PublishError as e:
      attempt = {"status": "failed", "target": description, "error": str(e)}
    entry = record_attempt(record, name, {**attempt, "at": run_record.utc_now()})
    results_store.save(record, root)
    if attempt["status"] == "failed":
      kept = (" (an earlier attempt delivered it there: the run stays published)"
              if entry["status"] == "ok" else "")
      failures.append(f"{record['benchmark']} run {record['run_id']}: {attempt['error']}{kept}")
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
    try:
      record = results_store.find(args.run, args.results_dir)
    except results_store.UnknownRun as e:
      print(f"error: {e}", file=sys.stderr)
      return 2
    if record["status"] != "succeeded":
      print(f"error: {record['benchmark']} run {record['run_id']} {record['status']}: not "
            "published (only succeeded runs are published)", file=sys.stderr)
      return 2
    records = [record]
  else:
    records = [r for r in results_store.load_all(args.results_dir)
               if r["status"] == "succeeded"
               and not all(is_published(r, name, description)
                           for name, description, _ in targets)]
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
