"""Catalogue products and the images they are measured on.

- :func:`read_image`: an ``_i2d.fits`` mosaic (SCI, ERR, WHT extensions) or a plain FITS image as
  lazy dask arrays read block by block from the file (picklable, so any worker can read), its
  celestial WCS (None where there is none) and the factor from MJy/sr sums to µJy.
- :func:`write_catalog`: ECSV or Parquet (units and RA/Dec kept), written under a temporary
  name and renamed when whole; :func:`write_regions` a DS9 region file (Kron ellipses or
  circles, fk5 where RA/Dec are known, else image pixels).
- :func:`write_segmentation_fits` the segmentation map as FITS, tile by tile (no process holds
  the whole map); :func:`write_segmentation_store` the same into the zarr store
  (``<field>/<band>/catalogs/segmentation``).
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import astropy.units as u
import dask.array as da
import numpy as np
from astropy.io import fits
from astropy.table import QTable, Table
from astropy.wcs import WCS, FITSFixedWarning

from mosaic.exceptions import InputError

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


class _FitsBlocks:
    """Array-like view of one FITS image extension, read slice by slice (memory-mapped)."""

    def __init__(self, path, ext, shape, dtype):
        self.path, self.ext = str(path), ext
        self.shape, self.dtype, self.ndim = tuple(shape), np.dtype(dtype), len(shape)

    def __getitem__(self, key):
        with fits.open(self.path, memmap=True) as hdul:
            return np.array(hdul[self.ext].data[key], dtype=self.dtype)


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

    @property
    def flux_scale(self) -> tuple[float, u.UnitBase]:
        """Factor and unit from summed pixel values to flux: µJy for MJy/sr images with a WCS."""
        if self.bunit.replace(" ", "").lower() == "mjy/sr" and self.pixel_area_sr:
            return self.pixel_area_sr * 1e12, u.uJy
        return 1.0, u.Unit(self.bunit) if self.bunit else u.dimensionless_unscaled


def _celestial(header, path) -> WCS | None:
    import warnings  # noqa: PLC0415

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            w = WCS(header).celestial
        except Exception as err:  # a malformed WCS is reported as missing, with why
            log.warning("%s: WCS unreadable (%s)", path, err)
            return None
    return w if w.has_celestial else None


def read_image(path, *, tile=1024) -> MosaicImage:
    """Read an ``_i2d.fits`` mosaic or a plain FITS image lazily.

    Parameters
    ----------
    path : path-like
        File with a ``SCI`` extension (and optionally ``ERR``, ``WHT``), or a 2-D image in the
        primary HDU (or the first image extension).
    tile : int
        Chunk size of the dask arrays.
    """
    path = Path(path)
    if not path.exists():
        msg = f"{path}: no such file; expected an _i2d.fits mosaic or a FITS image"
        raise FileNotFoundError(msg)
    try:
        hdul = fits.open(path, memmap=True)
    except OSError as err:
        msg = f"{path}: not a readable FITS file ({err}); expected an _i2d.fits mosaic or a FITS image"
        raise InputError(msg) from None
    with hdul:
        names = [h.name for h in hdul]
        if "SCI" in names:
            sci_ext = "SCI"
        else:
            found = [i for i, h in enumerate(hdul) if h.is_image and h.data is not None and h.data.ndim == 2]
            if not found:
                msg = f"{path}: no SCI extension and no 2-D image HDU; expected an _i2d.fits mosaic or a 2-D FITS image"
                raise InputError(msg)
            sci_ext = found[0]
        hdr = hdul[sci_ext].header
        shape = hdul[sci_ext].data.shape
        if len(shape) != 2:
            msg = f"{path}[{sci_ext}]: image has shape {shape}; expected a 2-D image"
            raise InputError(msg)
        prim = hdul[0].header
        arrays = {}
        for key, ext in (("sci", sci_ext), ("err", "ERR"), ("wht", "WHT")):
            if ext != sci_ext and ext not in names:
                arrays[key] = None
                continue
            if hdul[ext].data.shape != shape:
                msg = f"{path}[{ext}]: shape {hdul[ext].data.shape} differs from SCI {shape}; expected one shape"
                raise InputError(msg)
            arrays[key] = da.from_array(_FitsBlocks(path, ext, shape, np.float64), chunks=tile, meta=np.zeros((0, 0)))
        wcs = _celestial(hdr, path)
        band = str(prim.get("FILTER", hdr.get("FILTER", "UNKNOWN")))
        bunit = str(hdr.get("BUNIT", ""))
    area = None
    if wcs is not None:
        from astropy.wcs.utils import proj_plane_pixel_area  # noqa: PLC0415

        area = float(proj_plane_pixel_area(wcs) * (np.pi / 180.0) ** 2)
    return MosaicImage(path, arrays["sci"], arrays["err"], arrays["wht"], wcs, band, bunit, area)


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
    from mosaic.io.products import PendingFile, _FitsImageTarget, _image_header, _padded  # noqa: PLC0415
    from mosaic.progress import compute  # noqa: PLC0415

    path = Path(path)
    _check_out(path, overwrite)
    seg = da.asarray(segmentation).astype(np.int32)
    wcs_header = wcs.to_header() if wcs is not None else fits.Header()
    hdr = _image_header("SEGM", seg.shape, np.int32, wcs_header)
    prim = fits.Header([("SIMPLE", True), ("BITPIX", 8), ("NAXIS", 0), ("EXTEND", True), ("ORIGIN", "mosaic")])
    tmp = _temporary(path)
    with open(tmp, "wb") as fh:
        fh.write(prim.tostring().encode("ascii"))
        fh.write(hdr.tostring().encode("ascii"))
        offset = fh.tell()
        fh.seek(offset + _padded(seg.size * 4))
        fh.truncate()
    pending = PendingFile(da.store(seg, _FitsImageTarget(tmp, offset, seg.shape, np.int32), lock=False, compute=False), tmp, path)
    try:
        compute(pending.writes, description=f"writing {path.name}")
    except BaseException:
        pending.abort()
        raise
    return pending.commit()


def write_segmentation_store(store, field: str, band: str, segmentation: da.Array, *, wcs: WCS | None = None, overwrite: bool = False, name: str = "catalogs/segmentation"):
    """The segmentation map into a :class:`mosaic.io.store.Store` product (``segm``, int32)."""
    seg = da.asarray(segmentation).astype(np.int32)
    header = wcs.to_header().tostring() if wcs is not None else None
    return store.write_product(field, band, name, {"segm": seg}, wcs_header=header, overwrite=overwrite)
