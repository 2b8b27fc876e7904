"""The Dataflow job's flags and pipeline values: the matrix's worker shape, the worker layout,
the image and the settings."""

from typing import Mapping

from pipelines import matrix
from pipelines.dataflow.settings import image_uri
from pipelines.layout import Layout


def service_options(bench: matrix.Benchmark) -> list[str]:
  """GPU workers: the accelerator and Dataflow's driver install. `install-nvidia-driver:5xx` is
  the string Beam's own T4 benchmarks use (.github/workflows/load-tests-pipeline-options/
  beam_Inference_Python_Benchmarks_Dataflow_Pytorch_Imagenet_Classification_Resnet_152_Tesla_
  T4_GPU.txt): a 5xx-series driver, which the image's CUDA 12.x wheels need (>= 525.60.13)."""
  if not bench.dataflow.accelerator:
    return []
  return [f"worker_accelerator=type:{bench.dataflow.accelerator};"
          f"count:{bench.dataflow.accelerator_count};install-nvidia-driver:5xx"]


def worker_args(bench: matrix.Benchmark, s: Mapping[str, str], job_name: str,
                layout: Layout, image: str | None = None,
                harness_threads: int | None = None) -> list[str]:
  """Every Dataflow flag that comes from the matrix, the worker layout and the settings
  (`image`: the reference to launch, by digest; default the tagged one; `harness_threads`:
  bundles per SDK process at once, None for the service's choice)."""
  shape = bench.dataflow
  args = [
      "--runner=DataflowRunner", f"--project={s['PROJECT']}", f"--region={s['REGION']}",
      f"--temp_location={s['TEMP_LOCATION']}", f"--job_name={job_name}",
      f"--machine_type={shape.machine_type}", f"--num_workers={shape.num_workers}",
      f"--max_num_workers={shape.max_num_workers or shape.num_workers}",
      f"--autoscaling_algorithm={shape.autoscaling_algorithm}",
      f"--disk_size_gb={shape.disk_size_gb}",
      f"--sdk_container_image={image or image_uri(bench, s)}", "--sdk_location=container",
  ]
  if harness_threads:
    args.append(f"--number_of_worker_harness_threads={harness_threads}")
  if bench.streaming:  # Beam's streaming benchmarks: items arrive as Pub/Sub messages
    args += ["--streaming", f"--pubsub_subscription={s['PUBSUB_SUBSCRIPTION']}"]
  args += [f"--dataflow_service_options={option}" for option in service_options(bench)]
  experiments = [*shape.experiments, *layout.dataflow_experiments(bench.machine.vcpus)]
  args += [f"--experiments={e}" for e in dict.fromkeys(experiments)]
  if s.get("SERVICE_ACCOUNT"):
    args.append(f"--service_account_email={s['SERVICE_ACCOUNT']}")
  if s.get("SUBNETWORK"):
    args.append(f"--subnetwork={s['SUBNETWORK']}")
  return args


def output_prefix(bench: matrix.Benchmark, s: Mapping[str, str], run_id: str) -> str:
  """Where the job writes its predictions and dead letters."""
  return f"{s['OUTPUT_LOCATION'].rstrip('/')}/{bench.name}/{run_id}"


def job_name(bench: matrix.Benchmark, run_id: str) -> str:
  return f"beam-bench-{bench.name}-{run_id}".lower()
