"""Selection of PSF stars: isolated, unsaturated, bright, compact point sources (seed 000, sec. 2.3).

Candidates are local maxima (``photutils.detection.find_peaks``) above ``detection_sigma``
times the sigma-clipped noise, or the positions of a catalogue. Each is centred (intensity
centroid of the background-subtracted core) and then kept only if it passes, in this order
(the first failed cut is its reason for rejection, counted and logged):

``edge``
    the stamp of ``stamp_size`` pixels around it lies inside the image;
``flagged``
    no masked pixel (``mask``, NaN, DQ-flagged) within ``flag_radius`` of the centre;
``saturated``
    the brightest pixel of its core is below ``saturation``;
``low_snr``
    aperture S/N (radius 2 FWHM; noise from ``error`` or the clipped sky noise) of at least
    ``snr_min``;
``neighbour``
    no other peak within ``isolation_radius`` that is brighter than its own PSF could make
    there (twice the reference PSF's brightest value at that radius, scaled to its peak: rings
    and spikes of a bright star are not neighbours);
``not_compact``
    a concentration ``F(0.6 FWHM) / F(3 FWHM)`` within ``concentration_tol`` (relative) of the
    reference PSF's: galaxies are less concentrated, cosmic rays and hot pixels more.

The reference PSF is ``psf`` (the model at the image's sampling), or a circular Gaussian of
``fwhm`` pixels.
"""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np
from astropy.table import Table

from mosaic.exceptions import InputError
from mosaic.registry import algorithm

__all__ = ["REJECTIONS", "MIN_STARS", "select_stars", "require_stars", "psf_fwhm_pixels"]

log = logging.getLogger(__name__)

#: reasons for rejection, in the order the cuts are applied
REJECTIONS = ("edge", "flagged", "saturated", "low_snr", "neighbour", "not_compact")
#: fewest stars each PSF method accepts
MIN_STARS = {"empirical": 5, "hybrid": 3}

_R_INNER_FWHM = 0.6
_R_OUTER_FWHM = 3.0
_R_SNR_FWHM = 2.0


def psf_fwhm_pixels(psf) -> float:
    """FWHM in pixels of a PSF array, from the area above half its peak (``2 sqrt(A / pi)``).

    Parameters
    ----------
    psf : numpy.ndarray
        2-D PSF.

    Returns
    -------
    float
        At least 1 pixel (an undersampled core has fewer than one pixel above half maximum).
    """
    psf = np.asarray(psf, dtype=np.float64)
    area = np.count_nonzero(psf >= 0.5 * psf.max())
    return max(1.0, 2.0 * math.sqrt(area / math.pi))


def _gaussian(fwhm: float, size: int) -> np.ndarray:
    sigma = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    c = np.arange(size) - size // 2
    g = np.exp(-(c[:, None] ** 2 + c[None, :] ** 2) / (2.0 * sigma**2))
    return g / g.sum()


def _concentration(data, xy, fwhm: float) -> np.ndarray:
    from photutils.aperture import CircularAperture, aperture_photometry  # noqa: PLC0415

    inner = aperture_photometry(data, CircularAperture(xy, r=_R_INNER_FWHM * fwhm), method="exact")["aperture_sum"]
    outer = aperture_photometry(data, CircularAperture(xy, r=_R_OUTER_FWHM * fwhm), method="exact")["aperture_sum"]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(inner, dtype=float) / np.asarray(outer, dtype=float)


def _envelope(ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reference PSF's brightest value (relative to its peak) in rings 1 pixel wide."""
    c = ref.shape[0] // 2
    yy, xx = np.indices(ref.shape)
    r = np.hypot(yy - c, xx - c)
    radii = np.arange(0, int(r.max()) + 1)
    env = np.array([ref[np.abs(r - rad) <= 1.0].max() for rad in radii]) / ref.max()
    return radii, env


def _explained_by_brighter(px, py, pv, radius, radii, env) -> np.ndarray:
    """True for peaks no brighter than twice a brighter peak's PSF envelope at their distance.

    Of equal peaks (the plateau of a saturated star) the first is kept.
    """
    out = np.zeros(len(px), dtype=bool)
    index = np.arange(len(px))
    for i in range(len(px)):
        d = np.hypot(px - px[i], py - py[i])
        brighter = ((pv > pv[i]) | ((pv == pv[i]) & (index < i))) & (d <= radius) & (d > 0)
        if brighter.any():
            out[i] = np.any(pv[i] <= 2.0 * pv[brighter] * np.interp(d[brighter], radii, env, right=0.0))
    return out


def _centroids(data, x0, y0, half: int) -> tuple[np.ndarray, np.ndarray]:
    """Intensity-weighted centroids of the positive part of each core box."""
    ny, nx = data.shape
    xs, ys = np.array(x0, dtype=float), np.array(y0, dtype=float)
    for i, (x, y) in enumerate(zip(np.rint(x0).astype(int), np.rint(y0).astype(int), strict=True)):
        y1, y2, x1, x2 = max(y - half, 0), min(y + half + 1, ny), max(x - half, 0), min(x + half + 1, nx)
        box = np.nan_to_num(data[y1:y2, x1:x2], nan=0.0).clip(min=0.0)
        total = box.sum()
        if total > 0:
            gy, gx = np.indices(box.shape)
            ys[i] = y1 + (gy * box).sum() / total
            xs[i] = x1 + (gx * box).sum() / total
    return xs, ys


def _catalog_positions(catalog, wcs) -> tuple[np.ndarray, np.ndarray]:
    names = set(catalog.colnames)
    if {"x", "y"} <= names:
        return np.asarray(catalog["x"], float), np.asarray(catalog["y"], float)
    if {"ra", "dec"} <= names:
        if wcs is None:
            msg = "catalog has ra/dec but no wcs was given; expected a WCS to place them on the image, or x/y columns"
            raise InputError(msg)
        x, y = wcs.world_to_pixel_values(np.asarray(catalog["ra"], float), np.asarray(catalog["dec"], float))
        return np.asarray(x, float), np.asarray(y, float)
    msg = f"catalog has columns {sorted(names)}; expected x and y (pixels) or ra and dec (degrees)"
    raise InputError(msg)


@algorithm("psf")
def select_stars(
    image,
    *,
    psf=None,
    fwhm: float | None = None,
    error=None,
    mask=None,
    catalog=None,
    wcs=None,
    snr_min: float = 50.0,
    saturation: float | None = None,
    stamp_size: int | None = None,
    isolation_radius: float | None = None,
    flag_radius: float | None = None,
    concentration_tol: float = 0.25,
    detection_sigma: float = 5.0,
    n_max: int | None = None,
) -> Table:
    """Isolated, unsaturated, bright, compact stars of an image, for building a PSF.

    Parameters
    ----------
    image : numpy.ndarray
        2-D image with its sky (a constant sky is removed: the median of the sky with the sources
        masked, :func:`mosaic.catalog.noise.sky_noise`).
    psf : numpy.ndarray, optional
        Reference (model) PSF at the image's pixel scale, odd and centred; sets the FWHM, the
        expected concentration and the rings and spikes that are not neighbours.
    fwhm : float, optional
        FWHM in pixels; required without ``psf`` (then the reference is a Gaussian).
    error : numpy.ndarray, optional
        1-sigma error per pixel (e.g. ERR); default the sky's noise (sources masked).
    mask : numpy.ndarray, optional
        True where a pixel is bad (flagged in DQ, saturated); NaN pixels are always bad.
    catalog : astropy.table.Table, optional
        Candidate positions (``x``, ``y`` in pixels, or ``ra``, ``dec`` with ``wcs``) used
        instead of the detected peaks; all cuts still apply.
    wcs : astropy.wcs.WCS, optional
        The image's WCS, for a catalogue in ``ra``, ``dec``.
    snr_min : float, optional
        Least aperture S/N.
    saturation : float, optional
        Pixel value at which the detector saturates (in the image's units, sky included).
    stamp_size : int, optional
        Side of the stamp each star needs (odd); default ``2 * ceil(4 FWHM) + 1``.
    isolation_radius : float, optional
        Radius in pixels free of other peaks; default half the stamp plus one pixel.
    flag_radius : float, optional
        Radius in pixels free of masked pixels; default half the stamp.
    concentration_tol : float, optional
        Largest relative difference of the concentration from the reference's.
    detection_sigma : float, optional
        Peaks above this many sigma of the sky are candidates and possible neighbours.
    n_max : int, optional
        Keep at most this many stars, the highest S/N first.

    Returns
    -------
    astropy.table.Table
        One row per star, highest S/N first: ``x``, ``y`` (0-based pixels), ``flux`` (in the
        S/N aperture), ``peak``, ``snr``, ``concentration``; ``meta`` holds ``n_candidates``,
        ``rejected`` (counts per reason, :data:`REJECTIONS`), ``candidates`` (a table of
        every candidate's ``x``, ``y`` and ``reason``, ``"kept"`` for the stars), ``fwhm``,
        ``sky`` and ``stamp_size``.
    """
    data = np.asarray(image, dtype=np.float64)
    if data.ndim != 2:
        msg = f"image has shape {data.shape!r}; expected a 2-D image"
        raise InputError(msg)
    bad = ~np.isfinite(data)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != data.shape:
            msg = f"mask has shape {mask.shape!r}; expected the image's {data.shape!r}"
            raise InputError(msg)
        bad |= mask
    if error is not None:
        error = np.asarray(error, dtype=np.float64)
        if error.shape != data.shape:
            msg = f"error has shape {error.shape!r}; expected the image's {data.shape!r}"
            raise InputError(msg)
    if bad.all():
        msg = "image has no good pixel; expected finite, unmasked data to select stars from"
        raise InputError(msg)
    if psf is not None:
        ref = np.asarray(psf, dtype=np.float64)
        if ref.ndim != 2 or ref.shape[0] != ref.shape[1] or ref.shape[0] % 2 == 0:
            msg = f"psf has shape {ref.shape!r}; expected an odd square array"
            raise InputError(msg)
        fwhm = psf_fwhm_pixels(ref) if fwhm is None else float(fwhm)
    elif fwhm is None:
        msg = "select_stars needs psf= (a model PSF at the image's sampling) or fwhm= (pixels); got neither"
        raise InputError(msg)
    else:
        fwhm = float(fwhm)
        if not (math.isfinite(fwhm) and fwhm > 0):
            msg = f"fwhm must be a positive number of pixels; got {fwhm!r}"
            raise InputError(msg)
        ref = _gaussian(fwhm, 2 * math.ceil(4 * fwhm) + 1)
    if stamp_size is None:
        stamp_size = 2 * math.ceil(4 * fwhm) + 1
    if stamp_size < 3 or stamp_size % 2 == 0:
        msg = f"stamp_size must be an odd integer >= 3; got {stamp_size!r}"
        raise InputError(msg)
    half = stamp_size // 2
    isolation_radius = half + 1.0 if isolation_radius is None else float(isolation_radius)
    flag_radius = float(half) if flag_radius is None else float(flag_radius)

    # the sky and its noise with the sources masked: a clipped median and scatter of every pixel
    # sit on the stars' and galaxies' wings (on a field with light in 29 % of its pixels, +0.15
    # sigma of sky and S/N 7 % low; tests/psf/test_stars.py)
    from mosaic.catalog.noise import measured_sky  # noqa: PLC0415

    m = measured_sky(data, ~bad & np.isfinite(data))
    sky, noise = float(m.sky), float(m.scale)
    sub = np.where(bad, np.nan, data - sky)
    from photutils.detection import find_peaks  # noqa: PLC0415

    box = max(3, 2 * round(fwhm) + 1)
    from photutils.utils.exceptions import NoDetectionsWarning  # noqa: PLC0415

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoDetectionsWarning)  # no peak: no candidate, counted below
        peaks = find_peaks(np.nan_to_num(sub, nan=0.0), detection_sigma * max(noise, 1e-300), box_size=box, mask=bad)
    px = np.zeros(0) if peaks is None else np.asarray(peaks["x_peak"], float)
    py = np.zeros(0) if peaks is None else np.asarray(peaks["y_peak"], float)
    pv = np.zeros(0) if peaks is None else np.asarray(peaks["peak_value"], float)
    radii, env = _envelope(ref)
    if catalog is not None:
        cx, cy = _catalog_positions(catalog, wcs)
    else:
        # rings and spikes of a brighter peak nearby are part of that source, not candidates
        own = _explained_by_brighter(px, py, pv, isolation_radius, radii, env)
        cx, cy = px[~own], py[~own]
    n_candidates = len(cx)
    reasons = np.full(n_candidates, "", dtype=object)
    ny, nx = data.shape
    inside_core = (cx >= 0) & (cx <= nx - 1) & (cy >= 0) & (cy <= ny - 1)
    x, y = cx.copy(), cy.copy()
    if inside_core.any():
        x[inside_core], y[inside_core] = _centroids(sub, cx[inside_core], cy[inside_core], max(1, round(fwhm)))
    ix, iy = np.rint(x).astype(int), np.rint(y).astype(int)
    edge = (ix - half < 0) | (iy - half < 0) | (ix + half >= nx) | (iy + half >= ny)
    reasons[edge] = "edge"

    yy, xx = np.indices((2 * half + 1, 2 * half + 1)) - half
    core = np.hypot(yy, xx) <= max(1.0, 0.5 * fwhm) + 0.5
    flag_disc = np.hypot(yy, xx) <= flag_radius
    peak = np.full(n_candidates, np.nan)
    raw_peak = np.full(n_candidates, np.nan)
    for i in np.flatnonzero(~edge):
        sl = (slice(iy[i] - half, iy[i] + half + 1), slice(ix[i] - half, ix[i] + half + 1))
        if bad[sl][flag_disc].any():
            reasons[i] = "flagged"
            continue
        raw_peak[i] = np.nanmax(data[sl][core])
        peak[i] = raw_peak[i] - sky
        if saturation is not None and raw_peak[i] >= saturation:
            reasons[i] = "saturated"

    live = np.flatnonzero(reasons == "")
    flux = np.full(n_candidates, np.nan)
    snr = np.full(n_candidates, np.nan)
    conc = np.full(n_candidates, np.nan)
    if live.size:
        from photutils.aperture import CircularAperture, aperture_photometry  # noqa: PLC0415

        xy = np.column_stack([x[live], y[live]])
        filled = np.nan_to_num(sub, nan=0.0)
        aper = CircularAperture(xy, r=_R_SNR_FWHM * fwhm)
        flux[live] = np.asarray(aperture_photometry(filled, aper, method="exact")["aperture_sum"], float)
        if error is not None:
            var = aperture_photometry(np.nan_to_num(error, nan=0.0) ** 2, aper, method="exact")["aperture_sum"]
            sigma = np.sqrt(np.asarray(var, float))
        else:
            sigma = noise * np.sqrt(aper.area)
        with np.errstate(invalid="ignore", divide="ignore"):
            snr[live] = flux[live] / sigma
        conc[live] = _concentration(filled, xy, fwhm)
        reasons[live[~(snr[live] >= snr_min)]] = "low_snr"

    ref_conc = float(_concentration(ref, np.array([[ref.shape[1] // 2, ref.shape[0] // 2]], float), fwhm)[0])
    for i in np.flatnonzero(reasons == ""):
        d = np.hypot(px - x[i], py - y[i])
        near = (d > 1.5) & (d <= isolation_radius)
        if near.any():
            own = 2.0 * peak[i] * np.interp(d[near], radii, env, right=0.0)
            if np.any(sub[py[near].astype(int), px[near].astype(int)] > own):
                reasons[i] = "neighbour"
                continue
        if not abs(conc[i] - ref_conc) <= concentration_tol * ref_conc:
            reasons[i] = "not_compact"

    candidates = Table({"x": x, "y": y, "reason": np.array([r or "kept" for r in reasons], dtype=str)})
    keep = np.flatnonzero(reasons == "")
    keep = keep[np.argsort(-snr[keep], kind="stable")]
    if n_max is not None:
        keep = keep[: int(n_max)]
    rejected = {r: int(np.count_nonzero(reasons == r)) for r in REJECTIONS}
    table = Table(
        {"x": x[keep], "y": y[keep], "flux": flux[keep], "peak": peak[keep], "snr": snr[keep], "concentration": conc[keep]},
        meta={"n_candidates": n_candidates, "rejected": rejected, "candidates": candidates, "fwhm": fwhm, "sky": sky, "stamp_size": stamp_size,
              "reference_concentration": ref_conc},
    )
    log.info(
        "select_stars: %d candidates, %d stars kept (FWHM %.2f px, stamp %d); rejected: %s",
        n_candidates, len(table), fwhm, stamp_size, ", ".join(f"{k} {v}" for k, v in rejected.items()),
    )
    return table


def require_stars(stars: Table, method: str, *, source: str = "image") -> None:
    """Raise a clear error when there are too few stars for a PSF ``method``.

    Parameters
    ----------
    stars : astropy.table.Table
        As from :func:`select_stars`.
    method : {"empirical", "hybrid"}
        Sets the minimum (:data:`MIN_STARS`).
    source : str, optional
        What the stars came from (a file name), for the message.
    """
    n_min = MIN_STARS[method]
    if len(stars) < n_min:
        rejected = stars.meta.get("rejected", {})
        why = ", ".join(f"{k} {v}" for k, v in rejected.items() if v) or "none rejected"
        msg = (f"{source}: {len(stars)} usable PSF stars found; the {method} PSF needs at least {n_min} "
               f"(of {stars.meta.get('n_candidates', '?')} candidates, rejected: {why}); "
               "lower snr_min, raise saturation or use a larger image")
        raise InputError(msg)

