"""`make push`: python -m pipelines.dataflow record-digest <file> <image:tag> <digest text>."""
import pathlib
import sys

from pipelines.dataflow.settings import write_digest

if len(sys.argv) != 5 or sys.argv[1] != "record-digest":
  raise SystemExit("usage: python -m pipelines.dataflow record-digest FILE IMAGE:TAG DIGEST")
try:
  pushed = write_digest(pathlib.Path(sys.argv[2]), sys.argv[3], sys.argv[4])
except ValueError as e:
  raise SystemExit(f"error: {sys.argv[3]}: {e}") from None
print(f"pushed {sys.argv[3]} ({pushed}): recorded in {sys.argv[2]}")
