"""Dataflow launch, one module a job: settings and images by digest (settings.py), the job's
flags (flags.py), submitting and watching it, cancelling on Ctrl-C/SIGTERM (watch.py), the
figures the finished job reports (figures.py), submitting it (submit.py), its status line
(status.py), feeding and draining a streaming job (feed.py),
and dry runs (dry_run.py). The names callers use
are re-exported here."""
# ruff: noqa: F401 - the re-exports are this module's purpose
from pipelines.dataflow.dry_run import job_description, write_job
from pipelines.dataflow.figures import job_figures, job_window
from pipelines.dataflow.flags import job_name, output_prefix, worker_args
from pipelines.dataflow.settings import (
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
  pinned_image,
  read_digest,
  settings,
  write_digest,
)
from pipelines.dataflow.submit import submit
from pipelines.dataflow.watch import JobCancelled, JobError, launched_metadata, watch
