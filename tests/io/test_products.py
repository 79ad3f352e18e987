"""_i2d.fits products written tile by tile, and the store copy of a mosaic."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
from astropy.io import fits
from astropy.wcs import WCS

from mosaic.io import images
from mosaic.io.grid import MosaicGrid
from mosaic.io.products import write_drizzle_products, write_i2d
from mosaic.io.store import Store

EXTS = ["PRIMARY", "SCI", "ERR", "CON", "WHT", "VAR_POISSON", "VAR_RNOISE", "VAR_FLAT"]


@pytest.fixture
def grid():
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [53.16, -27.78]
    w.wcs.crpix = [61.5, 40.25]
    w.wcs.cd = np.array([[-8.75e-6, 1.1e-7], [1.1e-7, 8.75e-6]])
    w.pixel_shape = (123, 97)
    return MosaicGrid(wcs=w, shape=(97, 123), tile=(20, 31), psr=0.5)


def _mosaic(grid, *, n_planes=2, seed=0):
    """A lazy mosaic on the grid, chunked by its tiles, with known values."""
    rng = np.random.default_rng(seed)
    arrays = {v: rng.normal(size=grid.shape).astype(np.float32) for v in ("sci", "err", "wht", "var_poisson", "var_rnoise", "var_flat")}
    arrays["sci"][:3, :5] = np.nan
    con = rng.integers(-(2**31), 2**31 - 1, size=(n_planes, *grid.shape), dtype=np.int64).astype(np.int32)
    ds = xr.Dataset({k: (("y", "x"), da.from_array(v, chunks=grid.chunks)) for k, v in arrays.items()})
    ds["con"] = (("plane", "y", "x"), da.from_array(con, chunks=(n_planes, *grid.chunks)))
    ds.attrs.update(band="F200W", kernel="square", pixfrac=1.0, weight_type="ivm", pixel_scale_ratio=0.5, n_exposures=40)
    return ds, {**arrays, "con": con}


def test_i2d_holds_every_array_with_the_grid_wcs(tmp_path, grid):
    ds, want = _mosaic(grid)
    path = write_i2d(tmp_path / "f_i2d.fits", ds, grid)
    assert path == tmp_path / "f_i2d.fits"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f_i2d.fits"]  # no temporary left
    with fits.open(path) as hdul:
        hdul.verify("exception")
        assert [h.name for h in hdul] == EXTS
        for h in hdul[1:]:
            var = h.name.lower()
            np.testing.assert_array_equal(h.data, want[var])
            w = WCS(h.header, naxis=2)
            np.testing.assert_allclose(w.wcs.crval, grid.wcs.wcs.crval, rtol=1e-14)
            np.testing.assert_allclose(w.wcs.crpix, grid.wcs.wcs.crpix, rtol=1e-14)
        assert hdul["CON"].data.shape == (2, *grid.shape) and hdul["CON"].data.dtype.kind == "i"
        assert hdul["SCI"].header["BUNIT"] == "MJy/sr"
        assert hdul["VAR_RNOISE"].header["BUNIT"] == "(MJy/sr)^2"
        prim = hdul[0].header
        assert (prim["FILTER"], prim["PIXFRAC"], prim["RESWHT"], prim["NDRIZIM"]) == ("F200W", 1.0, "ivm", 40)


def test_i2d_is_written_tile_by_tile(tmp_path, grid, monkeypatch):
    ds, want = _mosaic(grid)
    seen = []
    real = images._FitsImageTarget.__setitem__

    def spy(self, key, value):
        seen.append(np.shape(value)[-2:])
        return real(self, key, value)

    monkeypatch.setattr(images._FitsImageTarget, "__setitem__", spy)
    path = write_i2d(tmp_path / "t_i2d.fits", ds, grid)
    # no write is larger than a tile: the whole mosaic is never in one piece
    assert max(a * b for a, b in seen) <= grid.tile[0] * grid.tile[1]
    assert len(seen) == 7 * len(grid.tiles())
    with fits.open(path) as hdul:
        np.testing.assert_array_equal(hdul["SCI"].data, want["sci"])


def test_i2d_refuses_to_overwrite_and_leaves_nothing_half_written(tmp_path, grid):
    ds, _ = _mosaic(grid)
    path = tmp_path / "x_i2d.fits"
    path.write_text("keep me")
    with pytest.raises(FileExistsError, match="exists; pass overwrite=True"):
        write_i2d(path, ds, grid)
    assert path.read_text() == "keep me"

    def boom(x):
        raise RuntimeError("tile failed")

    broken = ds.copy()
    broken["wht"] = (("y", "x"), ds["wht"].data.map_blocks(boom, dtype=np.float32))
    with pytest.raises(RuntimeError, match="tile failed"):
        write_i2d(path, broken, grid, overwrite=True)
    assert path.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x_i2d.fits"]


def test_i2d_checks_shapes(tmp_path, grid):
    ds, _ = _mosaic(grid)
    bad = ds.drop_vars("wht")
    bad["wht"] = (("yy", "xx"), np.zeros((5, 5), np.float32))
    with pytest.raises(ValueError, match="variable 'wht' has shape"):
        write_i2d(tmp_path / "a.fits", bad, grid)
    with pytest.raises(ValueError, match="has no 'sci' variable"):
        write_i2d(tmp_path / "a.fits", ds.drop_vars("sci"), grid)


def test_mosaic_without_variances_and_in_memory(tmp_path, grid):
    ds, want = _mosaic(grid, n_planes=1)
    ds = ds.drop_vars(["var_poisson", "var_rnoise", "var_flat"]).compute()
    path = write_i2d(tmp_path / "m_i2d.fits", ds, grid)
    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "SCI", "ERR", "CON", "WHT"]
        np.testing.assert_array_equal(hdul["CON"].data, want["con"])


def test_store_and_file_are_written_from_one_computation(tmp_path, grid):
    ds, want = _mosaic(grid)
    calls = []

    def count(x):
        calls.append(1)
        return x

    ds["sci"] = (("y", "x"), ds["sci"].data.map_blocks(count, dtype=np.float32, meta=np.array((), np.float32)))
    store = Store(tmp_path / "s.zarr")
    with dask.config.set(scheduler="sync"):
        out = write_drizzle_products(ds, grid, out=tmp_path / "deep_i2d.fits", store=store, overwrite=False)
    assert len(calls) == len(grid.tiles())  # each tile computed once for both products
    assert out["i2d"] == tmp_path / "deep_i2d.fits"
    assert store.is_complete("deep_i2d", "F200W", "drizzle")
    prod = store.read_product("deep_i2d", "F200W", "drizzle")
    np.testing.assert_array_equal(prod["con"].values, want["con"])
    np.testing.assert_array_equal(prod["sci"].values, want["sci"])
    assert prod.attrs["kernel"] == "square"
    with pytest.raises(ValueError, match="nothing to write"):
        write_drizzle_products(ds, grid)


def test_writing_on_a_distributed_cluster(tmp_path, grid):
    distributed = pytest.importorskip("distributed")
    ds, want = _mosaic(grid)
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster,
        distributed.Client(cluster),
    ):
        path = write_i2d(tmp_path / "d_i2d.fits", ds, grid)
    with fits.open(path) as hdul:
        np.testing.assert_array_equal(hdul["VAR_FLAT"].data, want["var_flat"])
