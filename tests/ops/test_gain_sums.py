"""The compiled gain sums of one exposure against the same sums in plain NumPy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mosaic.ops.gain_sums import GAIN_SUMS, gain_sums


def _numpy(sci, good, vp, vr, vf):
    s = sci.astype(np.float64)
    ok = good & np.isfinite(s)
    p, r, f = (np.zeros(s.shape) if v is None else np.where(np.isfinite(v), v.astype(np.float64), 0.0) for v in (vp, vr, vf))
    fit = ok & (p > 0)
    rn = ok & (r > 0)
    x, y = s[fit], p[fit]
    return np.array([fit.sum(), x.sum(), y.sum(), (x * x).sum(), (x * y).sum(), rn.sum(), r[rn].sum(), (p + r + f)[rn].sum()])


@settings(max_examples=25, deadline=None)
@given(
    ny=st.integers(1, 30), nx=st.integers(1, 30), dtype=st.sampled_from([np.float32, np.float64]),
    missing=st.lists(st.booleans(), min_size=3, max_size=3), seed=st.integers(0, 2**16),
)
def test_gain_sums_equal_numpy(ny, nx, dtype, missing, seed):
    """Faint sky with negative data, NaN and +-inf in every plane, bad pixels, missing planes."""
    rng = np.random.default_rng(seed)
    sci = rng.normal(0.05, 0.5, (ny, nx)).astype(dtype)
    vp = (0.02 * np.clip(sci, -0.2, None) + rng.normal(0, 1e-3, sci.shape)).astype(dtype)
    vr = rng.uniform(-1e-3, 0.01, sci.shape).astype(dtype)
    vf = rng.uniform(0.0, 1e-3, sci.shape).astype(dtype)
    for a, bad in ((sci, np.nan), (vp, np.inf), (vr, np.nan), (vf, -np.inf)):
        a[rng.uniform(size=a.shape) < 0.05] = bad
    good = rng.uniform(size=sci.shape) > 0.1
    planes = [None if m else v for m, v in zip(missing, (vp, vr, vf), strict=True)]
    got = gain_sums(sci, good, *planes)
    assert got.shape == (len(GAIN_SUMS),)
    np.testing.assert_allclose(got, _numpy(sci, good, *planes), rtol=1e-12, atol=1e-14)


def test_gain_sums_of_a_known_line():
    """VAR_POISSON = c (SCI + b) exactly: the least-squares slope and intercept of the sums are c and c b."""
    sci = np.linspace(-0.3, 5.0, 4000).reshape(40, 100)
    c, b = 0.013, 0.4
    n, sx, sy, sxx, sxy, *_ = gain_sums(sci, np.ones(sci.shape, bool), c * (sci + b), np.full(sci.shape, 1e-4))
    slope = (n * sxy - sx * sy) / (n * sxx - sx * sx)
    assert slope == pytest.approx(c, rel=1e-12)
    assert (sy - slope * sx) / n == pytest.approx(c * b, rel=1e-10)


def test_gain_sums_refuse_planes_of_another_shape():
    with pytest.raises(ValueError, match="var_rnoise has shape"):
        gain_sums(np.zeros((4, 5)), np.ones((4, 5), bool), np.ones((4, 5)), np.ones((5, 4)))
