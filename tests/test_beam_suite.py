"""The rest of Beam's RunInference suite (beyond the first five): each benchmark as its option
file sets it (matrix + beam profile, and the Dataflow job a dry run builds), run end to end by the
real launcher on a few items, and predicting the same with the tuned batching as with Beam's.
The option files' values, with the file and lines they come from: docs/beam-suite-research.md.
"""
from __future__ import annotations

import json
import shutil

import pytest

from pipelines import matrix, profiles, run
from tests.test_dataflow import SETTINGS
from tests.test_faults import assert_accounted, dead_letters, kit  # noqa: F401 - fixture

SENTIMENT_BATCH = "beam_Inference_Python_Benchmarks_Dataflow_Pytorch_Sentiment_Batch_DistilBert_Base_Uncased.txt"  # noqa: E501
SENTIMENT_STREAMING = SENTIMENT_BATCH.replace("_Batch_", "_Streaming_")
RIGHTFIT = "beam_Inference_Python_Benchmarks_Dataflow_2_Pytorch_Image_Classification_Rightfit.txt"
DISTILBERT_STATE = "gs://apache-beam-ml/models/huggingface.sentiment.distilbert-base-uncased.pth"

# name: what Beam's option file (and its workflow step) sets
OPTION_FILES = {
    "distilbert-sentiment": dict(
        file=SENTIMENT_BATCH, machine_type="n1-standard-2", num_workers=20, max_num_workers=250,
        autoscaling="THROUGHPUT_BASED", disk_size_gb=50, streaming=False, device="CPU",
        metrics_table="torch_sentiment_distilbert_base_uncased_batch",
        influx_measurement="torch_sentiment_distilbert_base_uncased",
        model_state_dict_path=DISTILBERT_STATE, inference_step="RunInference"),
    "distilbert-sentiment-streaming": dict(
        file=SENTIMENT_STREAMING, machine_type="n1-standard-2", num_workers=20,
        max_num_workers=250, autoscaling="THROUGHPUT_BASED", disk_size_gb=50, streaming=True,
        device="CPU", metrics_table="torch_sentiment_distilbert_base_uncased",
        influx_measurement="torch_sentiment_distilbert_base_uncased",
        model_state_dict_path=DISTILBERT_STATE, inference_step="RunInference"),
    "efficientnet-b0-rightfit": dict(
        file=RIGHTFIT, machine_type="n1-standard-4", num_workers=50, max_num_workers=None,
        autoscaling="NONE", disk_size_gb=50, streaming=True, device="CPU",
        metrics_table="torch_inference_imagenet_stream_rightfit_cpu",
        influx_measurement="torch_inference_imagenet_stream_rightfit",
        model_state_dict_path="gs://apache-beam-ml/models/efficientnet_b0_state_dict.pth",
        inference_step="RunInference"),
}
OPTION_FILES["blip-clip-captioning"] = dict(
    file="beam_Inference_Python_Benchmarks_Dataflow_2_Pytorch_Image_Captioning.txt",
    machine_type="n1-standard-4", num_workers=50, max_num_workers=None, autoscaling="NONE",
    disk_size_gb=50, streaming=False, device="CPU",
    metrics_table="torch_inference_image_captioning_batch_cpu",
    influx_measurement="result_torch_inference_image_captioning_batch",
    model_state_dict_path=None, inference_step="RunInferenceBLIP")
OPTION_FILES["gemma-vllm-gpu"] = dict(
    file="beam_Inference_Python_Benchmarks_Dataflow_VLLM_Gemma_Batch.txt",
    machine_type="n1-standard-8", num_workers=8, max_num_workers=25,
    autoscaling="THROUGHPUT_BASED", disk_size_gb=200, streaming=False, device="GPU",
    metrics_table="gemma_vllm_batch", influx_measurement="gemma_vllm_batch",
    model_state_dict_path=None, inference_step="InferBatch", accelerator="nvidia-tesla-t4")
OPTION_FILES["faster-rcnn-gpu"] = dict(
    file="beam_Inference_Python_Benchmarks_Dataflow_2_Pytorch_Image_Object_Detection.txt",
    machine_type="n1-standard-4", num_workers=50, max_num_workers=None, autoscaling="NONE",
    disk_size_gb=50, streaming=False, device="GPU",
    metrics_table="torch_inference_image_object_detection_batch_gpu",
    influx_measurement="result_torch_inference_image_object_detection_batch",
    model_state_dict_path=(
        "gs://apache-beam-ml/models/torchvision.detection.fasterrcnn_resnet50_fpn.pth"),
    inference_step="RunInference", accelerator="nvidia-tesla-t4")
API_AUTOSCALING = {"NONE": "AUTOSCALING_ALGORITHM_NONE",
                   "THROUGHPUT_BASED": "AUTOSCALING_ALGORITHM_BASIC"}


@pytest.mark.parametrize("name", sorted(OPTION_FILES))
def test_the_matrix_and_beam_profile_reproduce_the_option_file(name):
  expected = OPTION_FILES[name]
  beam = profiles.get("beam")
  bench = beam.apply(matrix.get(name))
  shape = bench.dataflow
  assert (shape.machine_type, shape.num_workers, shape.max_num_workers,
          shape.autoscaling_algorithm, shape.disk_size_gb) == (
      expected["machine_type"], expected["num_workers"], expected["max_num_workers"],
      expected["autoscaling"], expected["disk_size_gb"]), expected["file"]
  assert (bench.streaming, bench.device, bench.bigquery_table, bench.influx_measurement) == (
      expected["streaming"], expected["device"], expected["metrics_table"],
      expected["influx_measurement"])
  # None: Beam loads the model from the hub by name; the kit's is baked into the image
  assert beam.dataflow_values(bench).get("model_state_dict_path") == expected[
      "model_state_dict_path"]
  assert beam.inference_step_for(bench) == expected["inference_step"]
  assert shape.accelerator == expected.get("accelerator")
  assert beam.optimization_for(bench) == "none"
  # the tuned profile runs the same Dataflow shape, under its own series
  assert matrix.get(name).dataflow == shape


@pytest.fixture(scope="module")
def beam_jobs(tmp_path_factory):
  """Dry-runs each benchmark with the beam profile: {name: job file contents}."""
  out = tmp_path_factory.mktemp("dry")
  mp = pytest.MonkeyPatch()
  for name, value in SETTINGS.items():
    mp.setenv(name, value)
  try:
    for name in OPTION_FILES:
      assert run.main([name, "--runner", "DataflowRunner", "--dry-run", "--profile", "beam",
                       "--results-dir", str(out)]) == 0
  finally:
    mp.undo()
  return {p.stem: json.loads(p.read_text()) for p in (out / "dataflow-jobs").glob("*.json")}


@pytest.mark.parametrize("name", sorted(OPTION_FILES))
def test_the_dry_run_job_has_the_option_files_shape(beam_jobs, name):
  expected, job = OPTION_FILES[name], beam_jobs[name]
  (pool,) = job["worker_pools"]
  assert pool["machineType"] == expected["machine_type"]
  assert pool["numWorkers"] == expected["num_workers"]
  assert pool["autoscalingSettings"] == {
      "algorithm": API_AUTOSCALING[expected["autoscaling"]],
      "maxNumWorkers": expected["max_num_workers"] or expected["num_workers"]}
  assert pool["diskSizeGb"] == expected["disk_size_gb"]
  options = job["pipeline_options"]
  baked = f"/opt/models/{matrix.get(name).model}"  # a directory for vLLM, else a state dict
  assert options["model_state_dict_path"] == (
      expected["model_state_dict_path"] or (baked if name == "gemma-vllm-gpu" else baked + ".pth"))
  assert options["inference_step"] == expected["inference_step"]
  assert any(t.startswith(expected["inference_step"] + "/BeamML_RunInference")
             for t in job["transforms"])
  vcpus = matrix.load()[name].machine.vcpus
  if expected.get("accelerator"):  # a T4 per worker
    assert job["service_options"] == [
        "worker_accelerator=type:nvidia-tesla-t4;count:1;install-nvidia-driver:5xx"]
    assert (options["min_batch_size"], options["max_batch_size"]) == (
        (8, 8) if name == "faster-rcnn-gpu" else (1, 10000))
  else:  # Dataflow's default layout on the machine type: one SDK process per vCPU
    assert job["service_options"] == []
    assert job["layout"]["sdk_processes_per_worker"] == job["layout"]["torch_threads"] == vcpus
  if expected["streaming"]:
    assert job["job_type"] == "JOB_TYPE_STREAMING"
    assert options["pubsub_subscription"] == SETTINGS["PUBSUB_SUBSCRIPTION"]
    assert "ReadFromPubSub/Read" in job["transforms"]
    assert not any(t.startswith("ReadInput") for t in job["transforms"])
  else:
    assert job["job_type"] == "JOB_TYPE_BATCH"
    assert any(t.startswith("ReadInput") for t in job["transforms"])
  if name.startswith("distilbert"):
    assert options["sentence_batching"] == "max_length"  # Beam's tokenizer pads to 128
    assert (options["min_batch_size"], options["max_batch_size"]) == (1, 10000)


def test_a_streaming_benchmark_on_dataflow_needs_a_subscription(monkeypatch, capsys, tmp_path):
  for name, value in SETTINGS.items():
    monkeypatch.setenv(name, value)
  monkeypatch.setenv("PUBSUB_SUBSCRIPTION", "items")  # not projects/P/subscriptions/S
  code = run.main(["distilbert-sentiment-streaming", "--runner", "DataflowRunner", "--dry-run",
                   "--results-dir", str(tmp_path)])
  assert code == 2
  err = capsys.readouterr().err
  assert "set PUBSUB_SUBSCRIPTION=projects/P/subscriptions/S" in err
  assert not (tmp_path / "dataflow-jobs").exists()


def images_and_a_missing_one(data_dir, count: int, name: str):
  """(an input list of `count` generated images and one missing file, those images)."""
  images = (data_dir / "images.txt").read_text().splitlines()[:count]
  listing = data_dir.parent / name
  listing.write_text("\n".join([*images, str(data_dir / "no-such.jpg")]) + "\n")
  return listing, images


def predictions(results, record) -> dict[str, dict]:
  out = results / "runs" / record.run_id / "output"
  return {row["input"]: row for f in sorted(out.glob("predictions*"))
          for row in map(json.loads, f.read_text().splitlines())}


def test_sentiment_end_to_end_and_the_same_with_beams_batching(kit, data_dir):  # noqa: F811
  lines = (data_dir / "sentences.txt").read_text().splitlines()[:5] + ["   "]
  listing = data_dir.parent / "sentiment-input.txt"
  listing.write_text("\n".join(lines) + "\n")
  code, tuned = kit("small-sentiment", "--input", str(listing))
  assert code == 0, tuned and tuned.error
  assert_accounted(tuned, inputs=6, dead=1)
  assert [d["reason"] for d in dead_letters(kit.results, tuned)] == ["empty line: no sentence"]
  asked = tuned.plan
  assert (asked["source"], asked["sentence_batching"]) == ("bounded", "length")
  assert asked["dataflow"]["workers"] == "2..10"
  code, beam = kit("small-sentiment", "--input", str(listing), "--profile", "beam")
  assert code == 0, beam and beam.error
  assert beam.plan["sentence_batching"] == "max_length"
  assert beam.metrics["padding_fraction"] > tuned.metrics["padding_fraction"]
  ours, beams = predictions(kit.results, tuned), predictions(kit.results, beam)
  assert sorted(ours) == sorted(line.strip() for line in lines[:5])
  for sentence, row in ours.items():
    assert row["sentiment"] in ("POSITIVE", "NEGATIVE") and 0.5 <= row["confidence"] <= 1
    assert row["sentiment"] == beams[sentence]["sentiment"]
    assert row["confidence"] == pytest.approx(beams[sentence]["confidence"], abs=1e-4)
  # DataflowCostBenchmark's figures, priced as one worker of the benchmark's machine type
  metrics = tuned.metrics
  assert metrics["job_runtime_s"] == metrics["wall_time_s"]
  assert metrics["avg_throughput_elements_per_s"] == pytest.approx(5 / metrics["wall_time_s"])
  assert metrics["avg_throughput_bytes_per_s"] > 0
  assert metrics["estimated_cost_usd"] == pytest.approx(
      (2 * 0.056 + 7.5 * 0.003557 + 50 * 0.000054) * metrics["wall_time_s"] / 3600)


def test_rightfit_end_to_end_reads_the_streaming_items_bounded(kit, data_dir):  # noqa: F811
  listing, images = images_and_a_missing_one(data_dir, 4, "rightfit-input.txt")
  code, tuned = kit("small-rightfit", "--input", str(listing))
  assert code == 0, tuned and tuned.error
  assert_accounted(tuned, inputs=5, dead=1)
  assert tuned.plan["source"] == "bounded (streaming on Dataflow)"
  assert tuned.plan["dataflow"]["machine_type"] == "n1-standard-4"
  code, beam = kit("small-rightfit", "--input", str(listing), "--profile", "beam")
  assert code == 0, beam and beam.error
  assert beam.plan["layout"] == "4x4"  # Dataflow's default on n1-standard-4
  ours, beams = predictions(kit.results, tuned), predictions(kit.results, beam)
  assert sorted(ours) == sorted(images)
  assert {k: v["class"] for k, v in ours.items()} == {k: v["class"] for k, v in beams.items()}


def test_object_detection_end_to_end_on_the_cpu(kit, data_dir):  # noqa: F811
  scenes = (data_dir / "scenes.txt").read_text().splitlines()[:2]
  code, record = kit("small-detection")
  assert code == 0, record and record.error
  assert_accounted(record, inputs=2, dead=0)
  rows = predictions(kit.results, record)
  assert sorted(rows) == sorted(scenes)
  for row in rows.values():
    assert row["num_detections"] == len(row["detections"]) <= 50
    assert all(d["score"] >= 0.5 and len(d["box"]) == 4 for d in row["detections"])
  assert record.metadata["device_used"] == "CPU"


@pytest.mark.parametrize("name", ["faster-rcnn-gpu", "gemma-vllm-gpu"])
def test_a_gpu_benchmark_refuses_without_cuda_before_anything_starts(name, capsys, tmp_path):
  code = run.main([name, "--results-dir", str(tmp_path)])
  assert code == 2
  assert "needs a CUDA GPU" in capsys.readouterr().err  # never CPU numbers under a GPU name
  assert not (tmp_path / "records").exists()


def test_captioning_end_to_end_and_the_same_with_beams_batching(kit, data_dir):  # noqa: F811
  listing, images = images_and_a_missing_one(data_dir, 3, "captioning-input.txt")
  code, tuned = kit("small-captioning", "--input", str(listing))
  assert code == 0, tuned and tuned.error
  assert_accounted(tuned, inputs=4, dead=1)
  assert [d["reason"] for d in dead_letters(kit.results, tuned)] == ["file not found"]
  code, beam = kit("small-captioning", "--input", str(listing), "--profile", "beam")
  assert code == 0, beam and beam.error
  assert beam.plan["inference_step"] == "RunInferenceBLIP"
  ours, beams = predictions(kit.results, tuned), predictions(kit.results, beam)
  assert sorted(ours) == sorted(images)
  for path, row in ours.items():
    assert len(row["candidates"]) == len(row["scores"]) == 5
    assert row["best_score"] == max(row["scores"])
    assert row["best_caption"] == row["candidates"][row["scores"].index(row["best_score"])]
    assert (row["candidates"], row["best_caption"]) == (
        beams[path]["candidates"], beams[path]["best_caption"])
    assert row["scores"] == pytest.approx(beams[path]["scores"], abs=1e-4)


def test_missing_clip_tokenizer_files_are_named_before_launch(
    kit, models_dir, tmp_path, capsys):  # noqa: F811
  bare = tmp_path / "models"
  shutil.copytree(models_dir, bare)
  (bare / "clip-bpe-merges.txt").unlink()
  code, record = kit("small-captioning", "--models-dir", str(bare))
  assert code == 2 and record is None
  assert "clip-bpe-merges.txt does not exist: run `make models` first" in capsys.readouterr().err
