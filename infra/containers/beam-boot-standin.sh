#!/bin/sh
# Stand-in for Beam's /opt/apache/beam/boot, in the local base image only (`make base-image`).
# Beam's real boot (a Go program) also: reads the job's provisioning info from the runner
# (--provision_endpoint, --id), fetches and pip-installs the staged artifacts (requirements,
# extra packages, the pickled main session), sets up logging to the runner, and starts one
# `apache_beam.runners.worker.sdk_worker_main` per SDK process (or, with --worker_pool, the
# worker pool with --container_executable pointing back at itself). This stand-in does only the
# worker-pool mode, which is all a local EXTERNAL-environment run needs: the pool starts SDK
# workers as plain child processes of this image's Python.
set -eu
if [ "${1:-}" = "--worker_pool" ]; then
  shift
  exec python -m apache_beam.runners.worker.worker_pool_main --service_port="${BEAM_WORKER_POOL_PORT:-50000}" "$@"
fi
echo "error: this is the local stand-in for Beam's boot: only --worker_pool is supported (the real boot runs on Dataflow)" >&2
exit 2
