"""Local clusters through cluster_client: results, worker settings, the dashboard over HTTP."""

from __future__ import annotations

import os
import time
import urllib.request

import dask
import dask.array as da
import distributed  # noqa: F401  (its config defaults must be loaded before dask.config.set below)
import numpy as np
import pytest
from dask.utils import parse_bytes

from mosaic.cluster import WORKER_MALLOC_ENV, _malloc_trim_env, cluster_client


def test_local_cluster_settings_and_result(tmp_path, monkeypatch):
    """Workers get the limits asked for, spill under local_directory and get mosaic's malloc settings
    even where the site's dask config has dropped dask's, and where an earlier nanny of this process
    left dask's trim threshold in its environment (which a nanny prefers to its config); a
    reduction equals numpy's."""
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    spec = {"kind": "local", "n_workers": 2, "threads_per_worker": 1, "memory_limit": "1GB", "local_directory": str(tmp_path), "dashboard_address": ":0"}
    rng = np.random.default_rng(7)
    data = rng.normal(size=(301, 257))

    # defined here so that cloudpickle ships it by value: worker processes cannot import the tests
    def worker_settings(dask_worker):
        return {
            "memory_limit": dask_worker.memory_manager.memory_limit,
            "local_directory": dask_worker.local_directory,
            "nthreads": dask_worker.state.nthreads,
            "malloc": {k: os.environ.get(k) for k in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_ARENA_MAX")},
            "tick ms": dask_worker.periodic_callbacks["tick"].callback_time,
        }

    with dask.config.set({"distributed.nanny.pre-spawn-environ": {}}), cluster_client(spec) as client:
        settings = client.run(worker_settings)
        x = da.from_array(data, chunks=(64, 50))
        got = client.compute((x**2).sum(axis=0) - x.mean()).result()
    assert len(settings) == 2
    for s in settings.values():
        assert s["memory_limit"] == parse_bytes("1GB")
        assert s["nthreads"] == 1
        assert s["local_directory"].startswith(str(tmp_path))
        assert s["malloc"] == {k: str(v) for k, v in WORKER_MALLOC_ENV.items()}
        assert s["tick ms"] == 1000  # QUIET_POLLING: the event loop measured every second, not every 20 ms
    np.testing.assert_allclose(got, (data**2).sum(axis=0) - data.mean(), rtol=1e-12)


def _in_block(site, environ=None):
    """The pre-spawn config and the malloc variables a nanny started in the block would see."""
    with dask.config.set({"distributed.nanny.pre-spawn-environ": site}), _malloc_trim_env():
        return dask.config.get("distributed.nanny.pre-spawn-environ"), {k: os.environ.get(k) for k in WORKER_MALLOC_ENV}


def test_malloc_settings_replace_dasks_default_but_keep_a_sites(monkeypatch):
    """dask's own 64 KiB trim threshold is replaced (it freezes glibc's mmap threshold: page faults
    took 40 % of the flagship's worker CPU); a value a site chose is kept, in dask's config or
    exported in the environment; the environment is as it was after the block."""
    ours = {k: str(v) for k, v in WORKER_MALLOC_ENV.items()}
    for key in WORKER_MALLOC_ENV:
        monkeypatch.delenv(key, raising=False)
    env, environ = _in_block({"MALLOC_TRIM_THRESHOLD_": 65536, "MALLOC_MMAP_THRESHOLD_": "1048576", "OMP_NUM_THREADS": 1})
    assert env == {"MALLOC_TRIM_THRESHOLD_": 128 << 20, "MALLOC_MMAP_THRESHOLD_": "1048576", "OMP_NUM_THREADS": 1, "MALLOC_ARENA_MAX": 2}
    assert environ == {"MALLOC_MMAP_THRESHOLD_": "1048576", "MALLOC_TRIM_THRESHOLD_": ours["MALLOC_TRIM_THRESHOLD_"], "MALLOC_ARENA_MAX": "2"}
    assert not any(k in os.environ for k in WORKER_MALLOC_ENV)
    env, _ = _in_block({"MALLOC_TRIM_THRESHOLD_": "1000000"})
    assert env == {"MALLOC_TRIM_THRESHOLD_": "1000000", "MALLOC_MMAP_THRESHOLD_": 32 << 20, "MALLOC_ARENA_MAX": 2}
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "2097152")  # the user's own
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")  # what an earlier nanny with dask's config leaves
    env, environ = _in_block({})
    assert env == {"MALLOC_MMAP_THRESHOLD_": "2097152", "MALLOC_TRIM_THRESHOLD_": 128 << 20, "MALLOC_ARENA_MAX": 2}
    assert environ == {"MALLOC_MMAP_THRESHOLD_": "2097152", "MALLOC_TRIM_THRESHOLD_": ours["MALLOC_TRIM_THRESHOLD_"], "MALLOC_ARENA_MAX": "2"}
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "65536"


def test_dask_config_spec_is_used_when_none_given():
    with dask.config.set({"mosaic.cluster": {"n_workers": 1, "threads_per_worker": 2, "processes": False, "dashboard_address": ":0"}}):
        with cluster_client() as client:
            info = client.scheduler_info()
    (worker,) = info["workers"].values()
    assert worker["nthreads"] == 2


def _slow_square(x, delay):
    time.sleep(delay)
    return x * x


def test_dashboard_answers_while_computing():
    pytest.importorskip("bokeh", reason="the dask dashboard needs bokeh>=3.1 (pip install 'dask[diagnostics]')")
    spec = {"kind": "local", "n_workers": 1, "threads_per_worker": 2, "processes": False, "dashboard_address": ":0"}
    with cluster_client(spec) as client:
        link = client.dashboard_link
        assert link.endswith("/status") and ":8787" not in link
        futures = client.map(_slow_square, range(4), delay=0.5)
        with urllib.request.urlopen(link, timeout=20) as response:
            status, body = response.status, response.read().decode()
        running = [f.status for f in futures]
        with urllib.request.urlopen(link.replace("/status", "/info/main/workers.html"), timeout=20) as response:
            workers_page = response.read().decode()
        results = client.gather(futures)
    assert status == 200
    assert "pending" in running, "the page was fetched after the computation ended"
    assert "bokeh" in body.lower()
    assert "Worker" in workers_page
    assert results == [0, 1, 4, 9]
