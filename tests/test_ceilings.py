"""The GPU benchmark's measurements, without a GPU: the ceilings' arithmetic, DECODE=device
through the real launcher on the CPU (where it decoded, its agreement with PIL, its ceilings),
the refusals, the steady windows, and gpu-check's timed steps."""
from __future__ import annotations

import pytest

from pipelines import ceilings, child, gpu_check, plan
from pipelines.layout import Layout
from pipelines.report import __main__ as report
from pipelines.worker import process_stats
from tests.test_dataflow import SETTINGS
from tests.test_faults import kit  # noqa: F401 - the launcher fixture on the small matrix


def stage(name, device, rate):
  return ceilings.Stage(name, device, rate, f"{name} on {device}")


def test_stages_on_one_device_add_their_times_and_devices_overlap():
  # decode and inference on one GPU: 1 / (1/3,904 + 1/6,061) = 2,374 images/s (the H200)
  rate, bound = ceilings.ceiling([stage("decode", "cuda", 3904), stage("model", "cuda", 6061)])
  assert rate == pytest.approx(2374.6, abs=0.1) and bound == "cuda"
  # PIL on the CPU beside the model on the GPU: the slower device bounds the run
  rate, bound = ceilings.ceiling([stage("decode", "cpu", 210), stage("model", "cuda", 3119)])
  assert (rate, bound) == (pytest.approx(210), "cpu")
  said = ceilings.words([stage("decode", "cpu", 210), stage("model", "cuda", 3119)], 189.0)
  assert said.startswith("decode-bound: decode on cpu 210 images/s; model on cuda 3,119")
  assert said.endswith("the run reached 90% of 210")


def test_device_decode_on_a_cpu_benchmark_runs_and_says_where_and_how_far_from_pil(
    kit):  # noqa: F811
  """`make bench-resnet101 N=16 DECODE=device`, on the small matrix."""
  code, record = kit("small-resnet", "--decode", "device", "--items", "6")
  assert code == 0 and record.succeeded, record.error
  assert record.plan["decode"] == "device" and record.metadata["decoded"] == "device (cpu)"
  assert record.overrides == {"decode": "device"}  # an experiment: its own series and group
  check = record.metadata["decode_check"]
  assert check["items"] == 6 and check["decoded_on"] == "cpu"
  assert record.metrics["decode_agreement"] == 1.0  # the same class for every item
  # torchvision's resize is at most one 8-bit level from PIL's (0.0175 after normalizing)
  assert 0 < record.metrics["decode_max_input_diff"] < 0.02
  stages = {s["name"]: s for s in record.metadata["ceilings"]["stages"]}
  assert set(stages) == {"decode", "model"} and {s["device"] for s in stages.values()} == {"cpu"}
  ceiling = record.metrics["ceiling_items_per_s"]
  assert ceiling == pytest.approx(1 / sum(1 / s["items_per_s"] for s in stages.values()))
  assert record.metadata["ceilings"]["in_words"].startswith("decode+model-bound")
  assert report.main(["--results-dir", str(kit.results)]) == 0  # the report says it in words
  assert "What bounds it: decode+model-bound" in (kit.results / "report.html").read_text()
  code, cpu = kit("small-resnet", "--items", "6")  # PIL: no decode check, no ceilings
  assert cpu.metadata["decoded"] == "cpu" and "ceilings" not in cpu.metadata
  assert cpu.metrics["decode_agreement"] is None


@pytest.mark.parametrize("fields, says", [
    ({"benchmark": "small-bert", "decode": "device"},
     "DECODE=device: small-bert's task language_modeling decodes cpu only"),
    ({"profile": "beam", "decode": "device"},
     "PROFILE=beam decodes on the cpu, as Beam's suite does"),
    ({"optimization": "fp16"}, "fp16 is a GPU precision; a CPU run has bf16"),
])
def test_what_cannot_decode_or_run_there_is_refused_with_one_line(kit, models_dir,  # noqa: F811
                                                                  data_dir, fields, says):
  asked = plan.Overrides(**{"benchmark": "small-resnet", "models_dir": models_dir,
                            "data_dir": data_dir, "results_dir": kit.results, **fields})
  with pytest.raises(plan.PlanError, match=says):
    plan.resolve(asked)


def test_bf16_is_refused_for_a_t4_on_dataflow(monkeypatch, tmp_path):
  for name, value in SETTINGS.items():
    monkeypatch.setenv(name, value)
  with pytest.raises(plan.PlanError, match="bf16 needs a GPU of compute capability 8.0 .* 7.5"):
    plan.resolve(plan.Overrides("resnet152-gpu", runner="DataflowRunner", dry_run=True,
                                optimization="bf16_channels_last", results_dir=tmp_path))


def windows(ends_ms, items_per_batch, window_ms=250):
  """Raw metrics of one process whose batches ended at `ends_ms`, as the handler counts them."""
  counters, dist = {}, {}
  for end in ends_ms[1:]:
    key = ("BenchmarkKit", f"window/{window_ms}/{end // window_ms}")
    counters[key] = counters.get(key, 0) + items_per_batch
  process = {"process": "h:1", "batches": len(ends_ms), "first_batch_end_ms": ends_ms[0],
             "last_batch_end_ms": ends_ms[-1],
             "steady_window_s": (ends_ms[-1] - ends_ms[0]) / 1000}
  return {"counters": counters, "distributions": dist}, [process]


def test_a_steady_state_is_stable_when_its_last_windows_agree():
  steady = [1000 + 100 * i for i in range(100)]  # a batch of 10 every 100 ms: 100 items/s
  raw, processes = windows(steady, 10)
  found = process_stats.steady_windows(raw, processes)
  assert found["stable"] is True and found["items_per_s"] == pytest.approx(100, rel=0.05)
  slowing = [1000 + 100 * i for i in range(60)] + [7000 + 300 * i for i in range(40)]
  raw, processes = windows(slowing, 10)
  found = process_stats.steady_windows(raw, processes)
  assert found["stable"] is False and "more than 10%" in found["why"]
  raw, processes = windows([1000, 1100, 1200], 10)
  assert process_stats.steady_windows(raw, processes)["stable"] is None  # too short to judge


def test_a_child_past_its_limit_is_stopped_and_says_so(kit, models_dir,  # noqa: F811
                                                      data_dir):
  asked = plan.Overrides("small-resnet", items=6, layout=Layout(1, 2), models_dir=models_dir,
                         data_dir=data_dir, results_dir=kit.results)
  with pytest.raises(child.TimedOut, match="ran past its limit of 1 s"):
    child.run(asked, timeout_s=1)


def test_gpu_check_records_a_failed_step_and_skips_past_its_budget():
  steps = gpu_check.Steps(budget_s=60)
  assert steps.run("fine", lambda: {"x": 1}) == {"x": 1}
  steps.run("hangs", lambda: (_ for _ in ()).throw(SystemExit("error: gpu-check: ran past")))
  steps.run("breaks", lambda: 1 / 0)
  spent = gpu_check.Steps(budget_s=0)
  spent.run("late", lambda: {"x": 1})
  assert steps.done["fine"]["status"] == "ok"
  assert steps.done["hangs"] == {"status": "failed", "why": "error: gpu-check: ran past",
                                 "seconds": steps.done["hangs"]["seconds"]}
  assert steps.done["breaks"]["why"] == "ZeroDivisionError: division by zero"
  assert spent.done["late"] == {"status": "skipped", "why": "the time budget was spent"}
