"""The planes one exposure adds to a drizzle mosaic, in one compiled pass.

Drizzling an exposure with weights ``w`` adds ``D(w)`` to the mosaic's WHT, ``D(w g)`` to its
weighted data and ``D²(w² v)`` to each of its weighted variances (:mod:`mosaic.ops.overlap`
takes all of them in one pass over the overlaps). This module makes those input planes: where
``w > 0``, ``w``, ``w g`` and ``w² v`` (0 where a variance is not finite); elsewhere 0. In
NumPy that costs a masked copy and a product per plane, with a temporary of the exposure's
size each; here one pass over the pixels writes every plane.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["drizzle_planes"]


@numba.njit(nogil=True, cache=True)
def _weighted_data(w, sci, out_w, out_wg):
    ny, nx = w.shape
    for j in range(ny):
        for i in range(nx):
            wi = w[j, i]
            out_w[j, i] = wi
            # where the weight is not positive, the data count 0 (w 0 g: no NaN from bad data)
            out_wg[j, i] = wi * np.float64(sci[j, i]) if wi > 0.0 else wi * 0.0


@numba.njit(nogil=True, cache=True)
def _weighted_variance(w, v, out):
    ny, nx = w.shape
    for j in range(ny):
        for i in range(nx):
            wi = w[j, i]
            vi = np.float64(v[j, i])
            out[j, i] = wi * wi * vi if wi > 0.0 and np.isfinite(vi) else 0.0


def drizzle_planes(w, sci, variances=()) -> np.ndarray:
    """``(2 + len(variances), ny, nx)`` float64: ``w``, ``w g`` and ``w² v`` for each variance ``v``.

    Parameters
    ----------
    w : numpy.ndarray
        ``(ny, nx)`` float64 weights (0 where a pixel adds nothing).
    sci : numpy.ndarray
        ``(ny, nx)`` data ``g``; counted as 0 where ``w`` is not positive.
    variances : sequence of numpy.ndarray
        ``(ny, nx)`` variances ``v``; each plane is 0 where ``w`` is not positive or ``v`` is not finite.

    Returns
    -------
    numpy.ndarray
        One C-contiguous array, ready for :func:`mosaic.ops.overlap.drizzle_sums` as it is.
    """
    w = np.ascontiguousarray(w, dtype=np.float64)
    names = ("sci", *(f"variance {k}" for k in range(len(variances))))
    planes = []
    for name, p in zip(names, (sci, *variances), strict=True):
        p = np.asarray(p)
        if p.shape != w.shape:
            msg = f"{name} has shape {p.shape}; expected the weights' {w.shape}"
            raise ValueError(msg)
        # native float32 or float64 as they are (the kernels widen each value); anything else
        # (integers, big-endian FITS data) as float64
        native = p.dtype in (np.dtype(np.float32), np.dtype(np.float64))
        planes.append(np.ascontiguousarray(p if native else p.astype(np.float64)))
    out = np.empty((len(planes) + 1, *w.shape))
    _weighted_data(w, planes[0], out[0], out[1])
    for k, v in enumerate(planes[1:]):
        _weighted_variance(w, v, out[2 + k])
    return out
