"""Dataflow launch: the matrix's worker shape, the baked worker image, and dry runs.

Settings come from the environment (`.env` or Make variables): PROJECT, REGION, TEMP_LOCATION
and REGISTRY are required; IMAGE_TAG (default: the git sha), OUTPUT_LOCATION, SERVICE_ACCOUNT,
SUBNETWORK are optional. Models and the vocab are baked into the images under MODELS_IN_IMAGE.
"""
from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Mapping

from pipelines import matrix, run_record
from pipelines.layout import ONE_SDK_PROCESS, Layout
from pipelines.matrix import REPO_ROOT
from pipelines.models import VOCAB_FILE

REQUIRED = ("PROJECT", "REGION", "TEMP_LOCATION", "REGISTRY")
MODELS_IN_IMAGE = "/opt/models"
IMAGE_NAMES = {"cpu": "beam-bench-cpu", "gpu": "beam-bench-gpu"}
CONSOLE_URL = "https://console.cloud.google.com/dataflow/jobs/{region}/{job_id}?project={project}"


class SettingsMissing(ValueError):
  pass


def settings(env: Mapping[str, str] = os.environ) -> dict[str, str]:
  missing = [name for name in REQUIRED if not env.get(name, "").strip()]
  if missing:
    raise SettingsMissing(
        f"RUNNER=DataflowRunner needs {', '.join(missing)}: set them in .env "
        "(copy .env.example) or on the make command line")
  values = {name: env[name].strip() for name in REQUIRED}
  values["IMAGE_TAG"] = env.get("IMAGE_TAG", "").strip() or default_image_tag()
  values["OUTPUT_LOCATION"] = (env.get("OUTPUT_LOCATION", "").strip()
                               or values["TEMP_LOCATION"].rstrip("/") + "/bench-outputs")
  for optional in ("SERVICE_ACCOUNT", "SUBNETWORK"):
    values[optional] = env.get(optional, "").strip()
  return values


def default_image_tag() -> str:
  """The tag `make image-*` gives: the first 12 characters of the git sha."""
  sha = run_record.git_state()["git_sha"]
  if sha == "unknown":
    raise SettingsMissing("IMAGE_TAG is not set and there is no git sha to default to")
  return sha[:12]


def image_uri(bench: matrix.Benchmark, s: Mapping[str, str]) -> str:
  return f"{s['REGISTRY'].rstrip('/')}/{IMAGE_NAMES[bench.image]}:{s['IMAGE_TAG']}"


def service_options(bench: matrix.Benchmark) -> list[str]:
  if not bench.dataflow.accelerator:
    return []
  return [f"worker_accelerator=type:{bench.dataflow.accelerator};"
          f"count:{bench.dataflow.accelerator_count};install-nvidia-driver"]


def worker_args(bench: matrix.Benchmark, s: Mapping[str, str], job_name: str,
                layout: Layout) -> list[str]:
  """Every Dataflow flag that comes from the matrix, the worker layout and the settings."""
  shape = bench.dataflow
  args = [
      "--runner=DataflowRunner", f"--project={s['PROJECT']}", f"--region={s['REGION']}",
      f"--temp_location={s['TEMP_LOCATION']}", f"--job_name={job_name}",
      f"--machine_type={shape.machine_type}", f"--num_workers={shape.num_workers}",
      f"--max_num_workers={shape.num_workers}",
      f"--autoscaling_algorithm={shape.autoscaling_algorithm}",
      f"--disk_size_gb={shape.disk_size_gb}",
      f"--sdk_container_image={image_uri(bench, s)}", "--sdk_location=container",
  ]
  args += [f"--dataflow_service_options={o}" for o in service_options(bench)]
  experiments = [*shape.experiments, *layout.dataflow_experiments(bench.machine.vcpus)]
  args += [f"--experiments={e}" for e in dict.fromkeys(experiments)]
  if s.get("SERVICE_ACCOUNT"):
    args.append(f"--service_account_email={s['SERVICE_ACCOUNT']}")
  if s.get("SUBNETWORK"):
    args.append(f"--subnetwork={s['SUBNETWORK']}")
  return args


def pipeline_values(bench: matrix.Benchmark, s: Mapping[str, str], run_id: str,
                    input_override: str | None) -> dict[str, str]:
  values = {"input": input_override or bench.dataset_input,
            "output": f"{s['OUTPUT_LOCATION'].rstrip('/')}/{bench.name}/{run_id}",
            "model_state_dict_path": f"{MODELS_IN_IMAGE}/{bench.model}.pth"}
  if bench.task == "language_modeling":
    values["vocab_path"] = f"{MODELS_IN_IMAGE}/{VOCAB_FILE}"
  return values


def job_name(bench: matrix.Benchmark, run_id: str) -> str:
  return f"beam-bench-{bench.name}-{run_id}".lower()


def image_digest(bench: matrix.Benchmark) -> str | None:
  """The digest `make push` recorded for this image variant, if any."""
  path = REPO_ROOT / "build" / f"image-{bench.image}.digest"
  return path.read_text().strip() if path.exists() else None


def launched_metadata(result, s: Mapping[str, str]) -> dict[str, Any]:
  job_id = result.job_id()
  url = CONSOLE_URL.format(region=s["REGION"], job_id=job_id, project=s["PROJECT"])
  print(f"Dataflow job {job_id}: {url}", flush=True)
  return {"job_id": job_id, "console_url": url}


# --- dry runs ---------------------------------------------------------------------------------

def job_description(result, options, bench: matrix.Benchmark) -> dict[str, Any]:
  """What Dataflow would receive, built offline from a dry run's job."""
  from apache_beam.runners.dataflow.internal import apiclient
  job = result.job
  environment = apiclient.Environment(
      packages=[], options=options, environment_version="dry-run",
      proto_pipeline_staged_url="dry-run://pipeline.pb", proto_pipeline=job.proto_pipeline).proto
  env_json = json.loads(type(environment).to_json(environment, use_integers_for_enums=False))
  components = job.proto_pipeline.components
  experiments = env_json.get("experiments", [])
  all_options = options.get_all_options()
  return {
      "benchmark": bench.name,
      # What each worker machine runs: SDK processes (Dataflow's default is one per vCPU) and
      # the torch threads every process sets before loading its model.
      "layout": {"layout": all_options["layout"],
                 "sdk_processes_per_worker": 1 if ONE_SDK_PROCESS in experiments
                 else bench.machine.vcpus,
                 "torch_threads": all_options["torch_threads"],
                 "torch_interop_threads": all_options["torch_interop_threads"]},
      "job_name": job.proto.name,
      "worker_pools": env_json.get("workerPools", []),
      "service_options": env_json.get("serviceOptions", []),
      "experiments": experiments,
      "container_images": sorted({_container_image(e) for e in components.environments.values()}
                                 - {None}),
      "transforms": sorted(t.unique_name for t in components.transforms.values()
                           if not t.subtransforms),
      "pipeline_options": {k: v for k, v in all_options.items()
                           if v is not None and k in _BENCHMARK_OPTIONS},
  }


_BENCHMARK_OPTIONS = ("input", "output", "model_state_dict_path", "vocab_path", "device",
                      "min_batch_size", "max_batch_size", "task", "model_architecture",
                      "torch_threads", "torch_interop_threads", "layout", "inference_step",
                      "profile")


def _container_image(environment) -> str | None:
  from apache_beam.portability.api import beam_runner_api_pb2
  if environment.urn != "beam:env:docker:v1":
    return None
  payload = beam_runner_api_pb2.DockerPayload.FromString(environment.payload)
  return payload.container_image


def write_job(description: dict[str, Any], out_dir: pathlib.Path) -> pathlib.Path:
  out_dir.mkdir(parents=True, exist_ok=True)
  path = out_dir / f"{description['benchmark']}.json"
  path.write_text(json.dumps(description, indent=2, sort_keys=True) + "\n")
  return path
