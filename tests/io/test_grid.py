"""The output grid: footprint coverage, pixel scale, tiling partition, overlap index."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mosaic.io.grid import MosaicGrid, balanced_tile, tile_starts
from mosaic.simulate.pointing import nircam_wcs


def _grid(shape, tile, halo):
    w = nircam_wcs(channel="SW", size=64, distortion=False)
    return MosaicGrid(wcs=w, shape=shape, tile=tile, halo=halo)


@given(
    ny=st.integers(1, 90),
    nx=st.integers(1, 90),
    ty=st.integers(1, 40),
    tx=st.integers(1, 40),
    halo=st.integers(0, 25),
)
def test_tile_cores_partition_the_grid(ny, nx, ty, tx, halo):
    grid = _grid((ny, nx), (ty, tx), halo)
    count = np.zeros((ny, nx), int)
    for t in grid.tiles():
        count[t.core] += 1
        ys, xs = t.outer
        # the outer region is the core grown by the halo and clipped at the edges
        assert ys.start == max(t.core[0].start - halo, 0) and ys.stop == min(t.core[0].stop + halo, ny)
        assert xs.start == max(t.core[1].start - halo, 0) and xs.stop == min(t.core[1].stop + halo, nx)
        cy, cx = t.core_in_outer
        outer_ids = np.arange(ny * nx).reshape(ny, nx)[t.outer]
        np.testing.assert_array_equal(outer_ids[cy, cx], np.arange(ny * nx).reshape(ny, nx)[t.core])
    np.testing.assert_array_equal(count, 1)
    assert tuple(map(sum, grid.chunks)) == (ny, nx)
    assert len(grid.tiles()) == len(grid.chunks[0]) * len(grid.chunks[1])


def _exposures(n=3, size=96, roll=0.3):
    return [nircam_wcs(channel="SW", size=size, offset_arcsec=(0.4 * k, -0.7 * k), roll_deg=roll * k) for k in range(n)], [(size, size)] * n


@pytest.mark.parametrize("psr", [0.5, 1.0])
@pytest.mark.parametrize("rotation", [0.0, 30.0])
def test_grid_covers_every_footprint_at_the_asked_scale(psr, rotation):
    wcs_list, shapes = _exposures()
    grid = MosaicGrid.from_exposures(wcs_list, shapes, psr=psr, rotation_deg=rotation, tile=40)
    for w, s in zip(wcs_list, shapes, strict=True):
        pts = grid.footprint_pixels(w, s)
        assert pts[:, 0].min() >= -0.5 - 1e-6 and pts[:, 0].max() <= grid.shape[1] - 0.5 + 1e-6
        assert pts[:, 1].min() >= -0.5 - 1e-6 and pts[:, 1].max() <= grid.shape[0] - 0.5 + 1e-6
    # the grid is no bigger than needed: the footprints reach within a pixel of each edge
    allpts = np.concatenate([grid.footprint_pixels(w, s) for w, s in zip(wcs_list, shapes, strict=True)])
    assert allpts[:, 0].min() < 0.5 and allpts[:, 0].max() > grid.shape[1] - 1.5
    # the pixel scale is psr times the detector's (SW: 0.031"), from the distorted WCS
    assert grid.pixel_scale_arcsec == pytest.approx(psr * 0.031, rel=0.02)
    # north up: the +y axis points to the north, rotated by `rotation` east of north
    c = grid.wcs.pixel_to_world(grid.shape[1] / 2, grid.shape[0] / 2)
    up = grid.wcs.pixel_to_world(grid.shape[1] / 2, grid.shape[0] / 2 + 10)
    assert c.position_angle(up).deg == pytest.approx(rotation % 360, abs=1e-6)


def test_slice_wcs_and_header_round_trip():
    wcs_list, shapes = _exposures()
    grid = MosaicGrid.from_exposures(wcs_list, shapes, psr=0.5, tile=50, halo=7)
    t = grid.tiles()[3]
    sub = grid.slice_wcs(t.outer)
    a = sub.pixel_to_world(2.0, 3.0)
    b = grid.wcs.pixel_to_world(t.outer[1].start + 2.0, t.outer[0].start + 3.0)
    assert a.separation(b).arcsec < 1e-9
    again = MosaicGrid.from_header(grid.to_header(), tile=50, halo=7)
    assert again.shape == grid.shape and again.psr == 0.5
    assert again.wcs.pixel_to_world(10, 20).separation(grid.wcs.pixel_to_world(10, 20)).arcsec < 1e-9


def test_overlap_index_finds_every_tile_an_exposure_lands_on():
    wcs_list, shapes = _exposures(n=3, size=64, roll=5.0)
    # exposures spread apart so that some tiles miss some exposures
    wcs_list = [nircam_wcs(channel="SW", size=64, offset_arcsec=(1.2 * k, 0.8 * k), roll_deg=4.0 * k) for k in range(3)]
    grid = MosaicGrid.from_exposures(wcs_list, shapes, psr=0.5, tile=(23, 31), halo=3)
    index = grid.overlap_index(wcs_list, shapes)
    assert set(index) == {t.index for t in grid.tiles()}
    yy, xx = np.mgrid[0 : grid.shape[0], 0 : grid.shape[1]]
    ra, dec = grid.wcs.all_pix2world(xx.ravel(), yy.ravel(), 0)
    for k, w in enumerate(wcs_list):
        dx, dy = w.all_world2pix(ra, dec, 0, tolerance=1e-8)
        inside = ((dx >= -0.5) & (dx <= 63.5) & (dy >= -0.5) & (dy <= 63.5)).reshape(grid.shape)
        # brute force distance (output px) of every pixel to the footprint, for the margin
        for t in grid.tiles():
            truly = inside[t.outer].any()
            listed = k in index[t.index]
            if truly:
                assert listed, f"tile {t.index} holds pixels of exposure {k} but the index misses it"
            if listed and not truly:
                # a listed tile may only miss the footprint by the safety margin
                ys, xs = t.outer
                grown = np.zeros_like(inside)
                grown[max(ys.start - 3, 0) : ys.stop + 3, max(xs.start - 3, 0) : xs.stop + 3] = True
                assert (grown & inside).any(), f"tile {t.index} listed for exposure {k} far from it"
    assert any(len(v) < 3 for v in index.values()), "the layout should leave some tiles partly covered"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tile": 0}, "tile size"),
        ({"halo": -1}, "halo"),
        ({"shape": (0, 5)}, "grid shape"),
    ],
)
def test_bad_grid_arguments_are_named(kwargs, match):
    args = {"wcs": nircam_wcs(size=16), "shape": (10, 10), "tile": 4, "halo": 0} | kwargs
    with pytest.raises(ValueError, match=match):
        MosaicGrid(**args)


def test_no_exposures_and_bad_psr():
    with pytest.raises(ValueError, match="no exposures"):
        MosaicGrid.from_exposures([], [])
    w, s = _exposures(n=1)
    with pytest.raises(ValueError, match="psr must be positive; got -1"):
        MosaicGrid.from_exposures(w, s, psr=-1)



def test_padded_grid_keeps_the_sky_of_every_pixel():
    wcs, shapes = _exposures(n=2, size=40)
    grid = MosaicGrid.from_exposures(wcs, shapes, psr=0.5)
    big = grid.padded(7)
    assert big.shape == (grid.shape[0] + 14, grid.shape[1] + 14)
    y, x = np.mgrid[0 : grid.shape[0] : 9, 0 : grid.shape[1] : 11].astype(float)
    np.testing.assert_allclose(grid.wcs.pixel_to_world_values(x, y), big.wcs.pixel_to_world_values(x + 7, y + 7), rtol=0, atol=1e-12)
    assert grid.padded(0) is grid
    with pytest.raises(ValueError, match="margin"):
        grid.padded(-1)


@given(st.integers(1, 20000), st.integers(1, 20000), st.integers(1, 4096))
def test_balanced_tiles_are_as_few_and_as_equal_as_possible(ny, nx, tile):
    """As many tiles per axis as ``tile`` gives, none larger than ``tile``, sizes within the tile count of each other."""
    sizes = balanced_tile((ny, nx), tile)
    for n, t in zip((ny, nx), sizes, strict=True):
        count = -(-n // tile)
        assert 1 <= t <= tile
        assert len(tile_starts(n, t)) == count
        lengths = [min(t, n - s) for s in tile_starts(n, t)]
        assert sum(lengths) == n
        assert max(lengths) - min(lengths) < count
