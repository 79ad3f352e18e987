"""The compiled input planes of a drizzle against the NumPy formulation they replace, to the bit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mosaic.ops.drizzle_planes import drizzle_planes
from mosaic.ops.overlap import corners, drizzle_sums


def _numpy(w, sci, variances):
    """The planes as the pair tasks made them in NumPy before: masked copies and products."""
    on = w > 0
    g = np.where(on, np.asarray(sci, dtype=np.float64), 0.0)
    with np.errstate(invalid="ignore"):  # 0 x inf, masked out
        squared = [np.where(on & np.isfinite(v), w * w * np.asarray(v, dtype=np.float64), 0.0) for v in variances]
    return np.stack([w, w * g, *squared])


@settings(max_examples=30, deadline=None)
@given(
    ny=st.integers(1, 25), nx=st.integers(1, 25), n_var=st.integers(0, 3),
    dtype=st.sampled_from(["<f4", "<f8", ">f4", ">f8", "<i2"]), seed=st.integers(0, 2**16),
)
def test_planes_equal_numpy(ny, nx, n_var, dtype, seed):
    """Faint sky with negative data, NaN and infinities in data and variances, zero and
    negative weights, float32, float64, big-endian (FITS) and integer inputs."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(-0.2, 2.0, (ny, nx))
    w[rng.uniform(size=w.shape) < 0.2] = 0.0
    sci = rng.normal(0.02, 0.5, (ny, nx)) * (1000 if dtype == "<i2" else 1)
    variances = [rng.uniform(-1e-3, 0.01, (ny, nx)) for _ in range(n_var)]
    if dtype != "<i2":
        for a in (sci, *variances):
            a[rng.uniform(size=a.shape) < 0.1] = rng.choice([np.nan, np.inf, -np.inf])
    sci, variances = sci.astype(dtype), [v.astype(dtype) for v in variances]
    got = drizzle_planes(w, sci, variances)
    want = _numpy(w, sci, variances)
    assert got.dtype == np.float64 and got.flags.c_contiguous and got.shape == (2 + n_var, ny, nx)
    np.testing.assert_array_equal(got, want)


def test_shape_mismatch_names_the_plane():
    with pytest.raises(ValueError, match=r"variance 1 has shape \(3, 4\); expected the weights' \(4, 4\)"):
        drizzle_planes(np.ones((4, 4)), np.ones((4, 4)), [np.ones((4, 4)), np.ones((3, 4))])


def test_drizzle_sums_read_one_array_as_a_list_of_planes():
    """A stacked array is drizzled as it is, to the same sums as the same planes in a list."""
    rng = np.random.default_rng(3)
    j, i = np.mgrid[0:20, 0:24].astype(float)
    pixmap = np.stack([1.9 * i + 0.3 * j + 2.2, -0.3 * i + 1.9 * j + 5.6], axis=-1)
    xc, yc = corners(pixmap)
    stack = drizzle_planes(rng.uniform(0, 1, (20, 24)), rng.normal(size=(20, 24)), [rng.uniform(0, 1, (20, 24))])
    shape = (50, 60)
    got = drizzle_sums(xc, yc, stack, shape, powers=[1, 1, 2])
    want = drizzle_sums(xc, yc, list(stack), shape, powers=[1, 1, 2])
    np.testing.assert_array_equal(got, want)
    assert np.count_nonzero(got[0]) > 0.9 * 20 * 24 * 3.6
