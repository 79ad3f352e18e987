"""Which pixels of a pixel map reach an output region, and which the region owns, compiled.

A pair of an exposure and a tile uses the exposure pixels whose mapped centres come within the
drizzle kernel's reach of the tile's core, and counts a pixel's residual in the one tile whose
core holds its centre (rounded as drizzle rounds). Both tests read the whole map of a cut-out
in every pass; in NumPy each is half a dozen passes with a temporary of the map's size.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["owned_by", "reaching"]


@numba.njit(nogil=True, cache=True)
def _reaching_kernel(pixmap, y0, y1, x0, x1, reach, out):
    ny, nx = out.shape
    for j in range(ny):
        for i in range(nx):
            x, y = pixmap[j, i, 0], pixmap[j, i, 1]
            out[j, i] = (
                np.isfinite(x) and np.isfinite(y) and x >= x0 - reach - 1 and x <= x1 + reach and y >= y0 - reach - 1 and y <= y1 + reach
            )


@numba.njit(nogil=True, cache=True)
def _owned_kernel(pixmap, y0, y1, x0, x1, out):
    ny, nx = out.shape
    for j in range(ny):
        for i in range(nx):
            ix = np.floor(pixmap[j, i, 0] + 0.5)
            iy = np.floor(pixmap[j, i, 1] + 0.5)
            out[j, i] = ix >= x0 and ix < x1 and iy >= y0 and iy < y1


def _map(pixmap) -> np.ndarray:
    pixmap = np.ascontiguousarray(pixmap, dtype=np.float64)
    if pixmap.ndim != 3 or pixmap.shape[2] != 2:
        msg = f"pixel map has shape {pixmap.shape}; expected (ny, nx, 2)"
        raise ValueError(msg)
    return pixmap


def reaching(pixmap, core, reach: float) -> np.ndarray:
    """Pixels whose mapped centre is finite and within ``reach`` (+1 px) of ``core`` (bool ``(ny, nx)``).

    ``core`` is a ``(y, x)`` pair of slices in the map's output frame; the test is
    ``start - reach - 1 <= centre <= stop + reach`` on each axis.
    """
    pixmap = _map(pixmap)
    out = np.empty(pixmap.shape[:2], dtype=bool)
    cy, cx = core
    _reaching_kernel(pixmap, float(cy.start), float(cy.stop), float(cx.start), float(cx.stop), float(reach), out)
    return out


def owned_by(pixmap, core) -> np.ndarray:
    """Pixels whose centre, rounded to the nearest output pixel (``floor(x + 0.5)``), lies on ``core``."""
    pixmap = _map(pixmap)
    out = np.empty(pixmap.shape[:2], dtype=bool)
    cy, cx = core
    _owned_kernel(pixmap, float(cy.start), float(cy.stop), float(cx.start), float(cx.stop), out)
    return out
