"""BenchmarkModelHandler answers every ModelHandler method as the handler it wraps does: checked
against ModelHandler's own list, so a method a new Beam release adds cannot be missed."""
from __future__ import annotations

from unittest import mock

from apache_beam.ml.inference.base import ModelHandler

from pipelines.worker import handler
from pipelines.worker.handler import BenchmarkModelHandler

OWN = {"load_model", "run_inference"}  # what the wrapper adds its measurements to


def test_every_public_model_handler_method_is_the_wrappers_own_or_forwarded():
  for name in handler.public_methods(ModelHandler):
    mine, beams = getattr(BenchmarkModelHandler, name), getattr(ModelHandler, name)
    if name in handler.NOT_FORWARDED:  # builders: they must wrap this handler, so inherited
      assert mine is beams, name
    else:
      assert mine is not beams, f"{name}: ModelHandler's default answers, not the base's"
      assert name in OWN or name in handler.FORWARDED, name
  assert "override_metrics" in handler.FORWARDED


def test_forwarded_methods_return_the_wrapped_handlers_answers():
  base = mock.create_autospec(ModelHandler, instance=True)
  wrapped = BenchmarkModelHandler(base, device="CPU", state_dict_path="m.pth")
  for name in handler.FORWARDED:
    getattr(base, name).reset_mock()
    getattr(base, name).return_value = f"{name} from the base"
    args = ("arg",) * (getattr(ModelHandler, name).__code__.co_argcount - 1)
    assert getattr(wrapped, name)(*args) == f"{name} from the base", name
    getattr(base, name).assert_called_once_with(*args)
  base.override_metrics.return_value = True  # the base reports its own metrics
  assert wrapped.override_metrics("ns") is True


def test_builders_wrap_the_benchmark_handler_not_the_base():
  base = mock.create_autospec(ModelHandler, instance=True)
  wrapped = BenchmarkModelHandler(base, device="CPU", state_dict_path="m.pth")
  assert wrapped.with_preprocess_fn(str)._base is wrapped
