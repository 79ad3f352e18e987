"""Tiled source detection by image segmentation, equal to photutils on the whole image.

``detect_segmentation(detection, threshold, n_pixels=...)`` gives the segmentation that
``photutils.segmentation.detect_sources`` (and, with ``deblend=True``, ``deblend_sources``)
would give on the whole image -- the same segments, the same labels -- while no task holds more
than a tile and the bounding boxes of the segments it works on. Three steps:

1. every tile core is thresholded and labelled on its own; tiles report small summaries
   (areas, bounding boxes, first pixels, edge labels: :mod:`mosaic.catalog.merge`);
2. the summaries are gathered and joined across seams with union-find, small segments are
   dropped and the rest numbered in raster order, as :func:`scipy.ndimage.label` numbers them;
3. with ``deblend``, every merged parent segment is deblended on its own bounding box by
   ``photutils.segmentation.deblend_sources`` (what it does for each parent on the whole image:
   it only ever looks at the parent's pixels), in tasks grouped by the tile that holds the
   parent's centroid; children are numbered as photutils numbers them (parents that stay whole
   first, then the children of each split parent, in parent order).

Each step is one dask graph. The per-tile labels of step 1 stay on the workers (persisted) and
feed step 3 and the final map, so no tile is labelled twice; the final map (int32, one chunk per
tile: labels relabelled, children painted in) is computed once and persisted, for the
photometry passes to read. Regions that cross tiles are stitched from pieces of chunks
(:mod:`mosaic.catalog.regions`).
"""

from __future__ import annotations

import logging
import operator
import warnings
from dataclasses import dataclass, field

import dask
import dask.array as da
import numpy as np
from scipy import ndimage as ndi

from mosaic.catalog.merge import CONNECTIVITIES, MergedSegments, label_tile, merge_tiles, tile_summary
from mosaic.catalog.regions import ChunkGrid, delayed_on_regions, optimize_together
from mosaic.exceptions import DeblendModeWarning, NoDetectionsWarning
from mosaic.progress import compute
from mosaic.registry import algorithm

__all__ = [
    "DEBLEND_MODES",
    "NoDetectionsWarning",
    "DeblendModeWarning",
    "Segmentation",
    "as_tiled",
    "detect_segmentation",
    "smooth",
    "threshold_from_rms",
]

log = logging.getLogger(__name__)

DEBLEND_MODES = ("exponential", "linear", "sinh")


def as_tiled(a, shape, tile: tuple[int, int], *, name: str, dtype=None) -> da.Array | float | None:
    """``a`` as a dask array chunked by ``tile`` (scalars and None pass through)."""
    if a is None or np.ndim(a) == 0:
        return a
    if tuple(np.shape(a)) != tuple(shape):
        msg = f"{name} has shape {tuple(np.shape(a))}; expected the image shape {tuple(shape)}"
        raise ValueError(msg)
    arr = a if isinstance(a, da.Array) else da.from_array(np.asarray(a), chunks=tile)
    if dtype is not None:
        arr = arr.astype(dtype)
    return arr.rechunk(tile)


def _tile_pair(tile) -> tuple[int, int]:
    t = (tile, tile) if np.ndim(tile) == 0 else tuple(tile)
    if len(t) != 2 or min(int(v) for v in t) < 1 or any(int(v) != v for v in t):
        msg = f"tile {tile!r} is not allowed; expected a positive integer or a pair of them"
        raise ValueError(msg)
    return int(t[0]), int(t[1])


def _blocks(a, nblocks):
    """Per-block delayed objects of a dask array, or ``a`` itself repeated (scalar / None)."""
    if isinstance(a, da.Array):
        return a.to_delayed()
    out = np.empty(nblocks, dtype=object)
    out.fill(a)
    return out


@algorithm("catalog")
def threshold_from_rms(rms, n_sigma: float, *, background=0.0):
    """Pixel-wise detection threshold ``background + n_sigma * rms``.

    Parameters
    ----------
    rms : float or array
        Background RMS (an ERR extension or a ``Background2D`` RMS map).
    n_sigma : float
        Threshold in units of the RMS; must be positive.
    background : float or array
        Background level (0 for a background-subtracted image).
    """
    if not (np.ndim(n_sigma) == 0 and np.isfinite(n_sigma) and n_sigma > 0):
        msg = f"threshold n_sigma must be a positive number; got {n_sigma!r}"
        raise ValueError(msg)
    return background + n_sigma * rms


@algorithm("catalog")
def smooth(data, *, fwhm: float, size: int | None = None, tile=512):
    """Convolve with a normalised 2-D Gaussian kernel, tile by tile with a halo of its radius.

    Equal to ``astropy.convolution.convolve(data, photutils.segmentation.make_2dgaussian_kernel
    (fwhm, size))`` on the whole image (zero fill beyond the edges, NaN interpolated).

    Parameters
    ----------
    data : array
        Image (NumPy or dask).
    fwhm : float
        Kernel FWHM in pixels.
    size : int, optional
        Odd kernel size; default the odd integer nearest ``3 * fwhm`` (at least 3).
    tile : int or (int, int)
        Chunk size of the result.
    """
    from astropy.convolution import convolve  # noqa: PLC0415
    from photutils.segmentation import make_2dgaussian_kernel  # noqa: PLC0415

    if not fwhm > 0:
        msg = f"fwhm must be positive; got {fwhm!r}"
        raise ValueError(msg)
    size = size or max(3, int(2 * round(1.5 * fwhm) + 1))
    kernel = make_2dgaussian_kernel(fwhm, size=size).array
    tile = _tile_pair(tile)
    arr = as_tiled(data, np.shape(data), tile, name="data", dtype=np.float64)
    r = size // 2

    def conv(block):
        return convolve(block, kernel, boundary="fill", fill_value=0.0, nan_treatment="interpolate", preserve_nan=False)

    # boundary="none": edge tiles see the real edge, where astropy fills with zeros as on the whole image
    return arr.map_overlap(conv, depth=r, boundary="none", dtype=np.float64, meta=np.array((), np.float64))


# -- step 1: per-tile labels -------------------------------------------------------------------------


def _above(det, thr, mask):
    with np.errstate(invalid="ignore"):
        above = np.asarray(det) > np.asarray(thr)
    if mask is not None:
        above &= ~np.asarray(mask, dtype=bool)
    return above


def _label_and_summarise(det, thr, mask, origin, nx, connectivity):
    """A tile's local labels (kept on the workers) and their summary (gathered)."""
    labels, n = label_tile(_above(det, thr, mask), connectivity=connectivity)
    return labels, tile_summary(labels, n, origin, nx, weights=np.asarray(det, dtype=np.float64))


def _final_block(labels, lut, origin, pieces):
    """Global labels of a tile: local labels through ``lut``, deblended children painted in."""
    out = lut[labels]
    y0, x0 = origin
    for (by0, by1, bx0, bx1), children, base in pieces:
        ys = slice(max(by0, y0), min(by1, y0 + out.shape[0]))
        xs = slice(max(bx0, x0), min(bx1, x0 + out.shape[1]))
        c = children[ys.start - by0 : ys.stop - by0, xs.start - bx0 : xs.stop - bx0]
        dst = out[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
        dst[c > 0] = c[c > 0] + base
    return out


# -- step 3: deblending ------------------------------------------------------------------------------


def _at_most_one_peak(data, inside, footprint) -> bool:
    """True when ``data`` has at most one local maximum (>= its ``footprint`` neighbours) in ``inside``.

    Every connected piece of the parent above a level holds such a maximum (its brightest pixel),
    so a parent with one cannot be split by any level: ``deblend_sources`` leaves it whole. Its
    multi-thresholding (``n_levels`` labellings of the parent) is skipped for these parents, the
    faint and compact majority. Non-finite values: not decided here (False).
    """
    values = data[inside]
    if not np.isfinite(values).all():
        return False
    masked = np.where(inside, data, -np.inf)
    peak = ndi.maximum_filter(masked, footprint=footprint, mode="constant", cval=-np.inf)
    return int(np.count_nonzero(inside & (masked >= peak))) <= 1


def _deblend_group(det, parents, origin, jobs, n_pixels, connectivity, n_levels, contrast, mode):
    """Deblend the parents ``jobs = [(label, bbox)]`` of one group; returns their child maps."""
    from photutils.segmentation import SegmentationImage, deblend_sources  # noqa: PLC0415

    footprint = ndi.generate_binary_structure(2, 2 if connectivity == 8 else 1)
    y0, x0 = origin
    out, fallbacks = [], []
    for label, (by0, by1, bx0, bx1) in jobs:
        sl = (slice(by0 - y0, by1 - y0), slice(bx0 - x0, bx1 - x0))
        inside = parents[sl] == label
        data = np.asarray(det[sl])
        use = mode
        if mode == "exponential" and np.nanmin(data[inside]) <= 0:
            # what photutils does for such a parent (linear levels), decided here: its warning
            # would go through warnings.catch_warnings, which is not thread-safe
            use = "linear"
            fallbacks.append(int(label))
        if _at_most_one_peak(data, inside, footprint):
            out.append((int(label), None))
            continue
        seg = inside.astype(np.int32)
        result = deblend_sources(
            data, SegmentationImage(seg), n_pixels, n_levels=n_levels, contrast=contrast,
            mode=use, connectivity=connectivity, relabel=True, progress_bar=False,
        )
        children = result.data.astype(np.int32)
        out.append((int(label), children if result.n_labels > 1 else None))
    return out, fallbacks


@dataclass
class Segmentation:
    """A tiled segmentation: lazy map plus small per-segment tables.

    Attributes
    ----------
    data : dask.array.Array
        The segmentation map (int32, 0 background), one chunk per tile, persisted (computed
        once, held by the scheduler's workers or in memory).
    n_labels : int
        Segments ``1..n_labels``.
    bbox : ndarray
        ``(n_labels, 4)``: ``ymin, ymax+1, xmin, xmax+1`` of every segment.
    parent : ndarray
        The label of each segment's parent before deblending (itself if it was not split).
    tile : (int, int)
        Tile (chunk) size.
    """

    data: da.Array
    n_labels: int
    bbox: np.ndarray
    parent: np.ndarray
    tile: tuple[int, int]
    parents: MergedSegments | None = None
    info: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.data.shape)

    @property
    def labels(self) -> np.ndarray:
        return np.arange(1, self.n_labels + 1)


def _owner_tiles(xy: np.ndarray, tile: tuple[int, int], shape) -> np.ndarray:
    """``(row, column)`` of the tile holding each ``(x, y)`` position (clipped to the image)."""
    iy = np.clip(np.floor(xy[:, 1] + 0.5), 0, shape[0] - 1).astype(int) // tile[0]
    ix = np.clip(np.floor(xy[:, 0] + 0.5), 0, shape[1] - 1).astype(int) // tile[1]
    return np.column_stack([iy, ix])


@algorithm("catalog")
def detect_segmentation(
    detection,
    threshold,
    *,
    n_pixels: int = 10,
    mask=None,
    connectivity: int = 8,
    deblend: bool = False,
    n_levels: int = 32,
    contrast: float = 0.001,
    mode: str = "exponential",
    tile=512,
    deblend_image=None,
) -> Segmentation:
    """Segment an image tile by tile: the whole-image ``detect_sources`` (+ ``deblend_sources``).

    Parameters
    ----------
    detection : array
        Detection image (NumPy or dask; smoothed with :func:`smooth` if wanted).
    threshold : float or array
        Pixel-wise threshold (:func:`threshold_from_rms`); a pixel belongs to a source where
        ``detection > threshold``. A scalar must be positive.
    n_pixels : int
        Minimum number of connected pixels of a source.
    mask : bool array, optional
        True where pixels must not belong to any source.
    connectivity : {8, 4}
        Pixel connectivity.
    deblend : bool
        Deblend every segment (multi-thresholding and watershed, as ``deblend_sources``).
    n_levels : int
        Multi-thresholding levels of the deblending.
    contrast : float
        Fraction of a parent's flux a child must have to be kept, 0 to 1.
    mode : {"exponential", "linear", "sinh"}
        Spacing of the deblending levels.
    tile : int or (int, int)
        Tile (chunk) size in pixels; segments larger than a tile are joined across seams.
    deblend_image : array, optional
        Image the segments are deblended on (default ``detection``): dual-image detection
        finds the segments on one image (the drizzle's matched filter) and splits them on a
        sharper one (a UPDC iterate), as ``deblend_sources(deblend_image, segments, ...)``.

    Returns
    -------
    Segmentation
        Lazy map and per-segment tables; ``n_labels == 0`` (with a
        :class:`NoDetectionsWarning`) when nothing is found.
    """
    if np.ndim(detection) != 2:
        msg = f"detection image must be 2-D; got {np.ndim(detection)} dimensions"
        raise ValueError(msg)
    if int(n_pixels) != n_pixels or n_pixels < 1:
        msg = f"n_pixels must be a positive integer; got {n_pixels!r}"
        raise ValueError(msg)
    if connectivity not in CONNECTIVITIES:
        msg = f"connectivity {connectivity!r} is not allowed; expected one of {CONNECTIVITIES}"
        raise ValueError(msg)
    if mode not in DEBLEND_MODES:
        msg = f"deblending mode {mode!r} is not allowed; expected one of {DEBLEND_MODES}"
        raise ValueError(msg)
    if not 0 <= contrast <= 1:
        msg = f"contrast must be between 0 and 1; got {contrast!r}"
        raise ValueError(msg)
    if int(n_levels) != n_levels or n_levels < 1:
        msg = f"n_levels must be a positive integer; got {n_levels!r}"
        raise ValueError(msg)
    if np.ndim(threshold) == 0 and not (np.isfinite(threshold) and threshold > 0):
        msg = f"threshold must be positive; got {threshold!r}"
        raise ValueError(msg)
    shape = tuple(int(s) for s in np.shape(detection))
    tile = _tile_pair(tile)
    det, thr, msk, deb = optimize_together(
        as_tiled(detection, shape, tile, name="detection"), as_tiled(threshold, shape, tile, name="threshold"),
        as_tiled(mask, shape, tile, name="mask", dtype=bool),
        None if deblend_image is None else as_tiled(deblend_image, shape, tile, name="deblend_image", dtype=np.float64),
    )
    rows = list(range(0, shape[0], tile[0]))
    cols = list(range(0, shape[1], tile[1]))
    keys = [(i, j) for i in range(len(rows)) for j in range(len(cols))]
    det_g = ChunkGrid(det)
    thr_b, msk_b = _blocks(thr, det.numblocks), _blocks(msk, det.numblocks)

    # 1. per-tile labels, kept where they were made (persisted); their summaries gathered
    labelled = dask.persist(*[
        dask.delayed(_label_and_summarise, pure=True)(det_g.blocks[k], thr_b[k], msk_b[k], (rows[k[0]], cols[k[1]]), shape[1], connectivity)
        for k in keys
    ])
    labels = {k: dask.delayed(operator.getitem, pure=True)(t, 0) for k, t in zip(keys, labelled, strict=True)}
    summaries = compute(*[dask.delayed(operator.getitem, pure=True)(t, 1) for t in labelled], description="detect: label tiles")
    summaries = dict(zip(keys, summaries, strict=True))
    # 2. joined across seams
    merged = merge_tiles(summaries, rows, cols, n_pixels=int(n_pixels), connectivity=connectivity)
    log.info("detect: %d segments (%d tile pieces before joining)", merged.n_labels, sum(s.n for s in summaries.values()))
    luts = {k: merged.lookup(k) for k in keys}
    if merged.n_labels == 0:
        warnings.warn("no sources were found above the threshold; the catalogue is empty", NoDetectionsWarning, stacklevel=2)
    if not deblend or merged.n_labels == 0 or contrast == 1:
        data = _final_map(labels, luts, {}, det.chunks, tile)
        return Segmentation(data, merged.n_labels, merged.bbox, np.arange(1, merged.n_labels + 1), tile, merged)

    # 3. deblend each parent on its bounding box, grouped by the tile holding its centroid
    candidates = np.flatnonzero(merged.area >= 2 * n_pixels)
    owners = _owner_tiles(merged.centroid[candidates], tile, shape)
    groups: dict[tuple, list] = {}
    for idx, own in zip(candidates, map(tuple, owners), strict=True):
        groups.setdefault(own, []).append(idx)
    label_g = ChunkGrid.from_blocks(labels, det.chunks, np.int32)
    deb_g = det_g if deb is None else ChunkGrid(deb)
    tasks = []
    for members in groups.values():
        b = merged.bbox[members]
        y0, y1, x0, x1 = b[:, 0].min(), b[:, 1].max(), b[:, 2].min(), b[:, 3].max()
        region = (slice(int(y0), int(y1)), slice(int(x0), int(x1)))
        jobs = [(i + 1, tuple(int(v) for v in merged.bbox[i])) for i in members]
        tasks.append(
            delayed_on_regions(
                _deblend_group, [deb_g.region(region), label_g.region(region, lookups=luts)], (int(y0), int(x0)), jobs,
                int(n_pixels), connectivity, int(n_levels), float(contrast), mode,
            )
        )
    results = compute(*tasks, description="detect: deblend")
    children = {}
    fallbacks = []
    for out, fb in results:
        fallbacks += fb
        children.update({lab: ch for lab, ch in out if ch is not None})
    if fallbacks:
        warnings.warn(
            f"deblending mode changed from {mode!r} to 'linear' for parents {sorted(fallbacks)} (non-positive minimum or too many markers)",
            DeblendModeWarning, stacklevel=2,
        )
    return _with_children(labels, luts, merged, children, tile, det.chunks)


def _final_map(labels: dict, luts: dict, pieces_of: dict, chunks, tile) -> da.Array:
    """The global segmentation map, one chunk per tile, computed once and persisted."""
    rows = []
    for i, h in enumerate(chunks[0]):
        row = []
        for j, w in enumerate(chunks[1]):
            block = dask.delayed(_final_block, pure=True)(labels[(i, j)], luts[(i, j)], (i * tile[0], j * tile[1]), pieces_of.get((i, j), []))
            row.append(da.from_delayed(block, shape=(h, w), dtype=np.int32, meta=np.zeros((0, 0), np.int32)))
        rows.append(row)
    (data,) = dask.persist(da.block(rows))
    return data


def _with_children(labels: dict, luts: dict, merged: MergedSegments, children: dict, tile, chunks) -> Segmentation:
    """Number the segments as ``deblend_sources(relabel=True)`` does and build the final map."""
    n = merged.n_labels
    split = np.zeros(n + 1, dtype=bool)
    split[list(children)] = True
    whole = np.flatnonzero(~split[1:]) + 1
    relabel = np.zeros(n + 1, dtype=np.int32)
    relabel[whole] = np.arange(1, whole.size + 1)
    bbox, parent = [merged.bbox[whole - 1]], [whole]
    pieces = []
    base = whole.size
    for label in sorted(children):
        ch = children[label]
        by0, _, bx0, _ = (int(v) for v in merged.bbox[label - 1])
        k = int(ch.max())
        pieces.append(((by0, by0 + ch.shape[0], bx0, bx0 + ch.shape[1]), ch, base))
        yy, xx = np.nonzero(ch)
        lab = ch[yy, xx]
        b = np.empty((k, 4), dtype=np.int64)
        for col, vals, op, init in ((0, yy, np.minimum, 1 << 62), (1, yy + 1, np.maximum, -1), (2, xx, np.minimum, 1 << 62), (3, xx + 1, np.maximum, -1)):
            acc = np.full(k + 1, init, dtype=np.int64)
            op.at(acc, lab, vals)
            b[:, col] = acc[1:] + (by0 if col < 2 else bx0)
        bbox.append(b)
        parent.append(np.full(k, label))
        base += k
    ey, ex = (np.cumsum((0, *c)) for c in chunks)
    pieces_of = {}
    for i in range(len(chunks[0])):
        for j in range(len(chunks[1])):
            y0, y1, x0, x1 = ey[i], ey[i + 1], ex[j], ex[j + 1]
            pieces_of[(i, j)] = [p for p in pieces if p[0][0] < y1 and p[0][1] > y0 and p[0][2] < x1 and p[0][3] > x0]
    luts = {k: relabel[lut] for k, lut in luts.items()}
    data = _final_map(labels, luts, pieces_of, chunks, tile)
    return Segmentation(
        data, int(base), np.concatenate(bbox).astype(np.int64), np.concatenate(parent).astype(np.int64), tile, merged,
        info={"n_parents": n, "n_split": len(children)},
    )
