"""Segments cut by tile seams, joined: per-tile labels made global with offsets and union-find.

Each tile core is thresholded and labelled on its own (:func:`label_tile`); a tile reports, per
local label, its area, bounding box, first pixel in raster order and flux-weighted moments, and
the labels along its four edges (:func:`tile_summary`). Those summaries are small; they are
gathered and :func:`merge_tiles` offsets every tile's labels into one global range, pairs the
labels that touch across each seam (8- or 4-connected, corners included), joins the pairs with
a connected-components pass, drops segments smaller than ``n_pixels`` and numbers the rest in
raster order of their first pixel -- the order :func:`scipy.ndimage.label` (and so
``photutils.segmentation.detect_sources``) gives on the whole image. The result maps every
tile's local labels to global ones (:meth:`MergedSegments.lookup`).

This is the block-labelling scheme of ``dask_image.ndmeasure.label`` (label blocks, offset,
join labels across block faces), extended with the per-segment statistics a catalogue needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = ["CONNECTIVITIES", "TileSummary", "MergedSegments", "structure", "label_tile", "tile_summary", "merge_tiles"]

CONNECTIVITIES = (4, 8)


def structure(connectivity: int) -> np.ndarray:
    """The 3x3 structuring element of 4- or 8-connectivity."""
    if connectivity not in CONNECTIVITIES:
        msg = f"connectivity {connectivity!r} is not allowed; expected one of {CONNECTIVITIES}"
        raise ValueError(msg)
    return ndi.generate_binary_structure(2, 2 if connectivity == 8 else 1)


def label_tile(above: np.ndarray, *, connectivity: int = 8) -> tuple[np.ndarray, int]:
    """Connected pixels of a boolean tile: ``(labels int32, number of labels)``."""
    labels, n = ndi.label(above, structure=structure(connectivity))
    return labels.astype(np.int32, copy=False), int(n)


@dataclass
class TileSummary:
    """What one tile reports about its local segments (all arrays indexed by local label - 1).

    ``first`` is the global raster index ``y * nx + x`` of the segment's first pixel;
    ``sum_w, sum_wx, sum_wy`` are sums of the (non-negative part of the) weights and their first
    moments in global pixel coordinates; ``edges`` the local labels along the tile's top,
    bottom, left and right edges.
    """

    origin: tuple[int, int]
    shape: tuple[int, int]
    n: int
    area: np.ndarray
    bbox: np.ndarray  # (n, 4): ymin, ymax+1, xmin, xmax+1 (global)
    first: np.ndarray
    sum_w: np.ndarray
    sum_wx: np.ndarray
    sum_wy: np.ndarray
    edges: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def tile_summary(labels: np.ndarray, n: int, origin: tuple[int, int], image_nx: int, weights: np.ndarray | None = None) -> TileSummary:
    """Per-label statistics and edge labels of a labelled tile at ``origin`` (global y0, x0)."""
    y0, x0 = origin
    ny, nx = labels.shape
    flat = labels.ravel()
    idx = np.flatnonzero(flat)
    lab = flat[idx]
    area = np.bincount(lab, minlength=n + 1)[1:]
    yy, xx = np.divmod(idx, nx)
    bbox = np.zeros((n, 4), dtype=np.int64)
    first = np.zeros(n, dtype=np.int64)
    if n:
        big = np.iinfo(np.int64).max
        ymin = np.full(n + 1, big)
        xmin = np.full(n + 1, big)
        ymax = np.full(n + 1, -1)
        xmax = np.full(n + 1, -1)
        np.minimum.at(ymin, lab, yy)
        np.maximum.at(ymax, lab, yy)
        np.minimum.at(xmin, lab, xx)
        np.maximum.at(xmax, lab, xx)
        bbox = np.column_stack([ymin[1:] + y0, ymax[1:] + 1 + y0, xmin[1:] + x0, xmax[1:] + 1 + x0])
        # pixels come in raster order: the first occurrence of a label is its first pixel
        _, at = np.unique(lab, return_index=True)
        first = (yy[at] + y0) * image_nx + (xx[at] + x0)
    w = np.ones(idx.size) if weights is None else np.clip(np.nan_to_num(weights.ravel()[idx]), 0, None)
    sum_w = np.bincount(lab, weights=w, minlength=n + 1)[1:]
    sum_wx = np.bincount(lab, weights=w * (xx + x0), minlength=n + 1)[1:]
    sum_wy = np.bincount(lab, weights=w * (yy + y0), minlength=n + 1)[1:]
    edges = (labels[0].copy(), labels[-1].copy(), labels[:, 0].copy(), labels[:, -1].copy())
    return TileSummary((int(y0), int(x0)), (ny, nx), int(n), area, bbox, first, sum_w, sum_wx, sum_wy, edges)


def _seam_pairs(a: np.ndarray, b: np.ndarray, connectivity: int) -> np.ndarray:
    """Label pairs that touch across a seam: ``a`` and ``b`` are the lines either side of it."""
    shifts = (-1, 0, 1) if connectivity == 8 else (0,)
    out = []
    n = a.size
    for d in shifts:
        lo, hi = max(0, -d), min(n, n - d)
        pa, pb = a[lo:hi], b[lo + d : hi + d]
        keep = (pa > 0) & (pb > 0)
        out.append(np.column_stack([pa[keep], pb[keep]]))
    return np.concatenate(out) if out else np.zeros((0, 2), dtype=np.int64)


@dataclass
class MergedSegments:
    """Global segments after joining across seams and dropping small ones.

    Attributes
    ----------
    n_labels : int
        Number of segments kept; they are labelled ``1..n_labels`` in raster order.
    area, bbox, first, centroid : arrays
        Per global label (index ``label - 1``): pixel count, ``(ymin, ymax+1, xmin, xmax+1)``,
        raster index of the first pixel, weighted ``(x, y)`` centroid.
    offsets : dict
        ``{tile index: offset}`` of each tile's local labels in the joined range.
    """

    n_labels: int
    area: np.ndarray
    bbox: np.ndarray
    first: np.ndarray
    centroid: np.ndarray
    offsets: dict
    _map: np.ndarray  # joined-range label (offset + local) -> global label (0: dropped)

    def lookup(self, tile_index) -> np.ndarray:
        """``table[local label]`` is the global label (0 for background or a dropped segment)."""
        lo, n = self.offsets[tile_index]
        return np.concatenate([[0], self._map[lo + 1 : lo + n + 1]]).astype(np.int32)


def merge_tiles(summaries: dict, tile_rows: list[int], tile_cols: list[int], *, n_pixels: int, connectivity: int = 8) -> MergedSegments:
    """Join per-tile segments across seams and number them as whole-image labelling would.

    Parameters
    ----------
    summaries : dict
        ``{(row, column): TileSummary}`` for every tile of a regular tiling.
    tile_rows, tile_cols : list of int
        Start rows and columns of the tiles.
    n_pixels : int
        Segments with fewer pixels (after joining) are dropped.
    connectivity : {4, 8}
        Pixel connectivity across seams, as within tiles.
    """
    offsets, start = {}, 0
    for key in sorted(summaries):
        offsets[key] = (start, summaries[key].n)
        start += summaries[key].n
    total = start
    pairs = []
    nty, ntx = len(tile_rows), len(tile_cols)

    def glob(key, local):
        return np.where(local > 0, local + offsets[key][0], 0)

    for j in range(ntx - 1):  # vertical seams, full height (tile corners included)
        a = np.concatenate([glob((i, j), summaries[(i, j)].edges[3]) for i in range(nty)])
        b = np.concatenate([glob((i, j + 1), summaries[(i, j + 1)].edges[2]) for i in range(nty)])
        pairs.append(_seam_pairs(a, b, connectivity))
    for i in range(nty - 1):  # horizontal seams, full width
        a = np.concatenate([glob((i, j), summaries[(i, j)].edges[1]) for j in range(ntx)])
        b = np.concatenate([glob((i + 1, j), summaries[(i + 1, j)].edges[0]) for j in range(ntx)])
        pairs.append(_seam_pairs(a, b, connectivity))
    pairs = np.concatenate(pairs) if pairs else np.zeros((0, 2), dtype=np.int64)

    def cat(name):
        arrays = [getattr(summaries[k], name) for k in sorted(summaries)]
        return np.concatenate(arrays) if arrays else np.zeros(0)

    area, first = cat("area").astype(np.int64), cat("first").astype(np.int64)
    bbox = np.concatenate([summaries[k].bbox.reshape(-1, 4) for k in sorted(summaries)]) if total else np.zeros((0, 4), np.int64)
    sw, swx, swy = cat("sum_w"), cat("sum_wx"), cat("sum_wy")
    # union-find as connected components of the graph of touching pairs (labels 0-based here)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0] - 1, pairs[:, 1] - 1)), shape=(total, total))
    n_comp, comp = connected_components(graph, directed=False)
    c_area = np.bincount(comp, weights=area, minlength=n_comp).astype(np.int64)
    c_first = np.full(n_comp, np.iinfo(np.int64).max)
    np.minimum.at(c_first, comp, first)
    c_bbox = np.empty((n_comp, 4), dtype=np.int64)
    c_bbox[:, [0, 2]] = np.iinfo(np.int64).max
    c_bbox[:, [1, 3]] = -1
    for col, op in ((0, np.minimum), (1, np.maximum), (2, np.minimum), (3, np.maximum)):
        op.at(c_bbox[:, col], comp, bbox[:, col])
    c_w = np.bincount(comp, weights=sw, minlength=n_comp)
    c_wx = np.bincount(comp, weights=swx, minlength=n_comp)
    c_wy = np.bincount(comp, weights=swy, minlength=n_comp)
    keep = np.flatnonzero(c_area >= n_pixels)
    keep = keep[np.argsort(c_first[keep], kind="stable")]
    new = np.zeros(n_comp, dtype=np.int64)
    new[keep] = np.arange(1, keep.size + 1)
    mapping = np.concatenate([[0], new[comp]])
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = np.where(c_w[keep] > 0, c_wx[keep] / c_w[keep], 0.5 * (c_bbox[keep, 2] + c_bbox[keep, 3] - 1))
        cy = np.where(c_w[keep] > 0, c_wy[keep] / c_w[keep], 0.5 * (c_bbox[keep, 0] + c_bbox[keep, 1] - 1))
    return MergedSegments(
        n_labels=int(keep.size),
        area=c_area[keep],
        bbox=c_bbox[keep],
        first=c_first[keep],
        centroid=np.column_stack([cx, cy]) if keep.size else np.zeros((0, 2)),
        offsets=offsets,
        _map=mapping,
    )
