"""Spectral cubes on disk: an IFU cube (FITS with a spectral WCS) in, a fused cube out (:mod:`mosaic.fusion`).

The IFU cube is read from ``SCI`` (a JWST ``_s3d.fits``), else from the first 3-D image HDU; its
WCS must have a spectral axis (``CTYPE3 = 'WAVE'`` ...), from which the channel wavelengths are
taken, in microns. The fused cube is written as ``SCI`` (float32, ``n_wave x ny x nx``) with the
fine celestial WCS and the cube's spectral axis, plus ``BASIS`` (the principal spectra, ``k x
n_wave``) and ``MEAN`` (the mean spectrum), under a temporary name renamed when whole.
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


def write_fused(path, cube, fine_wcs: WCS, wavelengths, *, basis, mean, header_extra=None, bunit=None) -> Path:
    """Write the fused cube (computed plane-block by plane-block if it is a dask array) to ``path``."""
    path = Path(path)
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
    primary = fits.PrimaryHDU()
    for key, value in (header_extra or {}).items():
        primary.header[key] = value
    sci = fits.ImageHDU(np.asarray(cube, dtype=np.float32), header=hdr, name="SCI")
    hdus = [
        primary,
        sci,
        fits.ImageHDU(np.asarray(basis.T, dtype=np.float64), name="BASIS"),
        fits.ImageHDU(np.asarray(mean, dtype=np.float64), name="MEAN"),
        fits.BinTableHDU.from_columns([fits.Column(name="WAVELENGTH", format="D", unit="um", array=w)], name="WAVELENGTH"),
    ]
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        fits.HDUList(hdus).writeto(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
