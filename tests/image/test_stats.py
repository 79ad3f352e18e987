"""Tiled robust statistics equal numpy / astropy on the whole array (exact order statistics)."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
from astropy import stats as astats
from hypothesis import given, settings
from hypothesis import strategies as st

from mosaic.image import stats as S


@st.composite
def images(draw, dtype=None, gathers=(0, 5, S.GATHER_LIMIT), kinds=("normal", "outliers", "integers", "constant", "spread")):
    ny, nx = draw(st.integers(1, 30)), draw(st.integers(1, 30))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(kinds))
    if kind == "normal":
        x = rng.normal(3.0, 2.0, (ny, nx))
    elif kind == "outliers":
        x = rng.normal(0.0, 1.0, (ny, nx))
        x[rng.random((ny, nx)) < 0.1] += 50
    elif kind == "integers":  # many ties
        x = rng.integers(-3, 4, (ny, nx)).astype(float)
    elif kind == "constant":
        x = np.full((ny, nx), -2.5)
    else:  # values over many octaves, both signs
        x = rng.choice([-1, 1], (ny, nx)) * 10.0 ** rng.uniform(-30, 30, (ny, nx))
    x = x.astype(dtype or draw(st.sampled_from([np.float32, np.float64])))
    x[rng.random((ny, nx)) < draw(st.sampled_from([0.0, 0.1]))] = np.nan
    if draw(st.booleans()):
        x[rng.random((ny, nx)) < 0.05] = np.inf
    mask = rng.random((ny, nx)) < 0.2 if draw(st.booleans()) else None
    # awkward chunks, at most ~36 blocks so that each pass stays quick
    chunks = tuple(draw(st.integers(max(1, n // 6), n)) for n in (ny, nx))
    # 0 settles every key bit by histograms; 5 gathers late; the default gathers early
    gather = draw(st.sampled_from(gathers))
    return x, mask, chunks, gather


def _kept(x, mask):
    keep = np.isfinite(x) if mask is None else np.isfinite(x) & ~mask
    return x[keep]


def _with_gather(gather, func, *args, **kwargs):
    old = S.GATHER_LIMIT
    S.GATHER_LIMIT = gather
    try:
        return func(*args, **kwargs)
    finally:
        S.GATHER_LIMIT = old


@settings(max_examples=20)
@given(images())
def test_median_and_percentiles_are_exact(case):
    x, mask, chunks, gather = case
    kept = _kept(x, mask)
    d = da.from_array(x, chunks=chunks)
    m = None if mask is None else da.from_array(mask, chunks=chunks)
    med = _with_gather(gather, S.median, d, mask=m)
    qs = [0.0, 2.5, 50.0, 84.1, 100.0]
    pct = _with_gather(gather, S.percentile, d, qs, mask=m)
    if kept.size == 0:
        assert np.isnan(med) and np.all(np.isnan(pct))
        return
    # an order statistic of the data, not an approximation: the same number numpy gives
    assert med == pytest.approx(float(np.median(kept)), rel=1e-7, abs=0)
    np.testing.assert_allclose(pct, np.percentile(kept.astype(np.float64), qs), rtol=1e-12, atol=0)
    lo, hi = kept.size // 2 - (1 - kept.size % 2), kept.size // 2
    assert float(np.partition(kept, lo)[lo]) <= med <= float(np.partition(kept, hi)[hi])


@settings(max_examples=12)
@given(images(dtype=np.float64, gathers=(5, S.GATHER_LIMIT)), st.sampled_from([1.5, 2.0, 3.0]), st.sampled_from([1, 5, None]))
def test_sigma_clipped_stats_equal_astropy(case, sigma, maxiters):
    x, mask, chunks, gather = case
    kept = _kept(x, mask)
    got = _with_gather(gather, S.sigma_clipped_stats, da.from_array(x, chunks=chunks), mask=mask, sigma=sigma, maxiters=maxiters)
    if kept.size == 0:
        assert all(np.isnan(got))
        return
    want = astats.sigma_clipped_stats(kept, sigma=sigma, maxiters=maxiters)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12 * max(1.0, np.abs(kept).max()))


@settings(max_examples=12)
# astropy's own biweight overflows on values spread over 60 decades: those are left out
@given(images(dtype=np.float64, kinds=("normal", "outliers", "integers", "constant")))
def test_biweight_and_mad_equal_astropy(case):
    x, mask, chunks, gather = case
    kept = _kept(x, mask)
    d = da.from_array(x, chunks=chunks)
    got = [_with_gather(gather, f, d, mask=mask) for f in (S.biweight_location, S.biweight_scale, S.mad_std)]
    if kept.size == 0:
        assert np.isnan(got[0]) and np.isnan(got[1]) and np.isnan(got[2])
        return
    want = [astats.biweight_location(kept), astats.biweight_scale(kept), astats.mad_std(kept)]
    scale = max(1.0, np.abs(kept).max())
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12 * scale)


def test_float32_sigma_clipping_matches_astropy_to_float32():
    rng = np.random.default_rng(4)
    x = rng.normal(10.0, 1.0, (130, 117)).astype(np.float32)
    x[rng.random(x.shape) < 0.05] += 30
    got = S.sigma_clipped_stats(da.from_array(x, chunks=(19, 23)), sigma=3.0, maxiters=5)
    np.testing.assert_allclose(got, astats.sigma_clipped_stats(x, sigma=3.0, maxiters=5), rtol=1e-5)
    assert S.median(da.from_array(x, chunks=(19, 23))) == float(np.median(x))


def test_image_statistics_counts_and_extremes():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(64, 70))
    x[3, 4], x[10, 11], x[20, 30] = np.nan, np.inf, -np.inf
    mask = np.zeros(x.shape, bool)
    mask[:5, :5] = True
    out = S.image_statistics(da.from_array(x, chunks=(13, 17)), mask=mask, percentiles=(10.0, 90.0))
    kept = x[np.isfinite(x) & ~mask]
    assert out["n_pixels"] == x.size and out["n_nan"] == 1 and out["n_inf"] == 2 and out["n_masked"] == 25
    assert out["n_valid"] == kept.size
    assert out["min"] == kept.min() and out["max"] == kept.max()
    np.testing.assert_allclose([out["mean"], out["median"], out["std"]], astats.sigma_clipped_stats(kept), rtol=1e-10)
    np.testing.assert_allclose(list(out["percentiles"].values()), np.percentile(kept, [10, 90]), rtol=1e-12)
    assert out["mad_std"] == pytest.approx(astats.mad_std(kept), rel=1e-12)


def test_bad_arguments_are_named():
    d = da.zeros((4, 4), chunks=2)
    with pytest.raises(ValueError, match="sigma must be a positive number; got -1"):
        S.sigma_clipped_stats(d, sigma=-1)
    with pytest.raises(ValueError, match=r"percentile q must be in \[0, 100\]"):
        S.percentile(d, 101)
    with pytest.raises(ValueError, match="mask has shape"):
        S.median(d, mask=np.zeros((3, 3), bool))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(S.median(da.full((5, 5), np.nan, chunks=2)))
