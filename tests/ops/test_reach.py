"""Compiled reach and ownership masks of a pixel map against the same tests written in NumPy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mosaic.ops.reach import owned_by, reaching


def _map(rng, ny, nx):
    """Centres on and around a core, some exactly on its bounds and on half pixels, some NaN."""
    pixmap = rng.uniform(-5.0, 45.0, (ny, nx, 2))
    edges = np.array([10.0, 30.0, 10.0 - 1.5 - 1, 30.0 + 1.5, 9.5, 29.5, 10.5])
    pick = rng.uniform(size=pixmap.shape) < 0.3
    pixmap[pick] = rng.choice(edges, size=int(pick.sum()))
    pixmap[rng.uniform(size=pixmap.shape) < 0.05] = np.nan
    return pixmap


@settings(max_examples=30, deadline=None)
@given(ny=st.integers(1, 30), nx=st.integers(1, 30), seed=st.integers(0, 2**16))
def test_masks_equal_numpy(ny, nx, seed):
    pixmap = _map(np.random.default_rng(seed), ny, nx)
    core, reach = (slice(10, 30), slice(10, 30)), 1.5
    x, y = pixmap[..., 0], pixmap[..., 1]
    with np.errstate(invalid="ignore"):
        want_reach = np.isfinite(x) & np.isfinite(y) & (x >= 10 - reach - 1) & (x <= 30 + reach) & (y >= 10 - reach - 1) & (y <= 30 + reach)
        ix, iy = np.floor(x + 0.5), np.floor(y + 0.5)
        want_own = (ix >= 10) & (ix < 30) & (iy >= 10) & (iy < 30)
    np.testing.assert_array_equal(reaching(pixmap, core, reach), want_reach)
    np.testing.assert_array_equal(owned_by(pixmap, core), want_own)
    assert not (owned_by(pixmap, core) & ~reaching(pixmap, core, reach)).any()  # a pixel a core owns reaches it


def test_each_pixel_is_owned_by_one_tile():
    """Tiles side by side own every finite pixel once between them."""
    pixmap = _map(np.random.default_rng(1), 40, 40)
    tiles = [(slice(a, a + 20), slice(b, b + 25)) for a in range(-20, 60, 20) for b in range(-25, 75, 25)]
    count = sum(owned_by(pixmap, t).astype(int) for t in tiles)
    np.testing.assert_array_equal(count, np.isfinite(pixmap).all(axis=2).astype(int))


def test_a_map_of_another_shape_is_refused():
    with pytest.raises(ValueError, match=r"expected \(ny, nx, 2\)"):
        reaching(np.zeros((4, 5)), (slice(0, 1), slice(0, 1)), 1.0)
