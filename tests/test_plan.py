"""One plan per run: resolve() decides and checks everything once, the plan is frozen, the
record carries it whole, and commands get their record back without rebuilding a command line
(in-process) or diffing the results folder (child.py)."""
from __future__ import annotations

import dataclasses

import pytest

from pipelines import child, plan, run
from pipelines.layout import Layout
from pipelines.record import store
from tests.test_faults import kit  # noqa: F401 - the launcher fixture on the small matrix


def overrides(kit, models_dir, data_dir, **fields) -> plan.Overrides:  # noqa: F811
  return plan.Overrides("small-bert", models_dir=models_dir, data_dir=data_dir,
                        results_dir=kit.results, **fields)


def test_a_plan_is_resolved_once_and_frozen(kit, models_dir, data_dir):  # noqa: F811
  resolved = plan.resolve(overrides(kit, models_dir, data_dir, items=4, batch_size=2,
                                    layout=Layout(1, 1), batching="length"))
  assert (resolved.items, resolved.batching, str(resolved.layout)) == (
      4, {"min_batch_size": 2, "max_batch_size": 2}, "1x1")
  assert resolved.length_aware and "vocab_path" in dict(resolved.model_files)
  assert len(resolved.input_lines) == 4
  with pytest.raises(dataclasses.FrozenInstanceError):
    resolved.items = 5  # runners take the plan; they cannot change it
  assert not kit.results.exists()  # resolving checks; it creates nothing


@pytest.mark.parametrize("fields, says", [
    ({"items": 10_000}, "items, 10000 requested"),
    ({"runner": "DirectRunner", "dry_run": True}, "DRY_RUN builds a Dataflow job"),
    ({"runner": "Nope"}, "unknown runner 'Nope'"),
    ({"input": "gs://bkt/list.txt"}, "gs://bkt/list.txt is not a local file"),
    ({"batching": "max_length"}, "small-bert's task language_modeling batches its items one "
                                 "way (padded, length)"),
    ({"gpu_sample_s": -1.0}, "GPU sampling interval must be 0 (off) to 60 s"),
])
def test_every_refusal_comes_from_resolve_with_one_line(
    kit, models_dir, data_dir, fields, says):  # noqa: F811
  with pytest.raises(plan.PlanError) as refused:
    plan.resolve(overrides(kit, models_dir, data_dir, **fields))
  assert says in str(refused.value) and "\n" not in str(refused.value)
  assert not kit.results.exists()


def test_the_record_carries_the_plan_whole_and_no_key_twice(kit, models_dir,  # noqa: F811
                                                             data_dir):
  resolved = plan.resolve(overrides(kit, models_dir, data_dir, items=4, batch_size=2))
  record = run.run_plan(resolved, run.worker_share_start())
  assert record.status == "succeeded" and record.run_id == resolved.run_id
  assert record.plan == resolved.as_record()
  assert record.plan["model_files"]["vocab_path"].endswith("vocab.txt")
  assert not set(record.plan) & set(record.metadata)  # the plan's facts are the plan's only
  (saved,) = store.load_all(kit.results)
  assert saved.to_dict() == record.to_dict()


def test_asked_settings_beyond_the_profile_are_the_plans_overrides(kit, models_dir,  # noqa: F811
                                                                  data_dir):
  default = plan.resolve(overrides(kit, models_dir, data_dir))
  assert default.overrides == ()  # the matrix's items, batch, layout: nothing asked
  same = plan.resolve(overrides(kit, models_dir, data_dir, items=6, batch_size=3,
                                layout=Layout(1, 2)))
  assert same.overrides == ()  # asked, but what the profile would have chosen anyway
  asked = plan.resolve(overrides(kit, models_dir, data_dir, items=4, batch_size=2,
                                 layout=Layout(2, 1), batching="length"))
  assert dict(asked.overrides) == {"items": 4, "batch_size": 2, "layout": "2x1",
                                   "batching": "length"}


def test_a_child_run_returns_its_own_record_or_its_refusal(kit, models_dir,  # noqa: F811
                                                           data_dir):
  other = kit.results  # a record already in the store must not be mistaken for this run's
  run.run_overrides(overrides(kit, models_dir, data_dir, items=2, batch_size=2))
  o = overrides(kit, models_dir, data_dir, items=4, batch_size=2, layout=Layout(1, 1))
  assert child.from_json(child.to_json(o)) == o
  record = child.run(o)
  assert record.status == "succeeded" and record.plan["items"] == 4
  assert record.plan["layout"] == "1x1" and other.exists()
  with pytest.raises(child.NotStarted, match="items, 10000 requested"):
    child.run(dataclasses.replace(o, items=10_000))
