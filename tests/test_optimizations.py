"""CPU optimizations (OPTIMIZE=, #19): each runs through the real launcher, where the workers load
the model; exact ones predict what none predicts; the record says which ran, what it cost and
how far it agrees with none; what cannot run is refused with one line."""
from __future__ import annotations

import re

import pytest
import torch

from pipelines import agreement, plan, run
from pipelines.worker import optimizations, optimized_model
from pipelines.worker.models import build_architecture
from tests.test_faults import SMALL_MATRIX, kit, predictions  # noqa: F401 - kit: a fixture

# What a CPU run can take: fp16 is a GPU precision (refused below).
CPU_NAMES = [name for name in optimizations.NAMES if name not in optimizations.GPU_ONLY]
CASES = [("small-resnet", name) for name in CPU_NAMES] + [
    ("small-bert", name) for name in CPU_NAMES if name not in optimizations.IMAGE_ONLY]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, models_dir, data_dir):
  """Runs (benchmark, optimization) once per module: {case: (exit code, record, predictions)}."""
  results = tmp_path_factory.mktemp("optimized") / "results"
  done = {}
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv("BENCHMARK_MATRIX", str(SMALL_MATRIX))
    for name in ("INFLUXDB_URL", "BIGQUERY_DATASET"):
      mp.delenv(name, raising=False)

    def get(bench: str, optimization: str):
      if (bench, optimization) not in done:
        code = run.main([bench, "--optimize", optimization, "--models-dir", str(models_dir),
                         "--data-dir", str(data_dir), "--results-dir", str(results)])
        (record,) = [r for r in _records(results) if r.benchmark == bench
                     and r.plan["optimization"] == optimization]
        done[bench, optimization] = (code, record, sorted(
            (p["input"], p.get("class", p.get("token"))) for p in predictions(results, record)))
      return done[bench, optimization]
    yield get


def _records(results):
  from pipelines.record import store
  return store.load_all(results)


@pytest.mark.parametrize("bench,optimization", CASES, ids=[f"{b}-{o}" for b, o in CASES])
def test_each_optimization_runs_where_the_workers_load_the_model(runs, bench, optimization):
  code, record, predicted = runs(bench, optimization)
  assert code == 0 and record.status == "succeeded", record.error
  m, meta = record.metrics, record.metadata
  assert meta["optimization_ran"] == optimization  # what the workers applied (their counters)
  assert m["num_inferences"] == len(predicted) == 6
  assert m["optimize_s"] is not None and m["worker_share_optimize_s"] is not None
  if optimization in ("freeze", "compile", "int8"):  # a trace, a compile, a quantization
    assert m["optimize_s"] > 0
  if optimization == optimizations.NONE:
    assert m["agreement"] is None and "agreement_check" not in meta
    return
  check = meta["agreement_check"]
  assert check["items"] == 6 and check["weights"] == "random"
  assert 0 <= m["agreement"] <= 1 and m["max_logit_diff"] >= 0
  _, _, reference = runs(bench, optimizations.NONE)
  if optimization in optimizations.EXACT:
    assert check["kind"] == "exact" and check["passed"] is True, check
    assert predicted == reference  # the same prediction for every item
  else:  # lossy, random weights: measured, not judged, and the record says why
    assert check["kind"] == "lossy" and check["passed"] is None
    assert "random weights" in record.metric_notes["agreement"]


def test_bf16_says_whether_this_cpu_runs_it_natively(runs):
  _, record, _ = runs("small-bert", "bf16")
  meta = record.metadata
  flags = optimizations.cpu_flags()
  assert meta["cpu_flags"] == (",".join(flags) or "none")
  assert meta["bf16"] == optimizations.bf16_support(flags)


def test_a_cpu_without_bf16_instructions_is_named_emulated():
  cpuinfo = "processor: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n"
  flags = optimizations.cpu_flags(cpuinfo)
  assert flags == ["avx2", "avx512f", "avx512_vnni"]
  assert optimizations.bf16_support(flags) == "emulated (no avx512_bf16/amx_bf16)"
  assert optimizations.bf16_support(["avx512_bf16"]) == "native (avx512_bf16)"


@pytest.mark.parametrize("args,line", [
    (["small-bert", "--optimize", "channels_last"],
     "error: small-bert: OPTIMIZE=channels_last: channels_last changes the memory format of "
     "image tensors (the ResNets); language_modeling has no image tensors"),
    (["small-resnet", "--optimize", "freeze", "--profile", "beam"],
     "error: small-resnet: PROFILE=beam runs the model with optimization none, as Beam's suite "
     "does: OPTIMIZE= is for the tuned profile"),
])
def test_what_cannot_apply_is_refused_with_one_line(kit, capsys, args, line):  # noqa: F811
  code, record = kit(*args)
  assert code == 2 and record is None
  assert capsys.readouterr().err.strip() == line


def test_compile_without_a_compiler_is_refused_before_launch(kit, capsys, monkeypatch,  # noqa: F811
                                                              tmp_path):
  monkeypatch.setenv("PATH", str(tmp_path / "no-compilers-here"))
  code, record = kit("small-resnet", "--optimize", "compile")
  assert code == 2 and record is None
  err = capsys.readouterr().err.strip()
  assert err == ("error: small-resnet: OPTIMIZE=compile: torch.compile's inductor CPU backend "
                 "builds C++ kernels, and no C++ compiler (g++, c++, clang++) is on PATH here")


def test_a_worker_without_a_compiler_refuses_at_load(monkeypatch, tmp_path):
  """Where no launcher check reaches (a Dataflow worker), the worker's load fails with the
  reason, never silently running the model unoptimized."""
  monkeypatch.setenv("PATH", str(tmp_path))
  model = build_architecture("resnet18")
  with pytest.raises(optimizations.OptimizationUnavailable, match="no C.. compiler"):
    optimized_model.apply(model, "compile", "image_classification",
                          [((torch.zeros(2, 3, 224, 224),), {})])


def test_the_tuned_profile_takes_the_matrix_optimization_and_beam_never(tmp_path, monkeypatch,
                                                                       models_dir, data_dir):
  text = re.sub(r'(\[benchmarks\.small-bert\]\n)', r'\1optimization = "int8"\n',
                SMALL_MATRIX.read_text())
  path = tmp_path / "matrix.toml"
  path.write_text(text)
  monkeypatch.setenv("BENCHMARK_MATRIX", str(path))
  common = dict(models_dir=models_dir, data_dir=data_dir, results_dir=tmp_path / "results")
  assert plan.resolve(plan.Overrides("small-bert", **common)).optimization == "int8"
  assert plan.resolve(plan.Overrides("small-bert", optimization="none",
                                     **common)).optimization == "none"
  assert plan.resolve(plan.Overrides("small-bert", profile="beam",
                                     **common)).optimization == "none"
  assert plan.resolve(plan.Overrides("small-resnet", **common)).optimization == "none"


def test_agreement_verdicts():
  want = torch.tensor([[5.0, 1.0, 0.0], [2.0, 1.9999, 0.0], [0.0, 3.0, 1.0]])
  # exact: rounding-sized differences only, and the one flip is a tie
  nudged = want.clone()
  nudged[1, 1] = 2.0001
  exact = agreement.compare(want, nudged, exact=True, meaningful=False)
  assert exact["passed"] is True and exact["flipped"] == exact["flipped_at_ties"] == 1
  assert exact["agreement"] == pytest.approx(2 / 3)
  # exact, but a logit moved by far more than rounding: fails even with every prediction kept
  moved = want.clone()
  moved[0, 0] += 1.0
  assert agreement.compare(want, moved, exact=True, meaningful=False)["passed"] is False
  # lossy: judged only with pretrained weights
  flipped = want[:, [1, 0, 2]]
  lossy = agreement.compare(want, flipped, exact=False, meaningful=True)
  assert lossy["passed"] is False and lossy["agreement"] == 0
  unjudged = agreement.compare(want, want, exact=False, meaningful=False)
  assert unjudged["passed"] is None and "random weights" in unjudged["note"]


def test_an_optimize_experiment_never_joins_its_profile_series(runs):
  """OPTIMIZE= other than the profile's choice publishes to its own series and charts in its
  own report group; the profile's own choice stays in the profile's series."""
  from pipelines.publish.metrics_rows import series_name
  from pipelines.record import comparable
  _, optimized, _ = runs("small-bert", "int8")
  _, plain, _ = runs("small-bert", "none")
  assert optimized.plan["overrides"] == {"optimization": "int8"}
  assert plain.plan["overrides"] == {}
  assert series_name(optimized, "influx_measurement") == "small_bert_tuned_int8_local"
  assert series_name(plain, "influx_measurement") == "small_bert_tuned_local"
  assert comparable.key(optimized) != comparable.key(plain)
  assert comparable.key(optimized).optimization == "int8"


def test_sweep_takes_optimizations_as_a_dimension(tmp_path, monkeypatch, capsys, models_dir,
                                                  data_dir):
  from pipelines import sweep
  from pipelines.report import __main__ as report
  monkeypatch.setenv("BENCHMARK_MATRIX", str(SMALL_MATRIX))
  for name in ("INFLUXDB_URL", "BIGQUERY_DATASET"):
    monkeypatch.delenv(name, raising=False)
  results = tmp_path / "results"
  code = sweep.main(["small-bert", "--batch-sizes", "3", "--layouts", "1x2", "--batchings",
                     "padded", "--optimizations", "none,freeze", "--items", "6",
                     "--results-dir", str(results), "--models-dir", str(models_dir),
                     "--data-dir", str(data_dir)])
  assert code == 0
  out = capsys.readouterr().out
  (stored,) = (results / "sweeps").glob("small-bert-*.json")
  import json
  points = {p["optimization"]: p for p in json.loads(stored.read_text())["points"]}
  assert set(points) == {"none", "freeze"}
  assert points["none"]["agreement"] is None
  assert points["freeze"]["agreement"] == 1.0 and points["freeze"]["agreement_passed"] is True
  assert re.search(r"(?m)^1x2 padded freeze .* a1\.00 ", out), out
  assert report.main(["--results-dir", str(results)]) == 0
  assert 'alt="sweep of small-bert"' in (results / "report.html").read_text()

