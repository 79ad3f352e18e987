"""NIRCam filter throughputs on an IFU wavelength grid, and their cross-calibration against the IFU (seed 003, eqs. 6-7).

The throughputs are **top-hat approximations**: each filter passes 1 between the blue and red
half-power wavelengths of its filter + telescope + detector throughput as tabulated in the JWST
User Documentation (JDox, "NIRCam Filters") and 0 elsewhere. They are what the seed needs for the
SW filters that lie inside NIRSpec G235H/F170LP (F182M, F187N, F200W, F210M, F212N); measured
curves, where a user has them, go in through :func:`throughput_matrix`'s ``curves``.
"""

from __future__ import annotations

import numpy as np

from mosaic.exceptions import InputError

__all__ = ["FILTERS", "G235H_F170LP_UM", "throughput_matrix", "cross_calibrate", "band_images"]

#: NIRCam SW filters as top-hat bands (blue, red half-power wavelengths in microns), after JDox
FILTERS: dict[str, tuple[float, float]] = {
    "F182M": (1.722, 1.968),
    "F187N": (1.863, 1.885),
    "F200W": (1.755, 2.226),
    "F210M": (1.992, 2.201),
    "F212N": (2.109, 2.134),
}

#: wavelength range of NIRSpec G235H with F170LP in microns (JDox); the seed fuses 1.66-2.30 um of it
G235H_F170LP_UM = (1.66, 3.05)


def _bin_edges(wavelengths):
    w = np.asarray(wavelengths, dtype=np.float64)
    mid = 0.5 * (w[1:] + w[:-1])
    return np.concatenate([[w[0] - (mid[0] - w[0])], mid, [w[-1] + (w[-1] - mid[-1])]])


def throughput_matrix(filters, wavelengths, *, curves=None) -> np.ndarray:
    """``L_m`` ``(n_filter, n_wave)``: each filter's throughput on the IFU channels, rows summing to 1.

    A channel's weight is the integral of the throughput over its bin (half-way to its
    neighbours), so narrow filters (F187N, F212N) get fractional edge channels; each row is then
    divided by its sum (the pipeline's calibration: an image is the band-averaged flux density).

    Parameters
    ----------
    filters : sequence of str
        NIRCam filter names, keys of :data:`FILTERS` unless ``curves`` gives them.
    wavelengths : array_like
        IFU channel wavelengths in microns, increasing.
    curves : dict, optional
        ``name -> (wavelengths_um, throughput)`` measured curves, used instead of the top hats.

    Raises
    ------
    InputError
        For an unknown filter (listing the known ones) or a filter not inside the cube's range.
    """
    w = np.asarray(wavelengths, dtype=np.float64)
    if w.ndim != 1 or w.size < 2 or np.any(np.diff(w) <= 0):
        msg = "wavelengths must be a 1-D increasing array of at least two channels"
        raise InputError(msg)
    curves = curves or {}
    edges = _bin_edges(w)
    rows = []
    for name in filters:
        key = str(name).upper()
        if key in curves:
            cw, ct = (np.asarray(a, dtype=np.float64) for a in curves[key])
            lo, hi = cw[ct > 0.5 * ct.max()].min(), cw[ct > 0.5 * ct.max()].max()
            fine = np.linspace(edges[0], edges[-1], 20 * w.size + 1)
            t = np.interp(fine, cw, ct, left=0.0, right=0.0)
            row = np.array([np.trapezoid(t[(fine >= a) & (fine <= b)], fine[(fine >= a) & (fine <= b)]) for a, b in zip(edges[:-1], edges[1:], strict=True)])
        elif key in FILTERS:
            lo, hi = FILTERS[key]
            row = np.clip(np.minimum(edges[1:], hi) - np.maximum(edges[:-1], lo), 0.0, None)
        else:
            msg = f"filter {name!r}: no throughput; expected one of {sorted(FILTERS)} or a curve"
            raise InputError(msg)
        if lo < edges[0] or hi > edges[-1]:
            msg = (
                f"filter {key} ({lo:.3f}-{hi:.3f} um) is not inside the IFU cube's range "
                f"{w[0]:.3f}-{w[-1]:.3f} um; fusion needs filters the cube covers"
            )
            raise InputError(msg)
        rows.append(row / row.sum())
    return np.array(rows)


def band_images(cube, throughput) -> np.ndarray:
    """Images of a cube ``(n_wave, ny, nx)`` through throughputs ``(n_filter, n_wave)`` (no PSF)."""
    return np.tensordot(throughput, cube, axes=1)


def cross_calibrate(images, cube, throughput) -> tuple[np.ndarray, np.ndarray]:
    """Throughputs rescaled so that each image's mean equals the IFU mean spectrum through it (eq. 6).

    ``L_m,f <- L_m,f * mean(Y_m,f) / (L_m,f mean(Y_h))`` (eq. 7 with rows that already sum to
    1). NaN pixels are left out of the means.

    Returns
    -------
    throughput : ndarray
        The cross-calibrated ``L_m``.
    factors : ndarray
        The factor per filter (close to 1 for consistent data; the seed reports 1.00-1.14).
    """
    mean_spectrum = np.nanmean(np.asarray(cube, dtype=np.float64), axis=(1, 2))
    predicted = np.asarray(throughput) @ mean_spectrum
    observed = np.nanmean(np.asarray(images, dtype=np.float64), axis=(1, 2))
    if np.any(predicted == 0) or not np.all(np.isfinite(predicted)):
        msg = "cross-calibration: the IFU mean spectrum through a filter is zero or not finite; check the filters and cube"
        raise InputError(msg)
    factors = observed / predicted
    return throughput * factors[:, None], factors
