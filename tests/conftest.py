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
