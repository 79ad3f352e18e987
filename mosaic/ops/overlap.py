"""Exact overlap areas of input pixels with output pixels, as compiled kernels.

Drizzle's square kernel spreads an input pixel over the output pixels its quadrilateral
overlaps, in proportion to the overlap areas ``a_ij``; the linear drizzle ``D`` and its
transpose, the exact-area blot ``D^T``, are sums over the same overlaps. This module computes
them on the fly, pixel by pixel, as drizzle's C code does (its ``boxer`` sums, for each output
pixel, the signed areas between each edge of the quadrilateral and the pixel's bottom; here
each edge is clipped once per output column, see :func:`_overlaps`), so no overlap matrix is
ever stored: a pass costs a fraction of a microsecond per input pixel and no memory beyond its
inputs and outputs.

Kernels take the corners of every input pixel (:func:`mosaic.ops.pixmap.pixel_corners`, shape
``(4, ny, nx)`` each for x and y, in output pixels) and plain NumPy arrays; they release the GIL,
so threaded dask workers run them side by side.

- :func:`blot_sums`: ``sum_j a_ij y_j`` and ``sum_j a_ij [y_j finite]`` per input pixel, and the
  quadrilateral areas ``J_i`` (drizzle's Jacobian).
- :func:`drizzle_sums`: ``sum_i (a_ij / J_i)^p x_i`` on the output, for several planes ``x`` at
  once, each with its power ``p`` (1 for values, 2 for their variances).
- :mod:`mosaic.ops.correction` uses the same areas in one pass that blots, corrects and drizzles
  back (a UPDC correction pass).
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["blot_sums", "corners", "drizzle_sums"]

_JIT = {"nogil": True, "cache": True}


@numba.njit(**_JIT)
def _nint(x):
    """drizzle's ``nintd``: round half away from zero."""
    if x >= 0.0:
        return int(np.floor(x + 0.5))
    return -int(np.floor(0.5 - x))


@numba.njit(inline="always", **_JIT)
def _crossing_area(w, a, c):
    """Area under ``min(max(y, 0), 1)`` for ``y`` linear from ``a`` to ``c`` over a width ``w``,
    for a segment that crosses the row ``0 < y < 1`` somewhere (``max(a, c) > 0``,
    ``min(a, c) < 1``). Each case splits at the crossings by their fractions of the width, so a
    near-level segment loses no precision."""
    if a < c:
        lo, hi = a, c
    else:
        lo, hi = c, a
    if lo >= 0.0:
        if hi <= 1.0:
            return w * 0.5 * (a + c)
        return w * (0.5 * (1.0 - lo) * (1.0 + lo) + (hi - 1.0)) / (hi - lo)
    if hi <= 1.0:
        return w * 0.5 * hi * hi / (hi - lo)
    return w * (hi - 0.5) / (hi - lo)


@numba.njit(inline="always", **_JIT)
def _edge_areas(xa, ya, xb, yb, ni, nj, low, acc):
    """Add one edge's signed areas to the box's pixels ``acc`` (row-major, ``nj`` x ``ni``).

    Coordinates are relative to the box's lower-left corner: column ``c`` spans ``[c, c + 1]``
    and row ``r`` spans ``[r, r + 1]``. Per column the edge crosses, the piece of it inside the
    column adds its width (signed by its direction, as drizzle's ``sgarea``) to every row wholly
    below it, and its clipped area to the rows it crosses. ``low`` tracks, per column, how far
    down the quadrilateral reaches there.
    """
    dx = xb - xa
    if dx == 0.0:
        return
    if dx < 0.0:
        sgn, xlo, xhi = -1.0, xb, xa
    else:
        sgn, xlo, xhi = 1.0, xa, xb
    slope = (yb - ya) / dx
    for c in range(max(int(np.floor(xlo)), 0), min(int(np.ceil(xhi)), ni)):
        cl = max(xlo, float(c))
        cr = min(xhi, c + 1.0)
        if cr <= cl:
            continue
        yl = ya + slope * (cl - xa)
        yr = ya + slope * (cr - xa)
        w = sgn * (cr - cl)
        lo = min(yl, yr)
        hi = max(yl, yr)
        low[c] = min(low[c], lo)
        below = min(max(int(np.floor(lo)), 0), nj)
        for r in range(below):
            acc[r * ni + c] += w
        for r in range(below, min(max(int(np.ceil(hi)), 0), nj)):
            acc[r * ni + c] += _crossing_area(w, yl - r, yr - r)


@numba.njit(inline="always", **_JIT)
def _overlaps(x0, y0, x1, y1, x2, y2, x3, y3, i0, ni, j0, nj, low, acc):
    """Signed overlaps of the quadrilateral with the ``nj`` x ``ni`` output pixels of its box
    from ``(j0, i0)``, into ``acc[:nj * ni]`` (row-major).

    A polygon's signed area is the sum over its edges of the signed area between each edge and
    a base line; drizzle's ``boxer`` takes that sum for every output pixel, with a clipped
    segment per pixel and edge. Here each edge is clipped once per column it crosses and its
    share goes to all of the column's rows at once: the same areas within rounding (2e-16 of a
    pixel against exact rational clipping) in 0.6 of the time (benchmarks/README.md, round 8).
    Working relative to the
    box keeps the coordinates small, as boxer's per-pixel shift does. Pixels outside the
    quadrilateral's reach in their column are exactly 0 (their edge shares cancel only to
    rounding).
    """
    ox = i0 - 0.5
    oy = j0 - 0.5
    x0, x1, x2, x3 = x0 - ox, x1 - ox, x2 - ox, x3 - ox
    y0, y1, y2, y3 = y0 - oy, y1 - oy, y2 - oy, y3 - oy
    for c in range(ni):
        low[c] = np.inf
    for k in range(ni * nj):
        acc[k] = 0.0
    _edge_areas(x0, y0, x1, y1, ni, nj, low, acc)
    _edge_areas(x1, y1, x2, y2, ni, nj, low, acc)
    _edge_areas(x2, y2, x3, y3, ni, nj, low, acc)
    _edge_areas(x3, y3, x0, y0, ni, nj, low, acc)
    for c in range(ni):
        # rows at or above the quadrilateral's top in a column were never added to (exactly 0);
        # rows wholly below its bottom hold the shares of its upper and lower edges, which cancel
        # only to rounding: set to 0. (A column it misses has ``low`` inf: nothing added there.)
        lc = low[c]
        if lc >= 1.0:
            for r in range(int(np.floor(lc)) if lc < nj else nj):
                acc[r * ni + c] = 0.0


@numba.njit(**_JIT)
def _all_finite(x0, y0, x1, y1, x2, y2, x3, y3):
    return (
        np.isfinite(x0) and np.isfinite(x1) and np.isfinite(x2) and np.isfinite(x3)
        and np.isfinite(y0) and np.isfinite(y1) and np.isfinite(y2) and np.isfinite(y3)
    )


@numba.njit(**_JIT)
def _jacobian(x0, y0, x1, y1, x2, y2, x3, y3):
    return 0.5 * ((x1 - x3) * (y0 - y2) - (x0 - x2) * (y1 - y3))


@numba.njit(**_JIT)
def _row_padded(p, j, i, c):
    """``p[j, i, c]`` with a row of linear extrapolation above and below (``0 <= i < nx``)."""
    ny = p.shape[0]
    if j < 0:
        return 2.0 * p[0, i, c] - p[1, i, c]
    if j >= ny:
        return 2.0 * p[ny - 1, i, c] - p[ny - 2, i, c]
    return p[j, i, c]


@numba.njit(**_JIT)
def _padded(p, j, i, c):
    """``p[j, i, c]`` padded by linear extrapolation on every side: rows first, then columns."""
    nx = p.shape[1]
    if i < 0:
        return 2.0 * _row_padded(p, j, 0, c) - _row_padded(p, j, 1, c)
    if i >= nx:
        return 2.0 * _row_padded(p, j, nx - 1, c) - _row_padded(p, j, nx - 2, c)
    return _row_padded(p, j, i, c)


@numba.njit(**_JIT)
def _edge_pixel_corners(p, a, b, d, j, i, xc, yc):
    """Pixel ``(j, i)``'s corners where a neighbour lies off the map (padded by extrapolation);
    ``a``, ``b``, ``d``: the weights of the centre, the neighbours across and along, the diagonal."""
    for k in range(4):
        sx = -1 if k == 0 or k == 3 else 1
        sy = 1 if k < 2 else -1
        for c in range(2):
            centre = p[j, i, c]
            across = _padded(p, j, i + sx, c)
            along = _padded(p, j + sy, i, c)
            diagonal = _padded(p, j + sy, i + sx, c)
            v = a * centre + b * (across + along) + d * diagonal
            if c == 0:
                xc[k, j, i] = v
            else:
                yc[k, j, i] = v


@numba.njit(**_JIT)
def _corners_kernel(p, h, xc, yc):
    # corner k of a pixel lies towards sx = -1 (k = 0, 3) or +1 (k = 1, 2) in x and sy = +1
    # (k = 0, 1) or -1 (k = 2, 3) in y: a weighted mean of the pixel's centre, its neighbours
    # across (sx) and along (sy), and the diagonal one. Interior pixels take straight-line code
    # (no test of the edges per corner: 10.4 -> 7.0 ns a pixel), the edge rows and columns the
    # padded reads; both with the same operations in the same order.
    ny, nx = p.shape[0], p.shape[1]
    a = (1 - h) * (1 - h)
    b = h * (1 - h)
    d = h * h
    for j in range(ny):
        if j == 0 or j == ny - 1:
            for i in range(nx):
                _edge_pixel_corners(p, a, b, d, j, i, xc, yc)
            continue
        _edge_pixel_corners(p, a, b, d, j, 0, xc, yc)
        for i in range(1, nx - 1):
            for c in range(2):
                centre = p[j, i, c]
                left, right = p[j, i - 1, c], p[j, i + 1, c]
                up, down = p[j + 1, i, c], p[j - 1, i, c]
                v0 = a * centre + b * (left + up) + d * p[j + 1, i - 1, c]
                v1 = a * centre + b * (right + up) + d * p[j + 1, i + 1, c]
                v2 = a * centre + b * (right + down) + d * p[j - 1, i + 1, c]
                v3 = a * centre + b * (left + down) + d * p[j - 1, i - 1, c]
                out = xc if c == 0 else yc
                out[0, j, i] = v0
                out[1, j, i] = v1
                out[2, j, i] = v2
                out[3, j, i] = v3
        if nx > 1:
            _edge_pixel_corners(p, a, b, d, j, nx - 1, xc, yc)


def corners(pixmap: np.ndarray, pixfrac: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """:func:`mosaic.ops.pixmap.pixel_corners` compiled: the same numbers to the bit, in one pass.

    The NumPy formulation makes a dozen temporaries of the map's size; this is one loop over the
    pixels with no temporaries (about a fifth of the time; it runs once per pair and pass).
    """
    p = np.ascontiguousarray(pixmap, dtype=np.float64)
    ny, nx = p.shape[:2]
    xc = np.empty((4, ny, nx))
    yc = np.empty((4, ny, nx))
    _corners_kernel(p, 0.5 * float(pixfrac), xc, yc)
    return xc, yc


# The kernels keep a pixel's corners in scalars (registers), not in small arrays: a third
# faster. They walk the input in blocks of _BLOCK x _BLOCK pixels, whose overlaps land in a
# patch of the output small enough to stay in the core's cache (a row of a rotated cut-out
# sweeps across the whole window). Every kernel walks in the same order, so sums over the same
# pixels are the same to the bit whichever kernel takes them.

#: input pixels along each side of the blocks the kernels walk
_BLOCK = 64


@numba.njit(**_JIT)
def _box(x0, y0, x1, y1, x2, y2, x3, y3, ny_out, nx_out):
    """The output pixels a quadrilateral can overlap (drizzle's nintd), clipped to the output."""
    i0 = max(_nint(min(min(x0, x1), min(x2, x3))), 0)
    i1 = min(_nint(max(max(x0, x1), max(x2, x3))), nx_out - 1)
    j0 = max(_nint(min(min(y0, y1), min(y2, y3))), 0)
    j1 = min(_nint(max(max(y0, y1), max(y2, y3))), ny_out - 1)
    return i0, max(i1 - i0 + 1, 0), j0, max(j1 - j0 + 1, 0)


@numba.njit(inline="always", **_JIT)
def _pixel_overlaps(xc, yc, j, i, ny_out, nx_out, low, acc):
    """Input pixel ``(j, i)``'s overlaps with its box of output pixels, into ``acc`` (a new,
    larger scratch where the box outgrows it). Returns ``(finite, jac, i0, ni, j0, nj, low,
    acc)``; where a corner is not finite, ``finite`` is False and nothing is computed."""
    x0, x1, x2, x3 = xc[0, j, i], xc[1, j, i], xc[2, j, i], xc[3, j, i]
    y0, y1, y2, y3 = yc[0, j, i], yc[1, j, i], yc[2, j, i], yc[3, j, i]
    if not _all_finite(x0, y0, x1, y1, x2, y2, x3, y3):
        return False, 0.0, 0, 0, 0, 0, low, acc
    jac = _jacobian(x0, y0, x1, y1, x2, y2, x3, y3)
    i0, ni, j0, nj = _box(x0, y0, x1, y1, x2, y2, x3, y3, ny_out, nx_out)
    if ni * nj > acc.shape[0]:
        low, acc = np.empty(ni * nj), np.empty(ni * nj)
    _overlaps(x0, y0, x1, y1, x2, y2, x3, y3, i0, ni, j0, nj, low, acc)
    return True, jac, i0, ni, j0, nj, low, acc


@numba.njit(**_JIT)
def _blot_kernel(xc, yc, image, valid, num, den, jaco):
    ny_out, nx_out = image.shape
    ny, nx = xc.shape[1], xc.shape[2]
    low, acc = np.empty(16), np.empty(16)
    for jb in range(0, ny, _BLOCK):
        for ib in range(0, nx, _BLOCK):
            for j in range(jb, min(jb + _BLOCK, ny)):
                for i in range(ib, min(ib + _BLOCK, nx)):
                    finite, jac, i0, ni, j0, nj, low, acc = _pixel_overlaps(xc, yc, j, i, ny_out, nx_out, low, acc)
                    jaco[j, i] = jac
                    if not finite:
                        continue
                    s = 0.0
                    c = 0.0
                    k = 0
                    for jj in range(j0, j0 + nj):
                        for ii in range(i0, i0 + ni):
                            a = acc[k]
                            k += 1
                            if a != 0.0 and valid[jj, ii]:
                                s += a * image[jj, ii]
                                c += a
                    num[j, i] = s
                    den[j, i] = c


@numba.njit(**_JIT)
def _planes_to_add(planes, j, i, use, val):
    """How many planes input pixel ``(j, i)`` adds to, with their indices in ``use`` and values in
    ``val``: tested once a pixel, not once an overlap (NaN and infinities count as 0)."""
    n_use = 0
    for p in range(planes.shape[0]):
        v = planes[p, j, i]
        if v != 0.0 and np.isfinite(v):
            use[n_use] = p
            val[n_use] = v
            n_use += 1
    return n_use


#: most planes :func:`_drizzle_kernel` adds with unrolled code (more take the general loop)
_UNROLLED = 5


@numba.njit(**_JIT)
def _drizzle_kernel(xc, yc, planes, powers, out, mark, covered):
    # ``powers`` is a tuple: its length is known when the kernel is compiled (one version per
    # number of planes), so the unrolled adds below keep only the planes there are. A pixel that
    # adds to every plane (the rule: data, weights and variances are all non-zero on good
    # pixels) takes them, with no loop over the planes and no look-up of each plane's power:
    # 5 planes at a pixel-scale ratio of 0.5, 375 -> 300 ns an input pixel.
    n_planes = len(powers)
    ny_out, nx_out = out.shape[1], out.shape[2]
    ny, nx = xc.shape[1], xc.shape[2]
    use = np.empty(n_planes, dtype=np.int64)
    val = np.empty(n_planes)
    sq = np.zeros(_UNROLLED, dtype=np.bool_)
    for p in range(min(n_planes, _UNROLLED)):
        sq[p] = powers[p] == 2
    sq0, sq1, sq2, sq3, sq4 = sq[0], sq[1], sq[2], sq[3], sq[4]
    low, acc = np.empty(16), np.empty(16)
    for jb in range(0, ny, _BLOCK):
        for ib in range(0, nx, _BLOCK):
            for j in range(jb, min(jb + _BLOCK, ny)):
                for i in range(ib, min(ib + _BLOCK, nx)):
                    n_use = _planes_to_add(planes, j, i, use, val)
                    if n_use == 0:  # adds nothing anywhere: no overlaps to compute
                        continue
                    finite, jac, i0, ni, j0, nj, low, acc = _pixel_overlaps(xc, yc, j, i, ny_out, nx_out, low, acc)
                    if not finite or jac == 0.0:
                        continue
                    marks = mark and use[0] == 0  # the first plane adds here
                    unrolled = n_planes <= _UNROLLED and n_use == n_planes
                    v0 = val[0]
                    v1 = val[1] if n_planes > 1 else 0.0
                    v2 = val[2] if n_planes > 2 else 0.0
                    v3 = val[3] if n_planes > 3 else 0.0
                    v4 = val[4] if n_planes > 4 else 0.0
                    k = 0
                    for jj in range(j0, j0 + nj):
                        for ii in range(i0, i0 + ni):
                            a = acc[k]
                            k += 1
                            if a == 0.0:
                                continue
                            if marks:
                                covered[jj, ii] = True
                            f = a / jac
                            f2 = f * f
                            if unrolled:
                                out[0, jj, ii] += (f2 if sq0 else f) * v0
                                if n_planes > 1:
                                    out[1, jj, ii] += (f2 if sq1 else f) * v1
                                if n_planes > 2:
                                    out[2, jj, ii] += (f2 if sq2 else f) * v2
                                if n_planes > 3:
                                    out[3, jj, ii] += (f2 if sq3 else f) * v3
                                if n_planes > 4:
                                    out[4, jj, ii] += (f2 if sq4 else f) * v4
                            else:
                                for q in range(n_use):
                                    p = use[q]
                                    out[p, jj, ii] += (f if powers[p] == 1 else f2) * val[q]


def _corners(xc, yc):
    xc = np.ascontiguousarray(xc, dtype=np.float64)
    yc = np.ascontiguousarray(yc, dtype=np.float64)
    if xc.ndim != 3 or xc.shape[0] != 4 or yc.shape != xc.shape:
        msg = f"pixel corners have shapes {xc.shape} and {yc.shape}; expected two arrays of shape (4, ny, nx)"
        raise ValueError(msg)
    return xc, yc


def _powers(powers, n):
    powers = np.ones(n, dtype=np.int64) if powers is None else np.asarray(powers, dtype=np.int64)
    if powers.shape != (n,) or not np.isin(powers, (1, 2)).all():
        msg = f"powers {powers.tolist()} are not valid; expected one power, 1 or 2, per plane ({n})"
        raise ValueError(msg)
    return powers


def _stack(planes, shape):
    # one C-contiguous float64 array as it is (read only), others stacked into a new one; the
    # kernels skip non-finite values themselves (no cleaned copy)
    if isinstance(planes, np.ndarray) and planes.ndim == 3 and planes.dtype == np.float64 and planes.flags.c_contiguous:
        stack = planes
    else:
        stack = np.stack([np.asarray(p, dtype=np.float64) for p in planes]) if len(planes) else np.zeros((0, *shape))
    if stack.shape[1:] != tuple(shape):
        msg = f"planes have shape {stack.shape[1:]}; expected the corners' {tuple(shape)}"
        raise ValueError(msg)
    return stack


def _output(out, shape):
    if out is None:
        return np.zeros(shape, dtype=np.float64)
    if out.shape != shape or out.dtype != np.float64 or not out.flags.c_contiguous or not out.flags.writeable:
        msg = f"out is a {out.dtype} array of shape {out.shape}; expected a writeable C-contiguous float64 array of shape {shape}"
        raise ValueError(msg)
    return out


def blot_sums(xc, yc, image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Area-weighted sums of ``image`` under every input pixel.

    Parameters
    ----------
    xc, yc : numpy.ndarray
        ``(4, ny, nx)`` corners of the input pixels in ``image``'s pixel frame.
    image : numpy.ndarray
        Output-frame image; NaN pixels (and parts of a pixel off the image) are left out.

    Returns
    -------
    num, den, jaco : numpy.ndarray
        ``(ny, nx)`` float64: ``sum_j a_ij image_j`` over finite pixels, ``sum_j a_ij`` over the
        same pixels, and the signed area ``J_i`` of each pixel's quadrilateral (0 where a
        corner is not finite; there ``num`` and ``den`` are 0).
    """
    xc, yc = _corners(xc, yc)
    image = np.asarray(image, dtype=np.float64)
    valid = np.isfinite(image)
    img = np.ascontiguousarray(np.where(valid, image, 0.0))
    shape = xc.shape[1:]
    num, den, jaco = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    _blot_kernel(xc, yc, img, np.ascontiguousarray(valid), num, den, jaco)
    return num, den, jaco


def drizzle_sums(xc, yc, planes, shape, *, powers=None, out=None, covered=None) -> np.ndarray:
    """``sum_i (a_ij / J_i)^p x_i`` on an output of ``shape``, for each plane ``x``.

    Parameters
    ----------
    xc, yc : numpy.ndarray
        ``(4, ny, nx)`` corners of the input pixels in the output frame.
    planes : sequence of numpy.ndarray
        Input-frame ``(ny, nx)`` planes ``x``; NaN counts as 0. A C-contiguous float64
        ``(n, ny, nx)`` array is read as it is (:func:`mosaic.ops.drizzle_planes.drizzle_planes`
        makes one); other inputs are stacked into a new one.
    shape : tuple of int
        Output shape ``(ny_out, nx_out)``; overlaps off it are dropped.
    powers : sequence of int, optional
        Power of ``a_ij / J_i`` for each plane: 1 (the linear drizzle ``D``) or 2 (``D²``,
        for variances). All 1 by default.
    out : numpy.ndarray, optional
        A C-contiguous float64 ``(len(planes), ny_out, nx_out)`` array to add the sums into (a
        running sum over several inputs, with no output of its own to allocate and add).
    covered : numpy.ndarray, optional
        A C-contiguous bool ``(ny_out, nx_out)`` array, set True where the first plane adds
        something (an overlap of a pixel with a finite non-zero value there): where this input's
        own ``D x`` of that plane is non-zero, even when ``out`` holds other inputs' sums too.

    Returns
    -------
    numpy.ndarray
        ``(len(planes), ny_out, nx_out)`` float64: ``out`` when given.
    """
    xc, yc = _corners(xc, yc)
    stack = _stack(planes, xc.shape[1:])
    powers = _powers(powers, len(stack))
    out = _output(out, (len(stack), int(shape[0]), int(shape[1])))
    if covered is not None and (covered.shape != out.shape[1:] or covered.dtype != np.bool_ or not covered.flags.c_contiguous):
        msg = f"covered is a {covered.dtype} array of shape {covered.shape}; expected a C-contiguous bool array of shape {out.shape[1:]}"
        raise ValueError(msg)
    if len(stack) == 0:  # nothing to add (and no kernel for a tuple of no powers)
        return out
    _drizzle_kernel(xc, yc, stack, tuple(int(p) for p in powers), out, covered is not None, np.zeros((1, 1), dtype=bool) if covered is None else covered)
    return out
