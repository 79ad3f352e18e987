"""FITS products: ``_i2d.fits``-style mosaics written tile by tile.

An i2d file holds a header-only PRIMARY HDU and the image extensions ``SCI, ERR, CON, WHT,
VAR_POISSON, VAR_RNOISE, VAR_FLAT`` (CON is a 3-D ``(plane, y, x)`` int32 cube), each carrying
the output grid's WCS. The file is laid out first -- headers written, data areas reserved (a
sparse file) -- under a temporary name; then every tile of every array is written into its
place by the task that computes it (``dask.array.store`` into byte ranges with ``os.pwrite``),
so no process ever holds the whole mosaic; the file is renamed to its final name only when
every tile is in.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr
from astropy.io import fits

from mosaic.io.grid import MosaicGrid

__all__ = ["I2D_EXTENSIONS", "PendingFile", "write_drizzle_products", "write_i2d"]

log = logging.getLogger(__name__)

#: i2d image extensions, in file order, and the dataset variables they come from
I2D_EXTENSIONS = {
    "SCI": "sci",
    "ERR": "err",
    "CON": "con",
    "WHT": "wht",
    "VAR_POISSON": "var_poisson",
    "VAR_RNOISE": "var_rnoise",
    "VAR_FLAT": "var_flat",
}

_UNITS = {
    "SCI": "MJy/sr",
    "ERR": "MJy/sr",
    "VAR_POISSON": "(MJy/sr)^2",
    "VAR_RNOISE": "(MJy/sr)^2",
    "VAR_FLAT": "(MJy/sr)^2",
}
_BITPIX = {np.dtype(np.float32): -32, np.dtype(np.float64): -64, np.dtype(np.int32): 32, np.dtype(np.int16): 16}
_BLOCK = 2880

# primary-header keywords taken from the dataset's attributes
_PRIMARY_KEYS = {
    "band": ("FILTER", "filter of the exposures"),
    "kernel": ("RESKERN", "drizzle kernel"),
    "pixfrac": ("PIXFRAC", "drizzle pixel fraction"),
    "weight_type": ("RESWHT", "drizzle input weighting"),
    "pixel_scale_ratio": ("PXSCLRT", "output / input pixel scale"),
    "n_exposures": ("NDRIZIM", "number of exposures given"),
}


class _FitsImageTarget:
    """Write blocks of one FITS image extension in place (``os.pwrite`` of byte ranges).

    Picklable (a path and an offset), so any worker that sees the file system can write.
    """

    def __init__(self, path, offset: int, shape, dtype):
        self.path = str(path)
        self.offset = int(offset)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype).newbyteorder(">")
        self.ndim = len(self.shape)

    def __setitem__(self, key, value):
        key = key if isinstance(key, tuple) else (key,)
        sl = [k.indices(n) for k, n in zip(key, self.shape, strict=True)]
        block = np.ascontiguousarray(np.asarray(value), dtype=self.dtype)
        ny, nx = self.shape[-2:]
        (y0, y1, _), (x0, x1, _) = sl[-2:]
        item = self.dtype.itemsize
        planes = block.reshape(-1, y1 - y0, x1 - x0)
        plane_starts = list(np.ndindex(*block.shape[:-2])) or [()]
        fd = os.open(self.path, os.O_WRONLY)
        try:
            for plane, idx in zip(planes, plane_starts, strict=True):
                p = int(np.ravel_multi_index(tuple(s[0] + i for s, i in zip(sl[:-2], idx, strict=True)), self.shape[:-2])) if idx else 0
                base = self.offset + p * ny * nx * item
                if x0 == 0 and x1 == nx:
                    # whole rows are contiguous in the file: one write
                    os.pwrite(fd, plane.tobytes(), base + y0 * nx * item)
                    continue
                for r, row in enumerate(plane):
                    os.pwrite(fd, row.tobytes(), base + ((y0 + r) * nx + x0) * item)
        finally:
            os.close(fd)


class PendingFile:
    """A laid-out product file waiting for its tiles; :meth:`commit` renames it into place.

    Attributes
    ----------
    writes : dask Delayed
        The tile writes; compute them (with other work) before committing.
    """

    def __init__(self, writes, tmp: Path, final: Path):
        self.writes = writes
        self.tmp = tmp
        self.final = final

    def commit(self) -> Path:
        """Rename the complete file to its final name."""
        os.replace(self.tmp, self.final)
        log.info("wrote %s", self.final)
        return self.final

    def abort(self) -> None:
        """Remove the temporary file."""
        self.tmp.unlink(missing_ok=True)


def _padded(n: int) -> int:
    return -(-n // _BLOCK) * _BLOCK


def _image_header(name: str, shape, dtype, wcs_header: fits.Header) -> fits.Header:
    h = fits.Header()
    h["XTENSION"] = ("IMAGE", "image extension")
    h["BITPIX"] = _BITPIX[np.dtype(dtype)]
    h["NAXIS"] = len(shape)
    for i, n in enumerate(reversed(shape), start=1):
        h[f"NAXIS{i}"] = int(n)
    h["PCOUNT"] = 0
    h["GCOUNT"] = 1
    h["EXTNAME"] = name
    if name in _UNITS:
        h["BUNIT"] = _UNITS[name]
    for card in wcs_header.cards:
        if card.keyword.startswith("NAXIS") or card.keyword in ("", "COMMENT", "HISTORY"):
            continue
        h[card.keyword] = (card.value, card.comment)
    if name == "CON":
        h["COMMENT"] = "bit k of plane p set: exposure 32p+k contributed to the pixel"
    return h


def _primary_header(attrs: dict, extra: fits.Header | dict | None) -> fits.Header:
    h = fits.Header()
    h["SIMPLE"] = True
    h["BITPIX"] = 8
    h["NAXIS"] = 0
    h["EXTEND"] = True
    h["TELESCOP"] = "JWST"
    h["INSTRUME"] = "NIRCAM"
    for key, (kw, comment) in _PRIMARY_KEYS.items():
        if key in attrs:
            h[kw] = (attrs[key], comment)
    if "exposures_used" in attrs:
        h["NCOADDS"] = (len(attrs["exposures_used"]), "number of exposures drizzled")
    h["ORIGIN"] = ("mosaic", "made by the mosaic package")
    if extra:
        for k, v in dict(extra).items():
            h[k] = v
    return h


def write_i2d(
    path,
    mosaic: xr.Dataset,
    grid: MosaicGrid,
    *,
    primary_header=None,
    overwrite: bool = False,
    compute: bool = True,
):
    """Write a mosaic as an ``_i2d.fits``-style file, tile by tile.

    Parameters
    ----------
    path : path-like
        Output file.
    mosaic : xarray.Dataset
        ``sci, err, wht, var_poisson, var_rnoise, var_flat`` (2-D) and ``con`` (3-D), lazy
        (dask) or in memory, on ``grid`` (as :func:`mosaic.coadd.drizzle.drizzle_mosaic`
        returns). Missing variance variables are left out of the file.
    grid : MosaicGrid
        The output grid (its WCS goes in every image header).
    primary_header : dict or Header, optional
        Extra primary-header keywords.
    overwrite : bool
        Replace an existing file.
    compute : bool
        False: lay the file out and return a :class:`PendingFile` whose ``writes`` are to be
        computed before ``commit()`` (to compute them together with other products).

    Returns
    -------
    Path or PendingFile
    """
    path = Path(path)
    if path.exists() and not overwrite:
        msg = f"{path}: exists; pass overwrite=True (--overwrite) to replace it"
        raise FileExistsError(msg)
    if "sci" not in mosaic:
        msg = f"{path}: the mosaic has no 'sci' variable; expected {sorted(I2D_EXTENSIONS.values())}"
        raise ValueError(msg)
    for name, var in I2D_EXTENSIONS.items():
        if var not in mosaic:
            continue
        want = grid.shape if var != "con" else (mosaic[var].shape[0], *grid.shape)
        if mosaic[var].shape != want:
            msg = f"{path}: variable {var!r} has shape {mosaic[var].shape}; expected {want} on the grid"
            raise ValueError(msg)

    wcs_header = grid.to_header()
    hdrs, arrays = [], []
    for name, var in I2D_EXTENSIONS.items():
        if var not in mosaic:
            continue
        a = mosaic[var].data
        if not isinstance(a, da.Array):
            a = da.from_array(np.asarray(a), chunks=(*a.shape[:-2], *grid.tile))
        dtype = np.int32 if var == "con" else np.float32
        arrays.append((name, a.astype(dtype)))
        hdrs.append(_image_header(name, a.shape, dtype, wcs_header))

    tmp = path.with_name(f".{path.name}.part-{uuid.uuid4().hex[:8]}")
    prim = _primary_header(dict(mosaic.attrs), primary_header)
    targets = []
    with open(tmp, "wb") as fh:
        fh.write(prim.tostring().encode("ascii"))
        for h, (name, a) in zip(hdrs, arrays, strict=True):
            fh.write(h.tostring().encode("ascii"))
            offset = fh.tell()
            nbytes = int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize
            # reserve the padded data area (sparse): tiles are written into it later
            fh.seek(offset + _padded(nbytes))
            targets.append(_FitsImageTarget(tmp, offset, a.shape, a.dtype))
        fh.truncate()
    sources = [a for _, a in arrays]
    writes = da.store(sources, targets, lock=False, compute=False)
    pending = PendingFile(writes, tmp, path)
    if not compute:
        return pending
    from mosaic.progress import compute as progress_compute  # noqa: PLC0415

    try:
        progress_compute(writes, description=f"writing {path.name}")
    except BaseException:
        pending.abort()
        raise
    return pending.commit()


def write_drizzle_products(
    mosaic: xr.Dataset,
    grid: MosaicGrid,
    *,
    out=None,
    store=None,
    field: str | None = None,
    band: str | None = None,
    product: str = "drizzle",
    overwrite: bool = False,
    primary_header=None,
) -> dict:
    """Compute a lazy mosaic once and write it to the store and/or an i2d file, tile by tile.

    With both, the store product is computed and written first (it is the resumable copy);
    the i2d file is then written from the store, so the mosaic is computed only once.

    Parameters
    ----------
    mosaic : xarray.Dataset
        Lazy mosaic (:func:`mosaic.coadd.drizzle.drizzle_mosaic`).
    grid : MosaicGrid
        Its grid.
    out : path-like, optional
        The ``_i2d.fits`` file to write.
    store : mosaic.io.store.Store, optional
        Store to write the product into, as ``<field>/<band>/<product>``.
    field : str, optional
        Field name in the store (default: the stem of ``out``, else ``"field"``).
    band : str, optional
        Band in the store (default: ``mosaic.attrs["band"]``).
    product : str
        Product name in the store.
    overwrite : bool
        Replace an existing file or complete product.
    primary_header : dict or Header, optional
        Extra primary-header keywords of the i2d file.

    Returns
    -------
    dict
        ``{"store": Path, "i2d": Path}`` for what was written.
    """
    from mosaic.progress import compute as progress_compute  # noqa: PLC0415

    if out is None and store is None:
        msg = "nothing to write: pass out= (an _i2d.fits path) and/or store="
        raise ValueError(msg)
    if out is not None and Path(out).exists() and not overwrite:
        msg = f"{out}: exists; pass overwrite=True (--overwrite) to replace it"
        raise FileExistsError(msg)
    result = {}
    source = mosaic
    if store is not None:
        field = field or (Path(out).name.split(".")[0] if out is not None else "field")
        band = band or mosaic.attrs.get("band", "UNKNOWN")
        attrs = {k: v for k, v in mosaic.attrs.items() if k != "wcs_header"}
        write, pending = store.write_product(
            field, band, product, mosaic, wcs_header=mosaic.attrs.get("wcs_header"),
            attrs=attrs, overwrite=overwrite, compute=False,
        )
        progress_compute(write, description=f"{product} -> {store.path.name}")
        result["store"] = pending.commit()
        source = store.read_product(field, band, product)
        source.attrs = {**mosaic.attrs, **source.attrs}
    if out is not None:
        result["i2d"] = write_i2d(out, source, grid, primary_header=primary_header, overwrite=overwrite)
    return result
