"""Catalogue products and the images they are measured on.

- :func:`read_image`: an ``_i2d.fits`` mosaic (SCI, ERR, WHT extensions) or a plain FITS image as
  a :class:`MosaicImage` (lazy arrays read by sections with :mod:`mosaic.io.images`), its
  celestial WCS (None where there is none) and the factor from MJy/sr sums to µJy.
- :func:`write_catalog`: ECSV or Parquet (units and RA/Dec kept), written under a temporary
  name and renamed when whole; :func:`write_regions` a DS9 region file (Kron ellipses or
  circles, fk5 where RA/Dec are known, else image pixels).
- :func:`write_segmentation_fits` the segmentation map as FITS, tile by tile (no process holds
  the whole map; :func:`mosaic.io.images.write_fits_image`); :func:`write_segmentation_store` the same into the zarr store
  (``<field>/<band>/catalogs/segmentation``).
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import astropy.units as u
import dask.array as da
import numpy as np
from astropy.table import QTable, Table
from astropy.wcs import WCS

from mosaic.exceptions import InputError
from mosaic.io.images import read_fits_image, write_fits_image

if TYPE_CHECKING:
    from astropy.io import fits

__all__ = [
    "CATALOG_FORMATS",
    "MosaicImage",
    "read_catalog",
    "read_image",
    "write_catalog",
    "write_regions",
    "write_segmentation_fits",
    "write_segmentation_store",
]

log = logging.getLogger(__name__)

#: file suffixes and the astropy formats written for them
CATALOG_FORMATS = {".ecsv": "ascii.ecsv", ".parquet": "parquet", ".reg": "ds9"}


@dataclass
class MosaicImage:
    """An image to detect on: lazy arrays, WCS and flux calibration."""

    path: Path
    sci: da.Array
    err: da.Array | None
    wht: da.Array | None
    wcs: WCS | None
    band: str
    bunit: str
    pixel_area_sr: float | None
    #: the file's primary header (the drizzle's keywords: RESKERN, PIXFRAC, PXSCLRT, UPDCITER)
    primary: fits.Header | None = None

    @property
    def flux_scale(self) -> tuple[float, u.UnitBase]:
        """Factor and unit from summed pixel values to flux: µJy for MJy/sr images with a WCS."""
        if self.bunit.replace(" ", "").lower() == "mjy/sr" and self.pixel_area_sr:
            return self.pixel_area_sr * 1e12, u.uJy
        return 1.0, u.Unit(self.bunit) if self.bunit else u.dimensionless_unscaled


def read_image(path, *, tile=1024) -> MosaicImage:
    """Read an ``_i2d.fits`` mosaic or a plain FITS image lazily (float64, by sections).

    Parameters
    ----------
    path : path-like
        File with a ``SCI`` extension (and optionally ``ERR``, ``WHT``), or a 2-D image in the
        primary HDU (or the first image extension).
    tile : int
        Chunk size of the dask arrays.
    """
    image = read_fits_image(path, tile=tile, dtype=np.float64)
    err, wht = (image.extension(name, dtype=np.float64) for name in ("ERR", "WHT"))
    wcs = image.wcs
    area = None
    if wcs is not None:
        from astropy.wcs.utils import proj_plane_pixel_area  # noqa: PLC0415

        area = float(proj_plane_pixel_area(wcs) * (np.pi / 180.0) ** 2)
    band = str(image.primary.get("FILTER", image.header.get("FILTER", "UNKNOWN")))
    bunit = str(image.header.get("BUNIT", ""))
    return MosaicImage(image.path, image.data, err, wht, wcs, band, bunit, area, image.primary)


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.part-{uuid.uuid4().hex[:8]}{path.suffix}")


def _check_out(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        msg = f"{path}: exists; pass overwrite=True (--overwrite) to replace it"
        raise FileExistsError(msg)
    if not path.parent.exists():
        msg = f"{path}: directory {path.parent} does not exist"
        raise FileNotFoundError(msg)


def write_catalog(table: Table, path, *, overwrite: bool = False, kron_scale: float = 2.5, pixel_scale_arcsec: float | None = None) -> Path:
    """Write a catalogue as ECSV, Parquet or DS9 regions (by suffix), whole or not at all."""
    path = Path(path)
    fmt = CATALOG_FORMATS.get(path.suffix.lower())
    if fmt is None:
        msg = f"{path}: suffix {path.suffix!r} is not a catalogue format; expected one of {sorted(CATALOG_FORMATS)}"
        raise ValueError(msg)
    if fmt == "ds9":
        return write_regions(table, path, overwrite=overwrite, kron_scale=kron_scale, pixel_scale_arcsec=pixel_scale_arcsec)
    _check_out(path, overwrite)
    tmp = _temporary(path)
    try:
        # both formats keep units and meta (astropy serialises them into the parquet schema)
        Table(table).write(tmp, format=fmt, overwrite=True)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("wrote %s (%d sources)", path, len(table))
    return path


def read_catalog(path) -> QTable:
    """Read a catalogue written by :func:`write_catalog` (ECSV or Parquet), units restored."""
    path = Path(path)
    fmt = CATALOG_FORMATS.get(path.suffix.lower())
    if fmt is None or fmt == "ds9":
        msg = f"{path}: suffix {path.suffix!r} is not a readable catalogue; expected .ecsv or .parquet"
        raise InputError(msg)
    if not path.exists():
        msg = f"{path}: no such catalogue"
        raise FileNotFoundError(msg)
    return QTable.read(path, format=fmt)


def _value(col):
    return np.asarray(getattr(col, "value", col), dtype=float)


def write_regions(table: Table, path, *, overwrite: bool = False, kron_scale: float = 2.5, pixel_scale_arcsec: float | None = None) -> Path:
    """DS9 regions: Kron ellipses (``kron_scale * kron_radius * a, b``) or 3-pixel circles.

    In fk5 (sizes in arcsec) where the table has finite RA/Dec and ``pixel_scale_arcsec`` is
    given, else in image pixels (1-based, as DS9 counts).
    """
    path = Path(path)
    _check_out(path, overwrite)
    n = len(table)
    x, y = _value(table["x_centroid"]), _value(table["y_centroid"])
    sky = bool(pixel_scale_arcsec) and "ra" in table.colnames and n and np.all(np.isfinite(_value(table["ra"])))
    lines = ["# Region file format: DS9 version 4.1 (written by mosaic)", 'global color=green width=1 font="helvetica 10 normal"']
    lines.append("fk5" if sky else "image")
    has_kron = all(c in table.colnames for c in ("kron_radius", "semimajor_axis", "semiminor_axis", "orientation"))
    ids = table["label"] if "label" in table.colnames else table["id"] if "id" in table.colnames else np.arange(1, n + 1)
    if sky:
        ra, dec = _value(table["ra"]), _value(table["dec"])
        scale = float(pixel_scale_arcsec)
    for i in range(n):
        if has_kron and np.isfinite(_value(table["kron_radius"][i : i + 1])[0]):
            kr = _value(table["kron_radius"][i : i + 1])[0] * kron_scale
            a, b = kr * _value(table["semimajor_axis"][i : i + 1])[0], kr * _value(table["semiminor_axis"][i : i + 1])[0]
            th = _value(table["orientation"][i : i + 1])[0]
        else:
            a = b = 3.0
            th = 0.0
        if sky:
            lines.append(f'ellipse({ra[i]:.8f},{dec[i]:.8f},{a * scale:.4f}",{b * scale:.4f}",{th:.3f}) # text={{{int(ids[i])}}}')
        else:
            lines.append(f"ellipse({x[i] + 1:.3f},{y[i] + 1:.3f},{a:.3f},{b:.3f},{th:.3f}) # text={{{int(ids[i])}}}")
    tmp = _temporary(path)
    try:
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_segmentation_fits(segmentation: da.Array, path, *, wcs: WCS | None = None, overwrite: bool = False) -> Path:
    """The segmentation map as a FITS image (int32, extension ``SEGM``), written tile by tile."""
    path = Path(path)
    _check_out(path, overwrite)
    seg = da.asarray(segmentation).astype(np.int32)
    return write_fits_image(path, {"SEGM": seg}, wcs=wcs, overwrite=overwrite)


def write_segmentation_store(store, field: str, band: str, segmentation: da.Array, *, wcs: WCS | None = None, overwrite: bool = False, name: str = "catalogs/segmentation"):
    """The segmentation map into a :class:`mosaic.io.store.Store` product (``segm``, int32)."""
    seg = da.asarray(segmentation).astype(np.int32)
    header = wcs.to_header().tostring() if wcs is not None else None
    return store.write_product(field, band, name, {"segm": seg}, wcs_header=header, overwrite=overwrite)
