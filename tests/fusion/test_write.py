"""The fused cube written block by block (tiled fusion) is the file written whole, and never half a file."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
from astropy.wcs import WCS

from mosaic.io.cubes import write_fused


def _wcs():
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.cdelt = [-0.033 / 3600, 0.033 / 3600]
    w.wcs.crval = [83.8, -5.4]
    w.wcs.crpix = [12.0, 9.5]
    return w


def _write(path, cube):
    n_wave = cube.shape[0]
    extra = {"FUSEK": (2, "principal spectra kept")}
    return write_fused(path, cube, _wcs(), np.linspace(1.7, 2.2, n_wave), basis=np.eye(n_wave)[:, :2], mean=np.arange(n_wave) + 1.0,
                       header_extra=extra, bunit="MJy/sr")


@pytest.mark.parametrize(("shape", "chunks", "scheduler"), [
    ((7, 23, 31), (7, 5, 8), "threads"),  # tiles of the plane, all wavelengths per block (tiled fusion's)
    ((5, 17, 13), (2, 17, 4), "threads"),  # blocks split along wavelength too
    ((6, 11, 10), (4, 6, 7), "processes"),  # written from other processes: the target travels pickled
])
def test_streamed_equals_whole(tmp_path, shape, chunks, scheduler):
    cube = np.random.default_rng(sum(shape)).normal(size=shape)
    cube[0, 1, 2] = np.nan
    whole = _write(tmp_path / "whole.fits", cube)
    with dask.config.set(scheduler=scheduler):
        streamed = _write(tmp_path / "streamed.fits", da.from_array(cube, chunks=chunks))
    assert streamed.read_bytes() == whole.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["streamed.fits", "whole.fits"]


def _fails(block):
    raise RuntimeError("tile solve failed")


def test_a_failed_block_leaves_no_file(tmp_path):
    cube = da.zeros((4, 12, 12), chunks=(4, 6, 6))
    cube = cube.map_blocks(lambda b, block_info=None: _fails(b) if block_info[0]["chunk-location"] == (0, 1, 1) else b, dtype=float)
    with pytest.raises(RuntimeError, match="tile solve failed"):
        _write(tmp_path / "out.fits", cube)
    assert list(tmp_path.iterdir()) == []
