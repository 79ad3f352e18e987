"""Noise filters of images far larger than memory: tiles with halos from the kernel's reach.

Each filter is ``dask.array.map_overlap`` of a block operator (:mod:`mosaic.ops.filters`)
with the halo from :func:`~mosaic.ops.filters.filter_halo`, so the result equals the
whole-image :mod:`scipy.ndimage` or :mod:`astropy.convolution` call for any chunking --
chunks smaller than the kernel included. At the mosaic's edges the halo is *not* padded
(``boundary="none"``): the block operator there sees the true image edge and applies the
requested edge mode itself, which is what the whole-image call does; only wrap-around modes
need a periodic halo from the far side. An axis that the kernel reaches across entirely is
kept in one chunk.
"""

from __future__ import annotations

import functools
import logging

import dask.array as da
import numpy as np

from mosaic.ops.filters import (
    CONVOLVE_BOUNDARIES,
    FILTER_MODES,
    NAN_TREATMENTS,
    _check_choice,
    _pair,
    convolve_block,
    filter_halo,
    gaussian_block,
    median_block,
    wraps,
)
from mosaic.registry import algorithm

__all__ = ["convolve", "gaussian_filter", "median_filter", "tiled_filter"]

log = logging.getLogger(__name__)


def _as_dask(image, name="image"):
    if not isinstance(image, da.Array):
        image = da.from_array(np.asarray(image), chunks="auto")
    if image.ndim != 2:
        msg = f"{name} must be 2-D; got shape {tuple(image.shape)!r}"
        raise ValueError(msg)
    return image


def tiled_filter(func, image, *others, halo, periodic: bool, dtype, **kwargs):
    """``func(block, *other_blocks, **kwargs)`` over the tiles of ``image`` with a ``halo``.

    Parameters
    ----------
    func : callable
        Block operator; it must treat the block's edges as the image's edges.
    image : dask.array.Array
        2-D image.
    *others : dask.array.Array
        Arrays of the image's shape that go with it (a mask).
    halo : (int, int)
        Reach of the filter per axis.
    periodic : bool
        The edge mode wraps around the image.
    dtype : dtype
        Output dtype.
    """
    chunks_in = image.chunks
    depth = {}
    new_chunks = []
    for axis, (h, n) in enumerate(zip(halo, image.shape, strict=True)):
        if h >= n or (periodic and h > 0 and len(image.chunks[axis]) == 1):
            # the kernel reaches across the whole axis: the block must hold all of it
            new_chunks.append(n)
            depth[axis] = 0
        else:
            new_chunks.append(image.chunks[axis])
            depth[axis] = int(h)
    image = image.rechunk(tuple(new_chunks))
    others = [o.rechunk(image.chunks) for o in others]
    boundary = "periodic" if periodic else "none"
    meta = np.empty((0, 0), dtype=dtype)
    # options are bound first: a block operator may have its own ``boundary``
    out = da.map_overlap(
        functools.partial(func, **kwargs), image, *others, depth=depth, boundary=boundary, dtype=dtype, meta=meta, trim=True,
    )
    return out.rechunk(chunks_in)


@algorithm("filters")
def gaussian_filter(image, *, sigma, mode: str = "reflect", cval: float = 0.0, truncate: float = 4.0, radius=None):
    """Gaussian smoothing of a (dask) image, equal to :func:`scipy.ndimage.gaussian_filter`.

    Parameters
    ----------
    image : dask.array.Array or array_like
        2-D image (NaN propagates, as in scipy).
    sigma : float or (float, float)
        Standard deviation of the Gaussian in pixels, per axis ``(y, x)``; must be positive.
    mode : str
        Edge mode at the image's borders (scipy's modes).
    cval : float
        Value beyond the edges for ``mode="constant"``.
    truncate : float
        The kernel ends at this many standard deviations.
    radius : int or (int, int), optional
        Kernel radius overriding ``truncate``.

    Returns
    -------
    dask.array.Array
        Same shape, chunks and dtype as scipy returns.
    """
    image = _as_dask(image)
    sy, sx = _pair(sigma, "sigma")
    if not (np.isfinite(sy) and np.isfinite(sx) and sy > 0 and sx > 0):
        msg = f"sigma must be positive; got {sigma!r}"
        raise ValueError(msg)
    _check_choice(mode, FILTER_MODES, "mode")
    halo = filter_halo("gaussian", sigma=(sy, sx), truncate=truncate, radius=radius)
    dtype = image.dtype if image.dtype.kind == "f" else np.dtype(np.float64)
    return tiled_filter(
        gaussian_block, image.astype(dtype), halo=halo, periodic=wraps("gaussian", mode), dtype=dtype,
        sigma=(sy, sx), mode=mode, cval=cval, truncate=truncate, radius=radius,
    )


@algorithm("filters")
def median_filter(image, *, size=3, footprint=None, mode: str = "reflect", cval: float = 0.0):
    """Median filter of a (dask) image, equal to :func:`scipy.ndimage.median_filter`.

    Parameters
    ----------
    image : dask.array.Array or array_like
        2-D image.
    size : int or (int, int)
        Window size per axis ``(y, x)``; positive.
    footprint : ndarray of bool, optional
        Window shape instead of ``size``.
    mode : str
        Edge mode at the image's borders (scipy's modes).
    cval : float
        Value beyond the edges for ``mode="constant"``.

    Returns
    -------
    dask.array.Array
        Same shape, chunks and dtype as the input.
    """
    image = _as_dask(image)
    if footprint is None:
        sy, sx = _pair(size, "size")
        if not (int(sy) == sy and int(sx) == sx and sy >= 1 and sx >= 1):
            msg = f"size must be a positive integer or pair of them; got {size!r}"
            raise ValueError(msg)
        size = (int(sy), int(sx))
    else:
        footprint = np.asarray(footprint, dtype=bool)
        if footprint.ndim != 2 or not footprint.any():
            msg = f"footprint must be a 2-D boolean array with a True element; got shape {footprint.shape!r}"
            raise ValueError(msg)
        size = None
    _check_choice(mode, FILTER_MODES, "mode")
    halo = filter_halo("median", size=size, footprint=footprint)
    return tiled_filter(
        median_block, image, halo=halo, periodic=wraps("median", mode), dtype=image.dtype,
        size=size, footprint=footprint, mode=mode, cval=cval,
    )


@algorithm("filters")
def convolve(
    image, kernel, *, mask=None, boundary="fill", fill_value: float = 0.0, nan_treatment: str = "interpolate",
    normalize_kernel: bool = True, preserve_nan: bool = False,
):
    """NaN-safe convolution of a (dask) image, equal to :func:`astropy.convolution.convolve`.

    Parameters
    ----------
    image : dask.array.Array or array_like
        2-D image; NaN pixels are interpolated over (or filled) as astropy does.
    kernel : ndarray or astropy Kernel2D
        Kernel with odd sides.
    mask : dask.array.Array or array_like of bool, optional
        True where a pixel is treated as NaN.
    boundary : {None, "fill", "wrap", "extend"}
        Treatment of the image's edges, as in astropy.
    fill_value : float
        Value beyond the edges for ``boundary="fill"``.
    nan_treatment : {"interpolate", "fill"}
        Interpolate over NaN pixels (renormalising the kernel) or replace them by ``fill_value``.
    normalize_kernel : bool
        Divide the kernel by its sum.
    preserve_nan : bool
        Put NaN back where the input was NaN.

    Returns
    -------
    dask.array.Array
        The input's float type (float64 for integers), as astropy returns, with the input's chunks.
    """
    image = _as_dask(image)
    k = np.asarray(getattr(kernel, "array", kernel), dtype=np.float64)
    if k.ndim != 2 or any(s % 2 == 0 for s in k.shape):
        msg = f"kernel must be 2-D with odd sides; got shape {k.shape!r}"
        raise ValueError(msg)
    _check_choice(boundary, CONVOLVE_BOUNDARIES, "boundary")
    _check_choice(nan_treatment, NAN_TREATMENTS, "nan_treatment")
    others = []
    if mask is not None:
        if tuple(mask.shape) != tuple(image.shape):
            msg = f"mask has shape {tuple(mask.shape)!r}; expected the image's shape {tuple(image.shape)!r}"
            raise ValueError(msg)
        others.append(da.asarray(mask).astype(bool))
    halo = filter_halo("convolve", kernel_shape=k.shape)
    # boundary=None is "fill" inside and zero where the kernel leaves the image: astropy refuses
    # blocks smaller than the kernel under None, so the zero band is applied to the whole result
    out = tiled_filter(
        convolve_block, image, *others, halo=halo, periodic=wraps("convolve", boundary),
        dtype=image.dtype if image.dtype.kind == "f" else np.dtype(np.float64),
        kernel=k, boundary="fill" if boundary is None else boundary, fill_value=fill_value, nan_treatment=nan_treatment,
        normalize_kernel=normalize_kernel, preserve_nan=preserve_nan,
    )
    if boundary is None:
        (ry, rx), (ny, nx) = halo, image.shape
        y = da.arange(ny, chunks=image.chunks[0])[:, None]
        x = da.arange(nx, chunks=image.chunks[1])[None, :]
        band = (y < ry) | (y >= ny - ry) | (x < rx) | (x >= nx - rx)
        out = da.where(band, out.dtype.type(0), out)
        if preserve_nan:  # astropy counts masked pixels as NaN
            was_nan = da.isnan(image) if not others else da.isnan(image) | others[0]
            out = da.where(was_nan, out.dtype.type(np.nan), out)
    return out
