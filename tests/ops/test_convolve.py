"""The FFT convolution operator against scipy.signal.fftconvolve and np.dot.

Tolerances: float64 results match scipy's float64 ``fftconvolve`` to ``1e-12 * max|ref|``;
float32 results are the float64 reference rounded to float32: within one float32 ulp of each
pixel's own value (``2**-23 * |ref|``) plus ``1e-12 * max|ref|`` of FFT round-off.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.signal import fftconvolve

from mosaic.ops.convolve import (
    MODES,
    PreparedPSF,
    fft_convolve,
    good_fft_shape,
    psf_halo,
    result_dtype,
)

ULP32 = 2.0**-23


def _psf(rng, shape):
    psf = rng.random(shape) + 0.05
    return psf / psf.sum()


def _reference(image, psf, *, adjoint=False, mode="same"):
    kernel = psf[::-1, ::-1] if adjoint else psf
    return fftconvolve(np.asarray(image, dtype=np.float64), kernel, mode=mode)


def _assert_matches(out, ref):
    assert out.shape == ref.shape
    scale = np.abs(ref).max()
    if out.dtype == np.float32:
        np.testing.assert_array_less(np.abs(out - ref), ULP32 * np.abs(ref) + 1e-12 * scale + 1e-300)
    else:
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-12 * scale)


odd = st.integers(0, 30).map(lambda r: 2 * r + 1)


@given(
    ny=st.integers(1, 150),
    nx=st.integers(1, 150),
    py=odd,
    px=odd,
    mode=st.sampled_from(MODES),
    adjoint=st.booleans(),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_matches_scipy(ny, nx, py, px, mode, adjoint, dtype, seed):
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(ny, nx)).astype(dtype)
    psf = _psf(rng, (py, px))
    if mode == "valid" and (ny < py or nx < px):
        with pytest.raises(ValueError, match="valid"):
            fft_convolve(image, psf, mode=mode)
        return
    out = fft_convolve(image, psf, adjoint=adjoint, mode=mode)
    assert out.dtype == dtype
    _assert_matches(out, _reference(image, psf, adjoint=adjoint, mode=mode))


def test_float32_equals_scipy_float32():
    rng = np.random.default_rng(3)
    image = rng.normal(size=(97, 130)).astype(np.float32)
    psf = _psf(rng, (41, 41)).astype(np.float32)
    ref = fftconvolve(image, psf, mode="same")  # scipy computes this one in float32
    assert ref.dtype == np.float32
    out = fft_convolve(image, psf)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, psf_shape", [((64, 45), (21, 21)), ((12, 9), (31, 17)), ((50, 50), (1, 1))])
def test_adjoint_dot_product(dtype, shape, psf_shape):
    rng = np.random.default_rng(7)
    x = rng.normal(size=shape).astype(dtype)
    y = rng.normal(size=shape).astype(dtype)
    psf = _psf(rng, psf_shape)
    bx = fft_convolve(x, psf).astype(np.float64)
    bty = fft_convolve(y, psf, adjoint=True).astype(np.float64)
    lhs = np.dot(bx.ravel(), y.astype(np.float64).ravel())
    rhs = np.dot(x.astype(np.float64).ravel(), bty.ravel())
    bound = np.linalg.norm(bx) * np.linalg.norm(y)
    rtol = 1e-6 if dtype == np.float32 else 1e-12
    assert abs(lhs - rhs) <= rtol * bound


def test_adjoint_is_flip_for_symmetric_psf():
    rng = np.random.default_rng(2)
    image = rng.normal(size=(40, 33))
    psf = _psf(rng, (9, 9))
    psf = psf + psf[::-1, ::-1]
    np.testing.assert_allclose(fft_convolve(image, psf, adjoint=True), fft_convolve(image, psf), atol=1e-13)


def test_integer_image_gives_float64():
    image = np.arange(30 * 20).reshape(30, 20)
    psf = _psf(np.random.default_rng(0), (5, 5))
    out = fft_convolve(image, psf)
    assert out.dtype == np.float64
    _assert_matches(out, _reference(image, psf))


def test_prepared_psf_reuses_transfer_function():
    rng = np.random.default_rng(4)
    psf = _psf(rng, (15, 15))
    prepared = PreparedPSF(psf)
    image = rng.normal(size=(50, 60)).astype(np.float32)
    a = fft_convolve(image, prepared)
    shape = good_fft_shape(image.shape, psf.shape)
    h = prepared.transfer(shape)
    assert prepared.transfer(shape) is h  # cached, not recomputed
    np.testing.assert_array_equal(fft_convolve(image, prepared), a)
    _assert_matches(a, _reference(image, psf))
    # pickling (as to a dask worker) drops the cache but not the PSF
    clone = pickle.loads(pickle.dumps(prepared))
    assert "cached=0" in repr(clone)
    np.testing.assert_array_equal(fft_convolve(image, clone), a)


def test_prepared_psf_cache_is_bounded():
    prepared = PreparedPSF(np.ones((3, 3)) / 9)
    hs = [prepared.transfer((8 + i, 8)) for i in range(6)]
    assert "cached=4" in repr(prepared)
    assert prepared.transfer((13, 8)) is hs[-1]


@pytest.mark.parametrize("mode", MODES)
def test_larger_fft_shape_gives_same_result(mode):
    rng = np.random.default_rng(5)
    image = rng.normal(size=(40, 37))
    psf = _psf(rng, (11, 7))
    big = tuple(s + 13 for s in good_fft_shape(image.shape, psf.shape, mode=mode))
    _assert_matches(fft_convolve(image, psf, mode=mode, fft_shape=big), _reference(image, psf, mode=mode))


def test_good_fft_shape_minimum_lengths():
    # n + r (same), n + 2r (full), n (valid), each rounded up to a fast length
    assert good_fft_shape((100, 100), (41, 41), mode="same") == (120, 120)
    assert good_fft_shape((100, 100), (41, 41), mode="full") == (144, 144)
    assert good_fft_shape((100, 100), (41, 41), mode="valid") == (100, 100)
    assert good_fft_shape((5, 5), (31, 31), mode="same") == (32, 32)


def test_fft_shape_too_small_raises():
    with pytest.raises(ValueError, match="too small"):
        fft_convolve(np.ones((20, 20)), np.ones((5, 5)), fft_shape=(21, 21))


@pytest.mark.parametrize(
    "image, psf, kwargs, match",
    [
        (np.ones((8, 8)), np.ones((4, 5)), {}, "odd"),
        (np.ones((8, 8)), np.ones((3, 3, 3)), {}, "2-D"),
        (np.ones(8), np.ones((3, 3)), {}, "2-D"),
        (np.ones((8, 8), dtype=complex), np.ones((3, 3)), {}, "real"),
        (np.ones((8, 8)), np.full((3, 3), np.nan), {}, "NaN"),
        (np.ones((8, 8)), np.ones((3, 3)), {"mode": "reflect"}, r"one of \('same'"),
        (np.ones((4, 8)), np.ones((5, 5)), {"mode": "valid"}, "at least as large"),
    ],
)
def test_bad_input_raises(image, psf, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fft_convolve(image, psf, **kwargs)


def test_psf_halo():
    assert psf_halo((1, 1)) == 0
    assert psf_halo((61, 61)) == 30
    assert psf_halo((1501, 1501)) == 750
    assert psf_halo((5, 9)) == 4
    with pytest.raises(ValueError, match="odd"):
        psf_halo((10, 10))


def test_result_dtype():
    assert result_dtype(np.float16) == np.float32
    assert result_dtype(np.float32) == np.float32
    assert result_dtype(np.float64) == np.float64
    assert result_dtype(np.int16) == np.float64
    with pytest.raises(ValueError, match="real"):
        result_dtype(np.complex64)


@pytest.mark.gpu
@pytest.mark.parametrize("adjoint", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_cupy_matches_scipy(adjoint, mode, cupy):
    rng = np.random.default_rng(8)
    image = rng.normal(size=(120, 97)).astype(np.float32)
    psf = _psf(rng, (31, 31))
    out = fft_convolve(cupy.asarray(image), PreparedPSF(psf), adjoint=adjoint, mode=mode)
    assert isinstance(out, cupy.ndarray)
    assert out.dtype == np.float32
    _assert_matches(cupy.asnumpy(out), _reference(image, psf, adjoint=adjoint, mode=mode))
