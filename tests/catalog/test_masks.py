"""Value-sliced and derivative masks: exact quantiles, whole-image equality, scoring (seed 004)."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mosaic.catalog.masks import derivative_image, kth_largest, score_mask, source_mask


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 1000), n=st.integers(1, 3000), chunk=st.integers(7, 500), ties=st.booleans(), frac=st.floats(0, 1))
def test_kth_largest_is_exact(seed, n, chunk, ties, frac):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n) * 10 ** rng.uniform(-3, 3)
    if ties:
        x = np.round(x, 1)
    x[rng.random(n) < 0.05] = np.nan
    finite = np.sort(x[np.isfinite(x)])[::-1]
    if finite.size == 0:
        return
    k = 1 + int(frac * (finite.size - 1))
    # a tiny gather limit forces several refinement passes
    got = kth_largest(da.from_array(x, chunks=chunk), k, n_bins=8, max_gather=5)
    assert got == finite[k - 1]


def test_value_mask_keeps_the_top_percent(scene):
    img = scene[0].copy()
    img[:5, :5] = np.nan
    mask, cut = source_mask(img, percent=4.6, kind="value", tile=(33, 47))
    finite = np.sort(img[np.isfinite(img)])[::-1]
    k = int(np.ceil(4.6 * finite.size / 100))
    assert cut == finite[k - 1]
    np.testing.assert_array_equal(mask.compute(), img >= finite[k - 1])
    assert mask.sum().compute() == k  # continuous values: no ties


def test_derivative_mask_equals_numpy_gradient(scene):
    img = scene[0]
    gy, gx = np.gradient(img)
    np.testing.assert_array_equal(derivative_image(img, tile=(19, 23)).compute(), np.hypot(gx, gy))
    mask, cut = source_mask(img, percent=10, kind="derivative", tile=(40, 40))
    g = np.sort(np.hypot(gx, gy).ravel())[::-1]
    assert cut == g[int(np.ceil(0.1 * g.size)) - 1]


def test_score_mask_against_brute_force(scene):
    img, truth, _ = scene
    mask = (img > 3.0)
    rng = np.random.default_rng(0)
    x = np.concatenate([truth[:, 0], rng.uniform(0, img.shape[1], 30)])
    y = np.concatenate([truth[:, 1], rng.uniform(0, img.shape[0], 30)])
    scores = score_mask(mask, x, y, radius=3.0, tile=(37, 29))
    yy, xx = np.nonzero(mask)
    d = np.hypot(xx[None, :] - x[:, None], yy[None, :] - y[:, None]).min(axis=1)
    np.testing.assert_array_equal(scores["success"], d <= 3.0)
    np.testing.assert_array_equal(scores["near"], (d > 3.0) & (d <= 6.0))
    close = d <= 6.0
    np.testing.assert_allclose(scores["distance"][close], d[close])
    assert scores.meta["n_success"] + scores.meta["n_near"] + scores.meta["n_failure"] == len(x)
    # the sources themselves are found more often than random positions
    assert scores["success"][: len(truth)].mean() > scores["success"][len(truth) :].mean()


@pytest.mark.parametrize(("kwargs", "match"), [({"percent": 0}, "percent"), ({"percent": 101}, "percent"), ({"kind": "fourier"}, "kind")])
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        source_mask(np.ones((10, 10)), **kwargs)
