"""Forward models against direct sums and scipy.signal.fftconvolve; adjoints by dot-product tests."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
from hypothesis import given
from hypothesis import strategies as st

from mosaic.fusion.objective import finite_differences, finite_differences_adjoint, pca_subspace
from mosaic.fusion.operators import FusionOperators


def periodic_direct(x, psf):
    """``sum_m psf[m] x[n - (m - c)]`` by shifted copies: the periodic convolution, no FFT."""
    c0, c1 = psf.shape[0] // 2, psf.shape[1] // 2
    out = np.zeros_like(x)
    for i in range(psf.shape[0]):
        for j in range(psf.shape[1]):
            out += psf[i, j] * np.roll(x, (i - c0, j - c1), axis=(0, 1))
    return out


def periodic_fftconvolve(x, psf):
    """The periodic convolution as scipy's linear one on a wrap-padded image."""
    r0, r1 = psf.shape[0] // 2, psf.shape[1] // 2
    return scipy.signal.fftconvolve(np.pad(x, ((r0, r0), (r1, r1)), mode="wrap"), psf, mode="valid")


def test_nircam_matches_direct_sums(make_problem):
    ops, _, _, _ = make_problem(1, psf_size=5)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(ops.n_wave, *ops.shape))
    ref = np.zeros((ops.n_filter, *ops.shape))
    for lam in range(ops.n_wave):
        plane = periodic_direct(x[lam], ops.psf_m[lam])
        np.testing.assert_allclose(plane, periodic_fftconvolve(x[lam], ops.psf_m[lam]), rtol=0, atol=1e-12)
        ref += ops.throughput[:, lam, None, None] * plane
    np.testing.assert_allclose(ops.nircam(x), ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("factor", "offset"), [(3, None), (3, (0, 2)), (2, (1, 0)), (4, (3, 1))])
def test_nirspec_matches_convolution_then_sampling(make_problem, factor, offset):
    ops, _, _, _ = make_problem(3, factor=factor, coarse=(5, 4), offset=offset, psf_size=5)
    oy, ox = ops.offset if offset else (factor // 2, factor // 2)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(ops.n_wave, *ops.shape))
    ref = np.array([periodic_fftconvolve(p, k)[oy::factor, ox::factor] for p, k in zip(x, ops.psf_h, strict=True)])
    ref *= ops.ifu_throughput[:, None, None]
    assert ref.shape == (ops.n_wave, 5, 4)
    np.testing.assert_allclose(ops.nirspec(x), ref, rtol=0, atol=1e-12)


def test_asymmetric_psf_is_not_flipped(make_problem):
    """A one-pixel-off-centre PSF moves a point source by exactly that pixel, in that direction."""
    psf = np.zeros((5, 5))
    psf[2 + 1, 2 - 2] = 1.0  # one down, two left of the centre
    ops = FusionOperators(psf_m=psf, psf_h=psf, throughput=[[1.0, 0.0]], factor=3, coarse_shape=(6, 8))
    x = np.zeros((2, *ops.shape))
    x[0, 7, 9] = 1.0
    image = ops.nircam(x)[0]
    assert np.unravel_index(image.argmax(), image.shape) == (8, 7)
    assert image.max() == pytest.approx(1.0, abs=1e-12)


def _dot_rel(a, b):
    return abs(a - b) / max(abs(a), abs(b))


@given(seed=st.integers(0, 2**16), factor=st.integers(2, 4), ny=st.integers(3, 6), nx=st.integers(3, 6))
def test_adjoints_dot_product(make_problem, seed, factor, ny, nx):
    ops, _, _, _ = make_problem(seed, factor=factor, coarse=(ny, nx), psf_size=3)
    rng = np.random.default_rng(seed + 1)
    x = rng.normal(size=(ops.n_wave, *ops.shape))
    ym = rng.normal(size=(ops.n_filter, *ops.shape))
    yh = rng.normal(size=(ops.n_wave, ny, nx))
    assert _dot_rel(np.vdot(ops.nircam(x), ym), np.vdot(x, ops.nircam_adjoint(ym))) < 1e-10
    assert _dot_rel(np.vdot(ops.nirspec(x), yh), np.vdot(x, ops.nirspec_adjoint(yh))) < 1e-10
    z = rng.normal(size=(2, *ops.shape))
    g = rng.normal(size=(2, 2, *ops.shape))
    assert _dot_rel(np.vdot(finite_differences(z), g), np.vdot(z, finite_differences_adjoint(g))) < 1e-10


def test_finite_differences_are_forward_differences():
    z = np.arange(12.0).reshape(1, 3, 4) ** 2
    g = finite_differences(z)
    assert g[1, 0, 1, 2] == z[0, 1, 3] - z[0, 1, 2]
    assert g[0, 0, 2, 0] == z[0, 0, 0] - z[0, 2, 0]  # periodic


def test_pca_recovers_a_low_rank_cube():
    rng = np.random.default_rng(5)
    spectra = rng.random((40, 3))
    maps = rng.random((3, 9, 11))
    cube = np.tensordot(spectra, maps, axes=1)
    sub = pca_subspace(cube, 3)
    np.testing.assert_allclose(sub.mean, cube.reshape(40, -1).mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(sub.basis.T @ sub.basis, np.eye(3), atol=1e-12)
    assert sub.explained == pytest.approx(1.0, abs=1e-12)
    assert pca_subspace(cube, 2).explained < 0.999
    # a cube of three spectra is rebuilt by three components
    np.testing.assert_allclose(sub.expand(sub.project(cube)), cube, rtol=0, atol=1e-10)


def test_operator_errors_name_the_input(make_problem):
    ops, images, cube, _ = make_problem(0)
    with pytest.raises(ValueError, match="IFU cube: got shape"):
        ops.nirspec_adjoint(cube[:, :-1])
    with pytest.raises(ValueError, match="factor .* positive integer"):
        FusionOperators(psf_m=ops.psf_m, psf_h=ops.psf_h, throughput=ops.throughput, factor=2.5, coarse_shape=(4, 4))
    with pytest.raises(ValueError, match="NIRCam PSF: PSF sides must be odd"):
        FusionOperators(psf_m=np.ones((4, 4)), psf_h=ops.psf_h, throughput=ops.throughput, factor=3, coarse_shape=(4, 4))
