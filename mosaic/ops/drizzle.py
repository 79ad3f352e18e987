"""Drizzle and blot on one block: arrays in, arrays out.

Drizzle (``D_k^w`` of DESIGN.md) spreads each input pixel's surface brightness over the output
pixels its (``pixfrac``-shrunk) footprint covers, driven here on pixel maps
(:mod:`mosaic.ops.pixmap`) so that no WCS reaches a kernel. The square kernel of a mosaic
(:func:`drizzle_block`) takes the exact overlap areas of :mod:`mosaic.ops.overlap` (the
``drizzle`` package's geometry, compiled, float64 sums: the package's output to float32
round-off, 1.8x faster with its pixel maps on 8 x 1024² exposures); the other kernels, and
:func:`drizzle_tile`, run the ``drizzle`` package (STScI's C code).

Definitions used throughout (``a_ij``: area of output pixel ``j`` covered by the quadrilateral of
input pixel ``i``, in output pixels; ``J_i = sum_j a_ij`` the quadrilateral's whole area; ``w_i``
the input weight):

- drizzle's output is the weighted mean ``sci_j = sum_i a_ij w_i x_i / J_i / wht_j`` with
  ``wht_j = sum_i a_ij w_i / J_i``; squared-weight co-adds give
  ``var_j = sum_i (a_ij w_i / J_i)^2 v_i / wht_j^2`` (the JWST resample step's propagation);
- the linear drizzle operator ``D`` (unit weights, no normalisation) is
  ``(D x)_j = sum_i a_ij x_i / J_i`` -- what :func:`drizzle_linear` returns;
- its transpose is ``(D^T y)_i = sum_j a_ij y_j / J_i``: the area-weighted mean of ``y`` under
  detector pixel ``i`` -- the *exact-area blot* (:func:`blot_exact`).

Surface brightness is drizzled with ``iscale = 1`` as the JWST resample step does for MJy/sr
data: because ``sum_j a_ij = J_i`` and ``J_i`` is the input pixel's true (distorted) area in
output pixels, a source's flux ``sum(SCI * pixel solid angle)`` is the same in the exposure
(true pixel areas) and in the mosaic (``grid.pixel_area_sr``).

Blot (``D_k^h``) comes in two flavours, both from an output region onto exposure pixels:

- ``"exact"`` (:func:`blot_exact`, the default, :data:`DEFAULT_BLOT`): the area-weighted mean of
  the output pixels under each detector pixel, i.e. the transpose of drizzling with the square
  kernel. It is the default for UPDC because it is the adjoint of the drizzle that carries the
  ratios back, which is what makes the multiplicative update a true Richardson-Lucy (EM) step
  (flux-consistent, likelihood non-decreasing), and because a detector pixel *integrates* the
  sky over its area, which is the physical forward model when ``B_k`` is an optical PSF.
- ``"interp"`` (:func:`blot_interp`): drizzle's interpolating blot (poly5 by default), a point
  sample of an interpolant at each pixel centre -- what the paper used; choose it to
  reproduce the paper, or when the PSF model already includes the detector pixel response.
"""

from __future__ import annotations

import logging
import math
import sys
from typing import NamedTuple

import numpy as np
from drizzle.resample import Drizzle, blot_image

from mosaic.ops.pixmap import pixel_corners
from mosaic.registry import algorithm

__all__ = [
    "BLOT_METHODS",
    "DEFAULT_BLOT",
    "FLUX_CONSERVING_KERNELS",
    "INTERPOLATIONS",
    "KERNELS",
    "WEIGHTS",
    "DrizzleInput",
    "DrizzleSum",
    "DrizzleTile",
    "blot",
    "blot_exact",
    "blot_interp",
    "combine_partials",
    "drizzle_block",
    "drizzle_linear",
    "drizzle_partial",
    "drizzle_tile",
    "empty_partial",
    "finalize_partial",
    "kernel_radius",
    "weight_map",
]

log = logging.getLogger(__name__)

#: drizzle kernels the ``drizzle`` package offers
KERNELS = ("square", "turbo", "point", "gaussian", "lanczos2", "lanczos3")
#: the kernels among them that conserve flux
FLUX_CONSERVING_KERNELS = ("square", "turbo", "point")
#: input weighting schemes: 1/VAR_RNOISE (the JWST default), exposure time, or 1
WEIGHTS = ("ivm", "exptime", "uniform")
#: blot flavours
BLOT_METHODS = ("exact", "interp")
#: the blot used by UPDC unless told otherwise (see the module docstring for why)
DEFAULT_BLOT = "exact"
#: interpolations of drizzle's ``blot_image``
INTERPOLATIONS = ("nearest", "linear", "poly3", "poly5", "lanczos3", "lanczos5")
#: interpolation half-width (pixels) each blot interpolation reads around a point
INTERPOLATION_HALO = {"nearest": 1, "linear": 1, "poly3": 2, "poly5": 3, "lanczos3": 3, "lanczos5": 5}

# the footprint of a square-kernel pixel follows the local (distorted) scale, which can exceed
# the nominal pixel_scale_ratio by a few per cent across a detector
_SCALE_SLACK = 1.15


def _check_kernel(kernel: str) -> str:
    k = str(kernel).lower()
    if k not in KERNELS:
        msg = f"kernel {kernel!r} is not supported; expected one of {KERNELS}"
        raise ValueError(msg)
    return k


def _check_pixfrac(pixfrac: float) -> float:
    # drizzle silently switches to the point kernel below 0.001: refuse instead
    if not (np.isfinite(pixfrac) and pixfrac > 0.001):
        msg = f"pixfrac must be a number above 0.001; got {pixfrac!r}"
        raise ValueError(msg)
    return float(pixfrac)


def _check_psr(pixel_scale_ratio: float) -> float:
    if not (np.isfinite(pixel_scale_ratio) and pixel_scale_ratio > 0):
        msg = f"pixel_scale_ratio must be a positive number; got {pixel_scale_ratio!r}"
        raise ValueError(msg)
    return float(pixel_scale_ratio)


def kernel_radius(kernel: str = "square", *, pixfrac: float = 1.0, pixel_scale_ratio: float = 1.0) -> float:
    """How far (output pixels, per axis) from an input pixel's mapped centre the kernel reaches.

    Every output pixel that can receive flux from an input pixel has its centre within this
    distance of the input pixel's mapped centre. This is the halo of drizzle.

    Parameters
    ----------
    kernel : str
        One of :data:`KERNELS`.
    pixfrac : float
        Linear fraction of the input pixel the flux is confined to.
    pixel_scale_ratio : float
        Output pixel scale over input pixel scale (0.5 for the paper's mosaics).
    """
    kernel = _check_kernel(kernel)
    pixfrac = _check_pixfrac(pixfrac)
    psr = _check_psr(pixel_scale_ratio)
    if kernel == "square":
        # half-diagonal of the shrunk pixel, at the largest local scale
        reach = 0.5 * math.sqrt(2.0) * pixfrac / psr * _SCALE_SLACK
    elif kernel == "turbo":
        reach = 0.5 * pixfrac / psr
    elif kernel == "point":
        reach = 0.0
    elif kernel == "gaussian":
        # drizzle's cdrizzlebox.c: nsig = 2.5, FWHM = pixfrac input pixels, at least 1.2 input px
        reach = max(2.5 * pixfrac / 2.3548 / psr, 1.2 / psr)
    else:
        return float(int(kernel[-1]) / psr)
    return float(reach + 0.5)


def weight_map(good, var_rnoise=None, *, weight: str = "ivm", exptime: float | None = None) -> np.ndarray:
    """Per-pixel input weights: zero for bad pixels, else by the weighting scheme.

    Parameters
    ----------
    good : array of bool
        Pixels to use (finite SCI and no bad DQ bit).
    var_rnoise : array, optional
        Read-noise variance; needed for ``"ivm"``. Pixels where it is not finite and positive
        get zero weight.
    weight : str
        ``"ivm"`` (1 / VAR_RNOISE, the JWST default), ``"exptime"`` or ``"uniform"``.
    exptime : float, optional
        Exposure time; needed for ``"exptime"``.

    Returns
    -------
    numpy.ndarray
        float32 weights of the shape of ``good``.
    """
    good = np.asarray(good, dtype=bool)
    if weight == "ivm":
        if var_rnoise is None:
            msg = "weight 'ivm' needs var_rnoise (1/VAR_RNOISE weights); pass it or use 'exptime' or 'uniform'"
            raise ValueError(msg)
        v = np.asarray(var_rnoise, dtype=np.float64)
        ok = good & np.isfinite(v) & (v > 0)
        w = np.zeros(good.shape, dtype=np.float64)
        np.divide(1.0, v, out=w, where=ok)
        return w.astype(np.float32)
    if weight == "exptime":
        if exptime is None or not (np.isfinite(exptime) and exptime > 0):
            msg = f"weight 'exptime' needs a positive exposure time; got {exptime!r}"
            raise ValueError(msg)
        return np.where(good, np.float32(exptime), np.float32(0.0))
    if weight == "uniform":
        return good.astype(np.float32)
    msg = f"weight {weight!r} is not supported; expected one of {WEIGHTS}"
    raise ValueError(msg)


class DrizzleTile(NamedTuple):
    """One input drizzled onto one output block, as the ``drizzle`` package returns it.

    Attributes
    ----------
    sci : numpy.ndarray
        Weighted mean (float32, NaN where nothing landed).
    wht : numpy.ndarray
        Summed weights (float32).
    ctx : numpy.ndarray
        Where the input contributed (bool).
    var : tuple of numpy.ndarray
        Squared-weight co-adds of the variances (float32, NaN where nothing landed).
    """

    sci: np.ndarray
    wht: np.ndarray
    ctx: np.ndarray
    var: tuple


def _empty_tile(shape, n_var: int) -> DrizzleTile:
    nan = np.full(shape, np.nan, dtype=np.float32)
    return DrizzleTile(
        sci=nan,
        wht=np.zeros(shape, dtype=np.float32),
        ctx=np.zeros(shape, dtype=bool),
        var=tuple(nan.copy() for _ in range(n_var)),
    )


@algorithm("resampling")
def drizzle_tile(
    data,
    pixmap,
    shape,
    *,
    weight_map=None,
    variances=None,
    pixfrac: float = 1.0,
    kernel: str = "square",
    pixel_scale_ratio: float = 1.0,
    band_rows: int = 32,
) -> DrizzleTile:
    """Drizzle one input (or a cut-out of it) onto an output block of ``shape``.

    The result equals the block's part of a drizzle of the same input onto any larger output
    that contains the input's whole footprint: the input is drizzled onto a scratch canvas
    that holds its whole footprint (so that drizzle's clipping of input pixels that straddle
    the output's border never happens inside the block), then the block is cut out.

    Parameters
    ----------
    data : array
        Input surface brightness; pixels with zero weight may hold anything (NaN included).
    pixmap : array
        ``(ny, nx, 2)`` output positions of the input pixels, in the block's pixel frame.
    shape : tuple of int
        ``(ny, nx)`` of the output block.
    weight_map : array, optional
        Input weights (1 everywhere by default).
    variances : list of arrays, optional
        Variances to co-add with squared weights.
    pixfrac : float
        Linear fraction of the input pixel the flux is confined to.
    kernel : str
        One of :data:`KERNELS`.
    pixel_scale_ratio : float
        Output over input pixel scale; sets the size of the turbo, gaussian and lanczos
        kernels. Pass the same value for every block of a mosaic.
    band_rows : int
        Drizzle the input in bands of this many rows, each only as wide as its pixels that
        can reach the block need (0: one pass over the whole cut-out). Same result to the
        bit; less work when the input is rotated with respect to the block.

    Returns
    -------
    DrizzleTile
        ``sci`` and ``var`` are NaN, ``wht`` 0, where nothing landed.
    """
    kernel = _check_kernel(kernel)
    pixfrac = _check_pixfrac(pixfrac)
    psr = _check_psr(pixel_scale_ratio)
    data = np.asarray(data, dtype=np.float32)
    pixmap = np.asarray(pixmap, dtype=np.float64)
    shape = tuple(int(s) for s in shape)
    variances = [] if variances is None else list(variances)
    if pixmap.shape != (*data.shape, 2):
        msg = f"pixmap has shape {pixmap.shape}; expected {(*data.shape, 2)} for data of shape {data.shape}"
        raise ValueError(msg)
    w = np.ones(data.shape, np.float32) if weight_map is None else np.asarray(weight_map, np.float32)
    if w.shape != data.shape:
        msg = f"weight_map has shape {w.shape}; expected {data.shape} like data"
        raise ValueError(msg)
    for v in variances:
        if np.shape(v) != data.shape:
            msg = f"a variance array has shape {np.shape(v)}; expected {data.shape} like data"
            raise ValueError(msg)
    if data.shape[0] < 2 or data.shape[1] < 2:
        return _empty_tile(shape, len(variances))

    reached = _bands_and_canvas(pixmap, shape, kernel=kernel, pixfrac=pixfrac, psr=psr, band_rows=band_rows)
    if reached is None:
        return _empty_tile(shape, len(variances))
    bands, (cy0, cy1, cx0, cx1) = reached
    # the part of the block the canvas covers
    bx0, bx1 = max(cx0, 0), min(cx1, shape[1])
    by0, by1 = max(cy0, 0), min(cy1, shape[0])
    if bx0 >= bx1 or by0 >= by1:
        return _empty_tile(shape, len(variances))

    canvas = (cy1 - cy0, cx1 - cx0)
    # integer shifts of a float64 map are exact: the overlaps equal those of a whole-grid run
    pm = pixmap.copy()
    pm[..., 0] -= cx0
    pm[..., 1] -= cy0
    data = np.where(w > 0, data, np.float32(0.0))
    data2 = [np.asarray(v, dtype=np.float32) for v in variances] or None
    # our own zeroed outputs leave drizzle's fill value "INDEF": it then skips filling every
    # uncovered canvas pixel after each band (a whole-canvas pass per call); NaN is put
    # where nothing landed once, below
    driz = Drizzle(
        kernel=kernel, out_img=np.zeros(canvas, np.float32), out_wht=np.zeros(canvas, np.float32),
        out_img2=[np.zeros(canvas, np.float32) for _ in variances] or None,
        begin_ctx_id=0, max_ctx_id=len(bands) - 1,
    )
    for y0, y1, x0, x1 in bands:
        # bands are at least 2 x 2, so xmax and ymax are never 0 (which drizzle reads as "to
        # the end of the image")
        driz.add_image(
            data, exptime=1.0, pixmap=pm, data2=data2, weight_map=w, pixfrac=pixfrac, iscale=1.0,
            pixel_scale_ratio=psr, in_units="cps", xmin=x0, xmax=x1, ymin=y0, ymax=y1,
        )
    cut = (slice(by0 - cy0, by1 - cy0), slice(bx0 - cx0, bx1 - cx0))
    into = (slice(by0, by1), slice(bx0, bx1))
    out = _empty_tile(shape, len(variances))
    wht = driz.out_wht[cut]
    none = wht == 0
    out.sci[into] = np.where(none, np.float32(np.nan), driz.out_img[cut])
    out.wht[into] = wht
    out.ctx[into] = (driz.out_ctx[(slice(None), *cut)] != 0).any(axis=0)
    for dst, src in zip(out.var, driz.out_img2 or [], strict=False):
        dst[into] = np.where(none, np.float32(np.nan), src[cut])
    return out


def _bands_and_canvas(pixmap, shape, *, kernel: str, pixfrac: float, psr: float, band_rows: int):
    """The row bands of input pixels that reach a block of ``shape``, and the canvas around them.

    Returns ``(bands, (y0, y1, x0, x1))`` in output pixels, or None where no pixel reaches the
    block. A pixel reaches it where its mapped centre is within the kernel's reach (plus a pixel
    of slack); the canvas holds every processed pixel's whole footprint, so drizzle never clips
    an input pixel that straddles its border (it drops those) where it matters.
    """
    finite = np.isfinite(pixmap).all(axis=-1)
    reach = kernel_radius(kernel, pixfrac=pixfrac, pixel_scale_ratio=psr)
    with np.errstate(invalid="ignore"):
        near = finite & (
            (pixmap[..., 0] >= -0.5 - reach - 1) & (pixmap[..., 0] <= shape[1] - 0.5 + reach + 1)
            & (pixmap[..., 1] >= -0.5 - reach - 1) & (pixmap[..., 1] <= shape[0] - 0.5 + reach + 1)
        )
    bands = _bands(near, band_rows)
    if not bands:
        return None
    used = np.zeros(near.shape, dtype=bool)
    for y0, y1, x0, x1 in bands:
        used[y0 : y1 + 1, x0 : x1 + 1] = True
    used &= finite
    pad = int(math.ceil(reach)) + 2
    px, py = pixmap[..., 0][used], pixmap[..., 1][used]
    box = (
        int(math.floor(py.min())) - pad, int(math.ceil(py.max())) + pad + 1,
        int(math.floor(px.min())) - pad, int(math.ceil(px.max())) + pad + 1,
    )
    return bands, box


def _bands(near, band_rows: int) -> list[tuple[int, int, int, int]]:
    """Disjoint row bands ``(y0, y1, x0, x1)`` (inclusive) that hold every ``near`` pixel.

    Drizzling a cut-out band by band, each band only as wide as its rows need, skips the
    input pixels of a rotated cut-out's bounding box that cannot reach the block (up to half
    of them at 45 degrees), while every pixel that can reach it is drizzled in the same order
    as in one pass, so the result is the same to the bit. Bands are at least 2 x 2 pixels
    (drizzle refuses smaller boxes); the pixels added for that cannot reach the block.
    """
    ny, nx = near.shape
    rows = np.flatnonzero(near.any(axis=1))
    if rows.size == 0 or ny < 2 or nx < 2:
        return []
    first, last = int(rows[0]), int(rows[-1])
    step = max(band_rows, 2) if band_rows > 0 else ny
    spans = [[r0, min(r0 + step, last + 1) - 1] for r0 in range(first, last + 1, step)]
    if len(spans) > 1 and spans[-1][0] == spans[-1][1]:
        tail = spans.pop()
        spans[-1][1] = tail[1]
    if spans[0][0] == spans[0][1]:  # a single band of one row: take a neighbour row
        spans[0] = [spans[0][0] - 1, spans[0][1]] if spans[0][1] == ny - 1 else [spans[0][0], spans[0][1] + 1]
    out = []
    for y0, y1 in spans:
        cols = np.flatnonzero(near[y0 : y1 + 1].any(axis=0))
        if cols.size == 0:
            continue
        x0, x1 = int(cols[0]), int(cols[-1])
        if x0 == x1:
            x0, x1 = (x0 - 1, x1) if x1 == nx - 1 else (x0, x1 + 1)
        out.append((y0, y1, x0, x1))
    return out


class DrizzleInput(NamedTuple):
    """One input of :func:`drizzle_block`: an exposure (or a cut-out of it) and its pixel map.

    Attributes
    ----------
    data : numpy.ndarray
        Surface brightness; pixels with zero weight may hold anything (NaN included).
    pixmap : numpy.ndarray
        ``(ny, nx, 2)`` output positions of the pixels, in the block's pixel frame.
    weight_map : numpy.ndarray
        Input weights (0 for bad pixels).
    variances : tuple of numpy.ndarray
        Variances co-added with squared weights (the same number for every input of a block).
    exposure : int
        The input's number in the mosaic: its context bit (``exposure % 32`` of plane
        ``exposure // 32``).
    pixel_scale_ratio : float
        Output over input pixel scale (sets the turbo, gaussian and lanczos kernels' size).
    """

    data: np.ndarray
    pixmap: np.ndarray
    weight_map: np.ndarray
    variances: tuple
    exposure: int
    pixel_scale_ratio: float


def _checked_input(inp: DrizzleInput):
    """``inp``'s data (float32), pixel map (float64), weights (float32) and pixel-scale ratio,
    checked against one another; None where the input is too small to drizzle (under 2 x 2)."""
    data = np.asarray(inp.data, dtype=np.float32)
    pixmap = np.asarray(inp.pixmap, dtype=np.float64)
    psr = _check_psr(inp.pixel_scale_ratio)
    if pixmap.shape != (*data.shape, 2):
        msg = f"exposure {inp.exposure}: pixmap has shape {pixmap.shape}; expected {(*data.shape, 2)} for data of shape {data.shape}"
        raise ValueError(msg)
    w = np.asarray(inp.weight_map, dtype=np.float32)
    if w.shape != data.shape:
        msg = f"exposure {inp.exposure}: weight_map has shape {w.shape}; expected {data.shape} like data"
        raise ValueError(msg)
    for v in inp.variances:
        if np.shape(v) != data.shape:
            msg = f"exposure {inp.exposure}: a variance array has shape {np.shape(v)}; expected {data.shape} like data"
            raise ValueError(msg)
    if data.shape[0] < 2 or data.shape[1] < 2:
        return None
    return data, pixmap, w, psr


def _plan_input(inp: DrizzleInput, shape, kernel: str, pixfrac: float, band_rows: int):
    """The bands of ``inp`` to drizzle onto a block of ``shape`` and the canvas box they need, or None."""
    checked = _checked_input(inp)
    if checked is None:
        return None
    data, pixmap, w, psr = checked
    reached = _bands_and_canvas(pixmap, shape, kernel=kernel, pixfrac=pixfrac, psr=psr, band_rows=band_rows)
    if reached is None:
        return None
    bands, box = reached
    return data, pixmap, w, psr, bands, box


def drizzle_block(
    inputs, shape, *, n_planes: int = 1, pixfrac: float = 1.0, kernel: str = "square", band_rows: int = 32
) -> dict:
    """Drizzle several inputs onto one output block.

    The block equals its part of one whole-output ``drizzle.resample.Drizzle`` run that adds
    the inputs in their order, on any tiling. With the square kernel the overlaps are computed
    exactly on the block (:func:`_block_by_overlaps`): to float32 round-off of that run where
    the maps are the same. The other kernels run the package itself, onto a canvas that holds
    every drizzled pixel's whole footprint. This is the work of one (tile, all its exposures)
    task: no partial sums are made, moved or added.

    Parameters
    ----------
    inputs : iterable of DrizzleInput
        The inputs, each with its pixel map in the block's frame.
    shape : tuple of int
        ``(ny, nx)`` of the block.
    n_planes : int
        Context planes of the mosaic, ``ceil(n_exposures / 32)``.
    pixfrac : float
        Linear fraction of the input pixel the flux is confined to.
    kernel : str
        One of :data:`KERNELS`.
    band_rows : int
        Kernels other than square: drizzle each input in bands of this many rows, each only as
        wide as the block needs (see :func:`drizzle_tile`).

    Returns
    -------
    dict
        ``sci`` (weighted mean, NaN where no weight), ``wht``, ``con`` (``(n_planes, ny, nx)``
        int32), ``var`` (list, NaN where no weight) and ``err`` (as :func:`finalize_partial`
        makes it), all float32 but ``con``.
    """
    kernel = _check_kernel(kernel)
    pixfrac = _check_pixfrac(pixfrac)
    shape = tuple(int(s) for s in shape)
    n_planes = int(n_planes)
    plans = []
    n_var = None
    for inp in inputs:
        if n_var is None:
            n_var = len(inp.variances)
        elif len(inp.variances) != n_var:
            msg = f"exposure {inp.exposure} has {len(inp.variances)} variance arrays; expected {n_var} like the first input"
            raise ValueError(msg)
        if not 0 <= int(inp.exposure) < 32 * n_planes:
            msg = f"exposure number {inp.exposure} does not fit {n_planes} context planes of 32 bits"
            raise ValueError(msg)
        if kernel == "square":
            checked = _checked_input(inp)
            if checked is not None:
                plans.append((int(inp.exposure), inp.variances, *checked))
            continue
        plan = _plan_input(inp, shape, kernel, pixfrac, band_rows)
        if plan is not None:
            plans.append((int(inp.exposure), inp.variances, *plan))
    n_var = n_var or 0
    if kernel == "square":
        return _block_by_overlaps(plans, shape, n_planes=n_planes, n_var=n_var, pixfrac=pixfrac)
    empty = _empty_tile(shape, n_var)
    out = {"sci": empty.sci, "wht": empty.wht, "con": np.zeros((n_planes, *shape), np.int32), "var": list(empty.var)}
    boxes = np.array([p[-1] for p in plans]).reshape(-1, 4)
    if not plans:
        return _with_err(out)
    cy0, cy1 = int(boxes[:, 0].min()), int(boxes[:, 1].max())
    cx0, cx1 = int(boxes[:, 2].min()), int(boxes[:, 3].max())
    bx0, bx1 = max(cx0, 0), min(cx1, shape[1])
    by0, by1 = max(cy0, 0), min(cy1, shape[0])
    if bx0 >= bx1 or by0 >= by1:
        return _with_err(out)
    canvas = (cy1 - cy0, cx1 - cx0)
    # our own zeroed outputs leave drizzle's fill value "INDEF" (no whole-canvas fill after
    # every call); NaN is put where nothing landed once, below
    driz = Drizzle(
        kernel=kernel, out_img=np.zeros(canvas, np.float32), out_wht=np.zeros(canvas, np.float32),
        out_img2=[np.zeros(canvas, np.float32) for _ in range(n_var)] or None,
        begin_ctx_id=0, max_ctx_id=32 * n_planes - 1,
    )
    for exposure, variances, data, pixmap, w, psr, bands, _ in plans:
        # integer shifts of a float64 map are exact: the overlaps equal those of a whole-grid run
        pm = pixmap - np.array([cx0, cy0], dtype=np.float64)
        data = np.where(w > 0, data, np.float32(0.0))
        data2 = [np.asarray(v, dtype=np.float32) for v in variances] or None
        for y0, y1, x0, x1 in bands:
            # every band of an exposure sets the exposure's own context bit (the package
            # counts one id per call; bands are one input)
            driz._ctx_id = exposure  # noqa: SLF001
            driz.add_image(
                data, exptime=1.0, pixmap=pm, data2=data2, weight_map=w, pixfrac=pixfrac, iscale=1.0,
                pixel_scale_ratio=psr, in_units="cps", xmin=x0, xmax=x1, ymin=y0, ymax=y1,
            )
    cut = (slice(by0 - cy0, by1 - cy0), slice(bx0 - cx0, bx1 - cx0))
    into = (slice(by0, by1), slice(bx0, bx1))
    wht = driz.out_wht[cut]
    none = wht == 0
    out["sci"][into] = np.where(none, np.float32(np.nan), driz.out_img[cut])
    out["wht"][into] = wht
    out["con"][(slice(None), *into)] = driz.out_ctx[(slice(None), *cut)]
    for dst, src in zip(out["var"], driz.out_img2 or [], strict=False):
        dst[into] = np.where(none, np.float32(np.nan), src[cut])
    return _with_err(out)


def _block_by_overlaps(plans, shape, *, n_planes: int, n_var: int, pixfrac: float) -> dict:
    """:func:`drizzle_block` with the square kernel, by the exact overlap areas of
    :mod:`mosaic.ops.overlap`: the package's geometry (the same corners, the same areas to
    rounding), its sums kept in float64 and divided once at the end.

    Per input, one compiled pass makes the planes ``w``, ``w g`` and ``w² v``
    (:func:`mosaic.ops.drizzle_planes.drizzle_planes`) and one adds ``D(w)``, ``D(w g)`` and
    ``D²(w² v)`` into the block's running sums; the context bit goes where ``D(w) > 0``. Only
    the block is computed: the parts of a footprint off it are left out exactly, so no canvas
    around the block is needed.
    """
    from mosaic.ops.drizzle_planes import drizzle_planes  # noqa: PLC0415  (Numba: only where drizzled)
    from mosaic.ops.overlap import corners, drizzle_sums  # noqa: PLC0415

    sums = np.zeros((2 + n_var, *shape))
    bits = np.zeros((n_planes, *shape), np.uint32)
    covered = np.zeros(shape, dtype=bool)
    powers = (1, 1) + (2,) * n_var
    for exposure, variances, data, pixmap, w, _ in plans:
        planes = drizzle_planes(w.astype(np.float64), data, [np.asarray(v, dtype=np.float32) for v in variances])
        xc, yc = corners(pixmap, pixfrac)
        covered[...] = False
        drizzle_sums(xc, yc, planes, shape, powers=powers, out=sums, covered=covered)
        bits[exposure // 32][covered] |= np.uint32(1 << (exposure % 32))
    wht = sums[0]
    none = wht == 0
    safe = np.where(none, 1.0, wht)
    out = {
        "sci": np.where(none, np.nan, sums[1] / safe).astype(np.float32),
        "wht": wht.astype(np.float32),
        "con": bits.view(np.int32),
        "var": [np.where(none, np.nan, v / (safe * safe)).astype(np.float32) for v in sums[2:]],
    }
    return _with_err(out)


def _with_err(out: dict) -> dict:
    """``out`` with ``err``: the square root of the summed variances (NaN-only ones left out)."""
    covered = out["wht"] != 0
    if out["var"]:
        stack = np.stack(out["var"])
        total = np.nansum(stack, axis=0)
        some = np.isfinite(stack).any(axis=0)
        out["err"] = np.where(covered & some, np.sqrt(np.maximum(total, 0.0)), np.nan).astype(np.float32)
    else:
        out["err"] = np.full(out["wht"].shape, np.nan, dtype=np.float32)
    return out


class DrizzleSum(NamedTuple):
    """Additive partial sums of a drizzle co-add: add them up, then :func:`finalize_partial`.

    Sums are kept in float32 (the precision of drizzle's own output arrays) to halve the
    memory of partial results waiting for their reduction; they are added in float64.

    Attributes
    ----------
    num : numpy.ndarray
        ``sum w x`` (float32).
    wht : numpy.ndarray
        ``sum w`` (float32).
    var : tuple of numpy.ndarray
        ``sum w^2 v`` per variance (float32).
    con : numpy.ndarray
        ``(n_planes, ny, nx)`` int32 context bit planes (combined with bitwise OR).
    """

    num: np.ndarray
    wht: np.ndarray
    var: tuple
    con: np.ndarray


def empty_partial(shape, *, n_planes: int, n_var: int) -> DrizzleSum:
    """A partial sum with nothing in it."""
    z = np.zeros(shape, dtype=np.float32)
    return DrizzleSum(
        num=z, wht=z.copy(), var=tuple(z.copy() for _ in range(n_var)),
        con=np.zeros((n_planes, *shape), dtype=np.int32),
    )


def drizzle_partial(tile: DrizzleTile, exposure: int, *, n_planes: int) -> DrizzleSum:
    """Turn one input's :class:`DrizzleTile` into partial sums, its context bit set at ``exposure``.

    Parameters
    ----------
    tile : DrizzleTile
        One input drizzled onto a block.
    exposure : int
        The input's number in the mosaic (0-based): bit ``exposure % 32`` of plane
        ``exposure // 32``, as the ``drizzle`` package numbers context bits.
    n_planes : int
        Context planes of the mosaic, ``ceil(n_exposures / 32)``.
    """
    exposure = int(exposure)
    if not 0 <= exposure < 32 * n_planes:
        msg = f"exposure number {exposure} does not fit {n_planes} context planes of 32 bits"
        raise ValueError(msg)
    wht = tile.wht.astype(np.float64)
    covered = wht != 0
    num = np.where(covered, tile.sci.astype(np.float64) * wht, 0.0).astype(np.float32)
    var = tuple(np.where(covered, v.astype(np.float64) * wht * wht, 0.0).astype(np.float32) for v in tile.var)
    con = np.zeros((n_planes, *wht.shape), dtype=np.uint32)
    con[exposure // 32][tile.ctx] = np.uint32(1) << np.uint32(exposure % 32)
    return DrizzleSum(num=num, wht=tile.wht.astype(np.float32), var=var, con=con.view(np.int32))


def combine_partials(*parts: DrizzleSum) -> DrizzleSum:
    """Add partial sums (and OR their context planes)."""
    if not parts:
        msg = "combine_partials needs at least one partial sum"
        raise ValueError(msg)
    first = parts[0]
    num, wht = first.num.astype(np.float64), first.wht.astype(np.float64)
    var = [v.astype(np.float64) for v in first.var]
    con = first.con.copy()
    for p in parts[1:]:
        num += p.num
        wht += p.wht
        for acc, v in zip(var, p.var, strict=True):
            acc += v
        con |= p.con
    return DrizzleSum(
        num=num.astype(np.float32), wht=wht.astype(np.float32),
        var=tuple(v.astype(np.float32) for v in var), con=con,
    )


def finalize_partial(part: DrizzleSum) -> dict:
    """The co-add from partial sums.

    Returns
    -------
    dict
        ``sci`` (weighted mean, NaN where no weight), ``wht``, ``con`` (int32 planes), ``var``
        (list, ``sum w^2 v / (sum w)^2``) and ``err`` (square root of the summed variances;
        variances that are NaN everywhere, e.g. a missing VAR_FLAT, are left out), all float32.
    """
    wht = part.wht.astype(np.float64)
    covered = wht != 0
    safe = np.where(covered, wht, 1.0)
    sci = np.where(covered, part.num / safe, np.nan).astype(np.float32)
    var = [np.where(covered, v / (safe * safe), np.nan).astype(np.float32) for v in part.var]
    return _with_err({"sci": sci, "wht": part.wht.astype(np.float32), "con": part.con, "var": var})


# -- the linear operator and its transpose (overlaps from mosaic.ops.overlap) --------------------


def _array_module(a):
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(a, cupy.ndarray):
        msg = "the exact-area blot has a NumPy implementation only; pass NumPy arrays (cupy.asnumpy)"
        raise TypeError(msg)
    return np


def drizzle_linear(x, pixmap, shape, *, pixfrac: float = 1.0) -> np.ndarray:
    """The linear drizzle operator ``D``: ``(D x)_j = sum_i a_ij x_i / J_i`` (square kernel).

    This is the numerator of drizzle with unit weights: ``D x = out_img * out_wht`` of the
    ``drizzle`` package (where its border clipping does not bite), computed here in float64
    with the same overlaps so that :func:`blot_exact` with ``normalize=False`` is its exact
    transpose.

    Parameters
    ----------
    x : array
        Input values (NaN counts as 0).
    pixmap : array
        ``(ny, nx, 2)`` output positions of the input pixels.
    shape : tuple of int
        Output shape.
    pixfrac : float
        Linear fraction of the input pixel kept.
    """
    _array_module(x)
    pixfrac = _check_pixfrac(pixfrac)
    # numba is imported (and the kernels loaded) only where they are used, not by every drizzle
    from mosaic.ops.overlap import drizzle_sums  # noqa: PLC0415

    xc, yc = pixel_corners(np.asarray(pixmap, dtype=np.float64), pixfrac=pixfrac)
    return drizzle_sums(xc, yc, [x], shape)[0]


def blot_exact(
    image, pixmap, *, pixfrac: float = 1.0, normalize: bool = True, fillval: float = np.nan
) -> np.ndarray:
    """Exact-area blot: the area-weighted mean of ``image`` under each input pixel.

    Parameters
    ----------
    image : array
        Output-frame image (a region of the mosaic); NaN pixels are left out.
    pixmap : array
        ``(ny, nx, 2)`` positions of the exposure pixels in ``image``'s pixel frame.
    pixfrac : float
        Linear fraction of the exposure pixel integrated over (1: the whole pixel).
    normalize : bool
        True: divide by the area actually covered by finite image pixels (the mean of what is
        there). False: divide by the whole quadrilateral's area, giving exactly ``D^T y``, the
        transpose of :func:`drizzle_linear` (and of drizzle's square kernel).
    fillval : float
        Value of exposure pixels that no finite image pixel overlaps (``normalize=True``).

    Returns
    -------
    numpy.ndarray
        float64 array of the pixel map's shape.
    """
    _array_module(image)
    pixfrac = _check_pixfrac(pixfrac)
    from mosaic.ops.overlap import blot_sums  # noqa: PLC0415

    xc, yc = pixel_corners(np.asarray(pixmap, dtype=np.float64), pixfrac=pixfrac)
    num, den, jaco = blot_sums(xc, yc, image)
    with np.errstate(divide="ignore", invalid="ignore"):
        if normalize:
            return np.where(den != 0, num / den, fillval)
        return np.where(jaco != 0, num / jaco, 0.0)


def blot_interp(image, pixmap, *, interp: str = "poly5", fillval: float = np.nan) -> np.ndarray:
    """Drizzle's interpolating blot: ``image`` interpolated at each exposure pixel's position.

    Parameters
    ----------
    image : array
        Output-frame image (a region of the mosaic).
    pixmap : array
        ``(ny, nx, 2)`` positions of the exposure pixels in ``image``'s pixel frame; give the
        region a halo of :data:`INTERPOLATION_HALO` pixels so that points near its edges
        interpolate as they would on the whole mosaic.
    interp : str
        One of :data:`INTERPOLATIONS`.
    fillval : float
        Value of pixels that fall off the image.

    Returns
    -------
    numpy.ndarray
        float32 array of the pixel map's shape.
    """
    if interp not in INTERPOLATIONS:
        msg = f"interp {interp!r} is not supported; expected one of {INTERPOLATIONS}"
        raise ValueError(msg)
    pixmap = np.asarray(pixmap, dtype=np.float64)
    finite = np.isfinite(pixmap).all(axis=-1)
    # drizzle's tblot refuses NaN positions: blot the finite ones, fill the rest
    pm = np.where(finite[..., None], pixmap, -1e6)
    out = blot_image(np.asarray(image, dtype=np.float32), pm, fillval=float(fillval), iscale=1.0, interp=interp)
    out[~finite] = fillval
    return out


@algorithm("resampling")
def blot(image, pixmap, *, method: str = DEFAULT_BLOT, interp: str = "poly5", fillval: float = np.nan) -> np.ndarray:
    """Blot an output-frame image onto exposure pixels, by ``method`` (``"exact"`` or ``"interp"``)."""
    if method == "exact":
        return blot_exact(image, pixmap, fillval=fillval)
    if method == "interp":
        return blot_interp(image, pixmap, interp=interp, fillval=fillval)
    msg = f"blot method {method!r} is not supported; expected one of {BLOT_METHODS}"
    raise ValueError(msg)
