"""`make perf`'s plain loop runs every task with a torch model through the task objects' own
steps (example_from_line, prediction_logits), and refuses the one that has none (vLLM)."""
from __future__ import annotations

import pytest

from pipelines import matrix, perf, profiles
from tests.test_faults import SMALL_MATRIX


@pytest.mark.parametrize("name,count,batch_size,length_aware", [
    ("small-detection", 2, 1, False),
    ("small-sentiment", 8, 2, True),
    ("small-captioning", 3, 1, False),
])
def test_the_plain_loop_runs_the_task_and_gives_a_rate(monkeypatch, models_dir, data_dir, name,
                                                       count, batch_size, length_aware):
  monkeypatch.setenv("BENCHMARK_MATRIX", str(SMALL_MATRIX))
  bench = matrix.get(name)
  lines = (data_dir / bench.task_spec.input_file).read_text().splitlines()[:count]
  # Lines the pipeline dead-letters are left out, as the pipeline leaves them out of batches.
  lines = ["", *lines, str(data_dir / "no-such-file.jpg")]
  rate = perf.plain_loop(bench, lines, batch_size, models_dir, length_aware=length_aware,
                         profile=profiles.get("beam"))
  assert rate > 0


def test_too_few_usable_items_for_a_steady_state_is_a_clear_error(monkeypatch, models_dir,
                                                                 data_dir):
  monkeypatch.setenv("BENCHMARK_MATRIX", str(SMALL_MATRIX))
  bench = matrix.get("small-detection")
  lines = (data_dir / "scenes.txt").read_text().splitlines()[:1] + ["", "missing.jpg"]
  with pytest.raises(SystemExit, match="at least two batches of usable items"):
    perf.plain_loop(bench, lines, 1, models_dir, length_aware=False)


def test_perf_refuses_text_generation_in_one_line(capsys):
  with pytest.raises(SystemExit) as exit_:
    perf.main(["gemma-vllm-gpu"])
  assert exit_.value.code == 2
  (line,) = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
  assert "gemma-vllm-gpu: no plain loop: text_generation's model is a vLLM server" in line
