"""Tiled inference with the shipped model equals whole-image inference; windows, NaN, normalisation."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from mosaic.restore.infer import RestorationModel, _tiles, blend_window, restore_image, restore_tiled, restore_whole
from mosaic.restore.normalise import estimate_normalisation
from tests.restore.conftest import mosaic_image


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 600), tile=st.sampled_from([8, 16, 64, 128, 512]), overlap=st.sampled_from([0, 8, 16, 32, 64]))
def test_blend_windows_sum_to_one(n, tile, overlap):
    """The windows of the tiles of an axis, each placed over its core +/- overlap, sum to 1 on the image."""
    if overlap > tile:
        return
    sizes = _tiles(n, tile, overlap)
    assert sum(sizes) == n
    total = np.zeros(n + 2 * overlap)
    start = 0
    for k, c in enumerate(sizes):
        w = blend_window(c, overlap, first=k == 0, last=k == len(sizes) - 1)
        total[start : start + c + 2 * overlap] += w
        start += c
    np.testing.assert_allclose(total[overlap : overlap + n], 1.0, atol=1e-12)


def test_normalisation_is_global_and_robust():
    """Sky and sigma of the whole image (bright sources and NaN do not move them), inverse undoes forward."""
    img = mosaic_image((240, 200), seed=3)
    norm = estimate_normalisation(img)
    assert norm.sky == pytest.approx(0.2, abs=0.004)
    assert norm.sigma == pytest.approx(0.01, rel=0.15)
    x = np.nan_to_num(img, nan=0.2)
    np.testing.assert_allclose(norm.inverse(norm.forward(x)), x, rtol=1e-5, atol=1e-6)
    assert np.all(norm.forward(img)[np.isnan(img)] == 0)


class BoxModel(RestorationModel):
    """The shipped model's metadata with a known local operator (a box mean of radius ``r``) as the network."""

    r = 16

    def run(self, u):
        return ndimage.uniform_filter(np.asarray(u, np.float64), size=2 * self.r + 1, mode="constant").astype(np.float32)


def _seams(shape, chunks):
    seams = np.zeros(shape, bool)
    for axis, sizes in enumerate(chunks):
        for e in np.cumsum(sizes)[:-1]:
            idx = [slice(None), slice(None)]
            idx[axis] = slice(e - 1, e + 1)
            seams[tuple(idx)] = True
    return seams


@settings(max_examples=10, deadline=None)
@given(ny=st.integers(10, 200), nx=st.integers(10, 200), tile=st.sampled_from([32, 48, 64, 128]),
       overlap=st.sampled_from([32, 40, 64]), chunk=st.integers(17, 90))
def test_tiling_graph_equals_whole_for_a_local_operator(model, ny, nx, tile, overlap, chunk):
    """For a network of reach <= overlap / 2, tiles blended by the windows give the whole-image result."""
    if overlap > tile:
        return
    box = BoxModel(model.path)
    u = np.random.default_rng(ny * nx).normal(size=(ny, nx)).astype(np.float32)
    whole = restore_whole(u, box, overlap=overlap)
    tiled = restore_tiled(da.from_array(u, chunks=chunk), box, tile=tile, overlap=overlap).compute(scheduler="threads")
    np.testing.assert_allclose(tiled, whole, atol=1e-5, rtol=0)


@settings(max_examples=10, deadline=None)
@given(ny=st.integers(10, 160), nx=st.integers(10, 160), tile=st.sampled_from([32, 48, 64]), overlap=st.sampled_from([16, 32]))
def test_restore_image_equals_whole_on_awkward_shapes(model, ny, nx, tile, overlap):
    """In image units, NaN kept: shapes whose last tile is merged into the one before (chunks unlike the input's)."""
    box = BoxModel(model.path)
    box.r = overlap // 2
    img = mosaic_image((ny, nx), seed=ny + nx)
    norm = estimate_normalisation(img)
    want = norm.inverse(restore_whole(norm.forward(img), box, overlap=overlap))
    want[np.isnan(img)] = np.nan
    got, _ = restore_image(da.from_array(img, chunks=37), box, tile=tile, overlap=overlap, norm=norm)
    np.testing.assert_allclose(got.compute(scheduler="threads"), want, rtol=1e-5, atol=1e-5 * norm.sigma, equal_nan=True)


@pytest.mark.parametrize("tile", [128, 256, 512])
def test_tile_sizes_of_the_issue_with_a_local_operator(model, tile):
    box = BoxModel(model.path)
    u = np.random.default_rng(tile).normal(size=(700, 1100)).astype(np.float32)
    whole = restore_whole(u, box, overlap=64)
    tiled = restore_tiled(da.from_array(u, chunks=256), box, tile=tile, overlap=64)
    got = tiled.compute(scheduler="threads")
    diff = np.abs(got - whole)
    assert diff.max() < 1e-5
    assert diff[_seams(u.shape, tiled.chunks)].max() <= max(3 * np.median(diff), 1e-5)


def test_shipped_model_is_local(model):
    """A pixel with the model's halo of context on every side equals whole-image inference to 1e-4.

    This is what makes the tiled result equal the whole one: the windows take every pixel from
    tiles with at least overlap / 2 of context, the farther the more weight (the graph tests above
    check the rest with a known local operator), and the default overlap is the halo.
    """
    h = model.halo
    n = 2 * h + 48  # the crop below keeps a core of 32 x 32 pixels with h of context on every side
    img = mosaic_image((n, n), seed=2, nan_corner=False)
    norm = estimate_normalisation(img)
    u = norm.forward(img)
    whole = restore_whole(u, model, overlap=0)
    crop = u[8 : n - 8, 8 : n - 8]  # offset a multiple of 8: the same pixel lattice
    part = restore_whole(crop, model, overlap=0)
    core = (slice(h, n - 16 - h), slice(h, n - 16 - h))
    assert part[core].size >= 16
    want = whole[8 : n - 8, 8 : n - 8][core]
    assert np.abs(part[core] - want).max() < 1e-4
    # the model restores something: far from the identity on the sources
    assert np.abs(whole - u).max() > 0.1


@pytest.mark.parametrize(("tile", "overlap"), [(100, 64), (128, 60), (128, 256)])
def test_bad_tiling_is_refused(model, tile, overlap):
    with pytest.raises(ValueError, match="tile|overlap"):
        restore_tiled(da.zeros((64, 64), chunks=32), model, tile=tile, overlap=overlap)


def test_normalisation_of_a_large_fits_mosaic_reads_whole_chunks(tmp_path, monkeypatch):
    """Beyond MAX_SAMPLES pixels the statistics take a sub-grid; of a FITS-backed dask array, read in
    bands of whole rows (astropy's strided section went pixel by pixel): the same figures as the
    in-memory sub-grid, on chunks that are not multiples of the stride."""
    from mosaic.io.images import read_fits_image
    from mosaic.restore import normalise
    from tests.restore.conftest import write_mosaic

    img = mosaic_image((300, 360), seed=9)
    src = write_mosaic(tmp_path / "big_i2d.fits", img)
    monkeypatch.setattr(normalise, "MAX_SAMPLES", 300 * 360 // 9)  # a sub-grid of every 3rd pixel
    lazy = read_fits_image(src, tile=125, dtype=np.float32).data
    from mosaic.io import images

    keys, read = [], images._FitsSection.__getitem__
    monkeypatch.setattr(images._FitsSection, "__getitem__", lambda self, key: keys.append(key) or read(self, key))
    got, want = estimate_normalisation(lazy), estimate_normalisation(img)
    # every read goes through the band reader (whole rows, thinned in memory), none through a strided section
    assert keys and all(images._strided_slices(key, (300, 360)) is not None for key in keys)
    assert (got.sky, got.sigma) == pytest.approx((want.sky, want.sigma), rel=1e-6)
    assert want.sigma == pytest.approx(0.01, rel=0.2)
