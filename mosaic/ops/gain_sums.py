"""The sums from which an exposure's gain and subtracted sky are fitted, in one compiled pass.

A ramp fit's Poisson variance is ``c (SCI + b)`` per pixel (``c`` in data units per electron,
``b`` the sky subtracted since, if any), so a straight-line fit of ``VAR_POISSON`` against
``SCI`` over the good pixels gives both (:func:`mosaic.coadd.updc.noise_sums` and its
pedestal). The fit needs eight sums per exposure; in NumPy they cost a dozen full-size
temporaries of an exposure, here one pass over its planes with no temporaries.
"""

from __future__ import annotations

import numba
import numpy as np

from mosaic.ops.scalars import finite_or_zero

__all__ = ["GAIN_SUMS", "gain_sums"]

#: what :func:`gain_sums` returns, in order
GAIN_SUMS = ("n_fit", "sum_x", "sum_y", "sum_xx", "sum_xy", "n_rnoise", "sum_rnoise", "sum_total")


@numba.njit(nogil=True, cache=True)
def _gain_sums_kernel(sci, good, vp, vr, vf, has_p, has_r, has_f, out):
    # per-row partial sums added at the end of each row: the error of a long running sum
    # grows with its length, a row's stays that of a few thousand terms
    ny, nx = sci.shape
    for j in range(ny):
        row = np.zeros(8)
        for i in range(nx):
            s = np.float64(sci[j, i])
            if not good[j, i] or not np.isfinite(s):
                continue
            p = finite_or_zero(np.float64(vp[j, i])) if has_p else 0.0
            r = finite_or_zero(np.float64(vr[j, i])) if has_r else 0.0
            f = finite_or_zero(np.float64(vf[j, i])) if has_f else 0.0
            if p > 0.0:
                row[0] += 1.0
                row[1] += s
                row[2] += p
                row[3] += s * s
                row[4] += s * p
            if r > 0.0:
                row[5] += 1.0
                row[6] += r
                row[7] += p + r + f
        for k in range(8):
            out[k] += row[k]


def gain_sums(sci, good, var_poisson=None, var_rnoise=None, var_flat=None) -> np.ndarray:
    """:data:`GAIN_SUMS` of one exposure (float64, ``(8,)``).

    Over the good pixels with a finite ``SCI`` and ``VAR_POISSON > 0``: their number, ``sum x``,
    ``sum y``, ``sum x^2`` and ``sum x y`` (``x = SCI``, ``y = VAR_POISSON``); over those with
    ``VAR_RNOISE > 0``: their number, ``sum VAR_RNOISE`` and the sum of the total variance.
    Non-finite variances count as 0; a missing plane (None) is 0 everywhere.

    Raises
    ------
    ValueError
        When a plane is not 2-D or its shape is not ``SCI``'s.
    """
    sci = np.asarray(sci)
    planes = [good, var_poisson, var_rnoise, var_flat]
    for name, p in zip(("good", "var_poisson", "var_rnoise", "var_flat"), planes, strict=True):
        if sci.ndim != 2 or (p is not None and np.shape(p) != sci.shape):
            msg = f"{name} has shape {np.shape(p)} and SCI {sci.shape}; expected 2-D planes of one shape"
            raise ValueError(msg)
    empty = np.zeros((1, 1), dtype=np.float32)
    vp, vr, vf = (empty if v is None else np.asarray(v) for v in planes[1:])
    out = np.zeros(8)
    _gain_sums_kernel(sci, np.asarray(good, dtype=bool), vp, vr, vf, var_poisson is not None, var_rnoise is not None, var_flat is not None, out)
    return out
