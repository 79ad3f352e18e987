"""Pixel maps from WCSs, cut-outs of an exposure for a tile, and drizzle's pixel corners."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.wcs import WCS
from drizzle.utils import calc_pixmap as drizzle_calc_pixmap
from hypothesis import given, settings
from hypothesis import strategies as st

from mosaic.io.grid import MosaicGrid
from mosaic.ops.pixmap import (
    SPAN_HALO_ROWS,
    calc_pixmap,
    cutout_for_region,
    cutout_rows_for_region,
    lattice_pixmap,
    pixel_corners,
)
from mosaic.simulate.pointing import detector_cutout_wcs

SHAPE = (150, 170)


def sip_wcs(shape=SHAPE, corner=(1700, 150), roll_deg=0.0) -> WCS:
    return detector_cutout_wcs(shape, corner=corner, roll_deg=roll_deg)


@pytest.fixture(scope="module")
def setup():
    w = sip_wcs(roll_deg=25.0)
    grid = MosaicGrid.from_exposures([w], [SHAPE], psr=0.5, rotation_deg=10.0, tile=64)
    return w, grid, drizzle_calc_pixmap(w, grid.wcs, SHAPE)


def test_pixmap_equals_drizzle_package_bit_for_bit(setup):
    w, grid, full = setup
    np.testing.assert_array_equal(calc_pixmap(w, grid.wcs, shape=SHAPE), full)
    region = (slice(17, 90), slice(33, 161))
    part = calc_pixmap(w, grid.wcs, region, offset=(64, 128))
    # integer offsets are exact: the shifted map is the package's map, shifted
    np.testing.assert_array_equal(part[..., 0] + 64, full[region][..., 0])
    np.testing.assert_array_equal(part[..., 1] + 128, full[region][..., 1])


def test_pixmap_needs_a_shape(setup):
    w, grid, _ = setup
    bare = w.deepcopy()
    bare.pixel_shape = None
    with pytest.raises(ValueError, match="needs the exposure shape"):
        calc_pixmap(bare, grid.wcs)


@settings(max_examples=25, deadline=None)
@given(
    y0=st.integers(-30, 300), x0=st.integers(-30, 300), h=st.integers(1, 200), w_=st.integers(1, 200),
    margin=st.floats(0.0, 4.0), step=st.sampled_from([7, 16, 32, 64]),
)
def test_cutout_holds_every_pixel_that_lands_on_the_region(setup, y0, x0, h, w_, margin, step):
    w, grid, full = setup
    lattice = lattice_pixmap(w, grid.wcs, SHAPE, step=step)
    region = (slice(y0, y0 + h), slice(x0, x0 + w_))
    cut = cutout_for_region(lattice, region, margin=margin, pad=0)
    x, y = full[..., 0], full[..., 1]
    lands = (
        (x >= x0 - 0.5 - margin) & (x <= x0 + w_ - 0.5 + margin)
        & (y >= y0 - 0.5 - margin) & (y <= y0 + h - 0.5 + margin)
    )
    if cut is None:
        assert not lands.any()
        return
    inside = np.zeros(SHAPE, dtype=bool)
    inside[cut] = True
    assert not (lands & ~inside).any()
    # and it is not wastefully large: at most two lattice cells beyond what lands (a rotated
    # cell's bounding box reaches past the cell)
    if lands.any():
        rows, cols = np.flatnonzero(lands.any(axis=1)), np.flatnonzero(lands.any(axis=0))
        assert cut[0].start >= rows[0] - 2 * step - 1 and cut[0].stop <= rows[-1] + 2 * step + 2
        assert cut[1].start >= cols[0] - 2 * step - 1 and cut[1].stop <= cols[-1] + 2 * step + 2


@settings(max_examples=25, deadline=None)
@given(
    y0=st.integers(-30, 300), x0=st.integers(-30, 300), h=st.integers(1, 200), w_=st.integers(1, 200),
    margin=st.floats(0.0, 4.0), step=st.sampled_from([4, 8, 16, 32]), pad=st.integers(0, 3),
)
def test_row_cutout_maps_every_pixel_that_lands_with_its_neighbours(setup, y0, x0, h, w_, margin, step, pad):
    w, grid, full = setup
    lattice = lattice_pixmap(w, grid.wcs, SHAPE, step=step)
    region = (slice(y0, y0 + h), slice(x0, x0 + w_))
    cut = cutout_rows_for_region(lattice, region, margin=margin, pad=pad)
    box = cutout_for_region(lattice, region, margin=margin, pad=pad)
    if box is None:
        assert cut is None
        return
    assert cut.region == box  # the same bounding box
    ys, xs = cut.region
    x, y = full[ys, xs][..., 0], full[ys, xs][..., 1]
    lands = (
        (x >= x0 - 0.5 - margin) & (x <= x0 + w_ - 0.5 + margin)
        & (y >= y0 - 0.5 - margin) & (y <= y0 + h - 0.5 + margin)
    )
    cols = np.arange(xs.start, xs.stop)
    in_rows = (cols >= cut.lo[:, None]) & (cols <= cut.hi[:, None])
    assert not (lands & ~in_rows).any()
    # mapped: each row's range and those of the rows around it, a column more, bit for bit
    part = calc_pixmap(w, grid.wcs, cut.region, columns=(cut.lo, cut.hi), offset=(3, -2))
    mapped = np.isfinite(part).all(axis=-1)
    whole = calc_pixmap(w, grid.wcs, cut.region, offset=(3, -2))
    np.testing.assert_array_equal(part[mapped], whole[mapped])
    need = np.zeros_like(mapped)
    for r in range(mapped.shape[0]):
        for q in range(max(r - SPAN_HALO_ROWS, 0), min(r + SPAN_HALO_ROWS + 1, mapped.shape[0])):
            need[r] |= (cols >= cut.lo[q] - 1) & (cols <= cut.hi[q] + 1)
    assert not (need & ~mapped).any()


def test_cutout_pads_but_stays_on_the_detector(setup):
    w, grid, full = setup
    lattice = lattice_pixmap(w, grid.wcs, SHAPE, step=16)
    x, y = full[75, 85]
    tile = grid.tile_at((int(y) // 64, int(x) // 64))
    tight = cutout_for_region(lattice, tile.core, margin=1.0, pad=0)
    padded = cutout_for_region(lattice, tile.core, margin=1.0, pad=3)
    for a, b, n in zip(tight, padded, SHAPE, strict=True):
        assert b.start == max(a.start - 3, 0) and b.stop == min(a.stop + 3, n)
    assert cutout_for_region(lattice, (slice(5000, 5100), slice(0, 10)), margin=2.0) is None
    with pytest.raises(ValueError, match="lattice step must be a positive integer"):
        lattice_pixmap(w, grid.wcs, SHAPE, step=0)


def test_pixel_corners_of_an_affine_map_are_exact():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2, 2)) + 2 * np.eye(2)
    b = np.array([3.3, -1.7])
    y, x = np.indices((6, 7), dtype=float)
    pm = np.dstack([a[0, 0] * x + a[0, 1] * y + b[0], a[1, 0] * x + a[1, 1] * y + b[1]])
    for pixfrac in (1.0, 0.6):
        h = pixfrac / 2
        xc, yc = pixel_corners(pm, pixfrac=pixfrac)
        # drizzle's clockwise order in input pixels: (-h,+h), (+h,+h), (+h,-h), (-h,-h)
        for k, (dx, dy) in enumerate(((-h, h), (h, h), (h, -h), (-h, -h))):
            np.testing.assert_allclose(xc[k], a[0, 0] * (x + dx) + a[0, 1] * (y + dy) + b[0], rtol=0, atol=1e-12)
            np.testing.assert_allclose(yc[k], a[1, 0] * (x + dx) + a[1, 1] * (y + dy) + b[1], rtol=0, atol=1e-12)


def test_pixel_corners_interpolate_the_neighbours(setup):
    _, _, full = setup
    xc, _ = pixel_corners(full)
    # interior corner (-1/2, -1/2) of pixel (j, i) is the mean of the four surrounding centres
    j, i = 40, 77
    want = full[j - 1 : j + 1, i - 1 : i + 1, 0].mean()
    assert xc[3, j, i] == pytest.approx(want, abs=1e-12)
    with pytest.raises(ValueError, match="too small"):
        pixel_corners(full[:1])


def _corners_by_padding(pixmap, pixfrac):
    """The corners the plain NumPy way: pad the map by linear extrapolation (rows, then
    columns), then interpolate bilinearly between each centre and its neighbours."""
    h = 0.5 * pixfrac
    p = np.concatenate([2 * pixmap[:1] - pixmap[1:2], pixmap, 2 * pixmap[-1:] - pixmap[-2:-1]], axis=0)
    p = np.concatenate([2 * p[:, :1] - p[:, 1:2], p, 2 * p[:, -1:] - p[:, -2:-1]], axis=1)
    ny, nx = pixmap.shape[:2]
    xs, ys = [], []
    for sx, sy in ((-1, 1), (1, 1), (1, -1), (-1, -1)):
        across = p[1 : ny + 1, 1 + sx : nx + 1 + sx]
        along = p[1 + sy : ny + 1 + sy, 1 : nx + 1]
        diagonal = p[1 + sy : ny + 1 + sy, 1 + sx : nx + 1 + sx]
        v = (1 - h) * (1 - h) * pixmap + h * (1 - h) * (across + along) + h * h * diagonal
        xs.append(v[..., 0])
        ys.append(v[..., 1])
    return np.stack(xs), np.stack(ys)


@settings(max_examples=40, deadline=None)
@given(
    ny=st.integers(2, 9), nx=st.integers(2, 9), pixfrac=st.sampled_from([1.0, 0.8, 0.37]),
    seed=st.integers(0, 2**16), nan=st.booleans(),
)
def test_compiled_corners_equal_the_padded_numpy_formula_to_the_bit(ny, nx, pixfrac, seed, nan):
    rng = np.random.default_rng(seed)
    y, x = np.indices((ny, nx), dtype=float)
    pm = np.dstack([2.0 * x + 0.3 * y, -0.2 * x + 1.9 * y]) + rng.normal(scale=0.05, size=(ny, nx, 2))
    if nan:
        pm[rng.integers(ny), rng.integers(nx), rng.integers(2)] = np.nan
    got = pixel_corners(pm, pixfrac=pixfrac)
    want = _corners_by_padding(pm, pixfrac)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
