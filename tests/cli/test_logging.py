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


def test_a_library_warning_is_one_log_line_and_shutdown_is_quiet(tmp_path):
    # a warning raised inside the command, with a line break in its message, as library warnings have
    prelude = [
        "import warnings, mosaic.image.stats as s",
        "_orig = s.image_statistics",
        "def _warns(*a, **k):",
        "    warnings.warn('Port 8787 is already in use.\\nPerhaps you already have a cluster running?', UserWarning, stacklevel=1)",
        "    return _orig(*a, **k)",
        "s.image_statistics = _warns",
    ]
    out = _stats_on_a_cluster(tmp_path, *prelude)
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    hits = [i for i, line in enumerate(lines) if "Port 8787 is already in use." in line]
    assert len(hits) == 1, out.stderr
    line = lines[hits[0]]
    assert " WARNING py.warnings: UserWarning: Port 8787 is already in use. Perhaps you already have a cluster running?" in line
    # no source line or continuation after it
    assert hits[0] == len(lines) - 1 or lines[hits[0] + 1][:2].isdigit(), out.stderr
    assert not [x for x in lines if "still alive after" in x or "killed by signal" in x], out.stderr


def test_the_nannys_kill_at_shutdown_is_demoted_to_debug():
    import logging

    from mosaic.cli import _QuietShutdown

    def record(msg, *args):
        return logging.LogRecord("distributed.nanny", logging.WARNING, __file__, 1, msg, args, None)

    f = _QuietShutdown()
    for r in (record("Worker process still alive after %.1f seconds, killing", 4.0), record("Worker process %d was killed by signal %d", 123, 9)):
        assert f.filter(r) and r.levelno == logging.DEBUG
    other = record("Restarting worker")
    assert f.filter(other) and other.levelno == logging.WARNING


def test_the_commands_local_cluster_serves_its_dashboard_on_loopback():
    from mosaic.cli._common import local_client

    with local_client(1) as client:
        host = client.dashboard_link.split("//", 1)[1].split(":", 1)[0]
        bound = client.run_on_scheduler(lambda dask_scheduler: sorted({s.getsockname()[0] for srv in [dask_scheduler.http_server] for s in srv._sockets.values()}))
    assert host == "127.0.0.1" and bound == ["127.0.0.1"]
