"""WORK/report.html: rendered in headless Chromium it loads without console errors, every image decodes, and the
numbers read back from the page are the artefacts'. The report of a real tiny run is checked from
tests/test_pipeline.py (check_report: the pipeline writes it), partial and empty work directories here."""
import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import assert_usage_error, run_module
from tfwidth.space import tiny_space

# Debian's chromium (tools/test.sh installs it); the flags of a sandboxed machine without a network or a display
CHROMIUM = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000"]

# Put first in the page under test: records every error event (a resource that fails to load included, which fires
# on the element, hence the capture phase) and console.error call, and once the page has loaded writes them and each
# image's decoded width into attributes of <html>, which --dump-dom then shows.
PROBE = """<script>
(() => {
  const errors = [];
  window.addEventListener("error", e => errors.push(e.message || ("failed to load " + (e.target.id || e.target.src))), true);
  const log = console.error.bind(console);
  console.error = (...a) => { errors.push(a.join(" ")); log(...a); };
  window.addEventListener("load", () => {
    const root = document.documentElement;
    root.setAttribute("data-probe-images", JSON.stringify([...document.images].map(i => [i.id, i.naturalWidth])));
    root.setAttribute("data-probe-errors", JSON.stringify(errors));
  });
})();
</script>"""


def chromium():
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("TFWIDTH_REQUIRE_BROWSER"):
            pytest.fail("chromium is not installed (tools/test.sh installs it: apt-get install -y chromium)")
        pytest.skip("chromium is not installed; tools/test.sh installs it (apt-get install -y chromium)")
    return path


class Numbers(HTMLParser):
    """id -> data-value of every element that has both, and the probe's attributes of <html>."""

    def __init__(self):
        super().__init__()
        self.values, self.root = {}, {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "html":
            self.root = a
        if "id" in a and "data-value" in a:
            self.values[a["id"]] = a["data-value"]


def render(page: Path, tmp_path: Path) -> tuple[dict, list, list, str]:
    """Load ``page`` (with the probe) in headless Chromium: (numbers by id, [(image id, natural width)], the page's
    errors, the browser's console lines)."""
    probed = tmp_path / f"probed_{page.name}"
    text = page.read_text()
    probed.write_text(text.replace("<head>", "<head>" + PROBE, 1))
    p = subprocess.run([chromium(), *CHROMIUM, f"--user-data-dir={tmp_path / 'chromium-profile'}", "--dump-dom",
                        probed.as_uri()], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    parsed = Numbers()
    parsed.feed(p.stdout)
    assert "data-probe-images" in parsed.root, "the page did not finish loading: " + p.stdout[:500]
    console = [line for line in p.stderr.splitlines() if ":CONSOLE(" in line]
    return (parsed.values, json.loads(parsed.root["data-probe-images"]), json.loads(parsed.root["data-probe-errors"]),
            "\n".join(console))


def check_report(work: Path, tmp_path: Path) -> None:
    """The report the pipeline wrote into ``work`` renders cleanly, shows every figure, and its numbers are the
    artefacts'."""
    values, images, errors, console = render(work / "report.html", tmp_path)
    assert errors == [] and console == "", (errors, console)
    assert sorted(i for i, _ in images) == ["fit-plot", "pareto-plot", "widths-plot"]
    assert all(w > 0 for _, w in images), images

    def same(key, value):
        assert key in values, key
        assert values[key] == (repr(value) if isinstance(value, float) else str(value)), (key, values[key], value)

    fit = json.loads((work / "table.json").read_text())["fit"]
    same("val-rmse", fit["validation"]["rmse_ms"])
    same("val-within10", fit["validation"]["within_10pct"])
    same("noise-rmse", fit["noise"]["repeat_rmse_ms"])
    widths = json.loads((work / "widths.json").read_text())
    same("target", widths["target_ms"])
    same("answer-method", widths["method"])
    same("answer-widths", " ".join(map(str, widths["widths"])))
    for r in widths["results"]:
        if r["widths"] is not None:
            same(f"pred-{r['method']}", r["predicted_ms"])
            same(f"objective-{r['method']}", r["objective"])
    uniform = next(r for r in widths["results"] if r["method"] == "uniform")
    same("uniform-widths", " ".join(map(str, uniform["widths"])))
    rep = json.loads(next(work.glob("model_*.report.json")).read_text())
    same("model-top1", rep["tflite"]["top1"])
    same("model-size", rep["size_bytes"])
    same("model-measured", rep["latency"]["measured"]["ms"]["min"])
    same("model-predicted", rep["latency"]["predicted_ms"])
    for name, rec in json.loads((work / "pipeline.json").read_text())["stages"].items():
        same(f"seconds-{name}", rec["seconds"])


def test_the_probe_sees_a_broken_image(tmp_path):
    """The browser check can fail: an image whose data does not decode is reported, and a console error too."""
    page = tmp_path / "report.html"
    page.write_text('<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>'
                    '<img id="ok" src="data:image/gif;base64,R0lGODlhAQABAAAAACwAAAAAAQABAAACAkQBADs=">'
                    '<img id="bad" src="data:image/png;base64,bm90IGEgcG5n">'
                    '<script>console.error("boom")</script></body></html>')
    _, images, errors, _ = render(page, tmp_path)
    assert dict(images) == {"ok": 1, "bad": 0}
    assert "boom" in errors and any("bad" in e for e in errors)


def test_a_partial_work_directory_reports_what_it_has(tmp_path):
    from test_latency import true_table
    space = tiny_space(resolution=8, classes=10, levels=3, base=8, layers=4)
    space.save(tmp_path / "space.json")
    true_table(space).save(tmp_path / "table.json")
    p = run_module("tfwidth", "report", tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stderr == ""  # a quiet console
    page = (tmp_path / "report.html").read_text()
    assert "no widths.json yet" in page and "no model_" in page and "no pipeline.json" in page
    assert f'id="space-hash" data-value="{space.space_hash}"' in page


def test_a_directory_without_artefacts_is_one_line(tmp_path):
    assert_usage_error(run_module("tfwidth.report", tmp_path), "holds no pipeline artefacts", "tfwidth pipeline")
    assert not (tmp_path / "report.html").exists()
