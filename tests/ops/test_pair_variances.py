"""The compiled per-pixel variances of a correction pass against the NumPy formulas they replace."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mosaic.coadd.errors import VARIANCES, ratio_variances
from mosaic.ops.pair_variances import pixel_variances


def _total(cut, shape):
    """The total variance the NumPy way: finite components summed, missing ones 0."""
    total = np.zeros(shape)
    for name in VARIANCES:
        if cut.get(name) is not None:
            v = np.asarray(cut[name], dtype=np.float64)
            total += np.where(np.isfinite(v), v, 0.0)
    return total


@settings(max_examples=60, deadline=None)
@given(
    ny=st.integers(1, 7), nx=st.integers(1, 7), seed=st.integers(0, 2**16), ratio=st.booleans(),
    missing=st.sets(st.sampled_from(VARIANCES), max_size=3), dtype=st.sampled_from([np.float32, np.float64]),
    floor=st.sampled_from([0.0, 0.3]),
)
def test_equal_to_the_numpy_formulas_to_the_bit(ny, nx, seed, ratio, missing, dtype, floor):
    rng = np.random.default_rng(seed)
    shape = (ny, nx)
    cut = {name: None if name in missing else rng.uniform(0, 2, shape).astype(dtype) for name in VARIANCES}
    for name in VARIANCES:
        if cut[name] is not None and rng.uniform() < 0.5:
            cut[name][rng.integers(ny), rng.integers(nx)] = rng.choice([np.nan, np.inf])
    w = np.where(rng.uniform(size=shape) < 0.2, 0.0, rng.uniform(0, 3, shape))
    m = rng.normal(1.0, 1.0, shape)
    total, scaled = pixel_variances([cut[n] for n in VARIANCES], w, m, scaled=True, ratio=ratio, mock_floor=floor)
    np.testing.assert_array_equal(total, _total(cut, shape))
    present = {k: v for k, v in cut.items() if v is not None}
    with np.errstate(invalid="ignore", over="ignore"):  # the reference multiplies the infinities it then drops
        want = ratio_variances(present, w, m, ratio=ratio, mock_floor=floor)
    for got, ref in zip(scaled, want, strict=True):
        np.testing.assert_array_equal(got, ref)
    only_total, none = pixel_variances([cut[n] for n in VARIANCES], w, m, scaled=False)
    np.testing.assert_array_equal(only_total, total)
    assert none == ()


def test_bad_components_are_named():
    w = np.ones((3, 4))
    with pytest.raises(ValueError, match="expected 3 variance components"):
        pixel_variances([w, w], w, w, scaled=False)
    with pytest.raises(ValueError, match=r"variance component of shape \(3, 3\); expected the cut-out's \(3, 4\)"):
        pixel_variances([w, np.ones((3, 3)), None], w, w, scaled=True)
