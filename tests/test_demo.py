"""`mosaic demo` end to end, as a fresh install runs it: the console script, the default field, the report in a browser."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table


class _Report(HTMLParser):
    def __init__(self):
        super().__init__()
        self.headings, self.images, self.tables = [], 0, []
        self._tag = None

    def handle_starttag(self, tag, attrs):
        self._tag = tag
        self.images += tag == "img"
        if tag == "table":
            self.tables.append([])
        if tag == "tr" and self.tables:
            self.tables[-1].append([])

    def handle_endtag(self, tag):
        self._tag = None

    def handle_data(self, data):
        if self._tag == "h2":
            self.headings.append(data.strip())
        elif self._tag in ("td", "th") and self.tables and self.tables[-1] and data.strip():
            self.tables[-1][-1].append(data.strip())


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "mosaic-demo"
    script = Path(sys.executable).parent / "mosaic"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "mosaic"]
    t0 = time.perf_counter()
    run = subprocess.run([*cmd, "--log-level", "WARNING", "demo", "--out", str(out)], capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - t0
    assert run.returncode == 0, run.stderr[-3000:]
    return out, run, seconds


def test_demo_runs_the_whole_job_and_says_where_everything_is(demo):
    out, run, seconds = demo
    print(f"mosaic demo: {seconds:.0f} s")  # the budget is 3 minutes on 2 cores
    assert "mosaic demo wrote:" in run.stdout and str(out / "report.html") in run.stdout
    for band in ("f150w", "f200w"):
        for n in (0, 5, 10):
            path = out / "products" / f"demo_{band}_updc_iter{n:02d}_i2d.fits"
            assert path.exists(), path
            assert (out / "products" / "catalogs" / f"demo_{band}_updc_iter{n:02d}_cat.ecsv").exists()
        assert len(list((out / "products" / "prep" / band / "outliers").glob("*_crf.fits"))) == 4
    assert (out / "demo_rgb_iter10.png").exists() and (out / "demo_rgb_iter00.png").exists()


def test_demo_deconvolves_and_detects_more(demo):
    out, _, _ = demo
    sci = {n: fits.getdata(out / "products" / f"demo_f200w_updc_iter{n:02d}_i2d.fits", "SCI") for n in (0, 10)}
    truth = Table.read(out / "sim" / "f200w" / "truth.ecsv")
    # the mosaics are on the truth's grid
    assert sci[0].shape == fits.getdata(out / "sim" / "f200w" / "truth.fits").shape
    star = truth[(truth["kind"] == "star") & truth["isolated"]]
    star = star[np.argmax(star["flux"])]
    x, y = int(round(float(star["x"]))), int(round(float(star["y"])))
    # the brightest isolated star's peak rises as UPDC sharpens it, its flux kept
    assert sci[10][y, x] > 2.0 * sci[0][y, x]
    parsed = _Report()
    parsed.feed((out / "report.html").read_text())
    assert parsed.headings == ["The run", "Before and after", "A close pair", "Detections versus iteration (fig. 13)", "A star's profile (fig. 16)"]
    table = next(t for t in parsed.tables if t and t[0][:2] == ["iteration", "n_detected"])
    rows = {int(r[0]): dict(zip(table[0], r, strict=True)) for r in table[1:]}
    # the truth's sources found at iteration 0 are found again later (the report shows the rest)
    assert int(rows[10]["n_true"]) >= int(rows[0]["n_true"]) > 0


def test_demo_report_opens_in_a_headless_browser(demo, tmp_path):
    browser = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if browser is None:
        pytest.skip("no chromium on this machine (CI installs Debian's chromium: .ci/browser.sh)")
    out, _, _ = demo
    args = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0"]
    dom = subprocess.run([*args, "--dump-dom", (out / "report.html").as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "Detections versus iteration" in dom.stdout and dom.stdout.count("<img") >= 6
    assert [ln for ln in dom.stderr.splitlines() if "CONSOLE" in ln] == []
