#!/usr/local/bin/python
"""Stand-in for Beam's /opt/apache/beam/boot, in the local base image only (`make base-image`).

Beam's real boot (a Go program, sdks/python/container/boot.go) has two modes, and so has this:
  --worker_pool        starts Beam's worker pool (worker_pool_main) with itself as the
                       container executable, on port BEAM_WORKER_POOL_PORT (default 50000): the
                       way a local run reaches this image (--environment_type=EXTERNAL)
  --id=... --provision_endpoint=... --control_endpoint=... --logging_endpoint=...
                       one SDK worker process: asks the runner's provision service for the job's
                       pipeline options (as the worker `worker_id`), then becomes
                       `python -m apache_beam.runners.worker.sdk_worker_main` with the same
                       environment variables the real boot sets, which is what Dataflow runs
What the real boot also does and this one leaves out: fetching and pip-installing staged
artifacts (requirements, extra packages, the pickled main session: the kit's images carry
their code, and its pipelines need no main session), and the status endpoint.
"""
import argparse
import json
import os
import sys


def worker_pool(argv: list[str]) -> None:
  port = os.environ.get("BEAM_WORKER_POOL_PORT", "50000")
  os.execv(sys.executable, [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
                            f"--service_port={port}", f"--container_executable={__file__}",
                            *argv])


def sdk_worker(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(prog="boot")
  for flag in ("id", "provision_endpoint", "control_endpoint", "logging_endpoint",
               "artifact_endpoint", "semi_persistent_directory"):
    parser.add_argument(f"--{flag}", default="")
  args, _ = parser.parse_known_args(argv)
  if not (args.id and args.provision_endpoint and args.control_endpoint):
    sys.exit("error: this is the local stand-in for Beam's boot: it runs --worker_pool, or one "
             "SDK worker given --id, --provision_endpoint and --control_endpoint")

  import grpc
  from google.protobuf import json_format
  from apache_beam.portability.api import beam_provision_api_pb2, beam_provision_api_pb2_grpc
  with grpc.insecure_channel(args.provision_endpoint) as channel:
    info = beam_provision_api_pb2_grpc.ProvisionServiceStub(channel).GetProvisionInfo(
        beam_provision_api_pb2.GetProvisionInfoRequest(), metadata=[("worker_id", args.id)],
        timeout=60).info
  options = json_format.MessageToDict(info.pipeline_options)
  env = dict(os.environ,
             WORKER_ID=args.id,
             PIPELINE_OPTIONS=json.dumps(options),
             CONTROL_API_SERVICE_DESCRIPTOR=f'url: "{args.control_endpoint}"\n',
             SEMI_PERSISTENT_DIRECTORY=args.semi_persistent_directory or "/tmp",
             RUNNER_CAPABILITIES=" ".join(info.runner_capabilities))
  if args.logging_endpoint:
    env["LOGGING_API_SERVICE_DESCRIPTOR"] = f'url: "{args.logging_endpoint}"\n'
  os.execve(sys.executable, [sys.executable, "-m", "apache_beam.runners.worker.sdk_worker_main"],
            env)


if __name__ == "__main__":
  if sys.argv[1:2] == ["--worker_pool"]:
    worker_pool(sys.argv[2:])
  sdk_worker(sys.argv[1:])
