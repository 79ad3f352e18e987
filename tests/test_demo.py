"""`mosaic demo` end to end, as a fresh install runs it: the console script, the default field, the report in a browser."""

from __future__ import annotations

import base64
import io
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from PIL import Image

HEADINGS = [
    "The run",
    "Before and after",
    "A close pair",
    "Data against the model",
    "Convergence",
    "Detections against the truth (fig. 13)",
    "Fluxes and magnitudes against the truth (fig. 14)",
    "A star's profile (fig. 16)",
    "Timings",
]


class _Report(HTMLParser):
    def __init__(self):
        super().__init__()
        self.headings, self.images, self.tables, self.captions, self.figcaptions = [], [], [], [], []
        self._tag = None

    def handle_starttag(self, tag, attrs):
        self._tag = tag
        if tag == "img":
            self.images.append(base64.b64decode(dict(attrs)["src"].split(",", 1)[1]))
        if tag == "table":
            self.tables.append([])
        if tag == "tr" and self.tables:
            self.tables[-1].append([])

    def handle_endtag(self, tag):
        self._tag = None

    def handle_data(self, data):
        if self._tag == "h2":
            self.headings.append(data.strip())
        elif self._tag == "figcaption":
            self.figcaptions.append(data.strip())
        elif self._tag == "caption":
            self.captions.append(data.strip())
        elif self._tag in ("td", "th") and self.tables and self.tables[-1] and data.strip():
            self.tables[-1][-1].append(data.strip())

    def table(self, first: list[str]) -> dict:
        """The table whose header starts with ``first``, as ``{first column (int): {column: text}}``."""
        table = next(t for t in self.tables if t and t[0][: len(first)] == first)
        return {int(r[0]): dict(zip(table[0], r, strict=True)) for r in table[1:]}


def _independent_match(catalogue: Table, truth: Table, max_sep: float = 0.1) -> int:
    """Detections that are the mutual nearest neighbour of a true source within ``max_sep`` arcsec."""
    cat = SkyCoord(np.asarray(catalogue["ra"]) * u.deg, np.asarray(catalogue["dec"]) * u.deg)
    tru = SkyCoord(np.asarray(truth["ra"]) * u.deg, np.asarray(truth["dec"]) * u.deg)
    i, d, _ = cat.match_to_catalog_sky(tru)
    j, _, _ = tru.match_to_catalog_sky(cat)
    return int(np.sum((d.arcsec <= max_sep) & (j[i] == np.arange(len(cat)))))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    # as a newcomer types it: default options (the relative --out included), from an unrelated, empty folder
    here = tmp_path_factory.mktemp("newcomer")
    out = here / "mosaic-demo"
    script = Path(sys.executable).parent / "mosaic"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "mosaic"]
    t0 = time.perf_counter()
    run = subprocess.run([*cmd, "demo"], cwd=here, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - t0
    assert run.returncode == 0, run.stderr[-3000:]
    return out, run, seconds


def test_demo_runs_the_whole_job_and_says_where_everything_is(demo):
    out, run, seconds = demo
    # it says at once what it does, and nothing at the end frightens a newcomer
    log = run.stderr.splitlines()
    assert "mosaic demo: a simulated two-band field" in log[0], run.stderr[:500]
    assert "Traceback" not in run.stderr and "still alive" not in run.stderr and "killed by signal" not in run.stderr
    # its dashboard is served on this host only, not to the network
    assert "dask dashboard: http://127.0.0.1:" in run.stderr and "every interface" not in run.stderr, run.stderr[:3000]
    assert not [ln for ln in log if "warnings.warn(" in ln or ln.startswith("  ")], run.stderr[-3000:]
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
    assert parsed.headings == HEADINGS
    rows = parsed.table(["iteration", "n_detected"])
    assert list(next(iter(rows.values()))) == ["iteration", "n_detected", "n_true", "n_false", "purity", "completeness"]
    # the truth's sources found at iteration 0 are found again later (the report shows the rest)
    assert int(rows[10]["n_true"]) >= int(rows[0]["n_true"]) > 0


def test_demo_report_tables_agree_with_the_truth(demo):
    """The report's numbers, checked against the catalogues and the truth by an independent match."""
    out, _, _ = demo
    parsed = _Report()
    parsed.feed((out / "report.html").read_text())
    truth = Table.read(out / "sim" / "f200w" / "truth.ecsv")
    detections = parsed.table(["iteration", "n_detected"])
    fluxes = parsed.table(["iteration", "n_matched"])
    assert sorted(detections) == sorted(fluxes) == [0, 5, 10]
    for n, row in detections.items():
        cat = Table.read(out / "products" / "catalogs" / f"demo_f200w_updc_iter{n:02d}_cat.ecsv")
        n_true = _independent_match(cat, truth)
        assert (int(row["n_detected"]), int(row["n_true"]), int(row["n_false"])) == (len(cat), n_true, len(cat) - n_true)
        assert float(row["purity"]) == pytest.approx(n_true / len(cat), abs=5e-4)
        assert float(row["completeness"]) == pytest.approx(n_true / len(truth), abs=5e-4)
        assert int(fluxes[n]["n_matched"]) == n_true
        # fluxes of the matched sources within a factor 2 of the truth, in the median
        assert 0.5 < float(fluxes[n]["median_ratio"]) < 2.0
    # convergence: chi^2 per pixel against ERR falls with the iterations; the median-based value nears 1
    chi2 = parsed.table(["iteration", "chi2_per_pixel"])
    mean = [float(chi2[n]["chi2_per_pixel"]) for n in (0, 5, 10)]
    robust = [float(chi2[n]["robust_chi2"]) for n in (0, 5, 10)]
    assert mean[0] > mean[1] > mean[2] > 0
    assert 0.5 < robust[2] < robust[0]
    if "chi2_recorded" in chi2[0]:
        # where UPDC keeps its own chi2/dof, it is the report's (its forward pass, the same pixels and ERR)
        np.testing.assert_allclose([float(chi2[n]["chi2_recorded"]) for n in (0, 5, 10)], mean, rtol=0.02)
    # UPDC sharpens the isolated stars: median FWHM in arcsec, below the drizzle's at the last iteration
    fwhm = parsed.table(["iteration", "n_stars"])
    drizzle, last = float(fwhm[0]["median_fwhm"]), float(fwhm[10]["median_fwhm"])
    assert 0.03 < drizzle < 0.2 and last < 0.8 * drizzle
    assert any("truth PSF" in c for c in parsed.captions)
    # every figure is a PNG no wider than the page (90em at 16 px), so it is read at 100 % zoom
    assert len(parsed.images) == 9
    widths = [Image.open(io.BytesIO(png)).size[0] for png in parsed.images]
    assert max(widths) <= 1440, widths
    # the before/after figure states its one stretch, its limits and units
    for band in ("F200W", "F150W"):
        assert any(c.startswith(band) and "asinh stretch" in c and "MJy/sr" in c and "the same for" in c for c in parsed.figcaptions)


def test_demo_report_opens_in_a_headless_browser(demo, tmp_path):
    browser = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if browser is None:
        pytest.skip("no chromium on this machine (CI installs Debian's chromium: .ci/browser.sh)")
    out, _, _ = demo
    args = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0"]
    dom = subprocess.run([*args, "--dump-dom", (out / "report.html").as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert all(h.replace("'", "&#x27;") in dom.stdout or h in dom.stdout for h in HEADINGS)
    assert dom.stdout.count("<img") == 9
    assert [ln for ln in dom.stderr.splitlines() if "CONSOLE" in ln] == []
    # the page as an astronomer sees it: a screenshot with every figure drawn
    shot = tmp_path / "report.png"
    run = subprocess.run([*args, "--hide-scrollbars", f"--screenshot={shot}", "--window-size=1500,9000", (out / "report.html").as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    rows = np.flatnonzero(pixels.std(axis=1) > 1)
    # the page is drawn well below the first screen: the figures have their height
    assert pixels.std() > 5 and rows.max() > 5000
