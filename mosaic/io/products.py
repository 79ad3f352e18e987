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
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from astropy.io import fits

from mosaic.io.grid import MosaicGrid
from mosaic.io.images import PendingFile, extension_header, lay_out_fits, refuse_input_as_output

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["I2D_EXTENSIONS", "PendingFile", "i2d_image_header", "i2d_primary_header", "write_drizzle_products", "write_i2d"]

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

# primary-header keywords taken from the dataset's attributes
_PRIMARY_KEYS = {
    "band": ("FILTER", "filter of the exposures"),
    "kernel": ("RESKERN", "drizzle kernel"),
    "pixfrac": ("PIXFRAC", "drizzle pixel fraction"),
    "weight_type": ("RESWHT", "drizzle input weighting"),
    "pixel_scale_ratio": ("PXSCLRT", "output / input pixel scale"),
    "n_exposures": ("NDRIZIM", "number of exposures given"),
}


def i2d_image_header(name: str, shape, dtype, wcs_header: fits.Header) -> fits.Header:
    """The header of the i2d extension ``name``: layout, BUNIT, the grid's WCS (and CON's bit-plane note)."""
    cards = fits.Header()
    if name in _UNITS:
        cards["BUNIT"] = _UNITS[name]
    for card in wcs_header.cards:
        if card.keyword not in ("COMMENT", "HISTORY"):
            cards.append(card)
    h = extension_header(name, shape, dtype, cards)
    if name == "CON":
        h["COMMENT"] = "bit k of plane p set: exposure 32p+k contributed to the pixel"
    return h


def i2d_primary_header(attrs: dict, extra: fits.Header | dict | None) -> fits.Header:
    """The i2d primary header: instrument, the drizzle keywords found in ``attrs``, then ``extra``."""
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
    refuse_input_as_output(path, mosaic.attrs.get("exposure_paths", ()), [mosaic[v].data for v in mosaic.data_vars])
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

    import dask.array as da  # noqa: PLC0415  (only to write: the headers below need no dask)

    wcs_header = grid.to_header()
    extensions = []
    for name, var in I2D_EXTENSIONS.items():
        if var not in mosaic:
            continue
        a = mosaic[var].data
        if not isinstance(a, da.Array):
            a = da.from_array(np.asarray(a), chunks=(*a.shape[:-2], *grid.tile))
        dtype = np.int32 if var == "con" else np.float32
        extensions.append((i2d_image_header(name, a.shape, dtype, wcs_header), a.astype(dtype)))
    pending = lay_out_fits(path, i2d_primary_header(dict(mosaic.attrs), primary_header), extensions)
    return pending.compute() if compute else pending


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
    if out is not None:
        refuse_input_as_output(out, mosaic.attrs.get("exposure_paths", ()), [mosaic[v].data for v in mosaic.data_vars])
    result = {}
    source = mosaic
    if store is not None:
        field = field or (Path(out).name.split(".")[0] if out is not None else "field")
        band = band or mosaic.attrs.get("band", "UNKNOWN")
        attrs = {k: v for k, v in mosaic.attrs.items() if k != "wcs_header"}
        writes, pending = store.write_product(
            field, band, product, mosaic, wcs_header=mosaic.attrs.get("wcs_header"),
            attrs=attrs, overwrite=overwrite, compute=False,
        )
        written = progress_compute(*writes, description=f"{product} -> {store.path.name}")
        result["store"] = pending.commit(written)
        source = store.read_product(field, band, product)
        source.attrs = {**mosaic.attrs, **source.attrs}
    if out is not None:
        result["i2d"] = write_i2d(out, source, grid, primary_header=primary_header, overwrite=overwrite)
    return result
