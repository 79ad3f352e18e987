"""Spectral cubes on disk: an IFU cube (FITS with a spectral WCS) in, a fused cube out (:mod:`mosaic.fusion`).

The IFU cube is read from ``SCI`` (a JWST ``_s3d.fits``), else from the first 3-D image HDU; its
WCS must have a spectral axis (``CTYPE3 = 'WAVE'`` ...), from which the channel wavelengths are
taken, in microns. The fused cube is written as ``SCI`` (float32, ``n_wave x ny x nx``) with the
fine celestial WCS and the cube's spectral axis, plus ``BASIS`` (the principal spectra, ``k x
n_wave``) and ``MEAN`` (the mean spectrum), under a temporary name renamed when whole. A lazy
(dask) cube, as tiled fusion makes, is written block by block into the allocated file, so the
cube is never whole in memory.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from mosaic.exceptions import InputError, MissingFileError

__all__ = ["IFUCube", "read_cube", "write_fused"]

log = logging.getLogger(__name__)


class IFUCube:
    """An IFU cube in memory: ``data`` ``(n_wave, ny, nx)``, ``wcs`` (3-D), ``wavelengths`` (microns), ``header``."""

    def __init__(self, path, data, wcs, wavelengths, header):
        self.path, self.data, self.wcs, self.wavelengths, self.header = Path(path), data, wcs, wavelengths, header

    @property
    def celestial(self) -> WCS:
        return self.wcs.celestial


def _wcs(header, path):
    import warnings  # noqa: PLC0415

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            return WCS(header)
        except Exception as err:  # astropy raises several kinds for malformed WCS keywords
            msg = f"{path}: cannot read the WCS of the cube: {err}"
            raise InputError(msg) from None


def read_cube(path) -> IFUCube:
    """Read an IFU cube; one clear error if it is missing, not 3-D or has no spectral axis."""
    path = Path(path)
    if not path.exists():
        msg = f"{path}: no such IFU cube"
        raise MissingFileError(msg)
    try:
        hdul = fits.open(path, memmap=False)
    except OSError as err:
        msg = f"{path}: not a FITS file ({err})"
        raise InputError(msg) from None
    with hdul:
        names = [h.name for h in hdul]
        if "SCI" in names:
            hdu = hdul["SCI"]
        else:
            hdu = next((h for h in hdul if h.is_image and h.data is not None and h.data.ndim == 3), None)
        if hdu is None or hdu.data is None or hdu.data.ndim != 3:
            shape = None if hdu is None or hdu.data is None else hdu.data.shape
            msg = f"{path}: expected a 3-D IFU cube (wavelength, y, x) in SCI or the first image HDU; got shape {shape}"
            raise InputError(msg)
        data = np.asarray(hdu.data, dtype=np.float64)
        header = hdu.header.copy()
    wcs = _wcs(header, path)
    if wcs.naxis != 3 or not wcs.has_spectral or wcs.spectral.naxis != 1 or not wcs.has_celestial:
        msg = (
            f"{path}: the cube's WCS has no spectral axis (CTYPE3 = {header.get('CTYPE3')!r}); "
            "expected a celestial WCS on axes 1-2 and a spectral one (e.g. 'WAVE', in um) on axis 3"
        )
        raise InputError(msg)
    spectral = wcs.spectral
    world = spectral.pixel_to_world(np.arange(data.shape[0]))
    wavelengths = np.asarray(world.to_value("um"), dtype=np.float64)
    if np.any(np.diff(wavelengths) <= 0):
        msg = f"{path}: the spectral axis must increase with the channel index"
        raise InputError(msg)
    return IFUCube(path, data, wcs, wavelengths, header)


def _fused_header(fine_wcs: WCS, wavelengths, bunit):
    """The SCI header: the fine celestial WCS and, for evenly spaced channels, the spectral axis."""
    w = np.asarray(wavelengths, dtype=np.float64)
    hdr = fine_wcs.to_header()
    hdr["WCSAXES"] = 3
    step = np.diff(w)
    if np.allclose(step, step.mean(), rtol=1e-6, atol=0):
        hdr["CTYPE3"], hdr["CUNIT3"] = "WAVE", "um"
        hdr["CRPIX3"], hdr["CRVAL3"], hdr["CDELT3"] = 1.0, float(w[0]), float(step.mean())
    else:
        log.warning("wavelengths are not evenly spaced: the spectral axis is the WAVELENGTH table, CTYPE3 = 'WAVE-TAB' is not written")
    if bunit:
        hdr["BUNIT"] = bunit
    return hdr


class _ImageRegion:
    """A FITS image's data in a file, written region by region (a :func:`dask.array.store` target).

    Each assignment maps the file, writes its region and unmaps it, so the target pickles as a
    path and an offset and works from any worker that sees the file (a distributed cluster's
    too, where a memmap would be pickled as a copy and the writes lost).
    """

    def __init__(self, path, offset: int, shape, dtype=">f4"):
        self.path, self.offset, self.shape, self.dtype = str(path), int(offset), tuple(shape), np.dtype(dtype)

    def __setitem__(self, key, value):
        # map only the planes the region reaches (a block of tiled fusion spans every wavelength,
        # but a block split along the first axis need not map the others)
        first = key[0] if isinstance(key, tuple) else key
        start, stop, _ = first.indices(self.shape[0])
        plane = int(np.prod(self.shape[1:])) * self.dtype.itemsize
        shape = (stop - start, *self.shape[1:])
        data = np.memmap(self.path, dtype=self.dtype, mode="r+", offset=self.offset + start * plane, shape=shape)
        data[(slice(None), *key[1:]) if isinstance(key, tuple) else slice(None)] = value
        del data  # unmapped: the pages are the file's (the writes are seen by whoever reads it next)


def _write_streamed(tmp, cube, primary, sci_header, others):
    """Write ``primary``, a SCI HDU of ``cube`` (dask) filled block by block, then ``others``.

    The SCI header is that of a float32 image of the cube's shape; its data are allocated as
    zeros (a sparse file where the file system allows) and filled by :func:`dask.array.store`
    (on the active scheduler), so no more than a few blocks of the cube are in memory at once.
    """
    import dask.array as da  # noqa: PLC0415

    fits.HDUList([primary]).writeto(tmp)
    # the header astropy would write for this image, without making the image
    sci = fits.ImageHDU(np.zeros((1,) * cube.ndim, dtype=np.float32), header=sci_header, name="SCI")
    for axis, n in enumerate(reversed(cube.shape), start=1):
        sci.header[f"NAXIS{axis}"] = n
    n_bytes = 4 * int(np.prod(cube.shape))
    with open(tmp, "ab") as f:
        f.write(sci.header.tostring().encode("ascii"))
        offset = f.tell()
        f.truncate(offset + n_bytes + (-n_bytes) % 2880)  # data padded to whole FITS blocks with zeros
    with fits.open(tmp, mode="append") as hdul:
        for hdu in others:
            hdul.append(hdu)
    da.store(cube.astype(np.float32), _ImageRegion(tmp, offset, cube.shape), lock=False)


def write_fused(path, cube, fine_wcs: WCS, wavelengths, *, basis, mean, header_extra=None, bunit=None) -> Path:
    """Write the fused cube to ``path``, under a temporary name renamed when whole.

    A dask ``cube`` (tiled fusion) is computed and written block by block: memory holds a few
    blocks, not the cube. A NumPy one is written as it is.
    """
    import dask.array as da  # noqa: PLC0415

    path = Path(path)
    w = np.asarray(wavelengths, dtype=np.float64)
    hdr = _fused_header(fine_wcs, w, bunit)
    primary = fits.PrimaryHDU()
    for key, value in (header_extra or {}).items():
        primary.header[key] = value
    others = [
        fits.ImageHDU(np.asarray(basis.T, dtype=np.float64), name="BASIS"),
        fits.ImageHDU(np.asarray(mean, dtype=np.float64), name="MEAN"),
        fits.BinTableHDU.from_columns([fits.Column(name="WAVELENGTH", format="D", unit="um", array=w)], name="WAVELENGTH"),
    ]
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        if isinstance(cube, da.Array):
            _write_streamed(tmp, cube, primary, hdr, others)
        else:
            sci = fits.ImageHDU(np.asarray(cube, dtype=np.float32), header=hdr, name="SCI")
            fits.HDUList([primary, sci, *others]).writeto(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
