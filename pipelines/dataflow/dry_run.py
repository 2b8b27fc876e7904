"""Dry runs: what Dataflow would receive, built offline from a dry run's job."""

import argparse
import json
import pathlib
from typing import Any

from pipelines import matrix
from pipelines.layout import ONE_SDK_PROCESS


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
                 "torch_interop_threads": all_options["torch_interop_threads"],
                 "harness_threads": all_options.get("number_of_worker_harness_threads")},
      "job_name": job.proto.name,
      "job_type": job.proto.type.name,  # JOB_TYPE_BATCH or JOB_TYPE_STREAMING
      "worker_pools": env_json.get("workerPools", []),
      "service_options": env_json.get("serviceOptions", []),
      "experiments": experiments,
      "container_images": sorted({_container_image(e) for e in components.environments.values()}
                                 - {None}),
      "transforms": sorted(t.unique_name for t in components.transforms.values()
                           if not t.subtransforms),
      "pipeline_options": {k: v for k, v in all_options.items()
                           if v is not None and k in benchmark_option_names()},
  }


def benchmark_option_names() -> tuple[str, ...]:
  """Every option BenchmarkOptions defines, read from its own parser: the dry-run job carries
  them all, including ones added later."""
  from pipelines.worker.options import BenchmarkOptions
  parser = argparse.ArgumentParser()
  BenchmarkOptions._add_argparse_args(parser)  # noqa: SLF001 - the call Beam makes
  return tuple(vars(parser.parse_args([])))


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
