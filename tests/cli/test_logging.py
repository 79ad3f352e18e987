"""The ``mosaic`` command's log: our INFO lines shown, distributed's INFO chatter not."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
from astropy.io import fits


def _stats_on_a_cluster(tmp_path, *prelude: str) -> subprocess.CompletedProcess:
    image = tmp_path / "img.fits"
    fits.PrimaryHDU(np.random.default_rng(1).normal(size=(64, 64)).astype(np.float32)).writeto(image)
    argv = ["--log-level", "INFO", "stats", str(image), "--workers", "1", "--tile", "32"]
    code = "\n".join([*prelude, "import sys", "from mosaic.cli import main", f"sys.exit(main({argv!r}))"])
    env = {**os.environ, "MOSAIC_PROGRESS": "0"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False)


def test_a_local_cluster_does_not_log_distributed_info(tmp_path):
    out = _stats_on_a_cluster(tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    # the command's own INFO lines are there (the log is not simply silenced) ...
    assert any(" INFO mosaic." in line for line in lines), out.stderr
    # ... but not those of the scheduler, nanny and worker that the cluster started
    chatter = [line for line in lines if "distributed" in line and "INFO" in line]
    assert not chatter, "\n".join(chatter)


def test_distributed_info_would_show_without_the_filter(tmp_path):
    """The check above can fail: with the handler filter disabled, distributed's INFO lines return."""
    out = _stats_on_a_cluster(tmp_path, "import mosaic.cli", "mosaic.cli._QuietLibraries.filter = lambda self, record: True")
    assert out.returncode == 0, out.stderr
    assert any("distributed" in line and "INFO" in line for line in out.stderr.splitlines()), out.stderr
