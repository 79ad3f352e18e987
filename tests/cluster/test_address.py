"""Kind ``address``: a scheduler and a worker started separately (``dask scheduler``/``dask worker``
as subprocesses on loopback), reached by scheduler file or address, optionally over TLS."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import dask
import dask.array as da
import numpy as np
import pytest

from mosaic.cluster import cluster_client

TIMEOUT = 60


def _wait_for(path, proc, what):
    deadline = time.monotonic() + TIMEOUT
    while not path.exists() or not path.read_text().strip():
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode} before writing {path.name}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not write {path.name} in {TIMEOUT} s")
        time.sleep(0.1)


def _start(args, log):
    return subprocess.Popen([sys.executable, "-m", "dask", *args], stdout=log, stderr=subprocess.STDOUT)


def _stop(procs):
    """Whatever is still running after the test (a failure) is terminated, then killed."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _run_separate_cluster(tmp_path, *, tls=()):
    sched_file = tmp_path / "scheduler.json"
    log = (tmp_path / "dask.log").open("w")
    procs = []
    common = ["--host", "127.0.0.1", *tls]
    try:
        procs.append(_start(["scheduler", "--port", "0", "--dashboard-address", ":0", "--scheduler-file", str(sched_file), *common], log))
        _wait_for(sched_file, procs[0], "dask scheduler")
        procs.append(_start(["worker", "--scheduler-file", str(sched_file), "--nthreads", "2", "--memory-limit", "1GB",
                             "--no-dashboard", "--local-directory", str(tmp_path / "spill"), *common], log))
        yield sched_file, procs
    finally:
        _stop(procs)
        log.close()


@pytest.fixture
def separate_cluster(tmp_path):
    yield from _run_separate_cluster(tmp_path)


def _check_sum_and_shutdown(client, procs, tmp_path):
    client.wait_for_workers(1, timeout=TIMEOUT)
    data = np.random.default_rng(3).integers(0, 1000, size=(300, 211)).astype(np.float64)
    x = da.from_array(data, chunks=(77, 50))
    np.testing.assert_array_equal(client.compute(x.sum(axis=1)).result(), data.sum(axis=1))
    assert client.compute(x.T @ x).result() == pytest.approx(data.T @ data, rel=1e-12)
    client.shutdown()  # the scheduler tells the worker to close, then stops
    codes = [p.wait(TIMEOUT) for p in procs]
    assert codes == [0, 0], (tmp_path / "dask.log").read_text()[-3000:]


def test_scheduler_file_and_address(separate_cluster, tmp_path):
    """Connect by scheduler file, leave the cluster running; connect again by address, compute, shut down."""
    sched_file, procs = separate_cluster
    address = json.loads(sched_file.read_text())["address"]
    assert address.startswith("tcp://127.0.0.1:")
    with cluster_client({"kind": "address", "scheduler_file": sched_file, "timeout": "30s"}) as client:
        assert client.scheduler.address == address
        client.wait_for_workers(1, timeout=TIMEOUT)
        assert client.compute(da.arange(10_001, chunks=1000).sum()).result() == 10_000 * 10_001 // 2
    assert [p.poll() for p in procs] == [None, None]  # closing the client leaves the cluster alone
    before = dask.config.get("scheduler", None)
    with cluster_client({"kind": "address", "address": address}) as client:
        assert client.scheduler.address == address
        _check_sum_and_shutdown(client, procs, tmp_path)
    # after shutdown() the client leaves dask's scheduler at dask.distributed; cluster_client puts it back
    assert dask.config.get("scheduler", None) == before
    assert da.ones(5, chunks=2).sum().compute() == 5


def _self_signed(tmp_path):
    """One self-signed certificate serving as CA, scheduler, worker and client certificate."""
    cert, key = tmp_path / "tls-cert.pem", tmp_path / "tls-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


def test_tls(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make a certificate for the TLS test")
    cert, key = _self_signed(tmp_path)
    tls = ["--protocol", "tls", "--tls-ca-file", str(cert), "--tls-cert", str(cert), "--tls-key", str(key)]
    gen = _run_separate_cluster(tmp_path, tls=tls)
    sched_file, procs = next(gen)
    try:
        address = json.loads(sched_file.read_text())["address"]
        assert address.startswith("tls://")
        with pytest.raises(ValueError, match=r"a TLS scheduler; expected 'tls_ca_file', 'tls_client_cert' and 'tls_client_key'"):
            with cluster_client({"kind": "address", "address": address}):
                pass
        spec = {"kind": "address", "address": address, "tls_ca_file": cert, "tls_client_cert": cert, "tls_client_key": key,
                "require_encryption": True}
        with cluster_client(spec) as client:
            _check_sum_and_shutdown(client, procs, tmp_path)
    finally:
        gen.close()
