"""Workers as SLURM jobs through dask-jobqueue, on the single-node SLURM that ``.ci/slurm/setup.sh``
starts (CI runs it from ``.ci/run``; it exports MOSAIC_TEST_SLURM=1). Where SLURM is not up the
tests are skipped with the reason the set-up gave (shown by ``pytest -ra``).

The job runs this interpreter (``sys.executable``, the virtual environment's python) and shares
the local disk with the test, as a cluster shares its parallel file system.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import yaml

from mosaic.cluster import WORKER_MALLOC_ENV, cluster_client

pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is not installed (pip install 'mosaic-jwst[hpc]')")

WAIT = 120  # seconds for a job to start and its worker to register


def _slurm_or_skip() -> None:
    if os.environ.get("MOSAIC_TEST_SLURM") != "1":
        reason = os.environ.get("MOSAIC_TEST_SLURM_SKIP") or "MOSAIC_TEST_SLURM is not 1 (run '. .ci/slurm/setup.sh' as root to start a single-node SLURM)"
        pytest.skip(f"no SLURM: {reason}")
    if shutil.which("sbatch") is None:
        pytest.skip("no SLURM: MOSAIC_TEST_SLURM=1 but sbatch is not on PATH")
    state = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30)
    # 'comp': the previous test's job is still completing; the node takes the next job after it
    if state.returncode != 0 or not ({"idle", "mix", "alloc", "comp"} & {s.rstrip("*~#$@") for s in state.stdout.split()}):
        pytest.skip(f"no SLURM: sinfo reports no usable node ({state.stdout.strip() or state.stderr.strip()})")


def slurm_spec(tmp_path: Path, **more) -> dict:
    """One job, one single-threaded worker; loopback (the node's NodeAddr) for scheduler and worker."""
    return {
        "kind": "slurm",
        "cores": 1,
        "memory": "2GB",
        "processes": 1,
        "walltime": "00:10:00",
        "lifetime": "9m",
        "interface": "lo",
        "n_jobs": 1,
        "job_name": "mosaic-test",
        "log_directory": str(tmp_path / "jobs"),
        "local_directory": str(tmp_path / "spill"),
        "dashboard_address": ":0",
        **more,
    }


@pytest.mark.timeout(240)
def test_slurm_workers_compute_an_array_sum(tmp_path):
    _slurm_or_skip()
    data = np.random.default_rng(5).normal(size=(200, 333))
    with cluster_client(slurm_spec(tmp_path)) as client:
        client.wait_for_workers(1, timeout=WAIT)
        job_ids = {w["name"] for w in client.scheduler_info()["workers"].values()}
        env = client.run(lambda: (os.environ.get("SLURM_JOB_ID"), os.environ.get("SLURM_JOB_NAME")))
        malloc = client.run(lambda: {k: os.environ.get(k) for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_ARENA_MAX")})
        total = client.compute(da.from_array(data, chunks=(64, 100)).sum()).result()
    assert total == pytest.approx(data.sum(), rel=1e-12)
    ((job_id, job_name),) = env.values()
    assert job_id is not None and job_name == "mosaic-test", "the worker did not run inside a SLURM job"
    assert any(name.startswith("SLURMCluster-") for name in job_ids)
    assert list((tmp_path / "jobs").glob(f"mosaic-test-{job_id}.err"))
    # the job script's prologue gave the worker's nanny mosaic's malloc settings
    assert list(malloc.values()) == [{k: str(v) for k, v in WORKER_MALLOC_ENV.items()}]


def _field_config(field, outdir: Path, cluster) -> dict:
    return {
        "field": "tiny",
        "bands": {"F200W": {"inputs": str(Path(field.outdir) / "*_cal.fits"), "psf": str(field.outdir)}},
        "grid": {"tile": 128},
        "updc": {"iterations": 1, "save": [1]},
        "products": {"outdir": str(outdir), "previews": False},
        "cluster": cluster,
    }


@pytest.mark.timeout(300)
def test_mosaic_run_on_slurm_workers_equals_threads_here(tmp_path):
    """``mosaic run`` with a ``cluster: {kind: slurm}`` config gives the products of a run with threads here."""
    _slurm_or_skip()
    if importlib.util.find_spec("mosaic.pipeline") is None or not hasattr(importlib.import_module("mosaic.pipeline"), "run_field"):
        pytest.skip("mosaic.pipeline.run_field does not exist yet: the `mosaic run` check needs it")
    from astropy.io import fits

    from mosaic.cli import main
    from mosaic.config import field_from_mapping
    from mosaic.pipeline import run_field
    from mosaic.simulate import SimConfig, simulate_field

    field = simulate_field(tmp_path / "field", SimConfig(size=64, psf_size=15, n_exposures=2, seed=7, n_galaxies=3, n_stars=2, n_pairs=1, n_wavelengths=2))
    reference = field_from_mapping(_field_config(field, tmp_path / "ref", None), base=tmp_path)
    assert run_field(reference, start_cluster=False).ok

    config = tmp_path / "field.yaml"
    config.write_text(yaml.safe_dump(_field_config(field, tmp_path / "slurm", slurm_spec(tmp_path)), sort_keys=False))
    assert main(["run", str(config)]) == 0
    # the work ran in a SLURM job: its worker registered with the run's scheduler
    logs = "".join(p.read_text() for p in (tmp_path / "jobs").glob("mosaic-test-*.err"))
    assert "Registered to:" in logs, logs[-2000:]

    names = sorted(p.name for p in (tmp_path / "ref").glob("*_i2d.fits"))
    assert names and names == sorted(p.name for p in (tmp_path / "slurm").glob("*_i2d.fits"))
    for name in names:
        with fits.open(tmp_path / "ref" / name) as a, fits.open(tmp_path / "slurm" / name) as b:
            for ext in ("SCI", "ERR", "WHT"):
                np.testing.assert_array_equal(a[ext].data, b[ext].data, err_msg=f"{name}[{ext}]")


DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "slurm"


@pytest.mark.timeout(240)
def test_deploy_scheduler_and_worker_jobs(tmp_path):
    """deploy/slurm/scheduler.sbatch and workers.sbatch as jobs, reached with kind ``address``
    through their scheduler file; the worker's memory limit is 90 % of the job's memory."""
    _slurm_or_skip()
    sched_file = tmp_path / "scheduler.json"
    env = {**os.environ, "MOSAIC_PYTHON": sys.executable, "MOSAIC_SCHEDULER_FILE": str(sched_file), "MOSAIC_INTERFACE": "lo",
           "MOSAIC_DASHBOARD": "0", "MOSAIC_LIFETIME": "8m", "MOSAIC_LIFETIME_STAGGER": "30s", "MOSAIC_SCRATCH": str(tmp_path)}
    common = ["sbatch", "--parsable", "--time=00:10:00", "--chdir", str(tmp_path), "-o", str(tmp_path / "%x-%j.log")]
    jobs = []
    try:
        for script, resources in [("scheduler.sbatch", ["--cpus-per-task=1", "--mem=1G"]),
                                  ("workers.sbatch", ["--ntasks-per-node=1", "--cpus-per-task=1", "--mem=2G"])]:
            out = subprocess.run([*common, *resources, str(DEPLOY / script)], env=env, capture_output=True, text=True, timeout=30, check=True)
            jobs.append(out.stdout.strip().split(";")[0])
        data = np.random.default_rng(9).normal(size=(150, 410))
        deadline = time.monotonic() + WAIT
        while not sched_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        with cluster_client({"kind": "address", "scheduler_file": sched_file, "timeout": "60s"}) as client:
            client.wait_for_workers(1, timeout=WAIT)
            (worker,) = client.scheduler_info()["workers"].values()
            malloc = client.run(lambda: {k: os.environ.get(k) for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_ARENA_MAX")})
            got = client.compute(da.from_array(data, chunks=(50, 128)).std(axis=0)).result()
    finally:
        if jobs:
            subprocess.run(["scancel", *jobs], check=False, timeout=30)
    assert worker["memory_limit"] == 2048 * 9 // 10 * 2**20
    assert list(malloc.values()) == [{k: str(v) for k, v in WORKER_MALLOC_ENV.items()}]  # set by workers.sbatch
    np.testing.assert_allclose(got, data.std(axis=0), rtol=1e-12)
