"""RGB composites of several bands on a common grid (seed 000, fig. 5).

Each band is given a colour ``(r, g, b)``; a channel is the weighted sum of the bands. The
default is the paper's mapping (fig. 5): blue = F150W + F090W, green = F200W + F277W +
(165/255) F356W, red = F356W + F444W, i.e. F356W is orange (255, 165, 0). Bands of the mapping
that are not given are skipped (logged); any other mapping is a dict ``band -> (r, g, b)``.

*Common grid.* Images on the same pixel grid (equal shapes and equal WCS, or no WCS and equal
shapes) are combined as they are; otherwise each is reprojected onto the reference grid (the
band named by ``reference``, else the image with the finest pixels) with
``reproject.reproject_interp``, which needs a celestial WCS for every image. With ``max_size``
each image is first reduced by NaN-aware block means (:func:`mosaic.viz.preview.block_mean`) to
about the reference's reduced pixel size, so large mosaics are never reprojected at full size.

*Display.* ``method="stretch"`` stretches each channel on its own interval
(:func:`mosaic.viz.stretch.display_norm`); ``method="lupton"`` is astropy's
``make_lupton_rgb`` (one asinh stretch for all channels, colours preserved).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mosaic.exceptions import InputError
from mosaic.io.images import read_fits_image
from mosaic.registry import algorithm
from mosaic.viz.preview import block_mean, save_png
from mosaic.viz.stretch import display_norm

__all__ = ["PAPER_MAPPING", "METHODS", "parse_mapping", "read_band_image", "common_grid", "combine_bands", "rgb_pixels", "write_rgb"]

log = logging.getLogger(__name__)

#: seed 000 fig. 5: blue F150W + F090W, green F200W + F277W + 165/255 F356W, red F356W + F444W
PAPER_MAPPING: dict[str, tuple[float, float, float]] = {
    "F090W": (0.0, 0.0, 1.0),
    "F150W": (0.0, 0.0, 1.0),
    "F200W": (0.0, 1.0, 0.0),
    "F277W": (0.0, 1.0, 0.0),
    "F356W": (1.0, 165.0 / 255.0, 0.0),
    "F444W": (1.0, 0.0, 0.0),
}
#: how channels are turned into colours
METHODS = ("stretch", "lupton")


def parse_mapping(mapping) -> dict[str, tuple[float, float, float]]:
    """A validated colour mapping ``{band: (r, g, b)}`` (band names upper-cased).

    Parameters
    ----------
    mapping : str, dict or path-like
        ``"paper"`` (:data:`PAPER_MAPPING`), a dict ``band -> (r, g, b)`` of non-negative
        weights, a JSON object in a string, or a JSON file holding one.

    Returns
    -------
    dict
    """
    if mapping is None or (isinstance(mapping, str) and mapping.lower() == "paper"):
        return dict(PAPER_MAPPING)
    if isinstance(mapping, str | Path) and not isinstance(mapping, Mapping):
        text = str(mapping)
        source = "mapping"
        if not text.lstrip().startswith("{"):
            path = Path(text)
            if not path.is_file():
                msg = f"mapping {text!r} is neither 'paper', a JSON object nor an existing JSON file"
                raise InputError(msg)
            text, source = path.read_text(), str(path)
        try:
            mapping = json.loads(text)
        except json.JSONDecodeError as err:
            msg = f"{source}: not valid JSON ({err}); expected an object such as {{\"F200W\": [0, 1, 0]}}"
            raise InputError(msg) from None
    if not isinstance(mapping, Mapping):
        msg = f"mapping must be 'paper' or a dict band -> (r, g, b); got {type(mapping).__name__}"
        raise InputError(msg)
    if not mapping:
        msg = "mapping is empty; expected at least one band -> (r, g, b) entry, e.g. {'F200W': (0, 1, 0)}"
        raise InputError(msg)
    out = {}
    for band, weights in mapping.items():
        try:
            rgb = tuple(float(w) for w in weights)
        except (TypeError, ValueError):
            rgb = ()
        if len(rgb) != 3 or not all(math.isfinite(w) and w >= 0 for w in rgb) or not any(rgb):
            msg = f"mapping[{band!r}] = {weights!r}; expected three non-negative weights (r, g, b), not all zero"
            raise InputError(msg)
        out[str(band).upper()] = rgb
    return out


def read_band_image(path, *, ext=None):
    """A FITS image's band (``FILTER``), lazy data and celestial WCS (or None).

    Parameters
    ----------
    path : path-like
        FITS file; the ``SCI`` extension, else the first 2-D image (or ``ext``).
    ext : int or str, optional
        Extension to read.

    Returns
    -------
    band : str or None
    data : dask.array.Array
    wcs : astropy.wcs.WCS or None
    """
    image = read_fits_image(path, ext=ext)
    band = image.band
    return (band.upper() if band else None), image.data, image.wcs


def _same_grid(a, b) -> bool:
    (da_, wa), (db, wb) = a, b
    if da_.shape != db.shape:
        return False
    if wa is None or wb is None:
        return wa is None and wb is None
    return wa.wcs.compare(wb.wcs, tolerance=1e-10) and wa.sip is None and wb.sip is None


def _pixel_scale(wcs) -> float:
    from astropy.wcs.utils import proj_plane_pixel_scales  # noqa: PLC0415

    return float(np.mean(proj_plane_pixel_scales(wcs)))


def _block_wcs(wcs, factor: int):
    """The WCS of an image reduced by ``factor x factor`` block means."""
    if factor == 1:
        return wcs
    if wcs.sip is not None:
        msg = "an image with SIP distortion cannot be reduced; resample it to a tangent-plane grid or pass max_size=None"
        raise InputError(msg)
    out = wcs.deepcopy()
    # FITS pixel p (1-based) lies in block b with p = factor * (b - 0.5) + 0.5
    out.wcs.crpix = (np.asarray(wcs.wcs.crpix) - 0.5) / factor + 0.5
    if out.wcs.has_cd():
        out.wcs.cd = np.asarray(wcs.wcs.cd) * factor
    else:
        out.wcs.cdelt = np.asarray(wcs.wcs.cdelt) * factor
    out.wcs.set()
    return out


@algorithm("display")
def common_grid(images: Mapping, *, reference: str | None = None, max_size: int | None = None):
    """Images of several bands on one pixel grid.

    Parameters
    ----------
    images : mapping
        ``band -> (data, wcs)`` with a 2-D array (NumPy, dask, ...) and an astropy WCS or None.
    reference : str, optional
        Band whose grid the others are reprojected onto; default the finest pixels (largest image).
    max_size : int, optional
        Longest side of the result; images are reduced by block means before any reprojection.

    Returns
    -------
    arrays : dict
        ``band -> numpy.ndarray`` (float64, NaN outside an image's footprint), all one shape.
    wcs : astropy.wcs.WCS or None
        The common grid's WCS.
    """
    if not images:
        msg = "no images given; expected a mapping band -> (data, wcs)"
        raise InputError(msg)
    bands = list(images)
    if reference is None:
        with_wcs = [b for b in bands if images[b][1] is not None]
        pool = with_wcs or bands
        reference = max(pool, key=lambda b: int(np.prod(images[b][0].shape)))
    if reference not in images:
        msg = f"reference band {reference!r} is not among the images; expected one of {bands}"
        raise InputError(msg)
    ref_data, ref_wcs = images[reference]
    aligned = all(_same_grid(images[b], images[reference]) for b in bands)
    if not aligned:
        for b in bands:
            if images[b][1] is None:
                msg = (f"image {b!r} has no celestial WCS, and the images are not on one grid "
                       f"({b!r} {tuple(images[b][0].shape)} vs {reference!r} {tuple(ref_data.shape)}); "
                       "expected a WCS in every image so that they can be reprojected")
                raise InputError(msg)
    factor = 1 if max_size is None else max(1, math.ceil(max(ref_data.shape) / int(max_size)))
    out_wcs = None if ref_wcs is None else _block_wcs(ref_wcs, factor)
    arrays = {}
    for b in bands:
        data, wcs = images[b]
        if aligned:
            arrays[b] = np.asarray(block_mean(data, factor) if factor > 1 else data, dtype=np.float64)
            if hasattr(arrays[b], "compute"):
                arrays[b] = arrays[b].compute()
            continue
        own = max(1, round(factor * _pixel_scale(ref_wcs) / _pixel_scale(wcs)))
        small = block_mean(data, own) if own > 1 else data
        small = np.asarray(small.compute() if hasattr(small, "compute") else small, dtype=np.float64)
        if b == reference and own == factor:
            arrays[b] = small
            continue
        from reproject import reproject_interp  # noqa: PLC0415

        shape_out = tuple(-(-n // factor) for n in ref_data.shape)
        arrays[b], _ = reproject_interp((small, _block_wcs(wcs, own)), out_wcs, shape_out=shape_out)
        log.info("rgb: %s reprojected onto the grid of %s (%d x %d)", b, reference, *shape_out)
    return arrays, out_wcs


@algorithm("display")
def combine_bands(images: Mapping, mapping="paper") -> np.ndarray:
    """The red, green and blue channels as weighted sums of band images on one grid.

    Parameters
    ----------
    images : mapping
        ``band -> 2-D array``, all of one shape.
    mapping : str, dict or path-like, optional
        See :func:`parse_mapping`; default the paper's fig. 5 mapping. Bands of the mapping
        without an image are skipped (logged); images without a colour are left out (logged).

    Returns
    -------
    numpy.ndarray
        ``(3, ny, nx)`` float64: red, green, blue. A pixel that is NaN in a band is NaN in
        the channels that band feeds.
    """
    weights = parse_mapping(mapping)
    given = {str(b).upper(): v for b, v in images.items()}
    used = [b for b in weights if b in given]
    skipped = [b for b in weights if b not in given]
    if skipped:
        log.info("rgb: bands of the mapping without an image, skipped: %s", ", ".join(skipped))
    unmapped = [b for b in given if b not in weights]
    if unmapped:
        log.warning("rgb: images with no colour in the mapping, left out: %s", ", ".join(unmapped))
    if not used:
        msg = f"no image has a band of the mapping: images {sorted(given)}; mapping {sorted(weights)}"
        raise InputError(msg)
    shapes = {b: np.shape(given[b]) for b in used}
    if len(set(shapes.values())) != 1:
        msg = f"band images have different shapes {shapes}; expected one grid (see common_grid)"
        raise InputError(msg)
    channels = np.zeros((3, *shapes[used[0]]))
    for b in used:
        data = np.asarray(given[b], dtype=np.float64)
        for c in range(3):
            if weights[b][c]:
                channels[c] += weights[b][c] * data
    for c, name in enumerate("rgb"):
        if not any(weights[b][c] for b in used):
            log.warning("rgb: no band feeds the %s channel; it is black", name)
    return channels


@algorithm("display")
def rgb_pixels(channels, *, method: str = "stretch", stretch: str = "asinh", interval: str = "percentile",
               percent: float = 99.5, q: float = 8.0, lupton_stretch: float | None = None) -> np.ndarray:
    """8-bit RGB pixels of three channels.

    Parameters
    ----------
    channels : numpy.ndarray
        ``(3, ny, nx)`` red, green, blue (as from :func:`combine_bands`).
    method : {"stretch", "lupton"}, optional
        ``stretch``: each channel on its own interval and stretch; ``lupton``: astropy's
        ``make_lupton_rgb`` (minimum at the 0.5th percentile of all channels).
    stretch : str, optional
        Per-channel stretch for ``method="stretch"`` (see :data:`mosaic.viz.stretch.STRETCHES`).
    interval : {"percentile", "zscale", "minmax"}, optional
        Per-channel interval for ``method="stretch"``.
    percent : float, optional
        Percentage inside a ``percentile`` interval.
    q : float, optional
        Lupton softening ``Q``.
    lupton_stretch : float, optional
        Lupton linear stretch; default the 99.5th percentile of the channels minus the minimum.

    Returns
    -------
    numpy.ndarray
        ``(ny, nx, 3)`` uint8; NaN pixels are black.
    """
    channels = np.asarray(channels, dtype=np.float64)
    if channels.ndim != 3 or channels.shape[0] != 3:
        msg = f"channels have shape {channels.shape!r}; expected (3, ny, nx)"
        raise InputError(msg)
    if method not in METHODS:
        msg = f"method {method!r} is unknown; expected one of {list(METHODS)}"
        raise InputError(msg)
    bad = ~np.isfinite(channels)
    if method == "lupton":
        from astropy.visualization import make_lupton_rgb  # noqa: PLC0415

        finite = channels[~bad]
        if finite.size == 0:
            msg = "channels have no finite pixel; nothing to show"
            raise InputError(msg)
        lo = float(np.percentile(finite, 0.5))
        hi = float(np.percentile(finite, 99.5))
        span = lupton_stretch if lupton_stretch is not None else max(hi - lo, np.finfo(float).tiny)
        clean = np.where(bad, lo, channels)
        pixels = make_lupton_rgb(clean[0], clean[1], clean[2], minimum=lo, stretch=span, Q=q)
    else:
        scaled = np.zeros_like(channels)
        for c in range(3):
            if np.all(channels[c][~bad[c]] == 0):
                continue  # a black channel (no band feeds it)
            norm = display_norm(channels[c], stretch=stretch, interval=interval, percent=percent)
            scaled[c] = np.asarray(norm(np.where(bad[c], norm.vmin, channels[c])))
        pixels = np.round(np.clip(np.moveaxis(scaled, 0, -1), 0.0, 1.0) * 255.0).astype(np.uint8)
    pixels[np.moveaxis(bad, 0, -1).any(axis=-1)] = 0
    return pixels


@algorithm("display")
def write_rgb(path, images, *, mapping="paper", method: str = "stretch", stretch: str = "asinh",
              interval: str = "percentile", percent: float = 99.5, q: float = 8.0, reference: str | None = None,
              max_size: int | None = None) -> Path:
    """Write an RGB composite of band images as a PNG (north up), whole or not at all.

    Parameters
    ----------
    path : path-like
        Destination PNG; replaced if it exists.
    images : mapping or sequence
        ``band -> (data, wcs)`` (``wcs`` may be None), or FITS paths whose ``FILTER`` keyword
        names the band.
    mapping : str, dict or path-like, optional
        Colour mapping (see :func:`parse_mapping`); default the paper's fig. 5.
    method : {"stretch", "lupton"}, optional
        See :func:`rgb_pixels`.
    stretch : str, optional
        Per-channel stretch for ``method="stretch"``.
    interval : {"percentile", "zscale", "minmax"}, optional
        Per-channel interval for ``method="stretch"``.
    percent : float, optional
        Percentage inside a ``percentile`` interval.
    q : float, optional
        Lupton softening.
    reference : str, optional
        Band whose grid is used (see :func:`common_grid`).
    max_size : int, optional
        Longest side of the PNG; images are reduced by block means first.

    Returns
    -------
    pathlib.Path
    """
    weights = parse_mapping(mapping)  # bad mapping fails before anything is read
    if not isinstance(images, Mapping):
        loaded = {}
        for p in images:
            band, data, wcs = read_band_image(p)
            if band is None:
                msg = f"{p}: no FILTER keyword; expected the band name in FILTER (or pass images as a dict)"
                raise InputError(msg)
            if band in loaded:
                msg = f"{p}: band {band} given twice; expected one image per band"
                raise InputError(msg)
            loaded[band] = (data, wcs)
        images = loaded
    images = {str(b).upper(): v if isinstance(v, tuple) else (v, None) for b, v in images.items()}
    wanted = {b: v for b, v in images.items() if b in weights}
    if not wanted:
        msg = f"no image has a band of the mapping: images {sorted(images)}; mapping {sorted(weights)}"
        raise InputError(msg)
    arrays, _ = common_grid(wanted, reference=reference, max_size=max_size)
    channels = combine_bands(arrays, weights)
    pixels = rgb_pixels(channels, method=method, stretch=stretch, interval=interval, percent=percent, q=q)
    return save_png(path, pixels)
