"""Robust statistics of images far larger than memory, as reductions over dask blocks.

Every statistic here equals its whole-array numpy / astropy counterpart on the finite,
unmasked pixels -- exactly for the order statistics, to float64 round-off for the sums:

- :func:`median`, :func:`percentile`: exact order statistics by radix selection over blocks
  (:mod:`mosaic.ops.stats`): a float32 median takes at most two histogram passes over the data
  and one gather of the few values left; numpy's ``"linear"`` percentile interpolation;
- :func:`sigma_clipped_stats`: :func:`astropy.stats.sigma_clipped_stats` (centre the median,
  spread the population std, clip ``[median - sigma std, median + sigma std]``, repeat until
  nothing changes or ``maxiters``); each iteration is a mean pass, a variance pass and an exact
  median of the values still in;
- :func:`biweight_location`, :func:`biweight_scale`, :func:`mad_std`: astropy's estimators (one
  biweight step from the exact median, scaled by the exact median absolute deviation);
- :func:`image_statistics`: all of the above plus min, max and pixel counts, in one dict.

Nothing is approximate, so no error bound is needed: the quantiles are order statistics of the
data, not of a histogram. Memory per task is one block plus a 65536-bin histogram; the values
gathered at the end of a selection are capped at :data:`GATHER_LIMIT`.
"""

from __future__ import annotations

import logging
import math
from functools import reduce

import dask
import dask.array as da
import numpy as np

from mosaic.ops.stats import (
    DIGIT_BITS,
    Selection,
    biweight_sums,
    count_values,
    key_bits,
    key_histogram,
    key_select,
    keys_to_values,
    moments,
    select_values,
    value_dtype,
)
from mosaic.registry import algorithm

__all__ = [
    "GATHER_LIMIT",
    "biweight_location",
    "biweight_scale",
    "image_statistics",
    "mad_std",
    "median",
    "order_statistics",
    "percentile",
    "sigma_clipped_stats",
]

log = logging.getLogger(__name__)

#: at most this many values are gathered into one task to finish a selection
GATHER_LIMIT = 1 << 21

#: the MAD of a normal distribution times this is its standard deviation (astropy's constant)
MAD_TO_STD = 1.482602218505602


def _as_dask(image, mask):
    if not isinstance(image, da.Array):
        image = da.from_array(np.asarray(image), chunks="auto")
    if image.ndim < 1:
        msg = f"image must be an array; got a scalar of shape {image.shape!r}"
        raise ValueError(msg)
    if mask is not None:
        if tuple(mask.shape) != tuple(image.shape):
            msg = f"mask has shape {tuple(mask.shape)!r}; expected the image's shape {tuple(image.shape)!r}"
            raise ValueError(msg)
        mask = da.asarray(mask).astype(bool).rechunk(image.chunks)
    return image, mask


class _Values:
    """The selected values of a dask image: a per-block map and a tree-sum of its results."""

    def __init__(self, image, mask, selection: Selection):
        self.image = image
        self.mask = mask
        self.selection = selection
        self.dtype = np.dtype(np.float64) if selection.center is not None else value_dtype(image.dtype)

    def _blocks(self):
        blocks = self.image.to_delayed().ravel()
        masks = self.mask.to_delayed().ravel() if self.mask is not None else [None] * len(blocks)
        return blocks, masks

    def reduce(self, func, **kwargs):
        """A delayed sum over blocks of ``func(values_of_block, **kwargs)`` (an ndarray)."""
        blocks, masks = self._blocks()
        parts = [dask.delayed(_apply)(b, m, self.selection, func, kwargs) for b, m in zip(blocks, masks, strict=True)]
        return _tree_sum(parts)

    def gather(self, func, **kwargs):
        """A delayed concatenation over blocks of ``func(values_of_block, **kwargs)``."""
        blocks, masks = self._blocks()
        parts = [dask.delayed(_apply)(b, m, self.selection, func, kwargs) for b, m in zip(blocks, masks, strict=True)]
        return dask.delayed(np.concatenate)(parts)


def _apply(block, mask, selection, func, kwargs):
    return func(select_values(block, mask, selection), **kwargs)


def _add(*parts):
    return reduce(np.add, parts)


def _tree_sum(parts, fan_in: int = 8):
    while len(parts) > 1:
        parts = [dask.delayed(_add)(*parts[i : i + fan_in]) for i in range(0, len(parts), fan_in)]
    return parts[0]


def _compute(*delayeds):
    return dask.compute(*delayeds)


def _count_sum(values: _Values) -> tuple[int, float]:
    (cs,) = _compute(values.reduce(count_values))
    return int(cs[0]), float(cs[1])


def order_statistics(values: _Values, ranks, *, n: int) -> dict[int, float]:
    """The values of 0-based ``ranks`` among ``n`` selected values, exactly (radix selection)."""
    bits = key_bits(values.dtype)
    # state per rank: (prefix, shift, rank within the keys that share the prefix, their count)
    state = {int(r): (0, bits, int(r), n) for r in ranks}
    found: dict[int, float] = {}
    n_pass = 0
    while len(found) < len(state):
        jobs, todo = {}, {}
        for r, (prefix, shift, rank, count) in state.items():
            if r in found:
                continue
            if shift == 0:
                found[r] = float(keys_to_values([prefix], values.dtype)[0])
                continue
            key = (prefix, shift, count <= GATHER_LIMIT)
            if key not in jobs:
                if count <= GATHER_LIMIT:
                    jobs[key] = values.gather(key_select, prefix=prefix, shift=shift)
                else:
                    jobs[key] = values.reduce(key_histogram, prefix=prefix, shift=shift)
            todo[r] = key
        if not jobs:
            break
        keys = list(jobs)
        results = dict(zip(keys, _compute(*(jobs[k] for k in keys)), strict=True))
        n_pass += 1
        for r, key in todo.items():
            prefix, shift, rank, count = state[r]
            out = results[key]
            if key[2]:
                found[r] = float(np.partition(out, rank)[rank])
                continue
            cum = np.cumsum(out)
            digit = int(np.searchsorted(cum, rank, side="right"))
            below = int(cum[digit - 1]) if digit else 0
            state[r] = ((prefix << DIGIT_BITS) | digit, shift - DIGIT_BITS, rank - below, int(out[digit]))
    log.debug("order statistics %s of %d values in %d passes", sorted(state), n, n_pass)
    return found


def _median_of(values: _Values, n: int) -> float:
    if n == 0:
        return math.nan
    ranks = [(n - 1) // 2, n // 2]
    got = order_statistics(values, ranks, n=n)
    lo, hi = got[ranks[0]], got[ranks[1]]
    return lo if ranks[0] == ranks[1] else float(np.mean(np.array([lo, hi], dtype=values.dtype)))


@algorithm("statistics")
def median(image, *, mask=None) -> float:
    """The exact median of the finite, unmasked pixels of a (dask) image.

    Parameters
    ----------
    image : dask.array.Array or array_like
        The image; NaN and inf are left out.
    mask : dask.array.Array or array_like of bool, optional
        True where a pixel is left out.

    Returns
    -------
    float
        ``numpy.median`` of the kept pixels (NaN when none is kept).
    """
    image, mask = _as_dask(image, mask)
    values = _Values(image, mask, Selection())
    n, _ = _count_sum(values)
    return _median_of(values, n)


def _lerp(a: float, b: float, t: float) -> float:
    # numpy's linear interpolation, which is monotonic and exact at both ends
    d = b - a
    return b - d * (1 - t) if t >= 0.5 else a + d * t


@algorithm("statistics")
def percentile(image, q, *, mask=None) -> np.ndarray:
    """Exact percentiles of the finite, unmasked pixels (numpy's ``"linear"`` method).

    Parameters
    ----------
    image : dask.array.Array or array_like
        The image; NaN and inf are left out.
    q : float or sequence of float
        Percentiles in ``[0, 100]``.
    mask : dask.array.Array or array_like of bool, optional
        True where a pixel is left out.

    Returns
    -------
    float or ndarray
        ``numpy.percentile(kept, q)``; NaN where no pixel is kept.
    """
    qs = np.atleast_1d(np.asarray(q, dtype=np.float64))
    if np.any(~np.isfinite(qs)) or np.any(qs < 0) or np.any(qs > 100):
        msg = f"percentile q must be in [0, 100]; got {q!r}"
        raise ValueError(msg)
    image, mask = _as_dask(image, mask)
    values = _Values(image, mask, Selection())
    n, _ = _count_sum(values)
    if n == 0:
        out = np.full(qs.shape, np.nan)
    else:
        index = qs / 100.0 * (n - 1)
        lo = np.floor(index).astype(np.int64)
        hi = np.minimum(lo + 1, n - 1)
        got = order_statistics(values, sorted(set(lo.tolist()) | set(hi.tolist())), n=n)
        out = np.array([_lerp(got[a], got[b], t) for a, b, t in zip(lo, hi, index - lo, strict=True)])
    return float(out[0]) if np.ndim(q) == 0 else out


def _check_sigma(sigma, name="sigma"):
    if sigma is None or not np.isfinite(sigma) or sigma <= 0:
        msg = f"{name} must be a positive number; got {sigma!r}"
        raise ValueError(msg)


@algorithm("statistics")
def sigma_clipped_stats(image, *, mask=None, sigma: float = 3.0, sigma_lower=None, sigma_upper=None, maxiters: int | None = 5):
    """Sigma-clipped mean, median and standard deviation of a (dask) image, exactly as astropy.

    Parameters
    ----------
    image : dask.array.Array or array_like
        The image; NaN and inf are left out.
    mask : dask.array.Array or array_like of bool, optional
        True where a pixel is left out.
    sigma : float
        Clipping limit in standard deviations (both sides unless given separately).
    sigma_lower, sigma_upper : float, optional
        Lower and upper clipping limits; default ``sigma``.
    maxiters : int or None
        Most clipping iterations; None iterates until nothing more is clipped.

    Returns
    -------
    mean, median, std : float
        As :func:`astropy.stats.sigma_clipped_stats` (``std_ddof=0``) on the kept pixels.
    """
    _check_sigma(sigma)
    lower = sigma if sigma_lower is None else sigma_lower
    upper = sigma if sigma_upper is None else sigma_upper
    _check_sigma(lower, "sigma_lower")
    _check_sigma(upper, "sigma_upper")
    if maxiters is not None and (int(maxiters) != maxiters or maxiters < 0):
        msg = f"maxiters must be a non-negative integer or None; got {maxiters!r}"
        raise ValueError(msg)
    image, mask = _as_dask(image, mask)
    lo, hi = -np.inf, np.inf
    previous = None
    iteration = 0
    while True:
        values = _Values(image, mask, Selection(lo, hi))
        n, total = _count_sum(values)
        if n == 0:
            return math.nan, math.nan, math.nan
        mean = total / n
        (ss,) = _compute(values.reduce(moments, mean=mean))
        std = math.sqrt(float(ss[0]) / n)
        med = _median_of(values, n)
        converged = previous is not None and n == previous
        if converged or (maxiters is not None and iteration >= maxiters):
            break
        # astropy keeps only what is inside every iteration's bounds
        lo, hi = max(lo, med - lower * std), min(hi, med + upper * std)
        previous = n
        iteration += 1
    log.debug("sigma_clipped_stats: %d iterations, %d values kept", iteration, n)
    return mean, med, std


def _median_and_mad(image, mask) -> tuple[float, float, int, _Values]:
    values = _Values(image, mask, Selection())
    n, _ = _count_sum(values)
    if n == 0:
        return math.nan, math.nan, 0, values
    med = _median_of(values, n)
    # astropy takes the median in float64 and the deviations from it in float64
    absdev = _Values(image, mask, Selection(center=med))
    return med, _median_of(absdev, n), n, values


@algorithm("statistics")
def mad_std(image, *, mask=None) -> float:
    """The median absolute deviation scaled to a normal standard deviation (astropy's ``mad_std``).

    Parameters
    ----------
    image : dask.array.Array or array_like
        The image; NaN and inf are left out.
    mask : dask.array.Array or array_like of bool, optional
        True where a pixel is left out.
    """
    image, mask = _as_dask(image, mask)
    _, mad, _, _ = _median_and_mad(image, mask)
    return mad * MAD_TO_STD


@algorithm("statistics")
def biweight_location(image, *, mask=None, c: float = 6.0) -> float:
    """Tukey's biweight location (astropy's ``biweight_location``) of a (dask) image.

    Parameters
    ----------
    image : dask.array.Array or array_like
        The image; NaN and inf are left out.
    mask : dask.array.Array or array_like of bool, optional
        True where a pixel is left out.
    c : float
        Tuning constant in units of the median absolute deviation.
    """
    image, mask = _as_dask(image, mask)
    med, mad, n, values = _median_and_mad(image, mask)
    return _biweight_location(values, med, mad, n, c)


def _biweight_location(values, med, mad, n, c):
    if n == 0 or mad == 0 or not np.isfinite(mad):
        return med
    (s,) = _compute(values.reduce(biweight_sums, location=med, mad=mad, c=c))
    return med + s[0] / s[1]


@algorithm("statistics")
def biweight_scale(image, *, mask=None, c: float = 9.0) -> float:
    """Tukey's biweight scale (astropy's ``biweight_scale``) of a (dask) image.

    Parameters
    ----------
    image : dask.array.Array or array_like
        The image; NaN and inf are left out.
    mask : dask.array.Array or array_like of bool, optional
        True where a pixel is left out.
    c : float
        Tuning constant in units of the median absolute deviation.
    """
    image, mask = _as_dask(image, mask)
    med, mad, n, values = _median_and_mad(image, mask)
    return _biweight_scale(values, med, mad, n, c)


def _biweight_scale(values, med, mad, n, c):
    if n == 0:
        return math.nan
    if mad == 0:
        return 0.0
    (s,) = _compute(values.reduce(biweight_sums, location=med, mad=mad, c=c))
    return math.sqrt(s[4] * s[2] / s[3] ** 2)


@algorithm("statistics")
def image_statistics(image, *, mask=None, sigma: float = 3.0, maxiters: int = 5, percentiles=(1.0, 16.0, 50.0, 84.0, 99.0)) -> dict:
    """Every robust statistic of a (dask) image in one dict.

    Parameters
    ----------
    image : dask.array.Array or array_like
        The image.
    mask : dask.array.Array or array_like of bool, optional
        True where a pixel is left out.
    sigma : float
        Clipping limit of the sigma-clipped statistics.
    maxiters : int
        Most clipping iterations.
    percentiles : sequence of float
        Percentiles to report.

    Returns
    -------
    dict
        ``n_pixels, n_valid, n_nan, n_inf, n_masked, min, max, mean, median, std`` (the
        sigma-clipped three), ``biweight_location, biweight_scale, mad_std`` and
        ``percentiles`` (``{q: value}``), all plain floats and ints.
    """
    _check_sigma(sigma)
    image, mask = _as_dask(image, mask)
    x = image
    counts = {
        "n_nan": da.isnan(x).sum(),
        "n_inf": da.isinf(x).sum(),
    }
    valid = da.isfinite(x) if mask is None else da.isfinite(x) & ~mask
    counts["n_valid"] = valid.sum()
    if mask is not None:
        counts["n_masked"] = mask.sum()
    lo = da.where(valid, x, np.inf).min()
    hi = da.where(valid, x, -np.inf).max()
    keys = list(counts)
    got = _compute(*(counts[k] for k in keys), lo, hi)
    out = {"n_pixels": int(np.prod(image.shape))}
    out.update({k: int(v) for k, v in zip(keys, got[:-2], strict=True)})
    out.setdefault("n_masked", 0)
    n = out["n_valid"]
    out["min"] = float(got[-2]) if n else math.nan
    out["max"] = float(got[-1]) if n else math.nan
    out["mean"], out["median"], out["std"] = sigma_clipped_stats(image, mask=mask, sigma=sigma, maxiters=maxiters)
    med, mad, n, values = _median_and_mad(image, mask)
    out["biweight_location"] = float(_biweight_location(values, med, mad, n, 6.0))
    out["biweight_scale"] = float(_biweight_scale(values, med, mad, n, 9.0))
    out["mad_std"] = float(mad * MAD_TO_STD)
    qs = list(percentiles)
    out["percentiles"] = dict(zip(qs, np.atleast_1d(percentile(image, qs, mask=mask)).tolist(), strict=True)) if qs else {}
    return out
