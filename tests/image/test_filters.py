"""Tiled filters equal scipy.ndimage / astropy.convolution on the whole image, for any chunking."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi
from astropy.convolution import convolve as astropy_convolve
from astropy.convolution.utils import KernelSizeError
from astropy.utils.exceptions import AstropyUserWarning
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mosaic.image.filters import convolve, gaussian_filter, median_filter
from mosaic.ops.filters import CONVOLVE_BOUNDARIES, FILTER_MODES


@st.composite
def images(draw, nan_fraction=0.0):
    ny, nx = draw(st.integers(8, 40)), draw(st.integers(8, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    x = rng.normal(size=(ny, nx)).astype(draw(st.sampled_from([np.float32, np.float64])))
    if nan_fraction:
        x[rng.random((ny, nx)) < nan_fraction] = np.nan
    # chunks as small as one pixel wide and uneven: most kernels are wider than a chunk
    chunks = tuple(draw(st.lists(st.integers(1, 12), min_size=1, max_size=6)) for n in (ny, nx))
    chunks = tuple(_fit(c, n) for c, n in zip(chunks, (ny, nx), strict=True))
    return x, chunks


def _fit(sizes, n):
    out, total = [], 0
    for s in sizes:
        s = min(s, n - total)
        if s <= 0:
            break
        out.append(s)
        total += s
    if total < n:
        out.append(n - total)
    return tuple(out)


def _close(got, want):
    assert got.dtype == want.dtype
    tol = 1e-5 if want.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol, equal_nan=True)


@settings(max_examples=15)
@given(images(), st.floats(0.3, 6.0), st.floats(0.3, 3.0), st.sampled_from(FILTER_MODES), st.sampled_from([2.0, 4.0]))
def test_gaussian_equals_scipy(case, sy, sx, mode, truncate):
    x, chunks = case
    got = gaussian_filter(da.from_array(x, chunks=chunks), sigma=(sy, sx), mode=mode, cval=0.5, truncate=truncate)
    assert got.chunks == chunks
    _close(got.compute(), ndi.gaussian_filter(x, (sy, sx), mode=mode, cval=0.5, truncate=truncate))


@settings(max_examples=15)
@given(images(nan_fraction=0.05), st.integers(1, 9), st.integers(1, 6), st.sampled_from(FILTER_MODES), st.booleans())
def test_median_equals_scipy(case, sy, sx, mode, use_footprint):
    x, chunks = case
    if use_footprint:
        fp = np.random.default_rng(sy * 7 + sx).random((sy, sx)) < 0.6
        fp[sy // 2, sx // 2] = True
        got = median_filter(da.from_array(x, chunks=chunks), footprint=fp, mode=mode, cval=-1.0)
        want = ndi.median_filter(x, footprint=fp, mode=mode, cval=-1.0)
    else:
        got = median_filter(da.from_array(x, chunks=chunks), size=(sy, sx), mode=mode, cval=-1.0)
        want = ndi.median_filter(x, size=(sy, sx), mode=mode, cval=-1.0)
    _close(got.compute(), want)


@settings(max_examples=15)
@given(
    images(nan_fraction=0.03), st.integers(0, 4), st.integers(0, 5), st.sampled_from(CONVOLVE_BOUNDARIES),
    st.sampled_from(["interpolate", "fill"]), st.booleans(), st.booleans(),
)
def test_convolve_equals_astropy(case, ry, rx, boundary, nan_treatment, preserve_nan, with_mask):
    x, chunks = case
    rng = np.random.default_rng(ry * 10 + rx)
    kernel = rng.random((2 * ry + 1, 2 * rx + 1)) + 0.1
    mask = rng.random(x.shape) < 0.05 if with_mask else None
    kw = {"boundary": boundary, "fill_value": 0.25, "nan_treatment": nan_treatment, "preserve_nan": preserve_nan}
    with warnings.catch_warnings():
        # a NaN region wider than the kernel stays NaN: astropy warns, tiled or not
        warnings.simplefilter("ignore", AstropyUserWarning)
        try:
            ref = astropy_convolve(x, kernel, mask=mask, **kw)
        except KernelSizeError:  # astropy < 8 has no reference for boundary=None with a kernel wider than the image
            assume(False)
        got = convolve(da.from_array(x, chunks=chunks), kernel, mask=None if mask is None else da.from_array(mask, chunks=chunks), **kw)
        _close(got.compute(), ref)


def test_kernel_wider_than_the_image():
    x = np.random.default_rng(0).normal(size=(9, 30))
    got = gaussian_filter(da.from_array(x, chunks=(2, 7)), sigma=5.0, mode="mirror")
    _close(got.compute(), ndi.gaussian_filter(x, 5.0, mode="mirror"))
    got = gaussian_filter(da.from_array(x, chunks=(2, 7)), sigma=5.0, mode="wrap")
    _close(got.compute(), ndi.gaussian_filter(x, 5.0, mode="wrap"))


def test_bad_arguments_are_named():
    x = da.zeros((10, 10), chunks=5)
    with pytest.raises(ValueError, match="sigma must be positive; got 0"):
        gaussian_filter(x, sigma=0)
    with pytest.raises(ValueError, match="sigma must be positive"):
        gaussian_filter(x, sigma=(1.0, -2.0))
    with pytest.raises(ValueError, match=r"mode 'edge' is not known; expected one of \['reflect'"):
        median_filter(x, size=3, mode="edge")
    with pytest.raises(ValueError, match="kernel must be 2-D with odd sides; got shape \\(4, 3\\)"):
        convolve(x, np.ones((4, 3)))
    with pytest.raises(ValueError, match="size must be a positive integer"):
        median_filter(x, size=0)
