"""Tiled DAOFIND: ``photutils.detection.DAOStarFinder`` on tiles with a halo, peaks kept in the core.

DAOFIND convolves with a Gaussian kernel (radius ``r``), keeps local maxima within a footprint
(the kernel, or a circle of ``min_separation``), and measures each star on a kernel-sized
cut-out of the data and the convolved data. A star is therefore decided by the data within
``2 r + max(r, min_separation)`` pixels of its peak, and its centroid lies within ``r`` of the
peak. Each tile runs the finder on its core grown by a halo of ``3 r + max(r, min_separation)
+ 2`` and keeps the stars whose centroid lies in its core: every star is found once, with the
whole-image values.

NaN and masked pixels are set to 0 before finding (photutils would spread NaN through the
convolution) and masked pixels cannot hold a peak; the whole-image reference is the same call
on the same filled image.
"""

from __future__ import annotations

import logging
import warnings

import astropy.units as u
import dask
import dask.array as da
import numpy as np
from astropy.table import QTable, vstack

from mosaic.catalog.detect import NoDetectionsWarning, _tile_pair, as_tiled
from mosaic.progress import compute
from mosaic.registry import algorithm

__all__ = ["DAOFIND_COLUMNS", "daofind_halo", "detect_daofind", "fill_masked"]

log = logging.getLogger(__name__)

DAOFIND_COLUMNS = ("id", "x_centroid", "y_centroid", "sharpness", "roundness1", "roundness2", "n_pixels", "peak", "flux", "mag", "daofind_mag")


def _finder(threshold, fwhm, options):
    from photutils.detection import DAOStarFinder  # noqa: PLC0415

    return DAOStarFinder(threshold, fwhm, **options)


def daofind_halo(fwhm: float, *, ratio: float = 1.0, sigma_radius: float = 1.5, min_separation: float | None = None) -> int:
    """Halo (pixels) that makes tiled DAOFIND equal to the whole-image finder."""
    finder = _finder(1.0, fwhm, {"ratio": ratio, "sigma_radius": sigma_radius, "min_separation": min_separation})
    r = max(finder.kernel.x_radius, finder.kernel.y_radius)
    return int(3 * r + max(r, int(np.ceil(finder.min_separation))) + 2)


def fill_masked(data, mask=None):
    """``(data with NaN and masked pixels set to 0, mask | non-finite)`` -- what DAOFIND is given."""
    bad = ~np.isfinite(data)
    if mask is not None:
        bad = bad | mask
    return np.where(bad, 0.0, data), bad


def _find(data, threshold, mask, fwhm, options, origin, core):
    data, bad = fill_masked(np.asarray(data, dtype=np.float64), None if mask is None else np.asarray(mask, dtype=bool))
    thr = threshold if np.ndim(threshold) == 0 else np.asarray(threshold)
    with warnings.catch_warnings():
        from photutils.utils.exceptions import NoDetectionsWarning as PhotutilsNoDetections  # noqa: PLC0415

        warnings.simplefilter("ignore", PhotutilsNoDetections)
        table = _finder(thr, fwhm, options).find_stars(data, mask=bad if bad.any() else None)
    if table is None:
        return None
    table["x_centroid"] += origin[1]
    table["y_centroid"] += origin[0]
    (y0, y1), (x0, x1) = core
    x, y = np.asarray(table["x_centroid"]), np.asarray(table["y_centroid"])
    # pixel i spans [i - 0.5, i + 0.5): every position belongs to exactly one core
    keep = (x >= x0 - 0.5) & (x < x1 - 0.5) & (y >= y0 - 0.5) & (y < y1 - 0.5)
    return table[keep] if keep.any() else None


@algorithm("catalog")
def detect_daofind(
    data,
    threshold,
    *,
    fwhm: float,
    mask=None,
    ratio: float = 1.0,
    theta: float = 0.0,
    sigma_radius: float = 1.5,
    sharpness_range=(0.2, 1.0),
    roundness_range=(-1.0, 1.0),
    peak_max: float | None = None,
    min_separation: float | None = None,
    exclude_border: bool = False,
    tile=512,
) -> QTable:
    """DAOFIND point sources, tile by tile with halos: the whole-image ``DAOStarFinder`` result.

    Parameters
    ----------
    data : array
        Background-subtracted image (NumPy or dask).
    threshold : float or array
        Absolute detection threshold (photutils scales it by the kernel's relative error);
        a scalar must be positive.
    fwhm : float
        FWHM of the Gaussian kernel in pixels.
    mask : bool array, optional
        True where pixels are bad (no peak there; set to 0 as NaN are).
    ratio, theta, sigma_radius : float
        Kernel axis ratio, angle (deg) and truncation radius in sigma.
    sharpness_range, roundness_range : (float, float)
        Accepted sharpness and roundness.
    peak_max : float, optional
        Reject stars whose peak is above this.
    min_separation : float, optional
        Minimum peak separation in pixels (photutils' default: 2.5 fwhm).
    exclude_border : bool
        Drop stars within a kernel radius of the image edge.
    tile : int or (int, int)
        Tile (core) size in pixels.

    Returns
    -------
    astropy.table.QTable
        ``DAOStarFinder`` columns, ordered by (y, x) centroid with ``id`` renumbered 1..n; an
        empty table (with a :class:`NoDetectionsWarning`) when nothing is found.
    """
    if np.ndim(data) != 2:
        msg = f"data must be 2-D; got {np.ndim(data)} dimensions"
        raise ValueError(msg)
    if np.ndim(threshold) == 0 and not (np.isfinite(threshold) and threshold > 0):
        msg = f"threshold must be positive; got {threshold!r}"
        raise ValueError(msg)
    if not fwhm > 0:
        msg = f"fwhm must be positive; got {fwhm!r}"
        raise ValueError(msg)
    options = {
        "ratio": ratio, "theta": theta, "sigma_radius": sigma_radius, "sharpness_range": sharpness_range,
        "roundness_range": roundness_range, "peak_max": peak_max, "min_separation": min_separation,
        "exclude_border": exclude_border,
    }
    shape = tuple(int(s) for s in np.shape(data))
    tile = _tile_pair(tile)
    halo = daofind_halo(fwhm, ratio=ratio, sigma_radius=sigma_radius, min_separation=min_separation)
    img = as_tiled(data, shape, tile, name="data")
    thr = as_tiled(threshold, shape, tile, name="threshold")
    msk = as_tiled(mask, shape, tile, name="mask", dtype=bool)
    tasks = []
    for y0 in range(0, shape[0], tile[0]):
        for x0 in range(0, shape[1], tile[1]):
            y1, x1 = min(y0 + tile[0], shape[0]), min(x0 + tile[1], shape[1])
            outer = (slice(max(y0 - halo, 0), min(y1 + halo, shape[0])), slice(max(x0 - halo, 0), min(x1 + halo, shape[1])))
            t_outer = thr if not isinstance(thr, da.Array) else thr[outer]
            m_outer = None if msk is None else msk[outer]
            origin = (outer[0].start, outer[1].start)
            tasks.append(dask.delayed(_find)(img[outer], t_outer, m_outer, fwhm, options, origin, ((y0, y1), (x0, x1))))
    parts = [p for p in compute(*tasks, description="daofind") if p is not None]
    if not parts:
        warnings.warn("DAOFIND found no sources above the threshold; the catalogue is empty", NoDetectionsWarning, stacklevel=2)
        t = QTable()
        for name in DAOFIND_COLUMNS:
            t[name] = np.zeros(0, dtype=np.int64 if name in ("id", "n_pixels") else np.float64)
        t["x_centroid"].unit = t["y_centroid"].unit = u.pix
        return t
    table = QTable(vstack(parts, metadata_conflicts="silent"))
    order = np.lexsort((np.asarray(table["x_centroid"]), np.asarray(table["y_centroid"])))
    table = table[order]
    table["id"] = np.arange(1, len(table) + 1)
    log.info("daofind: %d sources (tiles of %s, halo %d)", len(table), tile, halo)
    return table
