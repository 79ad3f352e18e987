"""Background meshes on one block: box statistics, the low-resolution mesh, its interpolation.

The operators of :func:`mosaic.image.background.background_2d`, following
:class:`photutils.background.Background2D` step by step so that a mosaic processed tile by
tile gets the very background the whole-image class computes:

1. :func:`mesh_statistics` -- the sigma-clipped background and RMS of every box of a block
   whose origin lies on the box grid (boxes never straddle blocks, so a box sees only its own
   pixels). Partial boxes at the bottom and right edges of the image are flattened in the order
   photutils flattens them, so even the float sums agree.
2. :func:`fill_mesh` and :func:`filter_mesh` -- excluded boxes filled by inverse-distance
   weighting, then the (selective) median filter of the mesh; the mesh is small
   (``(image / box)²``) and is processed whole, as photutils does.
3. :func:`interpolate_mesh` -- the spline zoom of the mesh (``scipy.ndimage.zoom``, grid mode,
   bicubic by default) evaluated on one output tile only. Zooming is separable and linear, so
   the full-resolution background is ``Wy @ mesh @ Wx.T`` where ``W`` are the 1-D zooms of unit
   vectors (:func:`zoom_weights`); a tile takes the rows of ``Wy`` and ``Wx`` it covers.

:func:`source_mask_window` is the detection step of the ICL procedure on one window.
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np
from astropy.nddata import reshape_as_blocks

__all__ = [
    "ESTIMATORS",
    "RMS_ESTIMATORS",
    "N_MESH_PLANES",
    "fill_mesh",
    "filter_mesh",
    "interpolate_mesh",
    "make_estimators",
    "mesh_statistics",
    "source_mask_window",
    "zoom_weights",
]

#: background estimators by name: the photutils class of each
ESTIMATORS = {
    "median": "MedianBackground",
    "mean": "MeanBackground",
    "biweight": "BiweightLocationBackground",
    "sextractor": "SExtractorBackground",
    "mode": "ModeEstimatorBackground",
}
#: RMS estimators by name
RMS_ESTIMATORS = {
    "std": "StdBackgroundRMS",
    "mad_std": "MADStdBackgroundRMS",
    "biweight": "BiweightScaleBackgroundRMS",
}
#: planes of a mesh-statistics block: background, RMS, good pixels, non-finite unmasked pixels
N_MESH_PLANES = 4


def make_estimators(estimator: str, rms_estimator: str):
    """The photutils background and RMS estimator instances for two names (no sigma clipping)."""
    import photutils.background as pb  # noqa: PLC0415

    if estimator not in ESTIMATORS:
        msg = f"estimator {estimator!r} is not known; expected one of {sorted(ESTIMATORS)}"
        raise ValueError(msg)
    if rms_estimator not in RMS_ESTIMATORS:
        msg = f"rms_estimator {rms_estimator!r} is not known; expected one of {sorted(RMS_ESTIMATORS)}"
        raise ValueError(msg)
    # clipping is done once for both, before the estimators, as Background2D does
    return getattr(pb, ESTIMATORS[estimator])(sigma_clip=None), getattr(pb, RMS_ESTIMATORS[rms_estimator])(sigma_clip=None)


def _box_statistics(boxes, *, sigma_clip, bkg_estimator, rms_estimator, threshold, axis):
    # No warnings are caught here: ``catch_warnings`` is not thread-safe, and boxes are measured
    # in dask's threads. NaN pixels go to the clipping as a mask (astropy warns about NaN values,
    # not masked ones), and boxes with no pixel left get a dummy value (they are excluded anyway).
    nan = np.isnan(boxes)
    if axis is None:  # the corner box: astropy clips its finite values as one flat array
        boxes = boxes[~nan]
        if boxes.size == 0:
            return np.nan, np.nan, 0
        if sigma_clip is not None:
            boxes = sigma_clip(boxes, axis=None, masked=False, copy=False)
    else:
        empty = nan.all(axis=axis)
        filled = np.where(nan, boxes.dtype.type(0), boxes)
        if sigma_clip is not None:
            boxes = sigma_clip(np.ma.MaskedArray(filled, mask=nan), axis=axis, masked=False, copy=False)
        if empty.any():
            boxes = np.where(empty[..., None], boxes.dtype.type(0), boxes)
    bkg = np.asarray(bkg_estimator(boxes, axis=axis), dtype=np.float64)
    rms = np.asarray(rms_estimator(boxes, axis=axis), dtype=np.float64)
    n_good = np.count_nonzero(~np.isnan(boxes), axis=axis)
    if axis is not None and empty.any():
        n_good = np.where(empty, 0, n_good)
    excluded = n_good <= threshold
    bkg = np.where(excluded, np.nan, bkg)
    rms = np.where(excluded, np.nan, rms)
    return bkg, rms, n_good


def mesh_statistics(
    data, mask=None, coverage_mask=None, *, box_size, sigma_clip, bkg_estimator, rms_estimator, exclude_percentile: float,
) -> np.ndarray:
    """Background and RMS of every box of one block whose origin is on the box grid.

    Parameters
    ----------
    data : ndarray
        2-D block; its size is a multiple of ``box_size`` except at the image's bottom and
        right edges, where the last boxes are partial (as in photutils).
    mask, coverage_mask : ndarray of bool, optional
        True where a pixel is left out of the statistics.
    box_size : (int, int)
        Box size ``(ny, nx)``.
    sigma_clip : astropy.stats.SigmaClip or None
        Clipping applied to each box before the estimators.
    bkg_estimator, rms_estimator : callable
        photutils estimators (``axis`` keyword, NaN for masked pixels).
    exclude_percentile : float
        A box with more than this percentage of its (full-box) pixels masked is excluded (NaN).

    Returns
    -------
    ndarray, shape ``(4, n_boxes_y, n_boxes_x)``, float64
        Background, RMS (NaN where excluded), number of good pixels, and number of non-finite
        pixels that no mask covered (photutils warns about those).
    """
    by, bx = (int(b) for b in box_size)
    x = np.asarray(data)
    x = x.astype(x.dtype if x.dtype.kind == "f" else np.float32, copy=True)
    finite = np.isfinite(x)
    bad = ~finite
    given = None
    for m in (mask, coverage_mask):
        if m is not None:
            m = np.asarray(m, dtype=bool)
            given = m if given is None else given | m
    n_unmasked_nonfinite = bad if given is None else bad & ~given
    if given is not None:
        bad |= given
    x[bad] = np.nan
    ny, nx = x.shape
    nby, nbx = ny // by, nx // bx
    y1, x1 = nby * by, nbx * bx
    threshold = (1 - exclude_percentile / 100.0) * by * bx
    kw = {"sigma_clip": sigma_clip, "bkg_estimator": bkg_estimator, "rms_estimator": rms_estimator, "threshold": threshold}
    out_y, out_x = -(-ny // by), -(-nx // bx)
    out = np.full((N_MESH_PLANES, out_y, out_x), np.nan)
    if nby and nbx:
        core = reshape_as_blocks(x[:y1, :x1], (by, bx)).reshape(nby, nbx, -1)
        out[:3, :nby, :nbx] = _box_statistics(core, axis=-1, **kw)
    if y1 < ny and nbx:
        # the extra row of partial boxes, flattened as photutils does
        row = np.moveaxis(reshape_as_blocks(x[y1:, :x1], (1, bx)), 0, -1)
        row = row.reshape((*row.shape[:-2], -1))
        out[:3, nby, :nbx] = [s[:, 0] for s in _box_statistics(row, axis=-1, **kw)]
    if x1 < nx and nby:
        col = np.transpose(reshape_as_blocks(x[:y1, x1:], (by, 1)), (0, 3, 1, 2))
        col = col.reshape((*col.shape[:-2], -1))
        out[:3, :nby, nbx] = [s[:, 0] for s in _box_statistics(col, axis=-1, **kw)]
    if y1 < ny and x1 < nx:
        out[:3, nby, nbx] = [np.ravel(s)[0] for s in _box_statistics(x[y1:, x1:], axis=None, **kw)]
    # non-finite pixels no mask covered, per box (reported once, by the caller)
    counts = np.add.reduceat(np.add.reduceat(n_unmasked_nonfinite.astype(np.int64), np.arange(0, ny, by), axis=0), np.arange(0, nx, bx), axis=1)
    out[3] = counts
    return out


def fill_mesh(mesh, *, n_neighbors: int = 10, power: float = 1.0) -> np.ndarray:
    """The mesh with its excluded (NaN) boxes filled by inverse-distance weighting of the good ones."""
    from photutils.utils import ShepardIDWInterpolator  # noqa: PLC0415

    nan = np.isnan(mesh)
    if not nan.any():
        return mesh
    good = ~nan
    interp = ShepardIDWInterpolator(np.column_stack(np.where(good)), mesh[good])
    out = np.copy(mesh)
    out[nan] = interp(np.column_stack(np.where(nan)), n_neighbors=n_neighbors, power=power, eps=0.0, regularization=0.0)
    return out


def _nanmedian_filter(mesh, filter_size):
    from scipy.ndimage import generic_filter  # noqa: PLC0415

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        return generic_filter(mesh, np.nanmedian, size=tuple(filter_size), mode="constant", cval=np.nan)


def filter_mesh(mesh, *, filter_size, filter_threshold=None, bkg_mesh=None, bkg_min=None) -> np.ndarray:
    """Median filter of a (filled) mesh, selectively above ``filter_threshold`` as photutils.

    Parameters
    ----------
    mesh : ndarray
        Filled mesh (background or RMS).
    filter_size : (int, int)
        Odd window in boxes; ``(1, 1)`` is no filtering.
    filter_threshold : float, optional
        Filter only boxes whose (filled) background exceeds it.
    bkg_mesh : ndarray, optional
        The filled background mesh that ``filter_threshold`` applies to.
    bkg_min : float, optional
        The smallest measured background box (below it the whole mesh is filtered).
    """
    if tuple(filter_size) == (1, 1):
        return mesh
    if filter_threshold is None or filter_threshold < bkg_min:
        return _nanmedian_filter(mesh, filter_size)
    above = bkg_mesh > filter_threshold
    if not above.any():
        return mesh
    return np.where(above, _nanmedian_filter(mesh, filter_size), mesh)


@lru_cache(maxsize=16)
def zoom_weights(n_mesh: int, box: int, order: int = 3, mode: str = "reflect") -> np.ndarray:
    """The 1-D spline zoom by ``box`` as a matrix: ``(n_mesh * box, n_mesh)``, float64.

    Column ``j`` is :func:`scipy.ndimage.zoom` (grid mode) of the unit vector ``e_j``, so
    ``W @ v`` is the zoom of ``v`` and the 2-D zoom of a mesh ``M`` is ``Wy @ M @ Wx.T``.
    """
    from scipy.ndimage import zoom  # noqa: PLC0415

    eye = np.eye(n_mesh)
    w = np.stack([zoom(eye[j], box, order=order, mode=mode, grid_mode=True) for j in range(n_mesh)], axis=1)
    w.setflags(write=False)
    return w


def interpolate_mesh(mesh, *, box_size, rows: slice, cols: slice, dtype, order: int = 3, mode: str = "reflect", clip: bool = True):
    """One tile (``rows``, ``cols`` of the full image) of the zoomed mesh, as photutils' zoom.

    Parameters
    ----------
    mesh : ndarray
        The filled, filtered low-resolution mesh.
    box_size : (int, int)
        Zoom factors.
    rows, cols : slice
        The tile's pixel ranges in the full image.
    dtype : dtype
        Output dtype (the mesh's, as scipy's zoom returns it).
    order, mode : int, str
        Spline order and edge mode of the zoom.
    clip : bool
        Clip to the mesh's range, as photutils does by default.
    """
    mesh = np.asarray(mesh)
    lo, hi = np.min(mesh), np.max(mesh)
    shape = (rows.stop - rows.start, cols.stop - cols.start)
    if lo == hi:
        return np.full(shape, lo, dtype=dtype)
    wy = zoom_weights(mesh.shape[0], int(box_size[0]), order, mode)[rows]
    wx = zoom_weights(mesh.shape[1], int(box_size[1]), order, mode)[cols]
    # zoom computes in float64 and rounds once to the mesh's type: so do we
    out = (wy @ mesh.astype(np.float64) @ wx.T).astype(dtype)
    if clip:
        np.clip(out, lo, hi, out=out)
    return out


def source_mask_window(smoothed, threshold, bad=None, *, n_pixels: int, dilate_radius: int = 0) -> np.ndarray:
    """Pixels of detected sources in a window, as ``detect_sources(...).make_source_mask(...)``.

    A source is an 8-connected group of at least ``n_pixels`` pixels above ``threshold`` (not
    ``bad``); the mask is dilated by a circular footprint of ``dilate_radius``. In a window
    with a halo of ``n_pixels - 1 + dilate_radius`` the core of the result is exact: a
    component with ``n_pixels`` pixels has that many within ``n_pixels - 1`` pixels of any of
    its pixels (breadth-first order), so the window sees enough of it to keep it.
    """
    from scipy import ndimage  # noqa: PLC0415

    with np.errstate(invalid="ignore"):
        above = np.asarray(smoothed) > np.asarray(threshold)
    if bad is not None:
        above &= ~np.asarray(bad, dtype=bool)
    labels, n = ndimage.label(above, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return above
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= n_pixels
    keep[0] = False
    mask = keep[labels]
    if dilate_radius > 0:
        from photutils.utils import circular_footprint  # noqa: PLC0415

        mask = ndimage.binary_dilation(mask, structure=circular_footprint(dilate_radius).astype(bool))
    return mask
