"""Run records built by the real record builder from Beam-shaped metrics (no pipeline run)."""
from __future__ import annotations

import datetime

from pipelines.record import build, store
from pipelines.record.schema import Record
from pipelines.worker import latency_histogram


def plan_record(*, benchmark="resnet101", runner="DirectRunner", machine_type="local",
                profile=None, inference_step=None, **extra) -> dict:
  """A plan as RunPlan.as_record writes it, with the keys readers use; profile /
  inference_step left out when None, as in plans from before they existed (readers then
  assume 'tuned' and 'RunInference')."""
  return {"run_id": build.new_run_id(), "benchmark": benchmark, "runner": runner,
          "machine_type": machine_type, "accelerator": None, "workers": 1, "overrides": {},
          **({"profile": profile} if profile else {}),
          **({"inference_step": inference_step} if inference_step else {}), **extra}


def synthetic_record(*, benchmark="resnet101", latency_us=52_000.0, load_ms=1500.0,
                     batches=4, batch_size=16, wall_time_s=None, started=None,
                     runner="DirectRunner", machine_type="local", device="cpu",
                     weights="random", profile=None, inference_step=None,
                     plan_extra=None, latencies_us=None) -> Record:
  """plan_extra: more of the plan (layout, optimization, overrides, dataflow shape...).
  latencies_us: each batch's latency (default: `batches` of them within +-10% of latency_us)."""
  if latencies_us is not None:
    batches = len(latencies_us)
  latencies = list(latencies_us or [latency_us * (0.9 + 0.2 * i / max(1, batches - 1))
                                    for i in range(batches)])
  n = batches * batch_size
  counters = {("BeamML_PyTorch", "num_inferences"): n,
              ("BenchmarkKit", f"model_loaded_on_{device}"): 1,
              ("BenchmarkKit", f"model_weights_{weights}"): 1}
  for us in latencies:
    name = ("BenchmarkKit", latency_histogram.counter_name(us))
    counters[name] = counters.get(name, 0) + 1
  raw = {"counters": counters, "distributions": {
      ("BeamML_PyTorch", "inference_request_batch_size"):
          {"sum": n, "count": batches, "min": batch_size, "max": batch_size},
      ("BeamML_PyTorch", "inference_batch_latency_micro_secs"):
          {"sum": sum(latencies), "count": batches, "min": min(latencies),
           "max": max(latencies)},
      ("BeamML_PyTorch", "load_model_latency_milli_secs"):
          {"sum": load_ms, "count": 1, "min": load_ms, "max": load_ms}}}
  if wall_time_s is None:  # consistent with the latencies: load + inference + 50 ms overhead
    wall_time_s = load_ms / 1000 + sum(latencies) / 1e6 + 0.05
  plan = plan_record(benchmark=benchmark, runner=runner, machine_type=machine_type,
                     profile=profile, inference_step=inference_step, **(plan_extra or {}))
  return build.build(plan, build.Outcome(started=started or build.utc_now(),
                                         wall_time_s=wall_time_s, raw=raw))


def make_record(results, latency_us=52_000.0, **kwargs) -> Record:
  """A saved record of a 64-image resnet101 run."""
  record = synthetic_record(latency_us=latency_us, **kwargs)
  store.save(record, results)
  return record


def history(results, latencies_us, *, start=datetime.datetime(2026, 11, 1, 2, 0,
                                                              tzinfo=datetime.timezone.utc),
            **kwargs) -> list[Record]:
  """One nightly run per value, saved in order."""
  out = []
  for day, latency in enumerate(latencies_us):
    started = (start + datetime.timedelta(days=day)).isoformat(timespec="seconds")
    out.append(make_record(results, latency_us=latency, started=started, **kwargs))
  return out
