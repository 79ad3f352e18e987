"""The fused correction pass against its separate steps: exact blot, NumPy correction, drizzle."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mosaic.coadd.forward import DAMPING_POWER, correction_planes
from mosaic.ops.correction import correction_pass
from mosaic.ops.overlap import blot_sums, drizzle_sums
from mosaic.ops.pixmap import pixel_corners

WINDOW = (150, 140)


def _corners(shape, angle, scale, shift):
    y, x = np.indices(shape, dtype=float)
    x -= (shape[1] - 1) / 2
    y -= (shape[0] - 1) / 2
    c, s = np.cos(angle), np.sin(angle)
    u = scale * (c * x - s * y) + (WINDOW[1] - 1) / 2 + shift[0]
    v = scale * (s * x + c * y) + (WINDOW[0] - 1) / 2 + shift[1]
    return pixel_corners(np.stack([u, v], axis=-1))


def _separate(xc, yc, window, w, sci, components, **options):
    """The reference: the exact blot, the correction in NumPy, then the drizzle, each on its own."""
    num, _, jaco = blot_sums(xc, yc, window)
    m = np.divide(num, jaco, out=np.zeros_like(num), where=jaco != 0)
    _, m, _, x, per_pixel = correction_planes(sci, m, w, components, **options)
    planes = [x, *per_pixel]
    return m, drizzle_sums(xc, yc, planes, window.shape, powers=[1] + [2] * (len(planes) - 1))


@settings(max_examples=30, deadline=None)
@given(
    shape=st.sampled_from([(9, 11), (70, 66), (131, 20)]),
    angle=st.floats(0.0, 2 * np.pi),
    shift=st.tuples(st.floats(-20.0, 20.0), st.floats(-20.0, 20.0)),
    correction=st.sampled_from(["ratio", "difference"]),
    pedestal=st.sampled_from([0.0, 0.4]),
    mock_floor=st.sampled_from([0.0, 0.3]),
    damping=st.sampled_from([0.0, 3.0]),
    variances=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_one_pass_is_the_separate_passes(shape, angle, shift, correction, pedestal, mock_floor, damping, variances, seed):
    """Mock and sums equal the separate blot, correction and drizzle: to the bit, and to 1e-13
    with damping (its power is libm's ``pow`` in both, but NumPy may take another path). Inputs
    of one and of several blocks, partly off the window, with a faint sky (many negative data
    and mocks near the floor), weights of 0, NaN window pixels and data, and a missing and a
    non-finite variance component."""
    rng = np.random.default_rng(seed)
    xc, yc = _corners(shape, angle, 1.0 if shape[0] > 100 else 1.7, shift)
    window = rng.normal(0.3, 0.5, WINDOW)
    window[rng.uniform(size=WINDOW) < 0.02] = np.nan
    w = rng.uniform(0.5, 2.0, shape) * (rng.uniform(size=shape) > 0.1)
    sci = rng.normal(0.3, 0.6, shape)
    sci[rng.uniform(size=shape) < 0.02] = np.nan
    var = rng.uniform(0.0, 0.2, shape)
    var[0, 0] = np.inf
    components = [rng.uniform(0.0, 0.1, shape), var, None]
    options = {"correction": correction, "pedestal": pedestal, "mock_floor": mock_floor, "damping": damping, "variances": variances}
    mock, sums = correction_pass(xc, yc, window, w, sci, components, damping_power=DAMPING_POWER, **options)
    want_mock, want = _separate(xc, yc, window, w, sci, components, **options)
    assert sums.shape == (4 if variances else 1, *WINDOW)
    np.testing.assert_array_equal(mock, want_mock)
    if damping > 0:
        np.testing.assert_allclose(sums, want, rtol=1e-13, atol=1e-13 * np.abs(want).max())
    else:
        np.testing.assert_array_equal(sums, want)
    assert np.abs(sums[0]).sum() > 0 or np.all(w * np.isfinite(sci) == 0) or np.all(xc > WINDOW[1])


def test_bad_arguments_are_named():
    xc, yc = _corners((5, 6), 0.3, 1.7, (0.0, 0.0))
    args = (xc, yc, np.ones(WINDOW), np.ones((5, 6)))
    kw = {"pedestal": 0.0, "mock_floor": 0.0, "damping": 0.0, "damping_power": 10.0, "variances": False}
    with pytest.raises(ValueError, match="correction 'quotient' is not supported"):
        correction_pass(*args, np.ones((5, 6)), [None] * 3, correction="quotient", **kw)
    with pytest.raises(ValueError, match=r"var_rnoise has shape \(4, 6\); expected the cut-out's \(5, 6\)"):
        correction_pass(*args, np.ones((5, 6)), [None, np.ones((4, 6)), None], correction="ratio", **kw)
    with pytest.raises(ValueError, match=r"expected two arrays of shape \(4, 5, 6\)"):
        correction_pass(xc[:, :4], yc[:, :4], *args[2:], np.ones((5, 6)), [None] * 3, correction="ratio", **kw)
