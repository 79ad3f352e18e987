"""Tiled fusion (dask graph of overlapping, tapered tiles) against the untiled exact solve."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mosaic.fusion.solve import solve_exact
from mosaic.fusion.tiled import default_halo, expand, fuse_tiled, solve_padded

KW = {"gamma": 1.0, "mu": 0.05}


def _rel(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


@settings(max_examples=4, deadline=None)
@given(
    ny=st.integers(12, 15),
    nx=st.integers(12, 15),
    tile=st.integers(3, 8),
    blend=st.integers(0, 3),
    seed=st.integers(0, 100),
)
def test_tiled_equals_untiled_periodic(make_problem, ny, nx, tile, blend, seed):
    factor = 3
    ops, images, cube, sub = make_problem(seed, coarse=(ny, nx), factor=factor, n_wave=6, psf_size=5, k=2)
    blend = min(blend, tile // 2)
    whole = solve_exact(images, cube, ops, sub, **KW)
    assert default_halo(ops) == 9  # (2 x PSF radius 3 + 20 fine pixels) / 3, rounded up
    tiled = fuse_tiled(images, cube, ops, sub, tile=tile, blend=blend, **KW)
    assert tiled.chunks[1][0] == factor * min(tile, ny)
    assert _rel(tiled.compute(scheduler="threads"), whole) < 1e-4


def test_tiled_equals_untiled_factor_two(make_problem):
    ops, images, cube, sub = make_problem(40, coarse=(16, 16), factor=2, n_wave=6, psf_size=5, k=2)
    assert default_halo(ops) == 13
    whole = solve_exact(images, cube, ops, sub, **KW)
    # windows of 4 + 2 x 13 spaxels are wider than the field: both axes are solved whole (its own period)
    assert _rel(fuse_tiled(images, cube, ops, sub, tile=4, blend=1, **KW).compute(), whole) < 1e-10


@settings(max_examples=3, deadline=None)
@given(ny=st.integers(9, 14), nx=st.integers(33, 37), tile=st.integers(3, 6), seed=st.integers(0, 100))
def test_windows_wider_than_the_field_on_one_axis(make_problem, ny, nx, tile, seed):
    """d = 2: along y a window (tile + 2 halo) is wider than the field, along x it is not."""
    ops, images, cube, sub = make_problem(seed, coarse=(ny, nx), factor=2, n_wave=6, psf_size=5, k=2)
    assert tile + 2 * default_halo(ops) >= ny and tile + 2 * default_halo(ops) < nx
    whole = solve_exact(images, cube, ops, sub, **KW)
    tiled = fuse_tiled(images, cube, ops, sub, tile=tile, blend=1, **KW)
    assert tiled.chunks[1][0] == 2 * min(tile, ny) and tiled.chunks[2][0] == 2 * tile
    assert _rel(tiled.compute(scheduler="threads"), whole) < 1e-4


def test_reflect_boundary_equals_padded_solve(make_problem):
    ops, images, cube, sub = make_problem(4, coarse=(12, 11), n_wave=6, psf_size=5, k=2)
    whole = solve_padded(images, cube, ops, sub, pad=8, boundary="reflect", **KW)
    tiled = fuse_tiled(da.from_array(images, chunks=(1, 10, 13)), cube, ops, sub, tile=6, halo=8, boundary="reflect", **KW)
    assert _rel(tiled.compute(), whole) < 1e-4
    # and the reflected edges are not the periodic solve's
    assert _rel(whole, solve_exact(images, cube, ops, sub, **KW)) > 1e-3


def test_error_falls_with_the_halo(make_problem):
    ops, images, cube, sub = make_problem(5, coarse=(12, 12), n_wave=6, psf_size=5, k=2)
    whole = solve_exact(images, cube, ops, sub, **KW)
    errs = [_rel(fuse_tiled(images, cube, ops, sub, tile=4, halo=h, **KW).compute(), whole) for h in (1, 3, 6)]
    assert errs[0] > errs[1] > errs[2]


def test_expand_is_the_cube(make_problem):
    ops, images, cube, sub = make_problem(6, coarse=(8, 9), n_wave=6, psf_size=5, k=2)
    z = fuse_tiled(images, cube, ops, sub, tile=4, halo=6, **KW)
    np.testing.assert_allclose(expand(z, sub).compute(), sub.expand(z.compute()), rtol=1e-12)


def test_bad_tiling(make_problem):
    ops, images, cube, sub = make_problem(0, coarse=(6, 8))
    with pytest.raises(ValueError, match="boundary must be one of"):
        fuse_tiled(images, cube, ops, sub, boundary="edge", **KW)
    with pytest.raises(ValueError, match="halo 9 is larger than the field"):
        fuse_tiled(images, cube, ops, sub, halo=9, boundary="reflect", **KW)
    with pytest.raises(ValueError, match="0 <= blend"):
        fuse_tiled(images, cube, ops, sub, tile=4, halo=2, blend=3, **KW)
