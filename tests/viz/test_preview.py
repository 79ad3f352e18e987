"""Previews: block means equal the whole-image reference on any tiling; PNGs written whole."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr
from astropy.io import fits
from hypothesis import given
from hypothesis import strategies as st
from matplotlib import image as mimage

from mosaic.exceptions import InputError
from mosaic.viz.preview import block_mean, downsample_factor, open_image, preview_array, write_png, write_preview


def _reference(img, f):
    """Block means by explicit loops over the whole image (NaN left out, empty blocks NaN)."""
    ny, nx = img.shape
    out = np.full((-(-ny // f), -(-nx // f)), np.nan)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            block = img[i * f:(i + 1) * f, j * f:(j + 1) * f]
            good = block[np.isfinite(block)]
            if good.size:
                out[i, j] = good.mean()
    return out


def _image(ny, nx, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.normal(size=(ny, nx))
    img[rng.random((ny, nx)) < 0.1] = np.nan
    img[: min(ny, 7), : min(nx, 9)] = np.nan  # whole empty blocks
    return img


@given(ny=st.integers(5, 70), nx=st.integers(5, 70), factor=st.integers(1, 9), cy=st.integers(3, 40), cx=st.integers(3, 40))
def test_block_mean_equals_reference_on_any_chunking(ny, nx, factor, cy, cx):
    img = _image(ny, nx)
    want = _reference(img, factor)
    # rounding of a block's sum is relative to its terms, not to a mean that lands near 0
    # (ny = nx = 32, factor 5: 2.8e-17 off a mean of 1.6e-17, found by a random run)
    atol = 1e-12 * np.max(np.abs(img[np.isfinite(img)]), initial=0.0)
    np.testing.assert_allclose(block_mean(img, factor), want, rtol=1e-12, atol=atol, equal_nan=True)
    lazy = block_mean(da.from_array(img, chunks=(cy, cx)), factor)
    assert isinstance(lazy, da.Array)
    np.testing.assert_allclose(lazy.compute(), want, rtol=1e-12, atol=atol, equal_nan=True)


def test_fits_and_zarr_previews_equal_reference(tmp_path):
    img = _image(301, 257, seed=3).astype(np.float32)
    path = tmp_path / "mosaic_i2d.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(img, name="SCI")]).writeto(path)
    lazy = open_image(path, chunk=64)
    assert lazy.chunks[0][0] == 64
    np.testing.assert_array_equal(lazy.compute(), img)
    assert downsample_factor(img.shape, 40) == 8
    want = _reference(img.astype(np.float64), 8)
    np.testing.assert_allclose(preview_array(path, max_size=40), want, rtol=1e-6, equal_nan=True)
    z = zarr.create_array(str(tmp_path / "sci.zarr"), shape=img.shape, chunks=(100, 100), dtype="f4")
    z[:] = img
    np.testing.assert_allclose(preview_array(tmp_path / "sci.zarr", max_size=40), want, rtol=1e-6, equal_nan=True)


def test_write_preview_png(tmp_path):
    img = _image(300, 200, seed=1)
    out = write_preview(tmp_path / "p.png", da.from_array(img, chunks=64), max_size=50, stretch="sqrt")
    png = mimage.imread(out)
    assert png.shape[:2] == (50, 34)  # factor 6
    small = _reference(img, 6)
    # row 0 of the image is the bottom row of the PNG; NaN blocks are black
    assert np.isnan(small[0, 0]) and np.all(png[-1, 0, :3] == 0)
    assert [p.name for p in tmp_path.iterdir()] == ["p.png"]  # no temporary left


def test_write_png_keeps_its_signature(tmp_path):
    img = np.arange(20.0 * 30).reshape(20, 30)
    out = write_png(tmp_path / "a.png", img, stretch="linear", interval="minmax", percent=99.0, cmap="gray")
    png = mimage.imread(out)
    assert png.shape[:2] == (20, 30)
    # linear on min..max: the top-right pixel (last row, shown at the top) is white, bottom-left black
    np.testing.assert_allclose(png[0, -1, :3], 1.0)
    np.testing.assert_allclose(png[-1, 0, :3], 0.0)


def test_bad_input(tmp_path):
    with pytest.raises(InputError, match="max_size must be a positive integer"):
        downsample_factor((10, 10), 0)
    with pytest.raises(InputError, match="stretch 'x' is unknown"):
        write_preview(tmp_path / "p.png", np.zeros((4, 4)), stretch="x")
    with pytest.raises(InputError, match="no such image"):
        preview_array(tmp_path / "missing.fits")
    with pytest.raises(InputError, match="does not exist"):
        write_png(tmp_path / "nodir" / "a.png", np.ones((4, 4)) + np.eye(4))
