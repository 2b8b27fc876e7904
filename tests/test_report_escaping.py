"""Every value the report reads from disk (run records, sweep files) reaches report.html as
text: hostile strings planted in them add no element and no attribute to the page."""
from __future__ import annotations

import html.parser
import json

from pipelines.record import store
from pipelines.report import __main__ as report_cli
from tests.records import history, synthetic_record

PAYLOAD = ('<script>alert(1)</script><img src=x onerror=alert(2)><b>planted</b>'
           '" onmouseover="alert(3)\' onfocus=\'alert(4)')
# Everything the report itself writes; a planted value must not add another kind, nor any
# event handler attribute.
OWN_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "ul", "li",
            "a", "span", "section", "table", "tr", "th", "td", "img"}


class _Elements(html.parser.HTMLParser):
  def __init__(self):
    super().__init__()
    self.tags: dict[str, int] = {}
    self.attributes: set[str] = set()

  def handle_starttag(self, tag, attrs):
    self.tags[tag] = self.tags.get(tag, 0) + 1
    self.attributes |= {name for name, _ in attrs}


def elements(text: str) -> _Elements:
  parser = _Elements()
  parser.feed(text)
  return parser


def hostile_sweep(results) -> None:
  """A sweep file as `make sweep` writes it, every value the page shows replaced."""
  sweep = {"benchmark": "resnet101$\\frac{$" + PAYLOAD,  # '$': text, not mathtext
           "items": PAYLOAD, "repeats": PAYLOAD,
           "batch_sizes": [2, 4], "layouts": ["1x2"], "default_layout": "1x2" + PAYLOAD,
           "default_batch_size": PAYLOAD, "default_batching": None, "started": PAYLOAD,
           "versions": {"torch": PAYLOAD}, "git_sha": PAYLOAD, "git_dirty": False,
           "points": [{"layout": "1x2" + PAYLOAD, "batching": None, "batch_size": b,
                       "steady_items_per_s": 10.0 * b, "p99_batch_ms": 50.0 * b,
                       "mean_batch_ms": 40.0 * b, "peak_rss_mib_per_process": 900,
                       "processes_loaded_model": 1, "threads_seen": [1],
                       "status": "succeeded", "run_ids": [PAYLOAD]} for b in (2, 4)]}
  (results / "sweeps").mkdir(parents=True)
  (results / "sweeps" / "resnet101-20261101T000000.json").write_text(json.dumps(sweep))


def hostile_record(results, status: str) -> None:
  # (its benchmark and run id must be plain names: the store refuses others, see
  # test_records_damaged.py)
  record = synthetic_record(runner="DirectRunner" + PAYLOAD, machine_type="local" + PAYLOAD,
                            weights="random" + PAYLOAD, profile="tuned" + PAYLOAD)
  record.status, record.error = status, PAYLOAD
  record.plan.update(image=PAYLOAD, batch_size=PAYLOAD, layout="1x2" + PAYLOAD,
                     overrides={"layout": PAYLOAD})
  meta = record.metadata
  meta.update(git_sha="$\\frac{$" + PAYLOAD, hostname=PAYLOAD, device_used="cpu" + PAYLOAD)
  meta["versions"] = {"apache-beam": PAYLOAD, "torch": 2.14}  # not a string: shown as text
  record.gpu = {"telemetry": "available", "samples": PAYLOAD}
  path = results / "records" / f"2026{status}_planted.json"  # a name the store never writes
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(record.to_dict()))


def test_planted_markup_in_sweeps_and_records_stays_text(tmp_path):
  clean, hostile = tmp_path / "clean", tmp_path / "hostile"
  for results in (clean, hostile):
    history(results, [50_000, 51_000, 50_500])
  hostile_sweep(hostile)
  hostile_record(hostile, "succeeded")
  hostile_record(hostile, "failed")
  assert report_cli.main(["--results-dir", str(clean)]) == 0
  assert report_cli.main(["--results-dir", str(hostile)]) == 0
  page = (hostile / "report.html").read_text()
  own, found = elements((clean / "report.html").read_text()), elements(page)
  assert own.tags.get("script", 0) == found.tags.get("script", 0) == 0
  assert set(found.tags) <= OWN_TAGS, set(found.tags) - OWN_TAGS
  assert not [name for name in found.attributes if name.startswith("on")]
  assert found.attributes <= own.attributes | {"class"}
  # Shown, as text: the sweep's and the records' values are on the page, escaped.
  assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 10
  assert "Worker layout sweeps" in page and len(store.load_all(hostile)) == 5
