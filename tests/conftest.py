"""Shared, seeded fixtures: small simulated fields written once per test session."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from mosaic.simulate import SimConfig, simulate_field

# bars would clutter the test log; hypothesis runs few, deterministic examples on CI
os.environ.setdefault("MOSAIC_PROGRESS", "0")
settings.register_profile("ci", max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=60, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

#: the end-to-end files, minutes each: collected first, so that with ``-n 2 --dist loadfile`` (the
#: README's test command) they start at once and the short files fill the other process around them
LONGEST_FIRST = ("test_readme.py", "test_demo.py", "test_notebooks.py", "tests/service/test_runs.py", "test_updc_noise.py")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        path = item.nodeid.split("::")[0]
        return next((i for i, name in enumerate(LONGEST_FIRST) if path.endswith(name)), len(LONGEST_FIRST))

    items.sort(key=rank)  # stable: the order within a file, and of the other files, is kept


@pytest.fixture(scope="session")
def small_field(tmp_path_factory):
    """Four dithered, SIP-distorted SW exposures of 128² with noise and artifacts."""
    out = tmp_path_factory.mktemp("small_field")
    return simulate_field(out, SimConfig(size=128, psf_size=51, n_exposures=4, seed=11, n_galaxies=12, n_stars=4, n_pairs=1))


@pytest.fixture(scope="session")
def noiseless_field(tmp_path_factory):
    """The same kind of field without noise, artifacts or sky."""
    out = tmp_path_factory.mktemp("noiseless_field")
    cfg = SimConfig(size=128, psf_size=51, n_exposures=2, seed=5, n_galaxies=6, n_stars=4, n_pairs=1, noiseless=True, background=0.0, icl=False)
    return simulate_field(out, cfg)


@pytest.fixture
def cupy():
    """CuPy with a CUDA device, or the test is skipped (CI has no GPU)."""
    cp = pytest.importorskip("cupy")
    try:
        n = cp.cuda.runtime.getDeviceCount()
    except cp.cuda.runtime.CUDARuntimeError:
        n = 0
    if n < 1:
        pytest.skip("no CUDA device")
    return cp
