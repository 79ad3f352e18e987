"""The HTML report: self-contained, escaped, atomic; opened in a real headless browser where one is installed."""

from __future__ import annotations

import base64
import shutil
import subprocess
from html.parser import HTMLParser

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from astropy.table import Table  # noqa: E402

from mosaic.viz.preview import write_png  # noqa: E402
from mosaic.viz.report import Section, write_report  # noqa: E402


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.cells, self.scripts = [], [], 0
        self._in_td = False

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        self._in_td = tag in ("td", "th")
        self.scripts += tag == "script"

    def handle_endtag(self, tag):
        self._in_td = False

    def handle_data(self, data):
        if self._in_td and data.strip():
            self.cells.append(data)


@pytest.fixture
def report(tmp_path):
    png = write_png(tmp_path / "image.png", np.arange(64.0).reshape(8, 8))
    fig, ax = plt.subplots()
    ax.plot([0, 5, 10], [3, 9, 14])
    table = Table({"iteration": [0, 5], "true": [12, 19], "false": [1, 1]})
    sections = [
        Section("Images", text=["Before <and> after"], figures=[(png, "drizzle"), (fig, "detections")]),
        Section("Detections", tables=[(table, "detections versus iteration")], values={"drizzle s": 1.25}),
    ]
    return write_report(tmp_path / "report.html", "demo <field>", sections), png


def test_report_is_self_contained_and_escaped(report):
    path, png = report
    text = path.read_text()
    assert "demo &lt;field&gt;" in text and "Before &lt;and&gt; after" in text
    parsed = _Collect()
    parsed.feed(text)
    assert parsed.scripts == 0
    assert len(parsed.images) == 2 and all(src.startswith("data:image/png;base64,") for src in parsed.images)
    assert base64.b64decode(parsed.images[0].split(",", 1)[1]) == png.read_bytes()
    assert base64.b64decode(parsed.images[1].split(",", 1)[1]).startswith(b"\x89PNG")
    assert ["iteration", "true", "false", "0", "12", "1", "5", "19", "1"] == parsed.cells[:9]
    assert "1.25" in parsed.cells
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_bad_images_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        write_report(tmp_path / "r.html", "t", [Section("s", figures=[(tmp_path / "missing.png", "x")])])
    (tmp_path / "not.png").write_text("hello")
    with pytest.raises(ValueError, match="not a PNG"):
        write_report(tmp_path / "r.html", "t", [Section("s", figures=[(tmp_path / "not.png", "x")])])
    assert not (tmp_path / "r.html").exists()


def test_report_does_not_follow_a_link_planted_at_the_old_temporary_name(tmp_path):
    """A link at ``.report.html.tmp`` (the fixed temporary name of old) must not be written through."""
    victim = tmp_path / "elsewhere" / "precious.txt"
    victim.parent.mkdir()
    victim.write_text("keep me")
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / ".report.html.tmp").symlink_to(victim)
    path = write_report(folder / "report.html", "t", [Section("s", text=["hello"])])
    assert victim.read_text() == "keep me"
    assert (folder / ".report.html.tmp").is_symlink()
    assert path.is_file() and not path.is_symlink() and "hello" in path.read_text()
    assert path.stat().st_mode & 0o444 == 0o444  # readable, as a report is for reading
    assert sorted(p.name for p in folder.iterdir()) == [".report.html.tmp", "report.html"]


def test_a_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    import mosaic.viz.report as report_module

    def no_rename(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report_module.os, "replace", no_rename)
    with pytest.raises(OSError, match="No space"):
        write_report(tmp_path / "report.html", "t", [Section("s", text=["x"])])
    assert list(tmp_path.iterdir()) == []


def _browser():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def test_report_opens_in_a_headless_browser(report, tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("no chromium on this machine (CI installs Debian's chromium; apt-get install chromium)")
    path, _ = report
    shot = tmp_path / "shot.png"
    args = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0", "--hide-scrollbars"]
    dom = subprocess.run([*args, "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "detections versus iteration" in dom.stdout and dom.stdout.count("<img") == 2
    console = [ln for ln in dom.stderr.splitlines() if "CONSOLE" in ln]
    assert console == [], console
    run = subprocess.run([*args, f"--screenshot={shot}", "--window-size=1200,1600", path.as_uri()], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 5  # the page rendered something, not a blank window
