"""A restored ``_i2d.fits`` product from a drizzle/UPDC mosaic file.

:func:`restore_i2d` reads the mosaic's SCI lazily, checks it against the model (a celestial WCS,
the model's band and pixel scale, and where the headers say, RESKERN and PIXFRAC: the drizzle the
model is trained on), restores it tile by tile (:func:`mosaic.restore.infer.restore_image`)
and writes SCI -- with the input's WCS and BUNIT -- tile by tile under a temporary name. ERR is
not propagated through the network: the product has no ERR extension and says so in its
primary header (``ERRPROP = F`` and a COMMENT), with the model, the reference PSF and the global
normalisation recorded.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from astropy.wcs.utils import proj_plane_pixel_scales

from mosaic.exceptions import InputError
from mosaic.restore.infer import RestorationModel, restore_image

__all__ = ["restore_i2d", "ERR_STATEMENT"]

log = logging.getLogger(__name__)

ERR_STATEMENT = ("ERR is not propagated through the learned restoration: this product has no ERR; "
                 "use the input mosaic's ERR for the noise, and treat restored structure as a model's estimate")


def restore_i2d(image, out, *, model=None, tile: int = 512, overlap: int | None = None, overwrite: bool = False,
                threads: int = 1) -> Path:
    """Restore a mosaic file with a learned model and write the result.

    Parameters
    ----------
    image : path-like
        Input FITS mosaic (SCI of an ``_i2d.fits``, else the first 2-D image) with a celestial WCS.
    out : path-like
        Output FITS file (``SCI`` only; see the module docstring).
    model : path-like or RestorationModel, optional
        ONNX model (default: the shipped one).
    tile, overlap : int
        Tile core side and overlap in pixels (multiples of 8); overlap defaults to the model's halo.
    overwrite : bool
        Replace an existing output.
    threads : int
        ONNX Runtime threads per tile.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    InputError
        No WCS, another band, pixel scale or drizzle kernel or pixfrac than the model's, a bad
        model file, or bad tiling.
    """
    from mosaic.io.images import read_fits_image, write_fits_image  # noqa: PLC0415

    model = model if isinstance(model, RestorationModel) else RestorationModel(model, threads=threads)
    overlap = model.halo if overlap is None else int(overlap)
    source = read_fits_image(image, tile=tile, dtype=np.float32)
    wcs = source.wcs
    if wcs is None:
        msg = f"{source.path}[{source.ext}]: no celestial WCS; expected a mosaic with a WCS (an _i2d.fits SCI)"
        raise InputError(msg)
    scale = float(np.mean(proj_plane_pixel_scales(wcs))) * 3600.0
    model.check(band=source.band, pixel_scale_arcsec=scale, source=f"{source.path}", kernel=source.keyword("RESKERN"),
                pixfrac=source.keyword("PIXFRAC"))
    if source.band is None:
        log.warning("%s: no FILTER keyword; the model's band %s is assumed", source.path, model.band)
    try:
        restored, norm = restore_image(source.data, model, tile=tile, overlap=overlap)
    except ValueError as err:
        raise InputError(f"{source.path}: {err}") from None
    primary = source.primary.copy()
    primary["RESTORED"] = (True, "learned restoration (mosaic restore)")
    primary["RSTMODEL"] = (model.path.name, "ONNX restoration model")
    primary["RSTBAND"] = (model.band, "band the model is trained for")
    primary["RSTREFPS"] = (model.reference_fwhm_px * model.pixel_scale_arcsec, "[arcsec] FWHM of Gaussian reference PSF")
    primary["RSTSKY"] = (norm.sky, "global sky of the normalisation")
    primary["RSTSIG"] = (norm.sigma, "global noise sigma of the normalisation")
    primary["RSTTILE"] = (tile, "[pix] tile core side")
    primary["RSTOVLP"] = (overlap, "[pix] tile overlap")
    primary["ERRPROP"] = (False, "ERR not propagated through the learned model")
    primary["COMMENT"] = ERR_STATEMENT
    primary["COMMENT"] = "A learned model can invent structure that is not in the data; check against the input."
    header = source.header.copy()
    for key in ("EXTNAME", "EXTVER"):
        header.remove(key, ignore_missing=True)
    history = [f"mosaic restore: {model.path.name}, tile {tile}, overlap {overlap}"]
    return write_fits_image(out, {"SCI": restored}, header=header, primary=primary, history=history, overwrite=overwrite)
