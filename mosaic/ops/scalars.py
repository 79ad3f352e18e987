"""Per-value helpers shared by the compiled kernels of :mod:`mosaic.ops`."""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["finite_or_zero"]


@numba.njit(nogil=True, cache=True)
def finite_or_zero(v):
    """``v``, or 0 where it is NaN or infinite: how the kernels read variances and weights."""
    return v if np.isfinite(v) else 0.0
