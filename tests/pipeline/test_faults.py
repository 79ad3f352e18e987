"""Faults: a worker killed during a run, and the whole run killed and started again.

Both must give products identical to the last bit to an undisturbed run: every reduction in the
drizzle and UPDC graphs adds its parts in an order fixed by the graph, not by which worker
finishes first, and a resumed run reads back the iterates the killed one stored.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from mosaic.config import field_from_mapping, load_field
from mosaic.io.store import Store
from mosaic.pipeline import run_field

from .conftest import field_mapping, write_yaml

distributed = pytest.importorskip("distributed")

EXTENSIONS = ("SCI", "ERR", "CON", "WHT", "VAR_POISSON", "VAR_RNOISE", "VAR_FLAT")


def assert_same_files(a: Path, b: Path) -> list[str]:
    """Every _i2d.fits file of ``a`` equals its namesake in ``b``, extension by extension, bit for bit."""
    names = sorted(p.name for p in a.glob("*_i2d.fits"))
    assert names == sorted(p.name for p in b.glob("*_i2d.fits"))
    for name in names:
        with fits.open(a / name) as fa, fits.open(b / name) as fb:
            for ext in EXTENSIONS:
                if ext in fa:
                    x, y = fa[ext].data, fb[ext].data
                    assert x.dtype == y.dtype
                    # bit for bit, NaNs included
                    assert np.array_equal(x.view(np.uint8), y.view(np.uint8)), f"{name}[{ext}] differs"
    return names


def assert_same_store(a: Store, b: Store, field: str, products) -> None:
    for name in products:
        x, y = a.read_product(field, "F200W", name), b.read_product(field, "F200W", name)
        for v in x.data_vars:
            assert np.array_equal(x[v].values.view(np.uint8), y[v].values.view(np.uint8)), f"{name}/{v} differs"


def _wait_for(predicate, timeout: float, interval: float = 0.01) -> bool:
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if predicate():
            return True
        time.sleep(interval)
    return False


def test_killed_worker_gives_the_products_of_an_undisturbed_run(tmp_path, tiny_field):
    raw = field_mapping(tiny_field, grid={"tile": 160}, updc={"iterations": 2, "save": [1, 2]})
    undisturbed = field_from_mapping({**raw, "products": {"outdir": "a", "previews": False}}, base=tmp_path)
    disturbed = field_from_mapping({**raw, "products": {"outdir": "b", "previews": False}}, base=tmp_path)
    # the reference: threads here, no cluster
    assert run_field(undisturbed, start_cluster=False).ok
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        distributed.Client(cluster) as client,
    ):
        pids = client.run(os.getpid)
        victim, pid = sorted(pids.items())[0]
        store = Store(disturbed.store_path)
        seen = {}

        def running_on_victim(dask_scheduler):
            ws = dask_scheduler.workers.get(victim)
            return ws is not None and len(ws.processing) > 0

        def killer():
            # once iteration 0 is stored (the first tasks are done), and while the victim works
            if not _wait_for(lambda: store.path.exists() and "updc/iter_00" in _manifest(store, "tiny"), 60):
                return
            _wait_for(lambda: client.run_on_scheduler(running_on_victim), 30, 0.005)
            seen["before"] = set(_manifest(store, "tiny"))
            os.kill(pid, signal.SIGKILL)
            seen["killed"] = True

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        report = run_field(disturbed, client=client)
        thread.join(timeout=5)
        assert seen.get("killed"), "the worker was not killed"
        assert "updc/iter_02" not in seen["before"], "the kill came after the run"
        assert report.ok
        # the nanny started a new process for the killed worker
        assert _wait_for(lambda: pid not in client.run(os.getpid).values(), 30, 0.2)
    names = assert_same_files(undisturbed.outdir, disturbed.outdir)
    assert names == ["tiny_f200w_drizzle_i2d.fits", "tiny_f200w_updc_iter01_i2d.fits", "tiny_f200w_updc_iter02_i2d.fits"]
    assert_same_store(Store(undisturbed.store_path), store, "tiny", ["drizzle", "updc/norm", *(f"updc/iter_{n:02d}" for n in range(3))])


def _manifest(store: Store, field: str) -> dict:
    if not (store.path / field / "F200W" / "zarr.json").exists():
        return {}
    return store.manifest(field, "F200W")


def test_killed_run_resumes_to_the_products_of_an_undisturbed_run(tmp_path, tiny_field):
    n_iter = 3
    raw = field_mapping(tiny_field, grid={"tile": 160}, updc={"iterations": n_iter, "save": [2, n_iter]})
    reference = field_from_mapping({**raw, "products": {"outdir": "ref", "previews": False}}, base=tmp_path)
    assert run_field(reference, start_cluster=False).ok

    path = write_yaml(tmp_path / "field.yaml", {**raw, "products": {"outdir": "run", "previews": False}})
    config = load_field(path)
    store = Store(config.store_path)
    env = {**os.environ, "MOSAIC_PROGRESS": "0"}
    log_file = tmp_path / "killed.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mosaic", "--log-file", str(log_file), "run", str(path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    try:
        done = _wait_for(lambda: "updc/iter_02" in _manifest(store, "tiny"), 120)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert done, f"iteration 2 never completed; log:\n{log_file.read_text()}"
    before = _manifest(store, "tiny")
    assert "updc/iter_02" in before
    assert f"updc/iter_{n_iter:02d}" not in before, "the run finished before the kill"
    assert before["pipeline/run"]["status"] == "started"
    stamps = {n: _mtime(store, f"updc/iter_{n:02d}") for n in range(3)}

    report = run_field(load_field(path))  # the config's cluster: threads in this process
    assert report.ok
    rows = {r.step: r for r in report.bands[0].rows}
    assert rows["drizzle"].status == "resumed"
    assert rows["updc"].detail == "updc: computed 3; from the store 0-2"
    after = _manifest(store, "tiny")
    for n in range(3):  # iterations <= 2 were not recomputed: their records and files are the killed run's
        key = f"updc/iter_{n:02d}"
        assert after[key]["completed"] == before[key]["completed"]
        assert _mtime(store, key) == stamps[n]
    assert after["pipeline/run"]["status"] == "complete"
    assert_same_files(reference.outdir, config.outdir)
    assert_same_store(Store(reference.store_path), store, "tiny", ["drizzle", *(f"updc/iter_{n:02d}" for n in range(n_iter + 1))])


def _mtime(store: Store, name: str) -> int:
    return (store.product_path("tiny", "F200W", name) / "sci" / "zarr.json").stat().st_mtime_ns


def test_damaged_checkpoint_and_product_are_recomputed_to_the_same_bits(tmp_path, tiny_field):
    """A chunk of a checkpoint deleted, one of the drizzle product given random bytes: the re-run
    recomputes both (not NaN, not 'complete, not redone') and ends with the products of the first run."""
    raw = field_mapping(tiny_field, grid={"tile": 64}, updc={"iterations": 2, "save": [2]})
    config = field_from_mapping({**raw, "products": {"outdir": "run", "previews": False}}, base=tmp_path)
    assert run_field(config, start_cluster=False).ok
    reference = tmp_path / "reference"
    reference.mkdir()
    for p in config.outdir.glob("*_i2d.fits"):
        (reference / p.name).write_bytes(p.read_bytes())
    store = Store(config.store_path)
    iter1 = store.product_path("tiny", "F200W", "updc/iter_01") / "sci" / "c"
    drizzle = store.product_path("tiny", "F200W", "drizzle") / "sci" / "c"
    chunk = sorted(p for p in iter1.rglob("*") if p.is_file())[0]
    chunk.unlink()
    victim = sorted(p for p in drizzle.rglob("*") if p.is_file())[-1]
    victim.write_bytes(np.random.default_rng(1).bytes(victim.stat().st_size))
    report = run_field(config, start_cluster=False)
    assert report.ok
    rows = {r.step: r for r in report.bands[0].rows}
    assert rows["drizzle"].status == "done"
    assert rows["updc"].detail == "updc: computed 1; from the store 0, 2"
    assert Store(config.store_path).damaged("tiny", "F200W") == {}
    assert_same_files(reference, config.outdir)
