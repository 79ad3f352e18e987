"""Seeded random fusion problems: asymmetric, wavelength-dependent PSFs, random throughputs."""

from __future__ import annotations

import numpy as np
import pytest

from mosaic.fusion.objective import pca_subspace
from mosaic.fusion.operators import FusionOperators


def random_psfs(rng, n_wave, size):
    """Positive, asymmetric (not centrosymmetric) PSFs of odd ``size`` that change with wavelength, each summing to 1."""
    yy, xx = np.mgrid[:size, :size] - size // 2
    psfs = []
    for i in range(n_wave):
        s = 0.8 + 1.2 * i / max(n_wave - 1, 1)
        core = np.exp(-((yy - 0.4) ** 2 + (xx + 0.3) ** 2) / (2 * s**2))
        tail = 0.3 * np.exp(-((yy - 1.5) ** 2 + (xx - 1.0) ** 2) / (2 * (0.6 * s) ** 2))
        p = core + tail + 0.02 * rng.random((size, size))
        psfs.append(p / p.sum())
    return np.array(psfs)


@pytest.fixture(scope="session")
def make_problem():
    """``make_problem(seed, ...) -> (ops, images, cube, subspace)`` with data that no low-rank cube fits exactly."""

    def _make(seed=0, *, n_wave=10, n_filter=3, coarse=(6, 8), factor=3, psf_size=7, k=3, offset=None):
        rng = np.random.default_rng(seed)
        throughput = rng.random((n_filter, n_wave)) * (rng.random((n_filter, n_wave)) < 0.7)
        ops = FusionOperators(
            psf_m=random_psfs(rng, n_wave, psf_size),
            psf_h=random_psfs(rng, n_wave, psf_size + 2),
            throughput=throughput,
            factor=factor,
            coarse_shape=coarse,
            offset=offset,
            ifu_throughput=0.5 + rng.random(n_wave),
        )
        images = rng.normal(size=(n_filter, *ops.shape)) + 1.0
        cube = rng.normal(size=(n_wave, *coarse)) + 2.0
        # the data are noise with no spectral signal to project a mean on: the IFU's mean as it is
        return ops, images, cube, pca_subspace(cube, k, mean="data")

    return _make
