"""Noise filters on one block, and the halo each one needs.

Arrays in, arrays out: :func:`gaussian_block` and :func:`median_block` run
:mod:`scipy.ndimage` on NumPy blocks and :mod:`cupyx.scipy.ndimage` on CuPy blocks;
:func:`convolve_block` is :func:`astropy.convolution.convolve` (NumPy only), the NaN-safe
convolution. :func:`filter_halo` is the one place that knows how far each filter reaches, so
that a tiled filter (:mod:`mosaic.image.filters`) gives every tile exactly the neighbourhood
the whole-image filter would see.
"""

from __future__ import annotations

import numpy as np

from mosaic.ops.convolve import array_module

__all__ = [
    "CONVOLVE_BOUNDARIES",
    "FILTER_KINDS",
    "FILTER_MODES",
    "NAN_TREATMENTS",
    "convolve_block",
    "filter_halo",
    "gaussian_block",
    "median_block",
    "wraps",
]

#: the filters of :func:`filter_halo`
FILTER_KINDS = ("gaussian", "median", "convolve")
#: edge modes of the scipy filters
FILTER_MODES = ("reflect", "constant", "nearest", "mirror", "wrap", "grid-constant", "grid-mirror", "grid-wrap")
#: edge treatments of astropy's convolve
CONVOLVE_BOUNDARIES = (None, "fill", "wrap", "extend")
#: what astropy's convolve does with NaN pixels
NAN_TREATMENTS = ("interpolate", "fill")


def _pair(value, name: str) -> tuple:
    v = np.atleast_1d(np.asarray(value))
    if v.size == 1:
        v = np.repeat(v, 2)
    if v.size != 2:
        msg = f"{name} must be a number or a (y, x) pair; got {value!r}"
        raise ValueError(msg)
    return tuple(v.tolist())


def _check_choice(value, allowed, name: str) -> None:
    if value not in allowed:
        msg = f"{name} {value!r} is not known; expected one of {list(allowed)}"
        raise ValueError(msg)


def filter_halo(kind: str, *, sigma=None, truncate: float = 4.0, radius=None, size=None, footprint=None, kernel_shape=None) -> tuple[int, int]:
    """How many pixels a filter reaches beyond the pixel it computes, per axis ``(y, x)``.

    Parameters
    ----------
    kind : {"gaussian", "median", "convolve"}
        The filter.
    sigma : float or (float, float)
        Gaussian standard deviation; the reach is ``int(truncate * sigma + 0.5)`` as in
        :func:`scipy.ndimage.gaussian_filter`, or ``radius`` when given.
    truncate : float
        Gaussian truncation in standard deviations.
    radius : int or (int, int), optional
        Gaussian radius overriding ``truncate``.
    size : int or (int, int)
        Median window; the reach is ``size // 2``.
    footprint : ndarray, optional
        Median footprint instead of ``size``.
    kernel_shape : (int, int)
        Convolution kernel shape (odd); the reach is ``shape // 2``.
    """
    _check_choice(kind, FILTER_KINDS, "filter kind")
    if kind == "gaussian":
        if radius is not None:
            return tuple(int(r) for r in _pair(radius, "radius"))
        sy, sx = _pair(sigma, "sigma")
        return tuple(int(truncate * float(s) + 0.5) if s > 1e-15 else 0 for s in (sy, sx))
    if kind == "median":
        shape = np.shape(footprint) if footprint is not None else _pair(size, "size")
        return tuple(int(s) // 2 for s in shape)
    return tuple(int(s) // 2 for s in kernel_shape)


def wraps(kind: str, mode) -> bool:
    """Whether the filter's edge treatment wraps around the image (a periodic halo)."""
    return mode in ("wrap", "grid-wrap") if kind != "convolve" else mode == "wrap"


def _ndimage(x):
    if array_module(x) is np:
        import scipy.ndimage as ndi  # noqa: PLC0415
    else:  # pragma: no cover - needs a GPU
        import cupyx.scipy.ndimage as ndi  # noqa: PLC0415
    return ndi


def gaussian_block(block, *, sigma, mode: str = "reflect", cval: float = 0.0, truncate: float = 4.0, radius=None):
    """:func:`scipy.ndimage.gaussian_filter` of one block (CuPy blocks through cupyx)."""
    return _ndimage(block).gaussian_filter(block, sigma, mode=mode, cval=cval, truncate=truncate, radius=radius)


def median_block(block, *, size=None, footprint=None, mode: str = "reflect", cval: float = 0.0):
    """:func:`scipy.ndimage.median_filter` of one block (CuPy blocks through cupyx)."""
    return _ndimage(block).median_filter(block, size=size, footprint=footprint, mode=mode, cval=cval)


def convolve_block(
    block, mask=None, *, kernel, boundary="fill", fill_value: float = 0.0, nan_treatment: str = "interpolate",
    normalize_kernel: bool = True, preserve_nan: bool = False,
):
    """:func:`astropy.convolution.convolve` of one block: NaN pixels interpolated over or filled."""
    from astropy.convolution import convolve  # noqa: PLC0415

    return convolve(
        np.asarray(block), kernel, boundary=boundary, fill_value=fill_value, nan_treatment=nan_treatment,
        normalize_kernel=normalize_kernel, mask=None if mask is None else np.asarray(mask), preserve_nan=preserve_nan,
    )
