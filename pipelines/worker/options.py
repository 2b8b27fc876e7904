"""Pipeline options: the same flags on the DirectRunner and on Dataflow."""
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipelines.worker import gpu_telemetry, optimizations, tasks, vocab
from pipelines.worker.arg_types import positive_int
from pipelines.worker.tasks import TASKS
from pipelines.worker.vocab import DECODERS, DEVICES

# Well under Pillow's decompression-bomb guard (89 MP warns, 179 MP fails): a 50 MP RGB image
# decodes to 150 MB, affordable on a 7.5 GB worker running two SDK processes.
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
# Far above any photo's JPEG (a 50-megapixel one is a few tens of MB); reads stop one byte
# past it.
DEFAULT_MAX_IMAGE_BYTES = 100_000_000


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
    parser.add_argument("--inference_step", default="RunInference",
                        help="the RunInference step label (Beam's benchmarks: PyTorchRunInference);"
                             " Beam's metric names are composed from it")
    parser.add_argument("--profile", default="tuned", help="the run profile (recorded)")
    parser.add_argument("--layout", help="the worker layout PxT (recorded; see layout.py)")
    parser.add_argument("--torch_threads", type=int, default=None,
                        help="torch intra-op threads each worker process sets before loading")
    parser.add_argument("--torch_interop_threads", type=int, default=None)
    parser.add_argument("--optimization", choices=optimizations.NAMES, default=optimizations.NONE,
                        help="optimization applied to the loaded model: a CPU one, or a GPU "
                             "precision (optimizations.py)")
    parser.add_argument("--decode", choices=DECODERS, default=DECODERS[0],
                        help="image classification: cpu decodes each image with PIL in the "
                             "parse step; device decodes each batch of files on the model's "
                             "device (nvjpeg on a GPU), after the same per-file checks")
    parser.add_argument("--pin_memory", action="store_true", default=False,
                        help="image classification on a GPU: copy each batch to it through "
                             "pinned host memory, asynchronously")
    parser.add_argument("--sentence_batching", choices=vocab.SENTENCE_BATCHINGS,
                        default=vocab.SENTENCE_BATCHINGS[0],
                        help="the sentence tasks: padded (each batch to its longest sentence, "
                             "in the order they come), length (sentences of similar token "
                             "length batched together) or max_length (every sentence padded "
                             "to 128 tokens, as Beam's sentiment example does)")
    parser.add_argument("--pubsub_subscription",
                        help="streaming jobs (--streaming, Dataflow): the Pub/Sub subscription "
                             "the items are read from, one per message, as Beam's streaming "
                             "benchmarks read them")
    parser.add_argument("--max_image_pixels", type=int, default=DEFAULT_MAX_IMAGE_PIXELS,
                        help="images with more pixels, as stored or as resized for the model, "
                             "are dead-lettered before decoding (a 169-megapixel PNG takes "
                             "600 MB to decode)")
    parser.add_argument("--gpu_sample_s", type=float, default=gpu_telemetry.SAMPLE_INTERVAL_S,
                        help="seconds between GPU telemetry samples (NVML) in the process that "
                             "holds the model; 0: no telemetry")
    parser.add_argument("--window_ms", type=int, default=0,
                        help="each batch's items also count in time windows of this many ms "
                             "(the record's steady-state check); 0: none")
    parser.add_argument("--max_image_bytes", type=positive_int, default=DEFAULT_MAX_IMAGE_BYTES,
                        help="image files larger than this are dead-lettered; no read goes past "
                             "it")


def validate(opts: BenchmarkOptions) -> None:
  needed = ("task", "output", "model_architecture", "model_state_dict_path")
  if not opts.view_as(StandardOptions).streaming:
    needed = (*needed, "input")
  missing = [name for name in needed if not getattr(opts, name)]
  from pipelines.worker.models import uses_vocab  # torch: where the pipeline is built
  if opts.model_architecture and uses_vocab(opts.model_architecture) and not opts.vocab_path:
    missing.append("vocab_path")
  if opts.view_as(StandardOptions).streaming and not opts.pubsub_subscription:
    missing.append("pubsub_subscription")
  if missing:
    raise ValueError("missing pipeline options: " + ", ".join("--" + m for m in missing))
  decoders = tasks.get(opts.task).decoders if opts.task in TASKS else DECODERS
  if opts.decode not in decoders:
    raise ValueError(f"--decode {opts.decode} is not available for {opts.task}: it decodes on "
                     f"{', '.join(decoders)} only")


def unknown_beam_args(args: list[str]) -> list[str]:
  """The flags in `args` that no Beam option (nor the kit's) knows. Beam itself only warns
  about these and runs with defaults, so a mistyped flag would silently measure the wrong
  thing; this is the parser Beam's get_all_options builds, asked for what it leaves over."""
  from apache_beam.options.pipeline_options import _BeamArgumentParser
  parser = _BeamArgumentParser(allow_abbrev=False)
  for cls in {str(c): c for c in PipelineOptions.__subclasses__()}.values():
    cls._add_argparse_args(parser)  # noqa: SLF001 - the same call Beam makes
  _, unknown = parser.parse_known_args(args)
  return [a for a in unknown if a.startswith("-")]
