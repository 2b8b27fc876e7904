"""Pipeline options: the same flags on the DirectRunner and on Dataflow."""
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.matrix import DEVICES, TASKS


class BenchmarkOptions(PipelineOptions):

  @classmethod
  def _add_argparse_args(cls, parser):
    parser.add_argument("--benchmark", help="benchmark name in infra/benchmarks.toml")
    parser.add_argument("--task", choices=TASKS)
    parser.add_argument("--input", help="text file: one image path or one sentence per line")
    parser.add_argument("--output", help="output prefix (local folder or gs:// path)")
    parser.add_argument("--model_architecture", help="e.g. resnet101, bert-base-uncased")
    parser.add_argument("--model_state_dict_path", help="state dict (.pth) on any Beam filesystem")
    parser.add_argument("--vocab_path", help="bert uncased vocab.txt (language modeling only)")
    parser.add_argument("--device", choices=DEVICES, default="CPU")
    parser.add_argument("--min_batch_size", type=int, default=None)
    parser.add_argument("--max_batch_size", type=int, default=None)


def validate(opts: BenchmarkOptions) -> None:
  missing = [name for name in ("task", "input", "output", "model_architecture",
                               "model_state_dict_path")
             if not getattr(opts, name)]
  if opts.task == "language_modeling" and not opts.vocab_path:
    missing.append("vocab_path")
  if missing:
    raise ValueError("missing pipeline options: " + ", ".join("--" + m for m in missing))
