"""Profiles: `tuned` (the kit's settings) and `beam` (Beam's own benchmark suite as Beam runs
it), through the real launcher, the Dataflow dry run, the report and the Makefile."""
from __future__ import annotations

import json

import pytest

from pipelines import compare_profiles, launch, perf, profiles, run, runners
from pipelines.matrix import REPO_ROOT
from pipelines.publish import metrics_rows
from pipelines.record import comparable
from pipelines.report import compare
from pipelines.worker import beam_metrics
from pipelines.worker.models import build_architecture
from tests.records import make_record, synthetic_record
from tests.test_dataflow import SETTINGS
from tests.test_faults import SMALL_MATRIX, kit  # noqa: F401 - the launcher fixture on the small matrix
from tests.test_makefile import make

BEAM_STEP = "PyTorchRunInference/BeamML_RunInference"
BEAM_METRICS = ("num_inferences", "inference_batch_latency_micro_secs",
                "inference_request_batch_size", "load_model_latency_milli_secs")


def true_size(architecture: str) -> int:
  model = build_architecture(architecture)
  return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


@pytest.fixture
def raw_metrics(monkeypatch):
  """The raw metrics each launcher run queried from Beam, in order."""
  seen = []
  real = beam_metrics.query

  def spy(result):
    seen.append(real(result))
    return seen[-1]
  monkeypatch.setattr(runners.beam_metrics, "query", spy)
  return seen


def test_beam_profile_run_reports_beams_metrics_under_beams_step(kit, raw_metrics):  # noqa: F811
  code, record = kit("small-resnet", "--profile", "beam")
  assert code == 0 and record.status == "succeeded"
  meta, asked = record.metadata, record.plan
  assert asked["profile"] == "beam" and asked["inference_step"] == "PyTorchRunInference"
  # Dataflow's default on n1-standard-2: one SDK process per vCPU, torch pool of all vCPUs.
  assert asked["layout"] == "2x2" and meta["processes_loaded_model"] == 2
  assert asked["batching"] == {"min_batch_size": 10, "max_batch_size": 100}
  assert asked["batch_size"] is None
  (raw,) = raw_metrics
  for name in BEAM_METRICS:
    steps = raw["steps"][(beam_metrics.BEAM_NAMESPACE, name)]
    assert steps and all(s.startswith(BEAM_STEP) for s in steps), (name, steps)
  assert meta["inference_metric_steps"] and all(
      s.startswith(BEAM_STEP) for s in meta["inference_metric_steps"])
  published = metrics_rows.published_metrics(record)
  assert ("BeamML_PyTorch_pytorchruninference/beamml_runinference_"
          "mean_inference_batch_latency_micro_secs") in published
  # Beam's own series on Dataflow; a local run keeps out of it
  assert metrics_rows.series_name(record, "influx_measurement") == "small_resnet_local"
  assert comparable.key(record).series("small_resnet").startswith("small_resnet")
  # The true size of the weights, beside Beam's process-memory delta.
  assert record.metrics["model_param_and_buffer_bytes"] == true_size("resnet18")


def test_tuned_profile_keeps_the_kits_step_and_fixed_batch(kit, raw_metrics):  # noqa: F811
  code, record = kit("small-resnet")
  assert code == 0
  asked = record.plan
  assert asked["profile"] == "tuned" and asked["inference_step"] == "RunInference"
  assert asked["layout"] == "1x2" and asked["batch_size"] == 2
  assert asked["batching"] == {"min_batch_size": 2, "max_batch_size": 2}
  (raw,) = raw_metrics
  steps = raw["steps"][(beam_metrics.BEAM_NAMESPACE, "inference_batch_latency_micro_secs")]
  assert all(s.startswith("RunInference/BeamML_RunInference") for s in steps)
  assert metrics_rows.series_name(record, "influx_measurement") == "small_resnet_tuned_local"


def test_beam_profile_runs_bert_at_batch_size_one(kit):  # noqa: F811
  # One process keeps the test short; batching is what is checked here.
  code, record = kit("small-bert", "--profile", "beam", "--layout", "1x2")
  assert code == 0 and record.status == "succeeded"
  metrics = record.metrics
  assert metrics["mean_inference_request_batch_size"] == 1
  assert metrics["num_batches"] == metrics["num_inferences"] == 6
  assert record.plan["batching"] == {"max_batch_size": 1}
  # BERT ties its decoder to the word embeddings: counted once, as the model holds it once.
  assert metrics["model_param_and_buffer_bytes"] == true_size("bert-tiny-uncased")


def length_matrix(folder) -> str:
  """The small matrix with small-bert set to length-aware batching, as bert-base is."""
  path = folder / "length-matrix.toml"
  path.write_text(SMALL_MATRIX.read_text().replace(
      "[benchmarks.small-bert]\n", '[benchmarks.small-bert]\nbatching = "length"\n'))
  return str(path)


@pytest.fixture
def built_labels(monkeypatch):
  """The transform labels of each pipeline the launcher built, in order."""
  seen = []
  real = launch.pipeline.build

  def spy(p, opts, **telemetry):
    real(p, opts, **telemetry)
    seen.append(set(p.applied_labels))
  monkeypatch.setattr(launch.pipeline, "build", spy)
  return seen


def test_beam_profile_decides_berts_batching_over_the_matrix(kit, tmp_path, monkeypatch,  # noqa: F811
                                                              built_labels):
  monkeypatch.setenv("BENCHMARK_MATRIX", length_matrix(tmp_path))
  code, record = kit("small-bert", "--profile", "beam", "--layout", "1x2")
  assert code == 0 and record.plan["profile"] == "beam"
  assert record.plan["sentence_batching"] == "padded"  # Beam's: in the order they come
  assert "SortByLength" not in built_labels[-1]
  code, record = kit("small-bert")  # tuned: the matrix's length-aware batching
  assert code == 0 and record.plan["sentence_batching"] == "length"
  assert "SortByLength" in built_labels[-1]
  # An explicit --batching wins in any profile, as --batch-size does, and the record says so.
  code, record = kit("small-bert", "--profile", "beam", "--layout", "1x2", "--batching", "length")
  assert code == 0 and record.plan["sentence_batching"] == "length"
  assert "SortByLength" in built_labels[-1]


def test_perf_runs_both_sides_with_its_profiles_layout_and_batching(kit, tmp_path,  # noqa: F811
                                                                     monkeypatch, models_dir,
                                                                     data_dir):
  monkeypatch.setenv("BENCHMARK_MATRIX", length_matrix(tmp_path))
  # No data/ or models/ here: perf must use the folders it is given (workers import the kit
  # through PYTHONPATH, as they would from any folder).
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
  out = tmp_path / "perf"
  assert perf.main(["small-bert", "--items", "12", "--repeats", "1", "--profile", "beam",
                    "--data-dir", str(data_dir), "--models-dir", str(models_dir),
                    "--results-dir", str(out)]) == 0
  (figures,) = out.glob("perf-*.json")
  rows = json.loads(figures.read_text())["rows"]
  assert [r["layout"] for r in rows if r["default"]] == ["2x2"]  # beam: one process per vCPU
  for row in rows:
    assert row["profile"] == "beam" and row["batching"] == {"max_batch_size": 1}
    assert row["batch_size"] == row["plain_batch_size"] == 1  # the plain loop's batch too
    assert row["sentence_batching"] == "padded"  # nor does the plain loop sort


def test_unknown_profile_is_a_clear_error(kit, capsys):  # noqa: F811
  code, record = kit("small-resnet", "--profile", "fast")
  assert code == 2 and record is None
  assert "unknown profile 'fast'; known: tuned, beam" in capsys.readouterr().err


def test_invalid_profile_tables_are_rejected(tmp_path):
  bad = tmp_path / "m.toml"
  bad.write_text('[profiles.beam]\ninference_step = "X"\nbatch = 3\n')
  with pytest.raises(profiles.ProfileError, match="unknown key"):
    profiles.load(bad)
  bad.write_text('[profiles.beam.benchmarks.resnet101]\ndataflow = { workers = 3 }\n')
  with pytest.raises(profiles.ProfileError, match="workers"):
    profiles.load(bad)
  bad.write_text('[profiles.beam]\nsentence_batching = "sorted"\n')
  with pytest.raises(profiles.ProfileError,
                     match="sentence_batching: one of padded, length, max_length"):
    profiles.load(bad)


# --- Dataflow: Beam's options ------------------------------------------------------------------

@pytest.fixture(scope="module")
def beam_jobs(tmp_path_factory):
  out = tmp_path_factory.mktemp("dry-beam")
  mp = pytest.MonkeyPatch()
  for name, value in SETTINGS.items():
    mp.setenv(name, value)
  try:
    for name in ("resnet101", "bert-base", "resnet152-gpu"):
      assert run.main([name, "--profile", "beam", "--runner", "DataflowRunner", "--dry-run",
                       "--results-dir", str(out)]) == 0
  finally:
    mp.undo()
  return {p.stem: json.loads(p.read_text()) for p in (out / "dataflow-jobs").glob("*.json")}


def test_beam_profile_dry_run_has_beams_options(beam_jobs):
  resnet, bert, gpu = beam_jobs["resnet101"], beam_jobs["bert-base"], beam_jobs["resnet152-gpu"]
  options = resnet["pipeline_options"]
  assert options["model_state_dict_path"] == (
      "gs://apache-beam-ml/models/torchvision.models.resnet101.pth")
  # Beam 2.77's image classification example: adaptive batching between 10 and 100.
  assert (options["min_batch_size"], options["max_batch_size"]) == (10, 100)
  assert options["inference_step"] == "PyTorchRunInference" and options["profile"] == "beam"
  assert options["layout"] == "2x2" and options["torch_threads"] == 2
  (pool,) = resnet["worker_pools"]
  assert (pool["machineType"], pool["numWorkers"], pool["diskSizeGb"]) == (
      "n1-standard-2", 75, 50)
  assert pool["autoscalingSettings"]["algorithm"] == "AUTOSCALING_ALGORITHM_NONE"
  assert "no_use_multiple_sdk_containers" not in resnet["experiments"]  # Dataflow's default
  assert any(t.startswith(BEAM_STEP) for t in resnet["transforms"])
  assert not any(t.startswith("RunInference/") for t in resnet["transforms"])

  options = bert["pipeline_options"]
  assert options["model_state_dict_path"] == (
      "gs://apache-beam-ml/models/huggingface.BertForMaskedLM.bert-base-uncased.pth")
  assert options["max_batch_size"] == 1 and "min_batch_size" not in options
  assert bert["worker_pools"][0]["numWorkers"] == 250

  # Beam's T4 job runs 30 workers, in Dataflow's default layout.
  assert gpu["worker_pools"][0]["numWorkers"] == 30
  assert "no_use_multiple_sdk_containers" not in gpu["experiments"]


# --- report and compare --------------------------------------------------------------------

def test_report_groups_keep_profiles_apart(tmp_path):
  old = synthetic_record()  # a record from before profiles: it ran the tuned settings
  tuned = synthetic_record(profile="tuned")
  beam = synthetic_record(profile="beam", inference_step="PyTorchRunInference")
  groups = comparable.groups([old, tuned, beam])
  assert sorted(k.profile for k in groups) == ["beam", "tuned"]
  by_profile = {k.profile: {r.run_id for r in runs} for k, runs in groups.items()}
  assert by_profile == {"tuned": {old.run_id, tuned.run_id}, "beam": {beam.run_id}}
  assert all(f"profile {k.profile}" in k.label() for k in groups)
  assert len({k.slug() for k in groups}) == 2


def test_compare_refuses_runs_of_different_profiles(tmp_path, capsys):
  tuned = make_record(tmp_path, profile="tuned")
  beam = make_record(tmp_path, profile="beam", inference_step="PyTorchRunInference")
  args = ["--results-dir", str(tmp_path), tuned.run_id, beam.run_id]
  assert compare.main(args) == 2
  assert "profile tuned" in capsys.readouterr().err
  assert compare.main([*args, "--cross-profile"]) == 0
  assert "WARNING: profiles differ (A tuned, B beam)" in capsys.readouterr().out


def test_default_compare_pairs_runs_of_the_latest_runs_profile(tmp_path, capsys):
  first = make_record(tmp_path, profile="beam", started="2026-11-01T00:00:00+00:00")
  make_record(tmp_path, profile="tuned", started="2026-11-02T00:00:00+00:00")
  second = make_record(tmp_path, profile="beam", started="2026-11-03T00:00:00+00:00")
  assert compare.main(["--results-dir", str(tmp_path)]) == 0
  out = capsys.readouterr().out
  assert first.run_id in out and second.run_id in out and "profile beam" in out


# --- compare-profiles --------------------------------------------------------------------------

def test_compare_profiles_reports_median_ratios():
  def pair(tuned_latency, beam_latency):
    return {"tuned": synthetic_record(latency_us=tuned_latency, batch_size=16),
            "beam": synthetic_record(latency_us=beam_latency, batch_size=4)}
  figures = compare_profiles.summarize([pair(100, 300), pair(100, 200), pair(100, 250)])
  assert figures["mean_inference_batch_latency_micro_secs"]["ratios"] == pytest.approx(
      [3.0, 2.0, 2.5])
  assert figures["mean_inference_batch_latency_micro_secs"]["median_ratio"] == 2.5
  assert figures["mean_inference_request_batch_size"]["median_ratio"] == 0.25
  for metric, _ in compare_profiles.METRICS:
    assert metric in figures


# --- Makefile -------------------------------------------------------------------------------

def test_profile_reaches_every_entry_point():
  assert "--profile beam" in make("bench-resnet101", "PROFILE=beam")
  assert "--profile tuned" in make("bench-resnet101")
  assert "--profile beam" in make("bench-all", "PROFILE=beam")
  assert "pipelines.perf --profile beam" in make("perf", "PROFILE=beam")
  out = make("compare-profiles", "BENCH=resnet101", "N=128", "REPEATS=3")
  assert "pipelines.compare_profiles resnet101" in out and "--results-dir results" in out
  assert "--items 128" in out and "--repeats 3" in out
  assert "--cross-profile" in make("compare", "CROSS_PROFILE=1")
  assert "--cross-profile" not in make("compare")


def test_help_lists_profile_and_compare_profiles():
  import subprocess
  out = subprocess.run(["make"], cwd=REPO_ROOT, capture_output=True, text=True).stdout
  assert "PROFILE" in out and "compare-profiles" in out and "BENCH" in out
