"""The README's walkthrough, run as a newcomer runs it: every ``bash`` and ``python`` block after
"Set up", in order, in an empty folder holding only a copy of ``examples/``, each command on what
the commands before it made.

The set-up blocks (install, demo, tests) are tested elsewhere (``tests/test_demo.py``, CI itself);
a block after a ``<!-- walkthrough: skip -->`` line is shown to users but not run here (it says
why beside it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from astropy.io import fits
from astropy.table import Table

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SKIP = "<!-- walkthrough: skip -->"


def walkthrough_blocks(text: str) -> list[tuple[str, str]]:
    """``(language, code)`` of the README's runnable blocks after its "Set up" section, in order."""
    lines = text.split("\n## What is here", 1)[1].splitlines()
    blocks, previous, i = [], "", 0
    while i < len(lines):
        fence = re.fullmatch(r"```(\w*)", lines[i])
        if not fence:
            previous = lines[i].strip() or previous
            i += 1
            continue
        end = lines.index("```", i + 1)
        if fence[1] in ("bash", "python") and previous != SKIP:
            blocks.append((fence[1], "\n".join(lines[i + 1 : end]) + "\n"))
        previous, i = "", end + 1
    return blocks


def test_the_walkthrough_blocks_are_found():
    blocks = walkthrough_blocks(README.read_text())
    commands = "\n".join(code for lang, code in blocks if lang == "bash")
    # the commands the README teaches, each in a block that runs
    for command in ("simulate", "run", "batch", "updc", "outliers", "destripe", "background", "filter", "stats", "psf",
                    "detect", "match", "masks", "preview", "rgb", "drizzle"):
        assert re.search(rf"(?m)^(for .*do )?mosaic {command} ", commands), command
    assert "--flagship" not in commands  # 20 minutes: shown, not run
    assert any(lang == "python" for lang, _ in blocks)


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory):
    here = tmp_path_factory.mktemp("newcomer")
    shutil.copytree(ROOT / "examples", here / "examples")
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "MOSAIC_PROGRESS": "0"}
    for lang, code in walkthrough_blocks(README.read_text()):
        cmd = ["bash", "-euo", "pipefail", "-c", code] if lang == "bash" else [sys.executable, "-c", code]
        run = subprocess.run(cmd, cwd=here, env=env, capture_output=True, text=True, timeout=900)
        assert run.returncode == 0, f"README block failed:\n{code}\n--- stderr:\n{run.stderr[-3000:]}"
    return here


def test_the_walkthrough_runs_in_order_from_an_empty_folder(walkthrough):
    here = walkthrough
    # what the commands promise to make, checked against independent reads of the files
    for n in (0, 5, 10):
        with fits.open(here / "updc" / f"updc_iter{n:02d}_i2d.fits") as hdul:
            assert {"SCI", "ERR", "WHT"} <= {h.name for h in hdul}
            assert hdul["SCI"].data.shape == fits.getdata(here / "f200w_i2d.fits", "SCI").shape
    assert sorted(p.name for p in (here / "prep").glob("*_1fc.fits")) == sorted(
        p.name.replace("_cal", "_1fc") for p in (here / "field").glob("*_cal.fits"))
    truth = Table.read(here / "field" / "truth.ecsv")
    cat = Table.read(here / "cat_iter00.ecsv")
    assert 0 < len(cat) and len(truth) > 0
    assert (here / "examples" / "out" / "sim" / "sim_f200w_updc_iter10_i2d.fits").is_file()
    assert (here / "rgb.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
