"""Empirical PSF from the stars of an image: photutils' effective-PSF builder (Anderson & King 2000).

The stars (from :func:`mosaic.psf.stars.select_stars`) are cut out, each minus its local sky
(the sigma-clipped median of its stamp's border), and ``photutils.psf.EPSFBuilder`` iterates
between fitting the stars with the current ePSF and stacking their residuals on a grid
``oversample`` times finer than the image, so stars at different sub-pixel phases fill it.

*What it is.* An effective PSF: the optical PSF convolved with the detector pixel, sampled every
``1 / oversample`` detector pixel. Its value at offset ``r`` from a star's centre is the fraction
of the star's flux that falls in a detector pixel centred at ``r``. That is what fitting stars on
the detector needs; a forward model that integrates over detector pixels itself (UPDC's blot)
wants the optical PSF instead (:mod:`mosaic.psf.hybrid` gives that), because an ePSF there would
count the pixel twice.
"""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np
from astropy.stats import sigma_clipped_stats
from astropy.table import Table

from mosaic.exceptions import InputError
from mosaic.psf.stars import MIN_STARS, require_stars
from mosaic.registry import algorithm

__all__ = ["empirical_psf", "local_sky"]

log = logging.getLogger(__name__)


def local_sky(stamp: np.ndarray, mask=None) -> float:
    """Sigma-clipped median of a stamp's border pixels (its outermost row and column on each side).

    Parameters
    ----------
    stamp : numpy.ndarray
        2-D cut-out around a star.
    mask : numpy.ndarray, optional
        True where a pixel is bad.

    Returns
    -------
    float
        0 when no border pixel is good.
    """
    stamp = np.asarray(stamp, dtype=np.float64)
    border = np.ones(stamp.shape, dtype=bool)
    border[1:-1, 1:-1] = False
    good = border & np.isfinite(stamp)
    if mask is not None:
        good &= ~np.asarray(mask, dtype=bool)
    if not good.any():
        return 0.0
    _, median, _ = sigma_clipped_stats(stamp[good], sigma=3.0, maxiters=5)
    return float(median)


def _stamp_size(size: int, oversample: int, stamp_size) -> int:
    if stamp_size is None:
        n = size // oversample
        stamp_size = n if n % 2 else n - 1
    if stamp_size < 3 or stamp_size % 2 == 0:
        msg = f"stamp_size must be an odd integer >= 3; got {stamp_size!r}"
        raise InputError(msg)
    return int(stamp_size)


def _star_cutouts(data, bad, stars: Table, stamp_size: int):
    """One NDData per star (its stamp plus a margin, minus its local sky) and its position in it."""
    from astropy.nddata import NDData  # noqa: PLC0415

    half = stamp_size // 2 + 2
    ny, nx = data.shape
    cutouts, catalogs = [], []
    for x, y in zip(stars["x"], stars["y"], strict=True):
        ix, iy = int(round(x)), int(round(y))
        y1, y2, x1, x2 = max(iy - half, 0), min(iy + half + 1, ny), max(ix - half, 0), min(ix + half + 1, nx)
        cut, cmask = data[y1:y2, x1:x2], bad[y1:y2, x1:x2]
        sky = local_sky(cut, cmask)
        cutouts.append(NDData(np.where(cmask, 0.0, cut - sky), mask=cmask))
        catalogs.append(Table({"x": [x - x1], "y": [y - y1]}))
    return cutouts, catalogs


@algorithm("psf")
def empirical_psf(
    image,
    stars: Table,
    *,
    size: int = 51,
    oversample: int = 2,
    stamp_size: int | None = None,
    mask=None,
    n_iterations: int = 10,
    smoothing: str | None = "quartic",
) -> np.ndarray:
    """An effective PSF built from the stars of an image (photutils ``EPSFBuilder``).

    Parameters
    ----------
    image : numpy.ndarray
        2-D image (sky included; each star's local sky is removed).
    stars : astropy.table.Table
        Star positions ``x``, ``y`` (0-based pixels), e.g. from
        :func:`mosaic.psf.stars.select_stars`; at least ``MIN_STARS["empirical"]``.
    size : int, optional
        Side of the result in oversampled pixels; odd.
    oversample : int, optional
        Samples per detector pixel and axis.
    stamp_size : int, optional
        Side of each star's cut-out in detector pixels (odd); default the largest odd number
        not above ``size / oversample``.
    mask : numpy.ndarray, optional
        True where a pixel is bad (left out of the stacks); NaN pixels are always left out.
    n_iterations : int, optional
        Build iterations (fit, stack, recentre).
    smoothing : {"quartic", "quadratic"} or None, optional
        Smoothing kernel of each iteration (photutils'); ``quartic``, photutils' default, gave
        the smallest errors at ``oversample=2`` in the tests too (without smoothing the ePSF
        keeps pixel-phase noise of ~7 % of its peak).

    Returns
    -------
    numpy.ndarray
        ``(size, size)`` float64 effective PSF summing to 1, centred on its middle pixel, at
        ``1 / oversample`` of the image's pixel scale.

    Raises
    ------
    mosaic.exceptions.InputError
        Too few stars (naming how many and the minimum), an even ``size``, a bad
        ``oversample`` or a mask of the wrong shape.
    """
    from astropy.utils.exceptions import AstropyUserWarning  # noqa: PLC0415
    from photutils.psf import EPSFBuilder, extract_stars  # noqa: PLC0415

    data = np.asarray(image, dtype=np.float64)
    if data.ndim != 2:
        msg = f"image has shape {data.shape!r}; expected a 2-D image"
        raise InputError(msg)
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 3 or size % 2 == 0:
        msg = f"size must be an odd integer >= 3; got {size!r}"
        raise InputError(msg)
    if isinstance(oversample, bool) or not isinstance(oversample, int | np.integer) or oversample < 1:
        msg = f"oversample must be a positive integer; got {oversample!r}"
        raise InputError(msg)
    if smoothing not in ("quartic", "quadratic", None):
        msg = f"smoothing {smoothing!r} is unknown; expected one of ['quartic', 'quadratic', None]"
        raise InputError(msg)
    require_stars(stars, "empirical")
    bad = ~np.isfinite(data)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != data.shape:
            msg = f"mask has shape {mask.shape!r}; expected the image's {data.shape!r}"
            raise InputError(msg)
        bad |= mask
    stamp_size = _stamp_size(size, oversample, stamp_size)
    cutouts, catalogs = _star_cutouts(data, bad, stars, stamp_size)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AstropyUserWarning)
        epsf_stars = extract_stars(cutouts, catalogs, size=stamp_size)
        n_used = len(epsf_stars.all_good_stars)
        if n_used < MIN_STARS["empirical"]:
            msg = (f"empirical_psf: {n_used} stars could be cut out whole ({len(stars)} given); "
                   f"at least {MIN_STARS['empirical']} are needed")
            raise InputError(msg)
        builder = EPSFBuilder(oversampling=int(oversample), shape=(size, size), smoothing_kernel=smoothing,
                              maxiters=int(n_iterations), progress_bar=False)
        result = builder(epsf_stars)
    for w in caught:
        log.warning("empirical_psf: photutils: %s", w.message)
    epsf = np.asarray(result.epsf.data, dtype=np.float64)
    total = epsf.sum()
    if not (math.isfinite(total) and total > 0):
        msg = f"empirical_psf: the ePSF sums to {total!r}; expected a positive sum (are the stars sky-dominated?)"
        raise InputError(msg)
    log.info("empirical_psf: %d stars, %d x %d at oversampling %d", n_used, size, size, oversample)
    return epsf / total
