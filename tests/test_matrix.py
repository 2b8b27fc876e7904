"""The registry must produce the seed suite's values (and the dashboard must chart them)."""
import json
import subprocess
import sys

import pytest

from pipelines import matrix, run
from pipelines.matrix import REPO_ROOT
from pipelines.publish import metrics_rows
from tests.records import make_record
from tests.test_dataflow import SETTINGS
from tests.test_faults import SMALL_MATRIX

SEED = {
    # name: (task, model, workers, accelerator, bigquery table)
    "resnet101": ("image_classification", "resnet101", 75, None,
                  "torch_inference_imagenet_results_resnet101"),
    "resnet152": ("image_classification", "resnet152", 75, None,
                  "torch_inference_imagenet_results_resnet152"),
    "resnet152-gpu": ("image_classification", "resnet152", 75, "nvidia-tesla-t4",
                      "torch_inference_imagenet_results_resnet152_tesla_t4"),
    "bert-base": ("language_modeling", "bert-base-uncased", 250, None,
                  "torch_language_modeling_bert_base_uncased"),
    "bert-large": ("language_modeling", "bert-large-uncased", 250, None,
                   "torch_language_modeling_bert_large_uncased"),
}


def test_the_seed_and_the_rest_of_beams_suite_and_nothing_else():
  from tests.test_beam_suite import OPTION_FILES
  assert set(matrix.load()) == set(SEED) | set(OPTION_FILES)


@pytest.mark.parametrize("name", sorted(SEED))
def test_seed_values(name):
  task, model, workers, accelerator, table = SEED[name]
  b = matrix.get(name)
  assert (b.task, b.model, b.dataflow.num_workers, b.dataflow.accelerator, b.bigquery_table) == (
      task, model, workers, accelerator, table)
  assert b.dataflow.machine_type == "n1-standard-2"
  assert b.dataflow.autoscaling_algorithm == "NONE"
  assert b.dataflow.disk_size_gb == 50
  assert b.dataset_items == 50000
  expected_input = ("gs://apache-beam-ml/testing/inputs/openimage_50k_benchmark.txt"
                    if task == "image_classification"
                    else "gs://apache-beam-ml/testing/inputs/sentences_50k.txt")
  assert b.dataset_input == expected_input
  assert b.device == ("GPU" if accelerator else "CPU")
  assert b.local_items > 0 and b.local_batch_size > 0


def test_unknown_benchmark_is_a_clear_error():
  with pytest.raises(matrix.MatrixError, match="unknown benchmark 'resnet9000'"):
    matrix.get("resnet9000")


def test_invalid_matrix_is_rejected(tmp_path):
  bad = tmp_path / "m.toml"
  bad.write_text('[datasets.d]\ntask = "image_classification"\ninput = "x"\nitems = 1\n'
                 '[benchmarks.b]\ntask = "image_classification"\nmodel = "m"\ndataset = "d"\n'
                 'device = "TPU"\n')
  with pytest.raises(matrix.MatrixError, match="device must be one of"):
    matrix.load(bad)



def test_unknown_image_is_refused_at_load_with_one_line(tmp_path, monkeypatch, capsys):
  bad = tmp_path / "m.toml"
  bad.write_text(SMALL_MATRIX.read_text().replace('image = "cpu-resnet"', 'image = "nope"'))
  monkeypatch.setenv("BENCHMARK_MATRIX", str(bad))
  for name, value in SETTINGS.items():
    monkeypatch.setenv(name, value)
  why = ("benchmarks.small-resnet: unknown image 'nope'; known: cpu-bert, cpu-captioning, "
         "cpu-resnet, gpu, vllm-gpu")
  code = run.main(["small-resnet", "--runner", "DataflowRunner", "--dry-run",
                   "--results-dir", str(tmp_path / "results")])
  err = capsys.readouterr().err
  assert code == 2 and "Traceback" not in err
  assert err.strip().splitlines()[-1] == f"error: small-resnet: {why}"
  # The Makefile's query of the matrix says the same, in one line.
  result = subprocess.run([sys.executable, "-m", "pipelines.matrix", "names"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)
  assert result.returncode == 1 and result.stdout == ""
  assert result.stderr == f"error: {bad}: {why}\n"


def test_grafana_dashboard_charts_metrics_the_records_publish(tmp_path):
  """Panels select one metric (WHERE metric = '...') in Beam's point shape; with $step set to
  the kit's default RunInference label, every charted name is one the records publish."""
  import re
  dashboard = json.loads((REPO_ROOT / "infra" / "grafana-dashboard.json").read_text())
  published = set(metrics_rows.published_metrics(make_record(tmp_path)))
  published.add("BenchmarkKit/gpu_utilization_mean_pct")  # present on GPU runs
  published.add("BenchmarkKit/batch_latency_p99_ms")  # present on runs of >= 100 batches
  charted = {re.search(r"WHERE metric = '([^']+)'", t["query"]).group(1).replace(
      "${step}", "runinference") for p in dashboard["panels"] for t in p["targets"]}
  assert charted <= published, charted - published
  beam = "BeamML_PyTorch_runinference/beamml_runinference_"
  assert {beam + "mean_inference_batch_latency_micro_secs",
          beam + "mean_load_model_latency_milli_secs", beam + "mean_inference_request_batch_size",
          "BenchmarkKit/throughput_per_s_excl_model_load",
          "BenchmarkKit/gpu_utilization_mean_pct"} <= charted


def test_a_benchmark_name_that_could_not_name_a_file_is_refused(tmp_path):
  text = (REPO_ROOT / "tests" / "small-matrix.toml").read_text()
  bad = tmp_path / "matrix.toml"
  bad.write_text(text.replace("[benchmarks.small-resnet]", '[benchmarks."small resnet/../x"]'))
  with pytest.raises(matrix.MatrixError, match="a benchmark's name is letters, digits"):
    matrix.load(bad)
