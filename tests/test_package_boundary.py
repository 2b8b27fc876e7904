"""The package boundary the worker image relies on: pipelines/worker/ is what the SDK processes
import and all the image copies (docker/Dockerfile.*), so nothing in it may import the launcher
side; and on the launcher side, no module imports one of a higher layer."""
from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

from pipelines.matrix import REPO_ROOT
from pipelines.worker import tasks

PIPELINES = REPO_ROOT / "pipelines"
WORKER_ENTRY_POINTS = ("pipelines.worker.pipeline", "pipelines.worker.handler",
                       "pipelines.worker.models",
                       *(f"pipelines.worker.tasks.{name}" for name in tasks.names()))


def imports_of(path: pathlib.Path) -> set[str]:
  """Every pipelines.* module a file imports, at any depth (function-level imports too)."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      found |= {a.name for a in node.names if a.name.startswith("pipelines")}
    elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipelines"):
      found |= {f"{node.module}.{a.name}" if node.module in ("pipelines", "pipelines.worker")
                else node.module for a in node.names}
  return found


def module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(REPO_ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_the_worker_package_imports_nothing_from_the_launcher_side():
  offenders = {f"{module_name(p)} imports {m}"
               for p in (PIPELINES / "worker").rglob("*.py") for m in imports_of(p)
               if not (m == "pipelines.worker" or m.startswith("pipelines.worker."))}
  assert not offenders, sorted(offenders)


def test_the_worker_entry_points_import_with_only_the_worker_package_on_the_path(tmp_path):
  """What the image holds (pipelines/__init__.py and pipelines/worker/), alone on the path."""
  image = tmp_path / "opt" / "bench"
  (image / "pipelines").mkdir(parents=True)
  (image / "pipelines" / "__init__.py").write_bytes((PIPELINES / "__init__.py").read_bytes())
  subprocess.run(["cp", "-r", str(PIPELINES / "worker"), str(image / "pipelines")], check=True)
  code = "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)\n"
  done = subprocess.run([sys.executable, "-c", code, *WORKER_ENTRY_POINTS], cwd=image,
                        capture_output=True, text=True, timeout=300,
                        env={"PYTHONPATH": str(image), "PATH": "/usr/bin:/bin"})
  assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("variant", ["cpu", "gpu", "vllm"])
def test_each_images_model_stage_copies_every_module_the_model_writer_imports(tmp_path, variant):
  """The models stage of docker/Dockerfile.<variant> copies a few worker files only (so a code
  change does not re-bake the models): they must be all `python -m pipelines.worker.models`
  and the directory writer import."""
  text = (REPO_ROOT / "docker" / f"Dockerfile.{variant}").read_text().replace("\\\n", " ")
  stage = text[text.index(" AS models"):].split("\nFROM ")[0]
  copied = [word for line in stage.splitlines() if line.startswith("COPY pipelines/")
            for word in line.split()[1:-1]]
  stage_root = tmp_path / "opt" / "bench"
  for name in copied:
    (stage_root / name).parent.mkdir(parents=True, exist_ok=True)
    (stage_root / name).write_bytes((REPO_ROOT / name).read_bytes())
  code = ("import pipelines.worker.models, pipelines.worker.model_directory\n"
          "pipelines.worker.models.main(['--help'])\n")
  done = subprocess.run([sys.executable, "-c", code], cwd=stage_root, capture_output=True,
                        text=True, timeout=300,
                        env={"PYTHONPATH": str(stage_root), "PATH": "/usr/bin:/bin"})
  assert done.returncode == 0 and "architectures" in done.stdout, done.stderr[-2000:]


# Launcher-side layers, lowest first; a module may import only from its own layer or lower ones.
# (The worker package sits below them all.)
LAYERS = [
    # config, and the record's plain data
    {"pipelines.cli_types", "pipelines.layout", "pipelines.matrix", "pipelines.profiles",
     "pipelines.cost", "pipelines.sweep_results", "pipelines.text_lines",
     "pipelines.record.schema", "pipelines.record.upgrade", "pipelines.record.comparable",
     "pipelines.record.store", "pipelines.record.ledger", "pipelines.record.facts",
     "pipelines.record"},
    {"pipelines.record.build", "pipelines.summary", "pipelines.data"},
    # the engine: the plan, the runners and what they need while a run is under way
    {"pipelines.progress", "pipelines.interrupts", "pipelines.dataflow", "pipelines.preflight",
     "pipelines.plan", "pipelines.agreement", "pipelines.runners", "pipelines.worker_container",
     "pipelines.launch", "pipelines.ceilings", "pipelines.worker_logs"},
    # readers of records
    {"pipelines.publish", "pipelines.report", "pipelines.capacity", "pipelines.capacity_table"},
    # the launcher (runs one plan, then the post-run publish step)
    {"pipelines.run", "pipelines.post_run"},
    # commands built on the launcher
    {"pipelines.sweep", "pipelines.perf", "pipelines.compare_profiles", "pipelines.gpu_check",
     "pipelines.projection_check", "pipelines.bench_all", "pipelines.doctor",
     "pipelines.child"},
]


def layer_of(module: str) -> int | None:
  for index, layer in enumerate(LAYERS):
    if any(module == m or module.startswith(m + ".") for m in layer):
      return index
  return None


@pytest.mark.parametrize("path", sorted(p for p in PIPELINES.rglob("*.py")
                                        if "worker" not in p.parts
                                        and p != PIPELINES / "__init__.py"),
                         ids=lambda p: str(p.relative_to(PIPELINES)))
def test_no_launcher_module_imports_a_higher_layer(path):
  own = layer_of(module_name(path))
  assert own is not None, f"{module_name(path)} is in no layer of {__name__}.LAYERS"
  higher = sorted(m for m in imports_of(path)
                  if not m.startswith("pipelines.worker") and m != "pipelines.worker"
                  and (layer_of(m) or 0) > own)
  assert not higher, f"{module_name(path)} (layer {own}) imports {higher}"
