"""Dataflow launch, one module a job: settings and images by digest (settings.py), the job's
flags (flags.py), submitting and watching it, cancelling on Ctrl-C/SIGTERM (watch.py), the
figures the finished job reports (figures.py), feeding and draining a streaming job (feed.py),
and dry runs (dry_run.py). The names callers use
are re-exported here."""
# ruff: noqa: F401 - the re-exports are this module's purpose
from pipelines.dataflow.dry_run import benchmark_option_names, job_description, write_job
from pipelines.dataflow.figures import job_figures, job_window, resource_usage
from pipelines.dataflow.flags import job_name, output_prefix, service_options, worker_args
from pipelines.dataflow.settings import (
  CONSOLE_URL,
  IMAGE_NAMES,
  MODELS_IN_IMAGE,
  REQUIRED,
  ImageNotPushed,
  SettingsMissing,
  default_image_tag,
  digest_dir,
  digest_file,
  image_digest,
  image_ref,
  image_uri,
  pinned_image,
  read_digest,
  settings,
  write_digest,
)
from pipelines.dataflow.watch import (
  Interrupted,
  JobCancelled,
  JobError,
  JobFailed,
  JobUnreachable,
  SubmitTimeout,
  cancel,
  console_url,
  job_messages,
  launched_metadata,
  submit,
  watch,
)
