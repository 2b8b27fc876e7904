"""Which runs may be compared: one key, used by the report's groups, the published series
names, `make compare` and `make plan`.

Two runs are like with like only with the same benchmark, runner, device actually used,
machine type, weights, profile (a `beam` run batches, labels and lays out workers differently
from a `tuned` one), worker layout, CPU optimization, and the same experiment: the settings
the run asked beyond its profile's (OPTIMIZE=, BATCH_SIZE=, N=, LAYOUT=, BATCHING=, ...),
recorded as the plan's `overrides`. An experiment never moves its profile's series or group.
"""
from __future__ import annotations

import dataclasses
import re

from pipelines.record.schema import Record
from pipelines.worker.vocab import BEAM_PROFILE, DEFAULT_PROFILE

# How an override is written in a series name and a label.
_SUFFIX = {"batch_size": "b{}", "items": "n{}", "input": "{}input"}
_FLAG = {"optimization": "OPTIMIZE", "batch_size": "BATCH_SIZE", "items": "N",
         "layout": "LAYOUT", "batching": "BATCHING"}


class SeriesNameError(ValueError):
  """A record's profile or override cannot be part of a series name."""


@dataclasses.dataclass(frozen=True, order=True)
class Comparable:
  benchmark: str
  runner: str
  device: str
  machine_type: str
  weights: str
  profile: str = DEFAULT_PROFILE
  layout: str = "unrecorded"  # records from before layouts existed
  optimization: str = "none"  # records from before OPTIMIZE= existed ran none
  experiment: tuple[tuple[str, str], ...] = ()  # (setting, value) asked beyond the profile's

  @property
  def local(self) -> bool:
    return self.runner != "DataflowRunner"

  def experiment_without(self, *settings: str) -> tuple[tuple[str, str], ...]:
    return tuple((k, v) for k, v in self.experiment if k not in settings)

  def label(self) -> str:
    asked = ", ".join(f"{_FLAG.get(k, k.upper())}={v}" for k, v in self.experiment)
    return (f"{self.benchmark} · {self.runner} · {self.device} · {self.machine_type} · "
            f"{self.weights} weights · profile {self.profile} · layout {self.layout}"
            + (f" · {self.optimization}" if self.optimization != "none" else "")
            + (f" · experiment {asked}" if asked else ""))

  def slug(self) -> str:
    parts = [self.benchmark, self.runner, self.device, self.machine_type, self.weights,
             self.profile, self.layout]
    parts += [self.optimization] if self.optimization != "none" else []
    parts += [f"{k}-{v}" for k, v in self.experiment]
    return re.sub(r"[^a-z0-9._-]+", "-", "-".join(parts).lower())

  def series(self, base: str) -> str:
    """The InfluxDB measurement / BigQuery table for the benchmark's `base` name: Beam's own
    name only for a `beam` profile run on Dataflow (what Beam's dashboards and analyzer
    read); every other profile adds `_<profile>`, every experiment its settings
    (`_int8`, `_b32`, `_n100`, `_2x1`), and a local run `_local`, so a laptop's number never
    lands in a Dataflow series."""
    parts = [base] if self.profile == BEAM_PROFILE else [base, self.profile]
    parts += [_SUFFIX.get(k, "{}").format(v) for k, v in self.experiment]
    parts += ["local"] if self.local else []
    name = "_".join(str(p) for p in parts)
    if not re.fullmatch(r"[A-Za-z0-9_]+", name):
      raise SeriesNameError(f"'{name}' is not a valid series name (profile and experiment "
                            "settings must be [a-z0-9_])")
    return name


def key(record: Record) -> Comparable:
  experiment = tuple(sorted((str(k), str(v)) for k, v in record.overrides.items()))
  return Comparable(record.benchmark, record.runner, record.device_used, record.machine_type,
                    record.weights, record.profile, record.layout, record.optimization,
                    experiment)


def groups(records) -> dict[Comparable, list[Record]]:
  """Successful runs by comparable group, oldest first."""
  out: dict[Comparable, list[Record]] = {}
  for record in sorted(records, key=lambda r: (r.timestamp, r.run_id)):
    if record.succeeded:
      out.setdefault(key(record), []).append(record)
  return dict(sorted(out.items()))
