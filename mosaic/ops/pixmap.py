"""Pixel maps: where each detector pixel lands on the output grid, as plain arrays.

This module is the boundary between WCS objects and the drizzle operators: functions here take
WCSs and return arrays; every operator in :mod:`mosaic.ops.drizzle` takes only those arrays (the
habit of the ``drizzle`` package, whose ``calc_pixmap`` we follow call for call so that our maps
equal its maps bit for bit). With ``compiled=True`` a map between an exposure's TAN-SIP frame
and a TAN grid is one compiled pass instead (:mod:`mosaic.ops.tan_sip`: a fifth of astropy's
time, equal to its map to about 1e-8 pixel, the rounding of astropy's degrees), for processes
that run Numba kernels anyway (UPDC's pair tasks): loading Numba costs a process about 0.6 s,
more than a small drizzle's maps.

A *pixel map* of an exposure region is an array of shape ``(ny, nx, 2)``: ``pixmap[j, i]`` is the
``(x, y)`` position, in output pixels, of the centre of exposure pixel ``(region y start + j,
region x start + i)``. Positions are 0-based with pixel ``k`` spanning ``[k - 0.5, k + 0.5]``.

To drizzle only the part of an exposure that lands on one output tile, a graph first maps a
coarse *lattice* of exposure positions (:func:`lattice_pixmap`, cheap: one WCS evaluation per
``step`` pixels) and asks :func:`cutout_for_region` for the exposure pixels that land on the
tile grown by a margin. The exact per-pixel map of that cut-out (:func:`calc_pixmap`) is then
computed inside the task that drizzles it.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Cutout",
    "Lattice",
    "calc_pixmap",
    "cutout_for_region",
    "cutout_rows_for_region",
    "lattice_pixmap",
    "pixel_corners",
    "transform",
]

log = logging.getLogger(__name__)

#: default spacing (exposure pixels) of the lattice used to find cut-outs
LATTICE_STEP = 32

#: exposure pixels added around a cut-out beyond those that can reach the region: the pixels
#: at a cut-out's edge are treated differently by drizzle's corner interpolation, so they must
#: never be ones that reach the region (unless the edge is the detector's own edge)
CUTOUT_PAD = 3


def calc_pixmap(
    wcs_from, wcs_to, region=None, *, shape=None, offset=(0, 0), columns=None, halo_rows: int | None = None,
    compiled: bool = False,
) -> np.ndarray:
    """Pixel map of (a region of) an exposure onto an output frame.

    Parameters
    ----------
    wcs_from : WCS
        The exposure's WCS (distortion included); anything with ``pixel_to_world_values``.
    wcs_to : WCS
        The output frame's WCS; anything with ``world_to_pixel_values``.
    region : tuple of slice, optional
        ``(y, x)`` slices of the exposure to map; the whole exposure by default.
    shape : tuple of int, optional
        ``(ny, nx)`` of the exposure, needed when ``region`` is None and ``wcs_from`` has no
        ``array_shape``.
    offset : (x0, y0)
        Output-pixel origin subtracted from the map (the start of a tile), so that the map is
        in the tile's own pixel frame. Integers keep the subtraction exact.
    columns : tuple of numpy.ndarray, optional
        ``(lo, hi)``: per row of ``region``, the first and last detector column needed
        (:class:`Cutout`). Only those are mapped, with the columns needed within
        ``halo_rows`` rows and one more on each side (what drizzle's corner interpolation
        and its row bands read); the rest of the map is NaN. A rotated cut-out's bounding
        box holds up to twice the pixels that reach its region.
    halo_rows : int, optional
        Rows around a row whose needed columns it maps too (with ``columns``):
        :data:`SPAN_HALO_ROWS` by default, for drizzle's row bands; 1 is enough for the pixel
        corners alone (:func:`pixel_corners`).
    compiled : bool
        Map TAN-SIP onto TAN frames with :mod:`mosaic.ops.tan_sip` (see :func:`transform`).

    Returns
    -------
    numpy.ndarray
        ``(ny, nx, 2)`` float64 map of output ``(x, y)`` positions.
    """
    if region is None:
        shape = shape if shape is not None else wcs_from.array_shape
        if shape is None:
            msg = "calc_pixmap needs the exposure shape: pass shape=(ny, nx) or a region"
            raise ValueError(msg)
        region = (slice(0, shape[0]), slice(0, shape[1]))
    ys, xs = region
    if columns is None:
        pixmap = _map_box(wcs_from, wcs_to, ys, xs, compiled)
    else:
        halo = SPAN_HALO_ROWS if halo_rows is None else int(halo_rows)
        c0, c1 = _row_columns(ys, xs, columns, halo)
        fast = _compiled_map(wcs_from, wcs_to) if compiled else None
        if fast is not None:  # straight into the map, the offset with it: the same numbers to the bit
            return fast.rows(ys.start, xs.start, c0, c1, xs.stop - xs.start, offset)
        pixmap = _map_rows(wcs_from, wcs_to, ys, xs, c0, c1)
    if offset[0] or offset[1]:
        pixmap[..., 0] -= offset[0]
        pixmap[..., 1] -= offset[1]
    return pixmap


def transform(wcs_from, wcs_to, x, y, *, compiled: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Positions in ``wcs_to``'s pixels of ``wcs_from``'s pixels ``(x, y)`` (0-based).

    The same two astropy calls as ``drizzle.utils.calc_pixmap``; with ``compiled``, the compiled
    TAN-SIP map where both frames qualify (:func:`mosaic.ops.tan_sip.tan_sip_map`). Per pixel
    either way: a subset of pixels maps to the same numbers as the whole.
    """
    fast = _compiled_map(wcs_from, wcs_to) if compiled else None
    if fast is not None:
        return fast(x, y)
    ox, oy = wcs_to.world_to_pixel_values(*wcs_from.pixel_to_world_values(x, y))
    return np.asarray(ox, dtype=np.float64), np.asarray(oy, dtype=np.float64)


def _map_box(wcs_from, wcs_to, ys: slice, xs: slice, compiled: bool = False) -> np.ndarray:
    y, x = np.mgrid[ys.start : ys.stop, xs.start : xs.stop].astype(np.float64)
    # without compiled: the same two calls as drizzle.utils.calc_pixmap, its map bit for bit
    return np.dstack(transform(wcs_from, wcs_to, x, y, compiled=compiled))


#: rows around a row whose needed columns the row maps too: drizzle's row bands (32 rows, see
#: :func:`mosaic.ops.drizzle.drizzle_tile`) and its corner interpolation (one row) read them
SPAN_HALO_ROWS = 34


def _compiled_map(wcs_from, wcs_to):
    from mosaic.ops.tan_sip import tan_sip_map  # noqa: PLC0415  (Numba: only where asked)

    return tan_sip_map(wcs_from, wcs_to)


def _row_columns(ys: slice, xs: slice, columns, halo_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of the region, the first and last column to map (region-relative, inclusive):
    the columns that the rows within ``halo_rows`` need, and one more on each side."""
    lo, hi = (np.asarray(c, dtype=np.int64) for c in columns)
    ny = ys.stop - ys.start
    if lo.shape != (ny,) or hi.shape != (ny,):
        msg = f"columns have shapes {lo.shape} and {hi.shape}; expected one (lo, hi) per row of the region ({ny},)"
        raise ValueError(msg)
    c0, c1 = lo.copy(), hi.copy()
    for d in range(1, min(halo_rows, ny - 1) + 1):
        np.minimum(c0[d:], lo[:-d], out=c0[d:])
        np.minimum(c0[:-d], lo[d:], out=c0[:-d])
        np.maximum(c1[d:], hi[:-d], out=c1[d:])
        np.maximum(c1[:-d], hi[d:], out=c1[:-d])
    return np.maximum(c0 - 1, xs.start) - xs.start, np.minimum(c1 + 1, xs.stop - 1) - xs.start


def _map_rows(wcs_from, wcs_to, ys: slice, xs: slice, c0, c1) -> np.ndarray:
    ny, nx = ys.stop - ys.start, xs.stop - xs.start
    n = np.maximum(c1 - c0 + 1, 0)
    row = np.repeat(np.arange(ny), n)
    col = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n) + np.repeat(c0, n)
    # one call for all the pixels: the same per-pixel arithmetic as a whole box, bit for bit
    ox, oy = transform(wcs_from, wcs_to, (col + xs.start).astype(np.float64), (row + ys.start).astype(np.float64))
    pixmap = np.full((ny, nx, 2), np.nan)
    pixmap[row, col, 0] = ox
    pixmap[row, col, 1] = oy
    return pixmap


@dataclass(frozen=True)
class Cutout:
    """The exposure pixels that reach an output region, row by row.

    Attributes
    ----------
    region : tuple of slice
        ``(y, x)`` bounding box of the pixels, in the exposure.
    lo, hi : numpy.ndarray
        Per row of ``region``, the first and last detector column needed (``lo > hi`` for none).
    """

    region: tuple[slice, slice]
    lo: np.ndarray
    hi: np.ndarray


@dataclass(frozen=True)
class Lattice:
    """A coarse pixel map: exposure positions ``ys x xs`` and where they land (``xy``).

    Attributes
    ----------
    ys, xs : numpy.ndarray
        Exposure pixel rows and columns of the lattice (they include the first and last).
    xy : numpy.ndarray
        ``(len(ys), len(xs), 2)`` output ``(x, y)`` positions.
    shape : tuple of int
        ``(ny, nx)`` of the exposure.
    """

    ys: np.ndarray
    xs: np.ndarray
    xy: np.ndarray
    shape: tuple[int, int]

    def cell_bounds(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Output-frame bounding boxes ``(x0, x1, y0, y1)`` of the lattice cells (made once: a
        run asks for them once per tile the exposure may land on)."""
        return self._bounds

    @functools.cached_property
    def _bounds(self):
        corners = np.stack(
            [self.xy[:-1, :-1], self.xy[:-1, 1:], self.xy[1:, :-1], self.xy[1:, 1:]], axis=0
        )
        with np.errstate(invalid="ignore"):
            lo = np.min(corners, axis=0)
            hi = np.max(corners, axis=0)
        lo.flags.writeable = hi.flags.writeable = False  # shared by every caller
        return lo[..., 0], hi[..., 0], lo[..., 1], hi[..., 1]


def lattice_pixmap(wcs_from, wcs_to, shape, *, step: int = LATTICE_STEP) -> Lattice:
    """Map a lattice of exposure pixels (every ``step`` pixels, edges included) to the output.

    Parameters
    ----------
    wcs_from, wcs_to : WCS
        Exposure and output WCSs.
    shape : tuple of int
        ``(ny, nx)`` of the exposure.
    step : int
        Lattice spacing in exposure pixels.
    """
    if int(step) < 1:
        msg = f"lattice step must be a positive integer; got {step!r}"
        raise ValueError(msg)
    ny, nx = (int(s) for s in shape)
    ys = np.unique(np.append(np.arange(0, ny, int(step)), ny - 1))
    xs = np.unique(np.append(np.arange(0, nx, int(step)), nx - 1))
    y, x = np.meshgrid(ys.astype(np.float64), xs.astype(np.float64), indexing="ij")
    ox, oy = wcs_to.world_to_pixel_values(*wcs_from.pixel_to_world_values(x, y))
    return Lattice(ys=ys, xs=xs, xy=np.dstack([ox, oy]), shape=(ny, nx))


def _cells_meeting(lattice: Lattice, region: tuple[slice, slice], margin: float):
    """Boolean map of the lattice cells whose mapped bounding box meets ``region`` grown by ``margin``; None if none does."""
    ys, xs = region
    rx0, rx1 = xs.start - 0.5 - margin, xs.stop - 0.5 + margin
    ry0, ry1 = ys.start - 0.5 - margin, ys.stop - 0.5 + margin
    x0, x1, y0, y1 = lattice.cell_bounds()
    with np.errstate(invalid="ignore"):
        hit = (x1 >= rx0) & (x0 <= rx1) & (y1 >= ry0) & (y0 <= ry1)
    return hit if hit.any() else None


def cutout_for_region(
    lattice: Lattice, region: tuple[slice, slice], *, margin: float, pad: int = CUTOUT_PAD
) -> tuple[slice, slice] | None:
    """The exposure pixels whose centres land on an output region grown by ``margin``.

    Parameters
    ----------
    lattice : Lattice
        Coarse map of the exposure (:func:`lattice_pixmap`).
    region : tuple of slice
        ``(y, x)`` slices of the output frame (a tile's core).
    margin : float
        Output pixels added on every side of the region: the reach of the drizzle kernel
        (:func:`mosaic.ops.drizzle.kernel_radius`) plus a safety pixel.
    pad : int
        Exposure pixels added on every side of the cut-out (clipped at the detector edges).

    Returns
    -------
    tuple of slice or None
        ``(y, x)`` slices of the exposure, or None where no pixel lands on the region.

    Notes
    -----
    A lattice cell is kept when the bounding box of its four mapped corners meets the grown
    region; every pixel inside a cell maps inside that box up to the curvature of the map
    over one cell (far below a pixel for ``step`` of tens of pixels), which ``margin`` covers.
    """
    hit = _cells_meeting(lattice, region, margin)
    if hit is None:
        return None
    rows = np.flatnonzero(hit.any(axis=1))
    cols = np.flatnonzero(hit.any(axis=0))
    ny, nx = lattice.shape
    ey0 = max(int(lattice.ys[rows[0]]) - pad, 0)
    ey1 = min(int(lattice.ys[rows[-1] + 1]) + 1 + pad, ny)
    ex0 = max(int(lattice.xs[cols[0]]) - pad, 0)
    ex1 = min(int(lattice.xs[cols[-1] + 1]) + 1 + pad, nx)
    return (slice(ey0, ey1), slice(ex0, ex1))


def cutout_rows_for_region(
    lattice: Lattice, region: tuple[slice, slice], *, margin: float, pad: int = CUTOUT_PAD
) -> Cutout | None:
    """The exposure pixels whose centres land on an output region grown by ``margin``, row by row.

    The bounding box is :func:`cutout_for_region`'s; each row also has its own column range,
    from the lattice cells of that row that meet the grown region, grown by ``pad`` rows and
    columns. A cut-out of a detector rotated against the grid needs only these columns
    mapped (:func:`calc_pixmap` with ``columns``).

    Parameters
    ----------
    lattice : Lattice
        Coarse map of the exposure (:func:`lattice_pixmap`).
    region : tuple of slice
        ``(y, x)`` slices of the output frame (a tile's core).
    margin : float
        Output pixels added on every side of the region.
    pad : int
        Exposure pixels added on every side of every row's range (clipped at the detector edges).

    Returns
    -------
    Cutout or None
        None where no pixel lands on the region.
    """
    hit = _cells_meeting(lattice, region, margin)
    if hit is None:
        return None
    ny, nx = lattice.shape
    lo = np.full(ny, nx, dtype=np.int64)
    hi = np.full(ny, -1, dtype=np.int64)
    for i in np.flatnonzero(hit.any(axis=1)):
        cols = np.flatnonzero(hit[i])
        r0, r1 = int(lattice.ys[i]), int(lattice.ys[i + 1]) + 1
        lo[r0:r1] = np.minimum(lo[r0:r1], int(lattice.xs[cols[0]]))
        hi[r0:r1] = np.maximum(hi[r0:r1], int(lattice.xs[cols[-1] + 1]))
    grown_lo, grown_hi = lo.copy(), hi.copy()
    for d in range(1, pad + 1):
        grown_lo[d:] = np.minimum(grown_lo[d:], lo[:-d])
        grown_lo[:-d] = np.minimum(grown_lo[:-d], lo[d:])
        grown_hi[d:] = np.maximum(grown_hi[d:], hi[:-d])
        grown_hi[:-d] = np.maximum(grown_hi[:-d], hi[d:])
    some = grown_hi >= grown_lo
    lo = np.where(some, np.maximum(grown_lo - pad, 0), nx)
    hi = np.where(some, np.minimum(grown_hi + pad, nx - 1), -1)
    rows = np.flatnonzero(some)
    ey0, ey1 = int(rows[0]), int(rows[-1]) + 1
    ex0, ex1 = int(lo[some].min()), int(hi[some].max()) + 1
    return Cutout(region=(slice(ey0, ey1), slice(ex0, ex1)), lo=lo[ey0:ey1], hi=hi[ey0:ey1])


def pixel_corners(pixmap: np.ndarray, *, pixfrac: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Output positions of the corners of every input pixel, as drizzle's square kernel has them.

    The corners of the pixel shrunk by ``pixfrac`` are bilinear interpolations of the pixel
    map between the pixel's centre and its neighbours (linear extrapolation at the edges), in
    drizzle's clockwise order ``(-h, +h), (+h, +h), (+h, -h), (-h, -h)`` with ``h = pixfrac/2``.

    Parameters
    ----------
    pixmap : numpy.ndarray
        ``(ny, nx, 2)`` pixel map.
    pixfrac : float
        Linear fraction of the pixel kept.

    Returns
    -------
    xc, yc : numpy.ndarray
        ``(4, ny, nx)`` corner x and y positions.
    """
    ny, nx = pixmap.shape[:2]
    if ny < 2 or nx < 2:
        msg = f"pixel map of shape {pixmap.shape} is too small; expected at least 2 x 2 pixels"
        raise ValueError(msg)
    # compiled (:func:`mosaic.ops.overlap.corners`); numba is imported where corners are needed
    from mosaic.ops.overlap import corners  # noqa: PLC0415

    return corners(pixmap, pixfrac)
