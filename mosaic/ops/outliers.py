"""Outlier (cosmic ray, hot pixel) masks of one exposure against the blotted robust combination.

The test is the one of the JWST ``outlier_detection`` step (and of drizzlepac's ``driz_cr``):
a pixel of exposure ``k`` is an outlier where

    |SCI - BLOT| > snr[0] * ERR + scale[0] * |dBLOT|

with ``BLOT`` the robust combination (median) of all exposures drizzled onto a common grid and
blotted back to the exposure's pixels, and ``|dBLOT|`` its absolute derivative (the largest
difference to the four neighbours). The derivative term keeps the undersampled cores of bright
stars, where blotting smooths a sharp peak, from being flagged. Neighbours (3 x 3) of such a
pixel are outliers where they pass a second, lower threshold ``snr[1], scale[1]``.

All functions take and return plain arrays (NumPy or CuPy, by the input's module).
"""

from __future__ import annotations

import numpy as np

from mosaic.io.cal import DQ
from mosaic.ops.convolve import array_module
from mosaic.registry import algorithm

__all__ = [
    "REPLACE_MODES",
    "abs_derivative",
    "check_thresholds",
    "flag_outliers",
    "grow_mask",
    "replace_outliers",
    "robust_combine",
]

#: what happens to a flagged pixel: replaced by the blotted combination, or flagged DO_NOT_USE
REPLACE_MODES = ("interpolate", "flag")

#: pixels on which :func:`flag_outliers` depends around each pixel (derivative + neighbour grow)
OUTLIER_HALO = 2


def check_thresholds(snr, scale) -> tuple[tuple[float, float], tuple[float, float]]:
    """``(snr, scale)`` as two pairs of floats, or a ValueError naming the bad value."""
    pairs = []
    for name, value, positive in (("snr", snr, True), ("scale", scale, False)):
        try:
            pair = tuple(float(v) for v in (value if np.ndim(value) else (value, value)))
        except (TypeError, ValueError):
            pair = ()
        if len(pair) != 2 or not all(np.isfinite(pair)):
            msg = f"{name} {value!r} is not a pair of numbers; expected (first, neighbour) thresholds like (5.0, 4.0)"
            raise ValueError(msg)
        if positive and not min(pair) > 0:
            msg = f"{name} {value!r} has a value <= 0; expected positive signal-to-noise thresholds like (5.0, 4.0)"
            raise ValueError(msg)
        if not positive and min(pair) < 0:
            msg = f"{name} {value!r} has a negative value; expected derivative scales >= 0 like (1.2, 0.7)"
            raise ValueError(msg)
        pairs.append(pair)
    return pairs[0], pairs[1]


def _shifted(a, dy: int, dx: int, fill):
    """``a`` moved by (dy, dx): ``out[y, x] = a[y - dy, x - dx]``, ``fill`` where that is outside."""
    xp = array_module(a)
    out = xp.full(a.shape, fill, dtype=a.dtype)
    ny, nx = a.shape
    ys_out = slice(max(dy, 0), ny + min(dy, 0))
    xs_out = slice(max(dx, 0), nx + min(dx, 0))
    ys_in = slice(max(-dy, 0), ny + min(-dy, 0))
    xs_in = slice(max(-dx, 0), nx + min(-dx, 0))
    out[ys_out, xs_out] = a[ys_in, xs_in]
    return out


def abs_derivative(image):
    """Largest absolute difference between each pixel and its four neighbours.

    Neighbours that are NaN or outside the image are left out; a pixel with none (or itself
    NaN) gets NaN.

    Parameters
    ----------
    image : 2-D array
        The (blotted) image.

    Returns
    -------
    2-D array
        float32 ``|d image|``.
    """
    xp = array_module(image)
    a = xp.asarray(image, dtype=xp.float32)
    out = xp.full(a.shape, -xp.inf, dtype=xp.float32)
    for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        d = xp.abs(a - _shifted(a, dy, dx, xp.nan))
        out = xp.where(xp.isfinite(d), xp.maximum(out, d), out)
    return xp.where(xp.isfinite(out), out, xp.float32(xp.nan))


def grow_mask(mask):
    """A boolean mask grown by one pixel in all eight directions (3 x 3 dilation)."""
    xp = array_module(mask)
    m = xp.asarray(mask, dtype=bool)
    out = m.copy()
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                out |= _shifted(m, dy, dx, False)
    return out


@algorithm("preprocessing")
def flag_outliers(sci, err, blot, *, snr=(5.0, 4.0), scale=(1.2, 0.7), background: float = 0.0):
    """Outlier mask of one exposure against the blotted robust combination of all exposures.

    Parameters
    ----------
    sci : 2-D array
        The exposure (MJy/sr); NaN pixels are never flagged.
    err : 2-D array
        Its 1-sigma errors (ERR).
    blot : 2-D array
        The robust combination blotted onto the exposure's pixels; NaN where there is none
        (too few exposures cover the pixel), and there nothing is flagged.
    snr : tuple of float
        Signal-to-noise thresholds: a pixel whose difference passes the first is an outlier;
        a neighbour of one is an outlier where it passes the second.
    scale : tuple of float
        Multipliers of the blot's absolute derivative added to the two thresholds.
    background : float
        Level subtracted from ``sci`` before the comparison (sky not in the combination).

    Returns
    -------
    2-D array of bool
        True where the pixel is an outlier.
    """
    (snr1, snr2), (scale1, scale2) = check_thresholds(snr, scale)
    xp = array_module(sci)
    sci = xp.asarray(sci, dtype=xp.float32)
    if not (sci.shape == xp.shape(err) == xp.shape(blot)) or sci.ndim != 2:
        msg = f"sci, err and blot have shapes {sci.shape}, {xp.shape(err)}, {xp.shape(blot)}; expected one 2-D shape"
        raise ValueError(msg)
    blot = xp.asarray(blot, dtype=xp.float32)
    err = xp.asarray(err, dtype=xp.float32)
    diff = xp.abs(sci - blot - xp.float32(background))
    deriv = abs_derivative(blot)
    deriv = xp.where(xp.isfinite(deriv), deriv, xp.float32(0.0))
    with np.errstate(invalid="ignore"):
        first = diff > scale1 * deriv + snr1 * err
        second = diff > scale2 * deriv + snr2 * err
    # NaN comparisons are False: no flag without data, error or combination
    return grow_mask(first) & second


@algorithm("preprocessing")
def robust_combine(stack, weights, *, weight_threshold=None):
    """Robust per-pixel combination of exposures resampled onto one grid.

    A value counts where it is finite and its weight is positive and at least the exposure's
    ``weight_threshold`` (pixels only partly covered by an exposure are noisier). Where three or
    more values count, the result is their median. Where exactly two do, the median would be
    their mean, which carries half of an outlier into both exposures and gets both flagged;
    the lower of the two is taken instead, since cosmic rays and hot pixels are positive.
    Where fewer than two count, there is nothing to compare with: NaN.

    Parameters
    ----------
    stack : 3-D array
        ``(n_exposures, ny, nx)`` resampled exposures.
    weights : 3-D array
        Their drizzle weights, same shape.
    weight_threshold : 1-D array, optional
        Per exposure, the least weight of a value that counts (default: any positive weight).

    Returns
    -------
    combined : 2-D array
        float32 combination, NaN where fewer than two values count.
    n_used : 2-D array
        int16 number of values that count.
    """
    xp = array_module(stack)
    stack = xp.asarray(stack, dtype=xp.float32)
    weights = xp.asarray(weights, dtype=xp.float32)
    if stack.ndim != 3 or weights.shape != stack.shape:
        msg = f"stack and weights have shapes {stack.shape}, {weights.shape}; expected one (n_exposures, ny, nx) shape"
        raise ValueError(msg)
    ok = xp.isfinite(stack) & (weights > 0)
    if weight_threshold is not None:
        thr = xp.asarray(weight_threshold, dtype=xp.float32).reshape(-1, 1, 1)
        ok &= weights >= thr
    n_used = ok.sum(axis=0).astype(xp.int16)
    values = xp.where(ok, stack, xp.float32(xp.nan))
    # sort NaN last; the median of the n_used leading values, by index arithmetic (no nanmedian
    # warnings on empty pixels, and the same code for NumPy and CuPy)
    values = xp.sort(values, axis=0)
    n = n_used.astype(xp.int64)
    lo = xp.clip((n - 1) // 2, 0, None)
    hi = xp.clip(n // 2, 0, None)
    take = lambda i: xp.take_along_axis(values, i[None], axis=0)[0]  # noqa: E731
    median = xp.float32(0.5) * (take(lo) + take(hi))
    combined = xp.where(n == 2, take(xp.zeros_like(n)), median)
    combined = xp.where(n >= 2, combined, xp.float32(xp.nan)).astype(xp.float32)
    return combined, n_used


def _robust_ratio(num, den):
    """Median of ``num / den`` where both are finite and ``den > 0`` (NaN if nowhere)."""
    xp = array_module(num)
    ok = xp.isfinite(num) & xp.isfinite(den) & (den > 0)
    if not bool(ok.any()):
        return float("nan")
    return float(xp.median(num[ok] / den[ok]))


@algorithm("preprocessing")
def replace_outliers(sci, err, dq, var_poisson, var_rnoise, var_flat, outliers, blot, *, replace: str = "interpolate") -> dict:
    """Cleaned arrays of one exposure: outliers replaced by the blotted combination, or flagged.

    Parameters
    ----------
    sci, err, dq, var_poisson, var_rnoise, var_flat : 2-D arrays
        The exposure's cal arrays.
    outliers : 2-D array of bool
        The outlier mask (:func:`flag_outliers`).
    blot : 2-D array
        The robust combination blotted onto the exposure.
    replace : str
        ``"interpolate"`` (the UPDC paper's choice: SCI becomes the blotted combination of the
        other exposures, VAR_POISSON and VAR_FLAT are rescaled to it with the exposure's own
        median ratios VAR_POISSON/SCI and VAR_FLAT/SCI^2, DQ gets OUTLIER) or ``"flag"`` (the
        JWST step's: DQ gets OUTLIER and DO_NOT_USE, SCI, ERR and VAR_* become NaN).

    Returns
    -------
    dict
        ``sci, err, dq, var_poisson, var_rnoise, var_flat`` (new arrays; inputs untouched).
    """
    if replace not in REPLACE_MODES:
        msg = f"replace {replace!r} is not supported; expected one of {REPLACE_MODES}"
        raise ValueError(msg)
    xp = array_module(sci)
    out = {
        "sci": xp.array(sci, dtype=xp.float32),
        "err": xp.array(err, dtype=xp.float32),
        "dq": xp.array(dq, dtype=xp.uint32),
        "var_poisson": xp.array(var_poisson, dtype=xp.float32),
        "var_rnoise": xp.array(var_rnoise, dtype=xp.float32),
        "var_flat": xp.array(var_flat, dtype=xp.float32),
    }
    blot = xp.asarray(blot, dtype=xp.float32)
    mask = xp.asarray(outliers, dtype=bool)
    if replace == "flag":
        out["dq"][mask] |= xp.uint32(DQ["OUTLIER"] | DQ["DO_NOT_USE"])
        for name in ("sci", "err", "var_poisson", "var_rnoise", "var_flat"):
            out[name][mask] = xp.nan
        return out
    mask = mask & xp.isfinite(blot)
    out["dq"][mask] |= xp.uint32(DQ["OUTLIER"])
    # the pipeline's VAR_POISSON is signal times a constant and VAR_FLAT (flat error * signal)^2:
    # the exposure's own ratios give the variances of the replacing value
    good = ~mask & xp.isfinite(out["sci"])
    s = out["sci"][good]
    per_signal = _robust_ratio(out["var_poisson"][good], s)
    per_signal2 = _robust_ratio(out["var_flat"][good], s * s)
    b = blot[mask]
    out["sci"][mask] = b
    if np.isfinite(per_signal):
        out["var_poisson"][mask] = per_signal * xp.maximum(b, 0)
    if np.isfinite(per_signal2):
        out["var_flat"][mask] = per_signal2 * b * b
    # ERR is the root of the variances that the file has (a missing VAR_FLAT reads as NaN)
    parts = xp.stack([out[v][mask] for v in ("var_poisson", "var_rnoise", "var_flat")])
    some = xp.isfinite(parts).any(axis=0)
    total = xp.where(xp.isfinite(parts), parts, 0).sum(axis=0)
    out["err"][mask] = xp.where(some, xp.sqrt(xp.maximum(total, 0)), out["err"][mask])
    return out
