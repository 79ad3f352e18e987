"""Sigma clipping on the sorted sample against astropy's sigma_clipped_stats on the same values."""

import warnings

import numpy as np
import pytest
from astropy.stats import sigma_clipped_stats
from hypothesis import given, settings
from hypothesis import strategies as st

from mosaic.ops.sigma_clip import sigma_clipped_median_std


def _astropy(x, sigma, maxiters):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NaNs in the input, all values clipped
        _, med, std = sigma_clipped_stats(x, sigma=sigma, maxiters=maxiters, cenfunc="median", stdfunc="mad_std")
    return float(med), float(std)


def _same(x, sigma, maxiters):
    med, std, kept = sigma_clipped_median_std(x, sigma, maxiters)
    want_med, want_std = _astropy(x, sigma, maxiters)
    # the median (an element, or the mean of two) and so every pass's bounds are astropy's to the bit
    assert med == want_med or (np.isnan(med) and np.isnan(want_med))
    np.testing.assert_allclose(std, want_std, rtol=1e-12, atol=0)
    return kept


@settings(max_examples=300, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 400),
    shape=st.sampled_from(["normal", "ties", "outliers", "cauchy"]),
    sigma=st.sampled_from([1.0, 1.5, 2.5, 3.0, 5.0]),
    maxiters=st.sampled_from([1, 2, 5, 10, None]),
)
def test_equals_astropy(seed, n, shape, sigma, maxiters):
    rng = np.random.default_rng(seed)
    if shape == "normal":
        x = rng.normal(3.0, 2.0, n)
    elif shape == "ties":  # many equal values: equal distances on both sides of the median
        x = rng.integers(-3, 4, n).astype(float)
    elif shape == "outliers":
        x = np.concatenate([rng.normal(0.0, 1.0, n), rng.normal(20.0, 5.0, n // 4 + 1)])
    else:
        x = rng.standard_cauchy(n)
    _same(x, sigma, maxiters)


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False), min_size=1, max_size=40))
def test_equals_astropy_on_any_values(values):
    _same(np.array(values), 3.0, 10)


def test_a_large_sample_keeps_what_astropy_keeps():
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(0.0, 1.0, 200_000), rng.exponential(30.0, 20_000)])
    kept = _same(x, 3.0, 10)
    # the kept values counted independently: astropy's clipped array, NaN where clipped
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from astropy.stats import sigma_clip

        clipped = sigma_clip(x, sigma=3.0, maxiters=10, cenfunc="median", stdfunc="mad_std", masked=False, axis=None)
    assert kept == np.isfinite(clipped).sum()


def test_gaussian_noise_scale():
    # the clipped standard deviation of a normal sample (truncation at the converged bounds)
    x = np.random.default_rng(2).normal(0.0, 1.0, 1_000_000)
    assert sigma_clipped_median_std(x, 5.0, 10)[1] == pytest.approx(1.0, abs=2e-3)
    assert sigma_clipped_median_std(x, 3.0, 10)[1] == pytest.approx(0.9866, abs=2e-3)


def test_non_finite_values_are_left_out():
    x = np.array([1.0, 2.0, np.nan, 3.0, np.inf, -np.inf, 4.0, 100.0])
    med, std, kept = sigma_clipped_median_std(x, 3.0, 10)
    assert (med, std, kept) == (_astropy(x, 3.0, 10)[0], pytest.approx(_astropy(x, 3.0, 10)[1]), 4)
    assert med == 2.5 and std == pytest.approx(np.std([1.0, 2.0, 3.0, 4.0]))


def test_no_finite_value():
    med, std, kept = sigma_clipped_median_std(np.array([np.nan, np.inf]), 3.0, 5)
    assert np.isnan(med) and np.isnan(std) and kept == 0
    med, std, kept = sigma_clipped_median_std(np.array([]), 3.0, 5)
    assert np.isnan(med) and kept == 0
