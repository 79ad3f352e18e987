"""Value-sliced and derivative source masks (seed 004), tiled, with exact global quantiles.

A *value-sliced* mask keeps the top ``percent`` % of the finite pixels of the image; a
*derivative* mask keeps the top ``percent`` % of the gradient magnitude ``|numpy.gradient|``.
"Top p %" is exact: with ``N`` finite pixels and ``k = ceil(p N / 100)``, the cut is the k-th
largest value, found tile by tile by :func:`kth_largest` (histogram refinement: a few passes
that count values per bin over the chunks, narrowing to the bin that holds the k-th value,
then one pass that gathers the few values left in it); pixels equal to the cut are kept.

:func:`score_mask` scores a mask against a reference catalogue as seed 004's table 3 does: a
reference position is a success when a mask pixel (so a mask component) lies within
``radius`` pixels of it, *near* when the nearest lies within ``2 radius`` (the paper's
"denominator" cases), a failure otherwise.
"""

from __future__ import annotations

import logging
import math

import dask
import dask.array as da
import numpy as np
from astropy.table import QTable

from mosaic.catalog.detect import _tile_pair, as_tiled
from mosaic.progress import compute
from mosaic.registry import algorithm

__all__ = ["MASK_KINDS", "derivative_image", "kth_largest", "score_mask", "source_mask"]

log = logging.getLogger(__name__)

MASK_KINDS = ("value", "derivative")

#: bins per refinement pass, and the number of values small enough to gather and sort
_BINS = 4096
_GATHER = 200_000


def _bin_counts(block, lo, hi, edges):
    x = block[np.isfinite(block)]
    above = int(np.count_nonzero(x > hi))
    inside = x[(x >= lo) & (x <= hi)]
    counts = np.bincount(np.searchsorted(edges, inside, side="right"), minlength=edges.size + 1)
    return above, counts


def _gather(block, lo, hi):
    x = block[np.isfinite(block)]
    return int(np.count_nonzero(x > hi)), x[(x >= lo) & (x <= hi)]


def kth_largest(data: da.Array, k: int, *, n_bins: int = _BINS, max_gather: int = _GATHER) -> float:
    """The exact ``k``-th largest finite value of a (dask) array, without sorting it whole.

    Parameters
    ----------
    data : dask.array.Array
        Values (NaN and inf ignored).
    k : int
        1 for the largest value.
    n_bins : int
        Bins per counting pass.
    max_gather : int
        Values few enough to bring back and sort.
    """
    data = da.asarray(data)
    finite = da.where(da.isfinite(data), data, np.nan)
    n, lo, hi = compute(da.isfinite(data).sum(), da.nanmin(finite), da.nanmax(finite), description="masks: range")
    n, lo, hi = int(n), float(lo), float(hi)
    if not 1 <= k <= n:
        msg = f"k must be between 1 and the number of finite pixels ({n}); got {k!r}"
        raise ValueError(msg)
    blocks = data.to_delayed().ravel()
    for _ in range(64):  # each pass divides the interval by n_bins; float64 needs few
        edges = np.linspace(lo, hi, n_bins + 1)[1:-1]
        parts = compute(*[dask.delayed(_bin_counts)(b, lo, hi, edges) for b in blocks], description="masks: quantile pass")
        above = sum(p[0] for p in parts)
        counts = np.sum([p[1] for p in parts], axis=0)
        if counts.sum() <= max_gather or lo == hi:
            break
        # bins from the top: the one where the running count reaches k
        running = above + np.cumsum(counts[::-1])
        b = n_bins - 1 - int(np.searchsorted(running, k))
        full = np.concatenate([[lo], edges, [hi]])
        new_lo, new_hi = float(full[b]), float(full[b + 1])
        if (new_lo, new_hi) == (lo, hi):
            break
        lo, hi = new_lo, new_hi
    parts = compute(*[dask.delayed(_gather)(b, lo, hi) for b in blocks], description="masks: gather")
    above = sum(p[0] for p in parts)
    values = np.sort(np.concatenate([p[1] for p in parts]))[::-1]
    return float(values[k - above - 1])


def _gradient_magnitude(block):
    gy, gx = np.gradient(np.asarray(block, dtype=np.float64))
    return np.hypot(gx, gy)


@algorithm("masks")
def derivative_image(data, *, tile=512) -> da.Array:
    """Gradient magnitude ``hypot(*numpy.gradient(data))``, tiled with a 1-pixel halo.

    Parameters
    ----------
    data : array
        Image (NumPy or dask).
    tile : int or (int, int)
        Chunk size.
    """
    tile = _tile_pair(tile)
    arr = as_tiled(data, np.shape(data), tile, name="data", dtype=np.float64)
    # boundary "none": edge tiles keep numpy's one-sided differences at the image edge
    return arr.map_overlap(_gradient_magnitude, depth=1, boundary="none", dtype=np.float64, meta=np.array((), np.float64))


@algorithm("masks")
def source_mask(data, *, percent: float = 5.0, kind: str = "value", tile=512) -> tuple[da.Array, float]:
    """Keep the top ``percent`` % of pixels of the image (``value``) or its gradient (``derivative``).

    Parameters
    ----------
    data : array
        Image (NumPy or dask); NaN pixels are never kept.
    percent : float
        Share of the finite pixels to keep, in (0, 100].
    kind : {"value", "derivative"}
        Slice the image values or the gradient magnitude.
    tile : int or (int, int)
        Chunk size.

    Returns
    -------
    (dask.array.Array, float)
        The lazy boolean mask and the cut (the exact k-th largest value).
    """
    if kind not in MASK_KINDS:
        msg = f"mask kind {kind!r} is not allowed; expected one of {MASK_KINDS}"
        raise ValueError(msg)
    if not 0 < percent <= 100:
        msg = f"percent must be in (0, 100]; got {percent!r}"
        raise ValueError(msg)
    tile = _tile_pair(tile)
    image = as_tiled(data, np.shape(data), tile, name="data", dtype=np.float64)
    if kind == "derivative":
        image = derivative_image(image, tile=tile)
    n = int(compute(da.isfinite(image).sum(), description="masks: count")[0])
    if n == 0:
        msg = "the image has no finite pixel; expected data to slice"
        raise ValueError(msg)
    k = max(1, math.ceil(percent * n / 100.0 - 1e-9))
    cut = kth_largest(image, k)
    log.info("%s mask: top %g%% = %d of %d pixels, cut %.6g", kind, percent, k, n, cut)
    return image >= cut, cut


def _score_tile(mask, origin, refs, radius):
    """Distance (pixels, capped at ``2 radius``) from each reference to the nearest mask pixel."""
    yy, xx = np.nonzero(np.asarray(mask))
    yy, xx = yy + origin[0], xx + origin[1]
    out = np.full(len(refs), np.inf)
    for i, (x, y) in enumerate(refs):
        near = (np.abs(xx - x) <= 2 * radius) & (np.abs(yy - y) <= 2 * radius)
        if near.any():
            out[i] = float(np.min(np.hypot(xx[near] - x, yy[near] - y)))
    return out


@algorithm("masks")
def score_mask(mask, x, y, *, radius: float = 3.0, tile=512) -> QTable:
    """Score a mask against reference positions (seed 004, table 3).

    Parameters
    ----------
    mask : bool array
        Source mask (NumPy or dask).
    x, y : array
        Reference positions in pixels (0-based).
    radius : float
        A reference is a success when a mask pixel lies within this many pixels.
    tile : int or (int, int)
        Chunk size for the tiled search.

    Returns
    -------
    astropy.table.QTable
        Per reference: ``x, y, distance`` (to the nearest mask pixel; inf beyond ``2 radius``),
        ``success``, ``near`` (within ``2 radius`` only); ``meta`` holds the counts
        ``n_success, n_near, n_failure``.
    """
    if not radius > 0:
        msg = f"radius must be positive; got {radius!r}"
        raise ValueError(msg)
    shape = tuple(np.shape(mask))
    tile = _tile_pair(tile)
    m = as_tiled(mask, shape, tile, name="mask", dtype=bool)
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    halo = int(math.ceil(2 * radius)) + 1
    ty = np.clip(np.floor(y + 0.5), 0, shape[0] - 1).astype(int) // tile[0]
    tx = np.clip(np.floor(x + 0.5), 0, shape[1] - 1).astype(int) // tile[1]
    inside = (x > -0.5 - 2 * radius) & (x < shape[1] - 0.5 + 2 * radius) & (y > -0.5 - 2 * radius) & (y < shape[0] - 0.5 + 2 * radius)
    distance = np.full(x.size, np.inf)
    keys = sorted({(a, b) for a, b, ok in zip(ty, tx, inside, strict=True) if ok})
    tasks, members = [], []
    for a, b in keys:
        idx = np.flatnonzero((ty == a) & (tx == b) & inside)
        y0, x0 = max(a * tile[0] - halo, 0), max(b * tile[1] - halo, 0)
        y1, x1 = min((a + 1) * tile[0] + halo, shape[0]), min((b + 1) * tile[1] + halo, shape[1])
        tasks.append(dask.delayed(_score_tile)(m[y0:y1, x0:x1], (y0, x0), list(zip(x[idx], y[idx], strict=True)), radius))
        members.append(idx)
    for idx, d in zip(members, compute(*tasks, description="masks: score"), strict=True):
        distance[idx] = d
    success = distance <= radius
    near = ~success & (distance <= 2 * radius)
    t = QTable({"x": x, "y": y, "distance": distance, "success": success, "near": near})
    t.meta.update(n_success=int(success.sum()), n_near=int(near.sum()), n_failure=int((~success & ~near).sum()), radius=float(radius))
    return t
