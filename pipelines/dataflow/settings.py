"""Dataflow settings from the environment (`.env` or Make variables) and the worker images a
launch uses, by digest: PROJECT, REGION, TEMP_LOCATION and REGISTRY are required; IMAGE_TAG
(default: the git sha), OUTPUT_LOCATION, SERVICE_ACCOUNT, SUBNETWORK are optional;
PUBSUB_SUBSCRIPTION is what a streaming benchmark reads (plan.py requires it for those; feed.py
feeds it). Models and the vocab are baked into the images under MODELS_IN_IMAGE.
"""

import logging
import os
import pathlib
import re
from typing import Mapping

from pipelines import matrix
from pipelines.matrix import IMAGE_NAMES, REPO_ROOT
from pipelines.record import facts

REQUIRED = ("PROJECT", "REGION", "TEMP_LOCATION", "REGISTRY")
MODELS_IN_IMAGE = "/opt/models"
CONSOLE_URL = "https://console.cloud.google.com/dataflow/jobs/{region}/{job_id}?project={project}"


GCS_PATH = re.compile(r"gs://[a-z0-9][a-z0-9._-]{1,61}[a-z0-9](/.*)?")


class SettingsMissing(ValueError):
  pass


def settings(env: Mapping[str, str] = os.environ) -> dict[str, str]:
  missing = [name for name in REQUIRED if not env.get(name, "").strip()]
  if missing:
    raise SettingsMissing(
        f"RUNNER=DataflowRunner needs {', '.join(missing)}: set them in .env "
        "(copy .env.example) or on the make command line")
  values = {name: env[name].strip() for name in REQUIRED}
  for name in ("TEMP_LOCATION", "OUTPUT_LOCATION"):
    # Beam answers a malformed location by trying to create a default bucket for minutes.
    value = env.get(name, "").strip()
    if value and not GCS_PATH.fullmatch(value):
      raise SettingsMissing(f"{name} must be gs://BUCKET[/PATH] with a valid bucket name (3 to "
                            f"63 of a-z 0-9 . _ -, starting and ending with a letter or digit), "
                            f"not {value!r}")
  values["IMAGE_TAG"] = env.get("IMAGE_TAG", "").strip() or default_image_tag()
  values["OUTPUT_LOCATION"] = (env.get("OUTPUT_LOCATION", "").strip()
                               or values["TEMP_LOCATION"].rstrip("/") + "/bench-outputs")
  for optional in ("SERVICE_ACCOUNT", "SUBNETWORK", "PUBSUB_SUBSCRIPTION"):
    values[optional] = env.get(optional, "").strip()
  return values


def default_image_tag() -> str:
  """The tag `make image-*` gives: the first 12 characters of the git sha."""
  sha = facts.git_state()["git_sha"]
  if sha == "unknown":
    raise SettingsMissing("IMAGE_TAG is not set and there is no git sha to default to")
  return sha[:12]


def image_uri(bench: matrix.Benchmark, s: Mapping[str, str]) -> str:
  return image_ref(bench.image, s)


def image_ref(variant: str, s: Mapping[str, str]) -> str:
  """The tagged reference of one worker image (cpu-resnet, cpu-bert, gpu) under settings `s`."""
  return f"{s['REGISTRY'].rstrip('/')}/{IMAGE_NAMES[variant]}:{s['IMAGE_TAG']}"


DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")


class ImageNotPushed(RuntimeError):
  """A real launch needs the image pushed for this tag (`make push`): exit 2, nothing submitted."""


def digest_dir(env: Mapping[str, str] = os.environ,
               root: pathlib.Path = REPO_ROOT) -> pathlib.Path:
  """Where `make push` leaves build/image-<variant>.digest (BENCH_BUILD_DIR overrides it)."""
  return pathlib.Path(env.get("BENCH_BUILD_DIR") or root / "build")


def digest_file(bench: matrix.Benchmark) -> pathlib.Path:
  return digest_dir() / f"image-{bench.image}.digest"


def write_digest(path: pathlib.Path, image: str, digest_text: str) -> str:
  """Records what `make push` pushed: the tagged reference and its sha256 digest (taken from
  `docker inspect`'s repo@sha256:... or buildah's --digestfile). Returns the digest."""
  found = DIGEST_RE.search(digest_text)
  if not found:
    raise ValueError(f"no sha256 digest in {digest_text!r}")
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(f"image={image}\ndigest={found.group(0)}\n")
  return found.group(0)


def read_digest(path: pathlib.Path) -> dict[str, str] | None:
  if not path.exists():
    return None
  fields = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
  if not DIGEST_RE.fullmatch(fields.get("digest", "")) or not fields.get("image"):
    return None
  return fields


def image_digest(bench: matrix.Benchmark, s: Mapping[str, str] | None = None) -> str | None:
  """The digest `make push` recorded for this image variant and, given the settings, for this
  very tag (a digest recorded for another tag or registry is stale: None)."""
  fields = read_digest(digest_file(bench))
  if fields is None or (s is not None and fields["image"] != image_uri(bench, s)):
    return None
  return fields["digest"]


def pinned_image(bench: matrix.Benchmark, s: Mapping[str, str], dry_run: bool) -> str:
  """The image a launch uses: name@sha256:... for the tag `make push` pushed. A real launch
  without a digest for this tag is refused (ImageNotPushed) before anything is submitted; a dry
  run only warns and describes the job with the tag."""
  tagged = image_uri(bench, s)
  digest = image_digest(bench, s)
  if digest:
    return f"{tagged.rsplit(':', 1)[0]}@{digest}"
  fields = read_digest(digest_file(bench))
  why = (f"{digest_file(bench)} records {fields['image']}, not {tagged}" if fields
         else f"{digest_file(bench)} does not exist")
  if dry_run:
    logging.warning("image %s has no pushed digest (%s): the dry run uses the tag; a real "
                    "launch would be refused until `make push`", tagged, why)
    return tagged
  raise ImageNotPushed(f"image {tagged} was never pushed ({why}): run `make image-{bench.image} "
                       f"push IMAGE_TAG={s['IMAGE_TAG']}` first; nothing was submitted")
