"""Display stretches: an interval (which values map to black and white) and a stretch (how).

Built on :mod:`astropy.visualization` (seed 001, sec. 3.3): ``ZScaleInterval``,
``PercentileInterval``, ``MinMaxInterval`` and ``AsinhStretch``, ``LogStretch``,
``SqrtStretch``, ``PowerStretch``, ``LinearStretch``, ``HistEqStretch``. The stretch ``zscale``
is IRAF's display: the zscale interval with a linear stretch.

*Large arrays.* The interval (and the histogram of ``histeq``) is computed from a strided sample
of the array (:func:`sample_pixels`: every ``step``-th row and column, at most ``n_samples``
pixels), never the whole array, so a dask array or a FITS memmap larger than memory is read once
chunk by chunk and only the sample is held. :func:`display_norm` returns a normaliser that maps
any block of the array to ``[0, 1]``; :func:`stretch_image` applies it block by block
(``map_blocks`` for dask input).
"""

from __future__ import annotations

import logging
import math

import numpy as np
from astropy.visualization import (
    AsinhStretch,
    HistEqStretch,
    ImageNormalize,
    LinearStretch,
    LogStretch,
    MinMaxInterval,
    PercentileInterval,
    PowerStretch,
    SqrtStretch,
    ZScaleInterval,
)

from mosaic.exceptions import InputError
from mosaic.registry import algorithm

__all__ = ["STRETCHES", "INTERVALS", "DEFAULT_N_SAMPLES", "sample_pixels", "display_limits", "display_norm", "stretch_image"]

log = logging.getLogger(__name__)

#: stretch names accepted by :func:`display_norm`
STRETCHES = ("asinh", "linear", "log", "sqrt", "power", "histeq", "zscale")
#: interval names accepted by :func:`display_norm`
INTERVALS = ("percentile", "zscale", "minmax")
#: pixels sampled from an array to compute its interval
DEFAULT_N_SAMPLES = 1_000_000


def _check_choice(name: str, value, allowed) -> str:
    if value not in allowed:
        msg = f"{name} {value!r} is unknown; expected one of {list(allowed)}"
        raise InputError(msg)
    return value


def sample_pixels(array, *, n_samples: int = DEFAULT_N_SAMPLES) -> np.ndarray:
    """The finite values of a strided sample of a 2-D array, as a float64 vector.

    Every ``step``-th row and column is taken, with ``step`` the smallest integer that keeps the
    sample at or below ``n_samples`` pixels, so the sample covers the whole image evenly. A dask
    array is sliced lazily and computed (one chunk at a time); a NumPy memmap only touches the
    sampled pages.

    Parameters
    ----------
    array : array-like
        2-D NumPy, dask or xarray array (or anything sliceable with ``[::s, ::s]``).
    n_samples : int, optional
        Most pixels to take.

    Returns
    -------
    numpy.ndarray
        1-D float64, finite values only (possibly empty).
    """
    data = array.data if hasattr(array, "dims") else array  # xarray: its NumPy or dask array
    if len(getattr(data, "shape", ())) != 2:
        msg = f"image has shape {getattr(data, 'shape', None)!r}; expected a 2-D image"
        raise InputError(msg)
    if n_samples < 1:
        msg = f"n_samples must be a positive integer; got {n_samples!r}"
        raise InputError(msg)
    ny, nx = data.shape
    step = max(1, math.ceil(math.sqrt(ny * nx / n_samples)))
    sample = data[::step, ::step]
    if hasattr(sample, "compute"):
        sample = sample.compute()
    sample = np.asarray(sample, dtype=np.float64).ravel()
    return sample[np.isfinite(sample)]


def _stretch_object(stretch: str, sample: np.ndarray, vmin: float, vmax: float, a: float | None, power: float):
    if stretch == "asinh":
        return AsinhStretch(a=0.1 if a is None else a)
    if stretch == "log":
        return LogStretch(a=1000.0 if a is None else a)
    if stretch == "sqrt":
        return SqrtStretch()
    if stretch == "power":
        return PowerStretch(power)
    if stretch == "histeq":
        # the histogram lives in normalised [0, 1] units, where the stretch is applied
        inside = sample[(sample >= vmin) & (sample <= vmax)]
        values = (inside - vmin) / (vmax - vmin) if inside.size else np.array([0.0, 1.0])
        return HistEqStretch(np.sort(values))
    return LinearStretch()


def display_limits(array, *, interval: str = "percentile", percent: float = 99.5, contrast: float = 0.25,
                   n_samples: int = DEFAULT_N_SAMPLES) -> tuple[float, float]:
    """The values shown black and white, from a strided sample of the array.

    Parameters
    ----------
    array : array-like
        2-D NumPy, dask or xarray array.
    interval : {"percentile", "zscale", "minmax"}, optional
        ``percentile`` keeps the central ``percent`` of the values, ``zscale`` is IRAF's
        algorithm (``contrast``), ``minmax`` the extremes.
    percent : float, optional
        Percentage of the values inside the interval, for ``percentile``.
    contrast : float, optional
        ZScale contrast.
    n_samples : int, optional
        Most pixels sampled.

    Returns
    -------
    vmin, vmax : float
        ``vmax > vmin`` (a flat image gets ``vmax = vmin + 1``).
    """
    _check_choice("interval", interval, INTERVALS)
    sample = sample_pixels(array, n_samples=n_samples)
    if sample.size == 0:
        msg = "image has no finite pixel; expected at least one finite value to display"
        raise InputError(msg)
    if interval == "percentile":
        if not 0 < percent <= 100:
            msg = f"percent must be in (0, 100]; got {percent!r}"
            raise InputError(msg)
        lo, hi = PercentileInterval(percent).get_limits(sample)
    elif interval == "zscale":
        lo, hi = ZScaleInterval(contrast=contrast).get_limits(sample)
    else:
        lo, hi = MinMaxInterval().get_limits(sample)
    lo, hi = float(lo), float(hi)
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


@algorithm("display")
def display_norm(array, *, stretch: str = "asinh", interval: str = "percentile", percent: float = 99.5,
                 contrast: float = 0.25, a: float | None = None, power: float = 2.0,
                 n_samples: int = DEFAULT_N_SAMPLES) -> ImageNormalize:
    """A normaliser mapping the array's values to ``[0, 1]`` for display.

    The interval is computed from a strided sample of ``array`` (it is never loaded whole); the
    returned object can then be applied to the whole array or to any block of it.

    Parameters
    ----------
    array : array-like
        2-D NumPy, dask or xarray array.
    stretch : {"asinh", "linear", "log", "sqrt", "power", "histeq", "zscale"}, optional
        The stretch; ``zscale`` is a linear stretch on the zscale interval (IRAF's display) and
        overrides ``interval``.
    interval : {"percentile", "zscale", "minmax"}, optional
        How the black and white levels are chosen (see :func:`display_limits`).
    percent : float, optional
        Percentage of the values inside a ``percentile`` interval.
    contrast : float, optional
        ZScale contrast.
    a : float, optional
        Softening of ``asinh`` (default 0.1) or ``log`` (default 1000).
    power : float, optional
        Exponent of the ``power`` stretch.
    n_samples : int, optional
        Most pixels sampled for the interval and the histogram.

    Returns
    -------
    astropy.visualization.ImageNormalize
        With ``clip=True``: values outside the interval go to 0 or 1; NaN stays NaN.
    """
    _check_choice("stretch", stretch, STRETCHES)
    if stretch == "zscale":
        interval = "zscale"
    _check_choice("interval", interval, INTERVALS)
    vmin, vmax = display_limits(array, interval=interval, percent=percent, contrast=contrast, n_samples=n_samples)
    sample = sample_pixels(array, n_samples=n_samples) if stretch == "histeq" else np.empty(0)
    obj = _stretch_object(stretch, sample, vmin, vmax, a, power)
    log.debug("display: %s stretch on [%g, %g] (%s interval)", stretch, vmin, vmax, interval)
    return ImageNormalize(vmin=vmin, vmax=vmax, stretch=obj, clip=True)


def _apply(block, norm):
    out = np.asarray(norm(np.asarray(block, dtype=np.float64)), dtype=np.float64)
    out[~np.isfinite(block)] = np.nan
    return out


@algorithm("display")
def stretch_image(array, *, stretch: str = "asinh", interval: str = "percentile", percent: float = 99.5,
                  contrast: float = 0.25, a: float | None = None, power: float = 2.0,
                  n_samples: int = DEFAULT_N_SAMPLES):
    """An image stretched to ``[0, 1]`` for display; NaN stays NaN.

    Parameters
    ----------
    array : array-like
        2-D NumPy, dask or xarray array; a dask array stays lazy (block by block).
    stretch : {"asinh", "linear", "log", "sqrt", "power", "histeq", "zscale"}, optional
        See :func:`display_norm`.
    interval : {"percentile", "zscale", "minmax"}, optional
        See :func:`display_limits`.
    percent : float, optional
        Percentage of the values inside a ``percentile`` interval.
    contrast : float, optional
        ZScale contrast.
    a : float, optional
        Softening of ``asinh`` or ``log``.
    power : float, optional
        Exponent of the ``power`` stretch.
    n_samples : int, optional
        Most pixels sampled for the interval.

    Returns
    -------
    numpy.ndarray or dask.array.Array
        float64 in ``[0, 1]`` (NaN where the input is not finite), NumPy for NumPy input.
    """
    norm = display_norm(array, stretch=stretch, interval=interval, percent=percent, contrast=contrast, a=a,
                        power=power, n_samples=n_samples)
    data = array.data if hasattr(array, "dims") else array
    if hasattr(data, "map_blocks"):
        return data.map_blocks(_apply, norm=norm, dtype=np.float64, meta=np.empty((0, 0), np.float64))
    return _apply(np.asarray(data), norm)
