"""Worker layout: SDK processes per worker x torch threads per process, applied the same way on
both runners.

Dataflow starts one Python SDK process per vCPU by default (2 on n1-standard-2), each with its
own model copy and a torch pool as wide as the machine: 2 x 2 threads on 2 vCPUs. A laptop run
in one process measures a layout Dataflow never uses. A Layout names the layout explicitly:
  * locally, the FnApiRunner runs `processes` SDK worker processes (multi_processing);
  * on Dataflow, 1 process per worker is the experiment `no_use_multiple_sdk_containers`, one
    per vCPU is Dataflow's default; nothing else can be asked for;
  * every worker process sets its torch threads before it loads the model
    (pipelines/worker/threads.py).
"""
from __future__ import annotations

import dataclasses
import re

_PATTERN = re.compile(r"^(\d+)x(\d+)(?:i(\d+))?$")
ONE_SDK_PROCESS = "no_use_multiple_sdk_containers"


class LayoutError(ValueError):
  pass


@dataclasses.dataclass(frozen=True)
class Layout:
  processes: int  # SDK worker processes per worker machine, each with its own model copy
  threads: int  # torch intra-op threads per process
  interop_threads: int = 1  # torch inter-op threads per process (inference is one op stream)

  @classmethod
  def parse(cls, text: str) -> Layout:
    """'2x1' (processes x threads) or '1x2i2' (with inter-op threads)."""
    match = _PATTERN.match(text.strip())
    if not match or int(match.group(1)) < 1 or int(match.group(2)) < 1 or (
        match.group(3) is not None and int(match.group(3)) < 1):
      raise LayoutError(f"layout '{text}' is not PxT (SDK processes x torch threads, each >= 1, "
                        "e.g. 1x2 or 2x1; PxTiI adds inter-op threads)")
    return cls(int(match.group(1)), int(match.group(2)), int(match.group(3) or 1))

  def __str__(self) -> str:
    return f"{self.processes}x{self.threads}" + (
        f"i{self.interop_threads}" if self.interop_threads != 1 else "")

  def local_beam_args(self) -> list[str]:
    """The FnApiRunner's flags for this many SDK worker processes."""
    mode = "multi_processing" if self.processes > 1 else "in_memory"
    return [f"--direct_num_workers={self.processes}", f"--direct_running_mode={mode}"]

  def in_image_beam_args(self) -> list[str]:
    """The FnApiRunner's flags when its SDK workers are a worker image's pool (IN_IMAGE=1): the
    pool starts the processes, so the running mode must keep the EXTERNAL environment."""
    return [f"--direct_num_workers={self.processes}", "--direct_running_mode=in_memory"]

  def dataflow_experiments(self, vcpus: int) -> list[str]:
    if self.processes == 1:
      return [ONE_SDK_PROCESS]
    if self.processes == vcpus:
      return []  # Dataflow's default: one SDK process per vCPU
    raise LayoutError(f"Dataflow runs 1 SDK process per worker or one per vCPU ({vcpus}), "
                      f"not {self.processes}")



def check_memory(layout: Layout, process_mib: float, machine_type: str, memory_gb: float,
                 reserved_gb: float, model: str) -> None:
  """Refuses a layout whose model copies cannot fit the machine type, before anything runs."""
  usable_mib = (memory_gb - reserved_gb) * 1024
  needed_mib = layout.processes * process_mib
  if needed_mib > usable_mib:
    raise LayoutError(
        f"layout {layout} needs {layout.processes} x {process_mib:.0f} MiB = {needed_mib:.0f} MiB "
        f"for {layout.processes} copies of {model}, but {machine_type} has {memory_gb:g} GB "
        f"with {reserved_gb:g} GB kept for the OS and Dataflow's harness "
        f"({usable_mib:.0f} MiB usable): use fewer processes (e.g. LAYOUT=1x{layout.threads})")
