"""The doctor's Dataflow rows: whether RUNNER=DataflowRunner would launch with these settings
(the launch's own checks), and the worker image digests a launch would use."""
from __future__ import annotations

import pathlib
from typing import Mapping

from pipelines import matrix
from pipelines.doctor.env import redact_url
from pipelines.doctor.text import more, row


def dataflow_section(env: Mapping[str, str], root: pathlib.Path) -> list[str]:
  from pipelines import dataflow
  missing = [name for name in dataflow.REQUIRED if not env.get(name, "").strip()]
  shown = [f"{name}={redact_url(env[name].strip())}"
           for name in (*dataflow.REQUIRED, "IMAGE_TAG", "OUTPUT_LOCATION", "SUBNETWORK")
           if env.get(name, "").strip()]
  if env.get("SERVICE_ACCOUNT", "").strip():
    shown.append("SERVICE_ACCOUNT set")
  if missing:
    status = (f"missing {', '.join(missing)}: RUNNER=DataflowRunner refuses to launch "
              "(set them in .env, see .env.example)")
  else:
    try:  # the launch's own checks (a malformed gs:// location, ...)
      dataflow.settings(env)
      status = "settings complete for RUNNER=DataflowRunner"
    except dataflow.SettingsMissing as e:
      status = f"RUNNER=DataflowRunner refuses to launch: {e}"
  lines = [row("Dataflow", status)]
  if shown:
    lines.append(more(", ".join(shown)))
  digests = [f"{variant}: {text}" for variant, text in image_digests(env, root).items()]
  lines.append(row("images", "; ".join(digests)
                   + ("" if all("@sha256:" in d for d in digests) else " (make images push)")))
  return lines


def image_digests(env: Mapping[str, str], root: pathlib.Path) -> dict[str, str]:
  """Per worker image, what `make push` recorded where a launch reads it (BENCH_BUILD_DIR or
  build/): the pushed reference, or why a launch could not use it. A digest recorded for
  another tag or registry than the settings' is stale (a launch refuses it)."""
  from pipelines import dataflow
  wanted = None  # without REGISTRY (or a tag) no reference to compare with
  try:
    if env.get("REGISTRY", "").strip():
      tag = env.get("IMAGE_TAG", "").strip() or dataflow.default_image_tag()
      wanted = {"REGISTRY": env["REGISTRY"].strip(), "IMAGE_TAG": tag}
  except dataflow.SettingsMissing:
    pass
  out = {}
  used = {b.image for b in matrix.load().values()}  # the images the matrix's benchmarks run
  for variant in [v for v in dataflow.IMAGE_NAMES if v in used]:
    path = dataflow.digest_dir(env, root) / f"image-{variant}.digest"
    fields = dataflow.read_digest(path)
    if fields is None:
      out[variant] = "unreadable digest file" if path.exists() else "not pushed"
    elif wanted and fields["image"] != dataflow.image_ref(variant, wanted):
      out[variant] = (f"stale: pushed {fields['image']}, the settings launch "
                      f"{dataflow.image_ref(variant, wanted)}")
    else:
      out[variant] = f"{fields['image']}@{fields['digest']}"
  return out
