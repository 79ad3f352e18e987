"""UPDC's forward model and back-projection as tiled graphs: mocks of the exposures, drizzled corrections.

One iteration of UPDC (and of the multi-frame Landweber baseline) needs, for each exposure ``k``
in PSF group ``G`` (exposures that share one PSF),

- the mock ``m_k = D_k^h(B_G f)``: the mosaic ``f`` convolved with the PSF and blotted onto the
  exposure's pixels, and
- the back-projection ``N = sum_G B_G^*(sum_{k in G} D_k(x_k))`` of a per-pixel correction
  ``x_k`` formed from the data ``g_k`` and the mock: ``w (g + s) / (m + s)`` (``"ratio"``,
  Richardson-Lucy with the read-noise pedestal ``s`` of Snyder, Hammoud & White; ``s = 0`` is
  the plain ratio) or ``w (g - m)`` (``"difference"``, Landweber), ``w`` the input weights,
  optionally damped where the data are already fitted within their errors
  (:func:`damping_factor`). Each pair also sums the data residual and the chi-squared against
  the exposures' variances over the pixels it owns.

``D_k`` is the linear drizzle with pixfrac 1 (as :func:`mosaic.ops.drizzle.drizzle_linear`),
``D_k^h`` its exact transpose (as :func:`~mosaic.ops.drizzle.blot_exact`, the default) or
drizzle's interpolating blot. With the exact blot, a correction pass takes each pixel's
overlap areas (drizzle's geometry, compiled: :mod:`mosaic.ops.overlap`) once and uses them at
once: it blots, corrects and drizzles back pixel by pixel (:mod:`mosaic.ops.correction`), so no
overlaps are kept. Every pair of a tile adds into one running sum on the tile's window. Only
the pairs' pixel maps (WCS transformations, the dearer part) are kept by the worker processes
from one pass to the next, within a memory budget (:class:`_GeometryCache`), and let go when
the run ends. Exposures that share a PSF share its convolutions: ``sum_k B^*(x_k) = B^*(sum_k x_k)``.

*Graph.* Driven by the output tiles. For every (exposure, tile) pair where the exposure lands
on the tile, one task reads the tile's *window* of ``B_G f`` (the core grown by :func:`blot_halo`
pixels, gathered from the convolved tiles) and the cut-out of the exposure whose pixels can
reach the core; it mocks those pixels, forms ``x`` and drizzles it onto the core. A pixel near a
tile border is mocked by every tile it reaches (a few rows of repeated work), so no partial
mocks are summed across tiles and a task's memory is one window, one cut-out and their pixel
map -- never a whole exposure or the mosaic. The data residual ``sum_k sum_i w (g - m)^2``
counts each pixel once, in the tile that holds its centre. The same tasks co-add variances with
squared drizzle weights for :mod:`mosaic.coadd.errors`. A tile's pair tasks form a chain, each
adding its share to the running sum of the ones before, so a tile holds one sum at a time and
keeps it on one worker. The graph is written low-level (a key per window, cut-out and pair), so
building it is linear in the number of pairs. Convolutions and updates run on the mosaic's
array module (CuPy chunks on GPU workers); the overlaps are CPU code (compiled with Numba), so
a tile's window comes to the host once and its sums go back to the device once.

*Staging.* Given a folder (``staging=``), ``f``, ``B_G f`` and the tiles' sums are written to
disk tile by tile (:mod:`mosaic.coadd.staging`), and the convolutions and pair windows read the
windows they need back from there; otherwise each waits for the neighbouring tiles in memory.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import math
import operator
import os
import pickle
import threading
from dataclasses import dataclass, field
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph
from drizzle.utils import estimate_pixel_scale_ratio

from mosaic.coadd.convolve import convolve_tiled
from mosaic.coadd.drizzle import _PortableWCS, exposure_cutouts, exposure_wcs
from mosaic.coadd.errors import VARIANCES
from mosaic.coadd.staging import Staged, stage
from mosaic.exceptions import InputError
from mosaic.io.grid import MosaicGrid
from mosaic.ops.convolve import array_module, to_host
from mosaic.ops.correction import correction_pass
from mosaic.ops.drizzle import (
    BLOT_METHODS,
    INTERPOLATION_HALO,
    INTERPOLATIONS,
    WEIGHTS,
    blot_interp,
    kernel_radius,
    weight_map,
)
from mosaic.ops.drizzle_planes import drizzle_planes
from mosaic.ops.overlap import blot_sums, drizzle_sums
from mosaic.ops.pair_variances import pixel_variances
from mosaic.ops.pixmap import calc_pixmap, pixel_corners
from mosaic.ops.reach import owned_by, reaching

__all__ = [
    "CORRECTIONS",
    "DAMPING_POWER",
    "RESIDUAL_SIZE",
    "VARIANCES",
    "BackProjection",
    "PairOverlaps",
    "ForwardPlan",
    "Pair",
    "backproject",
    "blot_halo",
    "correction_planes",
    "damping_factor",
    "data_residual",
    "normalisation",
    "pair_correction",
    "pair_mock",
    "pair_weight",
    "pixel_maps_kept",
    "plan_forward",
    "release_pixel_maps",
    "region_pieces",
]

log = logging.getLogger(__name__)

#: per-pixel corrections a back-projection can drizzle
CORRECTIONS = ("ratio", "difference")
#: exponent ``K`` of the damping function (:func:`damping_factor`; White 1994 and ``dampar`` use 10)
DAMPING_POWER = 10
#: ``[sum w (g - m)^2, pixels, sum (g - m)^2 / var, pixels with a variance]``: a tile's residual entries
RESIDUAL_SIZE = 4


# -- geometry -----------------------------------------------------------------------------------


def blot_halo(reach: float, *, blot: str = "exact", interp: str = "poly5") -> int:
    """Output pixels a tile's window adds around its core so that every pixel reaching the core is mocked whole.

    A detector pixel reaches the core when its mapped centre is within ``reach`` (the drizzle
    kernel's radius, :func:`mosaic.ops.drizzle.kernel_radius`) of it, plus a pixel of slack;
    its exact-area mock needs every output pixel under it (another ``reach``), its
    interpolated mock the interpolation kernel around its centre.
    """
    if blot == "exact":
        return int(math.ceil(2 * reach)) + 4
    return int(math.ceil(reach)) + INTERPOLATION_HALO[interp] + 3


@dataclass(frozen=True)
class Pair:
    """One exposure on one tile: the exposure's ``cut`` (``(y, x)`` slices of the pixels that can
    reach the tile's ``core``) and the ``window`` of the grid its task reads (the core grown by
    the blot halo), in grid pixels. ``columns`` (``(lo, hi)``, per row of ``cut``, the first and
    last exposure column that can reach the core; :class:`mosaic.ops.pixmap.Cutout`) lets the
    task map only those pixels: a detector rotated against the grid has a cut-out box of up to
    twice the pixels that reach the core (1.6x at the flagship's 70 degrees)."""

    exposure: int
    tile: tuple[int, int]
    cut: tuple[slice, slice]
    window: tuple[slice, slice]
    core: tuple[slice, slice]
    columns: tuple | None = field(default=None, compare=False, repr=False)

    @property
    def core_in_window(self) -> tuple[slice, slice]:
        """Slices that cut the core out of an array covering ``window``."""
        (wy, wx), (cy, cx) = self.window, self.core
        return (slice(cy.start - wy.start, cy.stop - wy.start), slice(cx.start - wx.start, cx.stop - wx.start))


@dataclass
class ForwardPlan:
    """Everything static about the forward model of one run: pairs, PSF groups, options.

    Build it with :func:`plan_forward`.
    """

    grid: MosaicGrid
    shape: tuple[int, int]
    groups: list
    pairs: dict[tuple[int, int], list[Pair]]
    reach: list[float]
    exptimes: list[float]
    blot: str
    interp: str
    weight: str
    names: list[str]
    wcs: list = field(repr=False)
    grid_wcs: object = field(repr=False, default=None)
    #: a folder every worker can read where the pairs' pixel maps are kept for the run's later
    #: passes, whichever worker makes or needs them (:class:`_GeometryCache`); None: memory only
    maps_folder: str | None = field(repr=False, default=None)

    @property
    def used(self) -> list[int]:
        """Exposures that land on the grid."""
        return sorted({p.exposure for ps in self.pairs.values() for p in ps})

    @property
    def n_pairs(self) -> int:
        return sum(len(v) for v in self.pairs.values())

    @functools.cached_property
    def geometry(self) -> list[tuple[str, str]]:
        """Per exposure, digests of the grid's WCS and of its own: what its pixel maps depend on."""
        grid = hashlib.sha1(pickle.dumps(self.grid_wcs)).hexdigest()
        return [(grid, hashlib.sha1(pickle.dumps(w)).hexdigest()) for w in self.wcs]

    def token(self) -> str:
        """A digest of what the results depend on (not the tiling)."""
        return tokenize(
            self.grid.to_header().tostring(), self.shape, [g.digest for g in self.groups],
            [g.exposures for g in self.groups], self.blot, self.interp, self.weight, self.exptimes, self.names,
        )


def plan_forward(
    exposures: xr.Dataset,
    grid: MosaicGrid,
    groups: list,
    *,
    blot: str = "exact",
    interp: str = "poly5",
    weight: str = "ivm",
    lattice_step: int = 8,
) -> ForwardPlan:
    """The (exposure, tile) pairs of a run and the regions each task reads.

    Parameters
    ----------
    exposures : xarray.Dataset
        Exposure set (:func:`mosaic.io.cal.read_exposures`).
    grid : MosaicGrid
        Output grid; its tiles drive the graph.
    groups : list of mosaic.coadd.updc.PSFGroup
        PSF groups covering every exposure (:func:`mosaic.coadd.updc.prepare_psfs`): each
        has ``psf`` (a PreparedPSF), ``squared`` (its square), ``exposures`` and ``digest``.
    blot : {"exact", "interp"}
        ``D^h``: exact-area blot (the transpose of the drizzle, default) or drizzle's
        interpolating blot.
    interp : str
        Interpolation of the interpolating blot.
    weight : {"ivm", "exptime", "uniform"}
        Input weights ``w``.
    lattice_step : int
        Spacing (exposure pixels) of the coarse pixel map that finds each tile's cut-outs; a
        fine one keeps cut-outs tight (every cut-out pixel is mapped and mocked each pass).

    Raises
    ------
    InputError
        For an unknown option, or when no exposure lands on the grid.
    """
    if blot not in BLOT_METHODS:
        msg = f"blot {blot!r} is not supported; expected one of {BLOT_METHODS}"
        raise InputError(msg)
    if interp not in INTERPOLATIONS:
        msg = f"interp {interp!r} is not supported; expected one of {INTERPOLATIONS}"
        raise InputError(msg)
    if weight not in WEIGHTS:
        msg = f"weight {weight!r} is not supported; expected one of {WEIGHTS}"
        raise InputError(msg)
    n = exposures.sizes["exposure"]
    covered = sorted(k for g in groups for k in g.exposures)
    if covered != list(range(n)):
        msg = f"PSF groups cover exposures {covered}; expected each of the {n} exposures exactly once"
        raise InputError(msg)
    names = [str(p) for p in exposures["path"].values] if "path" in exposures.coords else [f"exposure {k}" for k in range(n)]
    wcs_list = exposure_wcs(exposures)
    shape = (exposures.sizes["y"], exposures.sizes["x"])
    psrs = [float(estimate_pixel_scale_ratio(w, grid.wcs)) for w in wcs_list]
    reach = [kernel_radius("square", pixfrac=1.0, pixel_scale_ratio=p) for p in psrs]
    r_max = max(reach)
    halo = blot_halo(r_max, blot=blot, interp=interp)
    cutouts = exposure_cutouts(wcs_list, shape, grid, margin=r_max + 1.0, step=lattice_step, rows=True)
    pairs: dict[tuple[int, int], list[Pair]] = {}
    for t in grid.tiles():
        (cy, cx) = t.core
        window = (
            slice(max(cy.start - halo, 0), min(cy.stop + halo, grid.shape[0])),
            slice(max(cx.start - halo, 0), min(cx.stop + halo, grid.shape[1])),
        )
        for k in range(n):
            if t.index in cutouts[k]:
                c = cutouts[k][t.index]
                columns = (c.lo.astype(np.int32), c.hi.astype(np.int32))  # they travel with every pass's tasks
                pairs.setdefault(t.index, []).append(Pair(k, t.index, c.region, window, t.core, columns=columns))
    if not pairs:
        msg = f"none of the {n} exposures ({names[0]}, ...) lands on the output grid; nothing to deconvolve"
        raise InputError(msg)
    exptimes = [float(v) for v in exposures["exptime"].values] if "exptime" in exposures.coords else [1.0] * n
    plan = ForwardPlan(
        grid=grid, shape=shape, groups=list(groups), pairs=pairs, reach=reach, exptimes=exptimes,
        blot=blot, interp=interp, weight=weight, names=names,
        wcs=[_PortableWCS(w) for w in wcs_list], grid_wcs=_PortableWCS(grid.wcs),
    )
    log.info(
        "forward model: %d exposures in %d PSF groups on %d x %d tiles, %d (exposure, tile) pairs, blot %s, window halo %d px",
        len(plan.used), len(groups), *grid.n_tiles, plan.n_pairs, blot, halo,
    )
    return plan


# -- regions over blocks ---------------------------------------------------------------------------


def region_pieces(chunks, region):
    """``[((i, j), slices in block (i, j), slices in the region), ...]``: a 2-D region over blocks of ``chunks``."""
    out = []
    starts = [np.cumsum((0, *c)) for c in chunks]
    per_axis = []
    for s, r in zip(starts, region, strict=True):
        axis = []
        for b in range(len(s) - 1):
            lo, hi = max(int(s[b]), r.start), min(int(s[b + 1]), r.stop)
            if hi > lo:
                axis.append((b, slice(lo - int(s[b]), hi - int(s[b])), slice(lo - r.start, hi - r.start)))
        per_axis.append(axis)
    for by, sy, dy in per_axis[0]:
        for bx, sx, dx in per_axis[1]:
            out.append(((by, bx), (sy, sx), (dy, dx)))
    return out


def _gather(shape, dtype, places, *blocks):
    """A region assembled from pieces of blocks (zero where no block is given)."""
    xp = array_module(blocks[0]) if blocks else np
    out = xp.zeros(shape, dtype=dtype)
    for (src, dst), block in zip(places, blocks, strict=True):
        out[dst] = block[src]
    return out


# -- operators on one pair ----------------------------------------------------------------------


class PairOverlaps:
    """The exact-area operators of one cut-out on one window: ``D^T``, ``D`` and ``D²``.

    ``D`` drizzles the cut-out's pixels onto the window (square kernel, pixfrac 1, unit
    weights), ``D^T`` is its exact transpose (the exact-area blot, parts off the window counting
    as zero) and ``D²`` drizzles with squared weights (variances of ``D x``). Overlaps are
    computed on the fly in each pass by drizzle's own geometry (:mod:`mosaic.ops.overlap`); a
    correction pass, which blots and drizzles back through the same pixels, takes them once in
    :func:`mosaic.ops.correction.correction_pass` instead.

    Parameters
    ----------
    pixmap : array
        ``(ny, nx, 2)`` positions of the cut-out's pixels in the window frame.
    shape : tuple of int
        Shape of the window.
    """

    def __init__(self, pixmap, shape):
        self.shape = tuple(int(s) for s in shape)
        self.xc, self.yc = pixel_corners(np.asarray(pixmap, dtype=np.float64), pixfrac=1.0)

    def blot(self, image) -> np.ndarray:
        """``D^T image``: ``sum_j a_ij image_j / J_i`` under each pixel (off-window parts count 0)."""
        num, _, jaco = blot_sums(self.xc, self.yc, image)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(jaco != 0, num / jaco, 0.0)

    def drizzle(self, *planes, squared=(), out=None, covered=None) -> list[np.ndarray]:
        """``D x`` for each plane, then ``D² y`` for each of ``squared``, in one pass over the overlaps
        (added into ``out``, one window-shaped plane each, when given; ``covered`` as
        :func:`~mosaic.ops.overlap.drizzle_sums`)."""
        powers = [1] * len(planes) + [2] * len(squared)
        return list(drizzle_sums(self.xc, self.yc, [*planes, *squared], self.shape, powers=powers, out=out, covered=covered))


def pair_mock(window, pixmap, *, blot: str = "exact", interp: str = "poly5") -> np.ndarray:
    """The mock ``D^h(window)`` of the pixels of a pixel map (float64).

    ``window`` is a region of ``B f``; ``pixmap`` gives the pixels' positions in its frame.
    The exact blot is the transpose of the linear drizzle (area-weighted mean of the output
    pixels under each pixel, parts off the window counting as zero); the interpolating blot
    reads 0 off the window.
    """
    window = to_host(window)
    if blot == "exact":
        return PairOverlaps(pixmap, window.shape).blot(window)
    return blot_interp(window, pixmap, interp=interp, fillval=0.0).astype(np.float64)


def _weights(cut, pixmap, core, reach, *, weight, exptime):
    w = weight_map(cut["good"], cut.get("var_rnoise"), weight=weight, exptime=exptime).astype(np.float64)
    w[~reaching(pixmap, core, reach)] = 0.0
    return w


def pair_weight(cut: dict, pixmap, *, shape, core, reach: float, weight: str = "ivm", exptime: float = 1.0, into=None):
    """``D(w)`` on the core: the drizzled input weights of one pair (float64); with ``into`` (a
    tile's running sum on the window, ``(1, *shape)``), added there instead (returns None).

    Parameters
    ----------
    cut : dict
        The cut-out's ``good`` and ``var_rnoise`` arrays.
    pixmap : array
        ``(ny, nx, 2)`` positions of the cut-out's pixels in the window frame.
    shape : tuple of int
        Shape of the window.
    core : tuple of slice
        The core in the window frame.
    reach : float
        Drizzle kernel radius (output pixels).
    """
    w = _weights(cut, pixmap, core, reach, weight=weight, exptime=exptime)
    num = PairOverlaps(pixmap, shape).drizzle(w, out=into)[0]
    return None if into is not None else num[core]


def pair_drizzle(
    cut: dict, pixmap, *, shape, core, reach: float, exposure: int, n_planes: int, variances: bool = True, weight: str = "ivm",
    exptime: float = 1.0, into=None, con_into=None,
) -> dict:
    """:func:`pair_weight` and, in the same pass over the overlaps, the pair's share of the drizzle mosaic.

    The drizzle with the square kernel and pixfrac 1 is ``D`` itself: the mosaic is
    ``sum D(w g) / sum D(w)``, its variances ``sum D²(w² v) / (sum D(w))²`` and its WHT
    ``sum D(w)`` (what the ``drizzle`` package computes, in float64 here). Returns the core's
    ``num`` (``D(w)``), ``sci`` (``D(w g)``), ``var`` (``D²(w² v)`` per :data:`VARIANCES`, with
    ``variances``) and ``con``: per context plane, the exposure's bit where it has weight.

    Parameters
    ----------
    cut : dict
        The cut-out's ``sci``, ``good``, ``var_rnoise`` (and the other variances).
    exposure : int
        The exposure's number (its context bit).
    n_planes : int
        Context planes of the mosaic, ``ceil(n_exposures / 32)``.
    variances : bool
        Also drizzle the variances.
    shape, core, reach, weight, exptime
        As :func:`pair_weight`.
    into : numpy.ndarray, optional
        The tile's running sums on the window (``D(w)``, ``D(w g)``, then the ``D²`` planes;
        :func:`_window_sums`): the pair adds its share there.
    con_into : tuple of numpy.ndarray, optional
        The tile's context planes on the core (float64, one per plane): the pair adds its bit
        there. With ``into`` and ``con_into`` the pair returns nothing of its own (``{}``).
    """
    w = _weights(cut, pixmap, core, reach, weight=weight, exptime=exptime)
    stack = drizzle_planes(w, cut["sci"], [cut[v] for v in VARIANCES] if variances else ())
    powers = [1, 1] + [2] * (len(stack) - 2)
    covered = np.zeros(shape, dtype=bool)  # where D(w) > 0: the exposure's context bit
    overlaps = PairOverlaps(pixmap, shape)
    num, sci, *var = drizzle_sums(overlaps.xc, overlaps.yc, stack, shape, powers=powers, out=into, covered=covered)
    covered = covered[core]
    bit = float(1 << (exposure % 32))
    if con_into is not None:
        plane = con_into[exposure // 32]
        np.add(plane, bit, out=plane, where=covered)
        con = None
    else:
        con = tuple(np.where(covered, bit, 0.0) if p == exposure // 32 else np.zeros(covered.shape) for p in range(n_planes))
    if into is not None:
        return {} if con is None else {"con": con}
    return {"num": num[core], "sci": sci[core], "var": tuple(v[core] for v in var), "con": con}


def damping_factor(g, m, variance, damping: float):
    """``u`` in ``[0, 1]``: how much of a pixel's correction survives damping (1 without it).

    Damped Richardson-Lucy in the manner of White (1994) and ``dampar`` of IRAF and MATLAB:
    with ``z = (g - m)^2 / (damping^2 var)`` (the residual in units of ``damping`` times the
    pixel's error), ``u = z^(K-1) (K - (K-1) z)`` for ``z < 1`` and 1 beyond, ``K =``
    :data:`DAMPING_POWER`. ``u`` rises smoothly (zero slope at ``z = 1``) from 0 where the data
    are fitted to within their errors, so the ratio ``1 + u (r - 1)`` (or the difference
    ``u (g - m)``) stops feeding noise back; pixels without a variance are not damped.
    """
    if not damping > 0:
        return np.ones(np.shape(g))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(variance > 0, (g - m) ** 2 / (damping * damping * np.where(variance > 0, variance, 1.0)), np.inf)
    zc = np.minimum(z, 1.0)
    k = DAMPING_POWER
    return np.where(z < 1.0, zc ** (k - 1) * (k - (k - 1) * zc), 1.0)


def _chi2(d, variance, own) -> tuple[float, int]:
    """``(sum d^2 / var, count)`` over owned pixels that have a variance."""
    ok = own & (variance > 0)
    return float(np.sum(d[ok] ** 2 / variance[ok])), int(ok.sum())


def pair_correction(
    window,
    cut: dict,
    pixmap,
    *,
    core,
    reach: float,
    correction: str = "ratio",
    blot: str = "exact",
    interp: str = "poly5",
    weight: str = "ivm",
    exptime: float = 1.0,
    mock_floor: float = 0.0,
    variances: bool = False,
    pedestal: float = 0.0,
    damping: float = 0.0,
    into=None,
) -> dict:
    """One pair's share of a back-projection: mock, correction, drizzle onto the core.

    Parameters
    ----------
    window : array
        The window of ``B f`` (float64).
    cut : dict
        The cut-out: ``sci`` (``g``), ``good``, ``var_rnoise`` (and the other ``var_*``, for
        damping, the chi-squared and ``variances``; missing ones count 0).
    pixmap : array
        ``(ny, nx, 2)`` positions of the cut-out's pixels in the window frame.
    core : tuple of slice
        The core in the window frame.
    reach : float
        Drizzle kernel radius (output pixels): pixels farther from the core are left out.
    correction : {"ratio", "difference"}
        ``x = w (g + s) / (m + s)`` with ``s = pedestal`` (set to ``w`` where
        ``m + s <= mock_floor``: such pixels neither raise nor lower the estimate; clipped at 0
        where ``g + s < 0``) or ``x = w (g - m)``.
    variances : bool
        Also co-add ``D²(w² v / (m + s)²)`` for each exposure variance ``v``: the variances of
        the drizzled ratios with squared drizzle weights (see :mod:`mosaic.coadd.errors`).
    pedestal : float
        ``s`` of the read-noise-corrected ratio (Snyder, Hammoud & White 1993); 0 is the plain
        Richardson-Lucy ratio.
    damping : float
        Damping threshold in units of the pixel's error (:func:`damping_factor`); 0: none.
    into : numpy.ndarray, optional
        The tile's running sums on the whole window (float64, ``D(x)`` and then the
        ``D²`` planes of ``variances``, see :func:`_window_sums`): the pair adds its share
        there, and ``num`` and ``var`` are left out of the result.

    Returns
    -------
    dict
        ``num``: ``D(x)`` on the core (float64); ``resid``: ``sum w (g - m)^2`` over the pixels
        the core owns; ``npix``: how many such pixels have ``w > 0``; ``chi2`` and ``nchi``:
        ``sum (g - m)^2 / var`` and the count over those with a variance; ``var``: tuple of
        ``D²(w² v / (m + s)²)`` on the core, one per :data:`VARIANCES` (empty unless ``variances``).
    """
    xp = array_module(window)
    window = to_host(window).astype(np.float64, copy=False)
    if correction not in CORRECTIONS:
        msg = f"correction {correction!r} is not supported; expected one of {CORRECTIONS}"
        raise ValueError(msg)
    w = _weights(cut, pixmap, core, reach, weight=weight, exptime=exptime)
    use = w > 0
    components = [cut.get(v) for v in VARIANCES]
    options = {"correction": correction, "pedestal": pedestal, "mock_floor": mock_floor, "damping": damping, "variances": variances}
    if blot == "exact":
        # one compiled loop: each pixel's overlaps blot the window, and the pixel's correction
        # goes back through the same overlaps at once
        xc, yc = pixel_corners(np.asarray(pixmap, dtype=np.float64), pixfrac=1.0)
        m, (num, *var) = correction_pass(
            xc, yc, window, w, cut["sci"], components, damping_power=DAMPING_POWER, out=into, **options,
        )
        g = np.where(use, np.asarray(cut["sci"], dtype=np.float64), 0.0)
        variance, _ = pixel_variances(components, w, m, scaled=False)
    else:
        m = pair_mock(window, pixmap, blot=blot, interp=interp)
        g, m, variance, x, per_pixel = correction_planes(cut["sci"], m, w, components, **options)
        num, *var = PairOverlaps(pixmap, window.shape).drizzle(x, squared=per_pixel, out=into)
    own = use & owned_by(pixmap, core)
    d = g - m
    chi2, nchi = _chi2(d, variance, own)
    sums = {"resid": float(np.sum(w[own] * d[own] ** 2)), "npix": int(own.sum()), "chi2": chi2, "nchi": nchi}
    if into is not None:
        return sums
    return {"num": xp.asarray(num[core]), **sums, "var": tuple(xp.asarray(v[core]) for v in var)}


def correction_planes(sci, m, w, components, *, correction, pedestal, mock_floor, damping, variances):
    """The correction of every pixel of a cut-out from its mock, in NumPy (:func:`pair_correction`).

    Returns ``(g, m, variance, x, per_pixel)``: the data and the mock (0 where ``w <= 0``), the
    total variance, the correction ``x`` and, with ``variances``, the three scaled variances to
    drizzle with squared weights (else empty). :func:`mosaic.ops.correction.correction_pass`
    computes the same, pixel by pixel, inside the exact blot and drizzle.
    """
    use = w > 0
    g = np.where(use, np.asarray(sci, dtype=np.float64), 0.0)
    m = np.where(use, m, 0.0)
    variance, _ = pixel_variances(components, w, m, scaled=False)
    u = damping_factor(g, m, variance, damping)
    if correction == "ratio":
        ok = use & (m + pedestal > mock_floor)
        ratio = np.divide(np.maximum(g + pedestal, 0.0), m + pedestal, out=np.ones_like(g), where=ok)
        x = w * (1.0 + u * (ratio - 1.0)) if damping > 0 else w * ratio
    else:
        x = w * u * (g - m)
    per_pixel = ()
    if variances:
        against = m + pedestal if correction == "ratio" else m
        _, per_pixel = pixel_variances(components, w * u, against, scaled=True, ratio=correction == "ratio", mock_floor=mock_floor)
    return g, m, variance, x, per_pixel


def _pair_residual(window, cut, pixmap, *, core, reach, blot, interp, weight, exptime) -> dict:
    w = _weights(cut, pixmap, core, reach, weight=weight, exptime=exptime)
    m = pair_mock(window, pixmap, blot=blot, interp=interp)
    own = (w > 0) & owned_by(pixmap, core)
    g = np.asarray(cut["sci"], dtype=np.float64)
    d = np.where(own, g - m, 0.0)
    chi2, nchi = _chi2(d, pixel_variances([cut.get(v) for v in VARIANCES], w, m, scaled=False)[0], own)
    return {"resid": float(np.sum(w[own] * d[own] ** 2)), "npix": int(own.sum()), "chi2": chi2, "nchi": nchi}


# -- tasks ------------------------------------------------------------------------------------------


def _pixmap(wcs_exposure, wcs_grid, region, origin, columns=None):
    # with columns, only the pixels that can reach the core and their neighbours are mapped (the
    # corners of a pixel read the rows next to it); the rest is NaN, which every kernel skips.
    # Compiled TAN-SIP maps: the pair tasks run Numba kernels anyway
    return calc_pixmap(wcs_exposure.get(), wcs_grid.get(), region, offset=origin, columns=columns, halo_rows=1, compiled=True)


def _crop_slices(pixmap, core, reach):
    """Where to crop a cut-out: the pixels that reach the core, plus one pixel.

    The extra pixel keeps every kept pixel's neighbours, from which its corners are
    interpolated, so the kept pixels' overlaps are those of the whole cut-out. Returns
    ``(slices, any_left)``; ``slices`` is None to keep the whole cut-out.
    """
    keep = reaching(pixmap, core, reach)
    rows, cols = np.flatnonzero(keep.any(axis=1)), np.flatnonzero(keep.any(axis=0))
    if rows.size == 0:
        return (slice(0, 2), slice(0, 2)), False
    ny, nx = keep.shape
    sl = (slice(max(rows[0] - 1, 0), min(rows[-1] + 2, ny)), slice(max(cols[0] - 1, 0), min(cols[-1] + 2, nx)))
    if sl[0].stop - sl[0].start < 2 or sl[1].stop - sl[1].start < 2:
        return None, True
    return sl, True


class _GeometryCache:
    """Each pair's cropped pixel map, kept by the process that computed it, for the passes after.

    A pixel map costs two WCS transformations per exposure pixel (astropy, with distortion):
    more than the overlaps of a pass. It does not change between iterations, so a worker keeps
    the maps it made, keyed by the geometry (the WCS of the exposure and the grid, the cut-out,
    the window, the core), while they fit in its budget: :data:`GEOMETRY_CACHE_FRACTION` of the
    worker's memory limit, at most :data:`GEOMETRY_CACHE_BYTES` (none when the run keeps its
    maps in a folder every worker reads: they are read from there). Past the budget the maps are
    made again each pass (no eviction: a pass visits the pairs in a cycle, which evicting the
    oldest would turn into no hits at all). A run on another grid empties it.
    """

    def __init__(self):
        self.entries: dict = {}
        self.used = 0
        self.run = None
        self.budget = None
        self.lock = threading.Lock()

    def get(self, key, make, folder=None):
        got = self.entries.get(key)
        if got is not None:
            return got
        if folder:
            # the run's folder holds every map, and the page cache its recent reads: a copy in
            # each worker's memory too cost 2 x 0.75 GiB on the flagship field for a few %
            value = _read_maps(folder, key)
            if value is None:
                value = make()
                _write_maps(folder, key, value)
            return value
        value = make()
        with self.lock:
            if key[0] != self.run:  # another grid: let the maps go
                self.entries, self.used, self.run = {}, 0, key[0]
            if self.budget is None:
                self.budget = _cache_budget()
            size = value[0].nbytes
            if self.used + size <= self.budget:
                value[0].flags.writeable = False  # shared by every later pass
                self.entries[key] = value
                self.used += size
        return value


def _maps_path(folder, key) -> Path:
    return Path(folder) / f"{hashlib.sha1(repr(key).encode()).hexdigest()}.map"


# A map file is the crop (4 int64, -1 for none) and ``any_left`` (an int64), then the pixel map
# as an ``.npy`` record: read straight into its array (an ``.npz`` is a zip whose every read
# and write runs a CRC over the map, a fifth of iteration 0's pair tasks on the flagship).
_MAP_HEADER = 5


def _read_maps(folder, key):
    """A pair's ``(pixmap, crop, any_left)`` kept in ``folder`` by any worker of the run, or None."""
    path = _maps_path(folder, key)
    try:
        with path.open("rb") as fh:
            head = np.fromfile(fh, dtype=np.int64, count=_MAP_HEADER)
            pixmap = np.lib.format.read_array(fh)
    except FileNotFoundError:
        return None
    if head.size != _MAP_HEADER:
        msg = f"{path}: the pixel map file ends early; expected {_MAP_HEADER} int64 then an .npy array"
        raise OSError(msg)
    sl = None if head[0] < 0 else (slice(int(head[0]), int(head[1])), slice(int(head[2]), int(head[3])))
    return pixmap, sl, bool(head[4])


def _write_maps(folder, key, value) -> None:
    """Keep ``value`` in ``folder`` whole or not at all (a temporary name, then renamed)."""
    pixmap, sl, any_left = value
    crop = [-1, -1, -1, -1] if sl is None else [sl[0].start, sl[0].stop, sl[1].start, sl[1].stop]
    path = _maps_path(folder, key)
    Path(folder).mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}")
    with tmp.open("wb") as fh:
        np.array([*crop, int(any_left)], dtype=np.int64).tofile(fh)
        np.lib.format.write_array(fh, np.ascontiguousarray(pixmap), allow_pickle=False)
    os.replace(tmp, path)


#: most bytes of pixel maps a process keeps between passes (:class:`_GeometryCache`)
GEOMETRY_CACHE_BYTES = 1 << 30
#: most of a dask worker's memory limit the kept pixel maps may take
GEOMETRY_CACHE_FRACTION = 0.125

_GEOMETRY = _GeometryCache()


def release_pixel_maps() -> int:
    """Let go of the pixel maps this process keeps (:class:`_GeometryCache`); returns the bytes freed."""
    with _GEOMETRY.lock:
        freed = _GEOMETRY.used
        _GEOMETRY.entries, _GEOMETRY.used, _GEOMETRY.run = {}, 0, None
    return freed


@contextlib.contextmanager
def pixel_maps_kept(client=None):
    """Pairs' pixel maps are kept between the passes inside the block and let go at its end,
    here and on ``client``'s workers (best effort: a lost worker has let go of its maps anyway)."""
    try:
        yield
    finally:
        release_pixel_maps()
        if client is not None:
            try:
                client.run(release_pixel_maps)
            except Exception as exc:  # noqa: BLE001 -- cleanup must not hide the error that ended the block
                log.debug("pixel maps not released on every worker: %s", exc)


def map_bytes(plan: ForwardPlan) -> int:
    """At most the bytes of all the pairs' pixel maps (two float64 per exposure pixel of each cut)."""
    return sum(16 * (p.cut[0].stop - p.cut[0].start) * (p.cut[1].stop - p.cut[1].start) for ps in plan.pairs.values() for p in ps)


def maps_need_a_folder(plan: ForwardPlan, client=None) -> bool:
    """Whether the run's pixel maps must also be kept in a folder every worker reads.

    Only when one process's cache cannot do it: tasks run in two worker processes or more (a
    tile's next pass may land on another worker), or the maps do not fit in the budget of the
    process that runs them all. ``client`` None: the current distributed client, if any, else
    the local threads.
    """
    if client is None:
        try:
            from distributed import get_client  # noqa: PLC0415

            client = get_client()
        except (ImportError, ValueError):
            client = None
    if client is None:
        return map_bytes(plan) > GEOMETRY_CACHE_BYTES
    pids = set(client.run(os.getpid).values())
    limits = [w.get("memory_limit") or 0 for w in client.scheduler_info()["workers"].values()]
    budget = min((int(min(GEOMETRY_CACHE_BYTES, GEOMETRY_CACHE_FRACTION * m)) if m else GEOMETRY_CACHE_BYTES for m in limits), default=0)
    return len(pids) > 1 or map_bytes(plan) > budget


def _cache_budget() -> int:
    try:
        from distributed import get_worker  # noqa: PLC0415

        limit = get_worker().memory_manager.memory_limit
    except (ImportError, ValueError, AttributeError):
        limit = None
    return int(min(GEOMETRY_CACHE_BYTES, GEOMETRY_CACHE_FRACTION * limit)) if limit else GEOMETRY_CACHE_BYTES


def _pair_geometry(wcs_exposure, wcs_grid, *, region, origin, core, reach, geometry=None, maps_folder=None, columns=None):
    """``(pixmap, crop, any_left)`` of a pair: its pixel map cropped to what reaches the core.

    ``geometry``, a digest of the two WCS (:meth:`ForwardPlan.geometry`), lets the process keep
    the result for the next pass (:class:`_GeometryCache`), and ``maps_folder`` every worker
    of the run; None computes it every time. ``columns`` (:attr:`Pair.columns`) maps only the
    pixels that can reach the core (NaN elsewhere).
    """

    def make():
        pixmap = _pixmap(wcs_exposure, wcs_grid, region, origin, columns)
        sl, any_left = _crop_slices(pixmap, core, reach)
        return (pixmap if sl is None else np.ascontiguousarray(pixmap[sl])), sl, any_left

    if geometry is None:
        return make()
    key = (*geometry, _plain_slices(region), tuple(origin), _plain_slices(core), float(reach), _columns_digest(columns))
    return _GEOMETRY.get(key, make, maps_folder)


def _columns_digest(columns) -> str | None:
    if columns is None:
        return None
    return hashlib.sha1(b"".join(np.ascontiguousarray(c, dtype=np.int64).tobytes() for c in columns)).hexdigest()


def _plain_slices(slices) -> tuple:
    return tuple((s.start, s.stop) for s in slices)


def _pair_task(
    window, cut, wcs_exposure, wcs_grid, *, kind, region, origin, geometry=None, maps_folder=None, columns=None, **kwargs,
):
    """One pair's task: pixel map in the window frame, cropped to what matters, then the operator of ``kind``."""
    pixmap, sl, any_left = _pair_geometry(
        wcs_exposure, wcs_grid, region=region, origin=origin, core=kwargs["core"], reach=kwargs["reach"], geometry=geometry,
        maps_folder=maps_folder, columns=columns,
    )
    if sl is not None:
        cut = {k: np.asarray(v)[sl] for k, v in cut.items()}
    if not any_left:
        cut = {**cut, "good": np.zeros(np.shape(cut["good"]), dtype=bool)}
    if kind == "correction":
        return pair_correction(window, cut, pixmap, **kwargs)
    if kind == "weight":
        num = pair_weight(cut, pixmap, **kwargs)
        return {} if num is None else {"num": num}
    if kind == "drizzle":
        return pair_drizzle(cut, pixmap, **kwargs)
    return _pair_residual(window, cut, pixmap, **kwargs)


def _add_into(acc, part):
    """``acc`` with ``part`` added (arrays in place, in float64; scalars and tuples of arrays too)."""
    for key, v in part.items():
        if isinstance(v, tuple):
            if not acc[key]:
                acc[key] = v
            else:
                for a, b in zip(acc[key], v, strict=True):
                    a += b
        elif np.ndim(v) == 0:
            acc[key] = acc[key] + v
        else:
            acc[key] += v
    return acc


#: the planes a tile's pairs of each kind add into one running sum on the window, before the
#: ``D²`` planes of the variances (a tuple ``var``; none for ``weight``)
_WINDOW_FIELDS = {"correction": ("num",), "drizzle": ("num", "sci"), "weight": ("num",)}


def _window_sums(kind, window, link) -> np.ndarray | None:
    """The running sums on the window that a tile's pairs of ``kind`` add into (None: a kind
    whose pairs return their own results).

    One array per tile that every pair's drizzle adds into: a pair then allocates no window of
    its own (fresh pages cost a fault each) and adds nothing afterwards.
    """
    fields = _WINDOW_FIELDS.get(kind)
    if fields is None:
        return None
    shape = np.shape(window) if kind == "correction" else link["shape"]
    variances = kind != "weight" and link.get("variances", kind == "drizzle")
    return np.zeros((len(fields) + (len(VARIANCES) if variances else 0), *shape), dtype=np.float64)


def _tile_pairs(window, *cuts, kind, links, wcs_grid, wcs_exposures):
    """One tile's task: its pairs one after the other, each pair's results added to those before.

    ``cuts`` holds, per pair, its cut-out (a dict, or a :class:`CutReading` read here, when its
    turn comes, so one cut-out is held at a time); ``links`` the pair's options and
    ``wcs_exposures`` its exposure's WCS. The sums are the task's own, so they grow in place:
    the drizzled planes in one array on the window (:func:`_window_sums`), cut to the core at the end.
    """
    acc = {}
    into = _window_sums(kind, window, links[0])
    extra = {} if into is None else {"into": into}
    if kind == "drizzle":  # the context planes on the core, which each pair adds its bit to
        core_shape = tuple(s.stop - s.start for s in links[0]["core"])
        extra["con_into"] = tuple(np.zeros(core_shape) for _ in range(links[0]["n_planes"]))
    for cut, kwargs, wcs_exposure in zip(cuts, links, wcs_exposures, strict=True):
        if isinstance(cut, CutReading):
            cut = cut()
        part = _pair_task(window, cut, wcs_exposure, wcs_grid, kind=kind, **kwargs, **extra)
        acc = part if not acc else _add_into(acc, part)
    if "con_into" in extra:
        acc["con"] = extra["con_into"]
    if into is not None:  # cut to the core (copies: the window's planes go)
        core, xp = links[0]["core"], array_module(window) if window is not None else np
        planes = [xp.asarray(np.ascontiguousarray(p[core])) for p in into]
        fields = _WINDOW_FIELDS[kind]
        acc.update(zip(fields, planes, strict=False))
        if kind != "weight":
            acc["var"] = tuple(planes[len(fields):])
    return acc


class CutReading:
    """An exposure cut-out to read where it is used: ``reader(k, region)``, kept to ``names``.

    Not a task: dask would read every cut-out of a tile ahead of the tile's task and hold them
    all; the tile task reads each when its pair's turn comes (:func:`_tile_pairs`).
    """

    def __init__(self, reader, k: int, region, names):
        self.reader, self.k, self.region, self.names = reader, k, region, list(names)

    def __call__(self) -> dict:
        got = self.reader(self.k, self.region)
        return {n: np.asarray(got[n]) for n in self.names if n in got}


@dataclass
class BackProjection:
    """The lazy results of one back-projection.

    Attributes
    ----------
    num : dask.array.Array
        ``N = sum_G B_G^*(sum_{k in G} D_k(x_k))`` on the grid (float64, tile chunks).
    resid : dask.array.Array
        ``[sum_k sum_i w (g - m)^2, number of pixels]`` of the mosaic that was mocked.
    chi2 : dask.array.Array
        ``[sum_k sum_i (g - m)^2 / var, number of pixels with a variance]`` (``var`` the
        exposures' ERR squared).
    var : tuple of dask.array.Array
        ``sum_G B_G^{*2}(sum_k D_k²(w² v / m²))`` per :data:`VARIANCES` (empty unless asked).
    """

    num: da.Array
    resid: da.Array
    var: tuple = ()
    chi2: da.Array | None = None


#: pair kinds that mock nothing: no window of an image, no residual
_SUMS_ONLY = ("weight", "drizzle")

#: the tasks a tile's pairs are run as in each pass, at most (:func:`split_pairs`)
TILE_PARTS = 2


def _pair_graph(kind, image_by_group, plan: ForwardPlan, source, options: dict, token: str):
    """Tasks of every pair: windows of each group's image, cut-outs, pair operators summed per tile.

    A tile's pairs (of one PSF group) run as at most :data:`TILE_PARTS` tasks
    (:func:`_tile_pairs`, runs of pairs cut by :func:`split_pairs`): each runs its pairs one
    after the other, adding each pair's results to a running sum of its own, and one more task
    adds the runs' sums. So the scheduler sees a few tasks per tile and pass (a chain of one
    task per pair cost a scheduling round and, when a link ran elsewhere, a transfer of the
    sum), and no worker is left alone with a whole tile at a pass's end. A staged iterate's
    window is read inside each task, so the tasks go to whichever worker is free.

    Returns ``(name, anchor, tile_roots, residuals)``: ``anchor`` a Delayed holding the graph's
    one layer, ``tile_roots[(g, tile)]`` the key of group ``g``'s task on a tile (the sum of its
    pairs), ``residuals[(g, tile)]`` the key of that tile's ``[resid, npix, chi2, nchi]`` (none
    for the kinds of :data:`_SUMS_ONLY`). The arrays taken from a tile's sum wait for its
    residual (:func:`_tile_array`), so the sum is let go as soon as its arrays are: a residual
    left for the end of the graph would hold every tile's sum until then.
    """
    name = f"updc-{kind}-{token}"
    dsk: dict = {}
    deps = list(source.dependencies())
    grid_key = (f"{name}-grid-wcs",)
    dsk[grid_key] = plan.grid_wcs
    roots, residuals = {}, {}
    for t in plan.grid.tiles():
        for gi, group in enumerate(plan.groups):
            pairs = [p for p in plan.pairs.get(t.index, []) if p.exposure in group.exposures]
            if not pairs:
                continue
            window_key = None
            image = image_by_group[gi] if image_by_group is not None else None
            if isinstance(image, Staged):
                # read by each task itself: a window task's output would pin the tasks that take
                # it to the worker that read it, where they queue while another worker idles
                window_key = image.window(pairs[0].window)
            elif image is not None:
                win = pairs[0].window
                wshape = (win[0].stop - win[0].start, win[1].stop - win[1].start)
                pieces = region_pieces(image.chunks, win)
                window_key = (f"{name}-window", gi, *t.index)
                places = [(src, dst) for _, src, dst in pieces]
                # on the host: the overlaps are CPU code, so a GPU window crosses once per tile, not per pair
                dsk[window_key] = (to_host, (_gather, wshape, image.dtype, places, *((image.name, *ij) for ij, _, _ in pieces)))
            key = (f"{name}-tile-pairs", gi, *t.index)
            runs = split_pairs(pairs, TILE_PARTS)
            if len(runs) == 1:
                dsk[key] = _pairs_task(kind, pairs, plan, source, options, window_key)
            else:
                parts = [(f"{name}-tile-pairs-part", gi, *t.index, j) for j in range(len(runs))]
                for part, run in zip(parts, runs, strict=True):
                    dsk[part] = _pairs_task(kind, run, plan, source, options, window_key)
                dsk[key] = (_sum_parts, *parts)
            roots[(gi, t.index)] = acc = key
            if kind not in _SUMS_ONLY:
                residuals[(gi, t.index)] = (f"{name}-residual-tile", gi, *t.index)
                dsk[residuals[(gi, t.index)]] = (_residual_of_tile, acc)
    if image_by_group is not None:
        deps += [im.written if isinstance(im, Staged) else im for im in image_by_group if im is not None]
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=deps)
    # one layer holds every pair task; arrays and scalars made from it depend on this anchor
    anchor = Delayed(grid_key, graph, layer=name)
    return name, anchor, roots, residuals


def _pairs_task(kind, pairs, plan: ForwardPlan, source, options: dict, window) -> tuple:
    """The task of one run of a tile's pairs (:func:`_tile_pairs`) on ``window`` (a key, or a task that reads it)."""
    links, cuts = [], []
    for p in pairs:
        k = p.exposure
        # the cut-out is read inside the tile's task, when its pair's turn comes: a task
        # of its own would be a root task, read ahead of the tile and held
        cut = source.reading(k, p.cut)
        win, core = p.window, p.core_in_window
        kwargs = {
            "region": p.cut, "origin": (win[1].start, win[0].start), "core": core,
            "reach": plan.reach[k], "weight": plan.weight, "exptime": plan.exptimes[k],
            "geometry": plan.geometry[k], "maps_folder": plan.maps_folder, "columns": p.columns,
        }
        if kind in _SUMS_ONLY:
            kwargs["shape"] = (win[0].stop - win[0].start, win[1].stop - win[1].start)
        else:
            kwargs.update(blot=plan.blot, interp=plan.interp)
        if kind == "correction":
            kwargs.update(options)
        if kind == "drizzle":
            kwargs.update(options, exposure=k)
        links.append(kwargs)
        cuts.append(cut)
    # options and WCSs travel in a partial: dask does not look into it for keys. The WCSs
    # are not tasks of their own: tiny inputs that every tile shares, on the worker that
    # made them, drew every tile task of a pass to that worker
    task = functools.partial(
        _tile_pairs, kind=kind, links=links, wcs_grid=plan.grid_wcs, wcs_exposures=[plan.wcs[p.exposure] for p in pairs],
    )
    return (task, window, *cuts)


def split_pairs(pairs: list, parts: int = TILE_PARTS) -> list[list]:
    """A tile's pairs in at most ``parts`` runs, in their order, of about equal input pixels.

    Each run is one task (:func:`_tile_pairs`) and the runs' sums are added (:func:`_sum_parts`):
    a pass has then two tasks a tile, so that with an odd number of tiles the last tile is not
    left to one worker while the others wait (a tile of the 8 x 1024² field took 1.2 s, a
    tenth of a correction pass's worker time). The pixels a pair maps (its cut-out, or the
    columns that reach the core where the plan has them) stand for its cost.
    """
    sizes = [_pair_pixels(p) for p in pairs]
    total, runs, run, done = sum(sizes), [], [], 0
    for p, n in zip(pairs, sizes, strict=True):
        # a run ends once the pairs before it hold their share of the pixels
        if run and len(runs) + 1 < parts and done >= total * (len(runs) + 1) / parts:
            runs.append(run)
            run = []
        run.append(p)
        done += n
    return [*runs, run] if run else runs


def _pair_pixels(p: Pair) -> int:
    if p.columns is not None:
        lo, hi = p.columns
        return int(np.maximum(np.asarray(hi, dtype=np.int64) - lo + 1, 0).sum())
    return (p.cut[0].stop - p.cut[0].start) * (p.cut[1].stop - p.cut[1].start)


def _sum_parts(*parts: dict) -> dict:
    """The sums of a tile's runs of pairs added (new arrays: a task's inputs stay as they were)."""
    out = {}
    for key, first in parts[0].items():
        values = [part[key] for part in parts]
        if isinstance(first, tuple):
            out[key] = tuple(functools.reduce(operator.add, items) for items in zip(*values, strict=True))
        else:
            out[key] = functools.reduce(operator.add, values)
    return out


def _tile_array(name, anchor, roots, plan, gi, field_name, index, meta, residuals=None):
    """The group's summed ``field_name`` (item ``index`` of a tuple field) as a tile-chunked array.

    Each block waits for its tile's entry in ``residuals`` (when given), taken from the same sum.
    """
    out = f"{name}-{field_name}{'' if index is None else index}-{gi}"
    layer = {}
    for t in plan.grid.tiles():
        key = (out, *t.index)
        root = roots.get((gi, t.index))
        if root is None:
            layer[key] = (functools.partial(_zeros_like, meta), t.shape)
        else:
            after = (residuals[(gi, t.index)],) if residuals else ()
            layer[key] = (functools.partial(_field, field_name, index, meta), root, *after)
    graph = HighLevelGraph.from_collections(out, layer, dependencies=[anchor])
    return da.Array(graph, out, chunks=plan.grid.chunks, dtype=np.float64, meta=meta)


def _field(field_name, index, meta, sums, *after):
    """``sums[field_name]`` (its item ``index`` if given) on the array module of ``meta``; ``after`` is ignored."""
    a = sums[field_name] if index is None else sums[field_name][index]
    return array_module(meta).asarray(a)


def _zeros_like(meta, shape):
    return array_module(meta).zeros(shape, dtype=np.float64)


def _meta(f):
    return f._meta.astype(np.float64) if hasattr(f, "_meta") else np.empty((0, 0), np.float64)


def _as_grid_array(f, grid: MosaicGrid) -> da.Array:
    f = da.asarray(f)
    if f.shape != grid.shape:
        msg = f"image has shape {f.shape}; expected the grid's {grid.shape}"
        raise ValueError(msg)
    if f.chunks != grid.chunks:
        f = f.rechunk(grid.chunks)
    return f.astype(np.float64)


def backproject(
    f,
    plan: ForwardPlan,
    source,
    *,
    correction: str = "ratio",
    mock_floor: float = 0.0,
    variances: bool = False,
    pedestal: float = 0.0,
    damping: float = 0.0,
    staging=None,
) -> BackProjection:
    """The back-projection ``N = sum_G B_G^*(sum_k D_k(x_k))`` of corrections formed against mocks of ``f``.

    Parameters
    ----------
    f : dask.array.Array
        Mosaic on ``plan.grid`` (NaN-free; zero outside the data), any chunks (rechunked to
        the tiles).
    plan : ForwardPlan
        Pairs and options (:func:`plan_forward`).
    source : mosaic.coadd.updc.ExposureSource
        Where the cut-outs come from: ``task(k, region)`` makes a task (tuple) that returns
        exposure ``k``'s cut-out dict, ``dependencies()`` the collections those tasks read,
        ``token`` names its data.
    correction : {"ratio", "difference"}
        See :func:`pair_correction`.
    mock_floor : float
        Mocks (plus the pedestal) at or below it give the neutral ratio 1.
    variances : bool
        Also co-add ratio variances (``source`` must deliver the ``var_*`` arrays).
    pedestal : float
        ``s`` of the ratio ``(g + s) / (m + s)`` (:func:`pair_correction`).
    damping : float
        Damping threshold in units of the data's errors (:func:`damping_factor`); 0: none.
    staging : path-like, optional
        A folder (every worker can reach) where ``f``, ``B_G f`` and the tiles' sums are
        staged (:mod:`mosaic.coadd.staging`) before the tasks that need windows of them: then
        no tile waits in memory for its neighbours, and the memory held is set by the tile and
        the PSF, not the mosaic. The results are the same to the bit.

    Returns
    -------
    BackProjection
    """
    if correction not in CORRECTIONS:
        msg = f"correction {correction!r} is not supported; expected one of {CORRECTIONS}"
        raise ValueError(msg)
    f = _as_grid_array(f, plan.grid)
    meta = _meta(f)
    options = {
        "correction": correction, "mock_floor": float(mock_floor), "variances": bool(variances),
        "pedestal": float(pedestal), "damping": float(damping),
    }
    token = tokenize(f.name, plan.token(), source.token, options)
    put = _stager(staging, token)
    convolved = _forward(f, plan, put)
    name, anchor, roots, residuals = _pair_graph("correction", convolved, plan, source, options, token)
    num = None
    var = [None] * len(VARIANCES) if variances else []
    for gi, group in enumerate(plan.groups):
        u = _tile_array(name, anchor, roots, plan, gi, "num", None, meta, residuals)
        term = convolve_tiled(put(u, f"num-{gi}"), group.psf, adjoint=True)
        num = term if num is None else num + term
        for vi in range(len(var)):
            uv = _tile_array(name, anchor, roots, plan, gi, "var", vi, meta, residuals)
            tv = convolve_tiled(put(uv, f"var{vi}-{gi}"), group.squared, adjoint=True)
            var[vi] = tv if var[vi] is None else var[vi] + tv
    resid = _scalar_sum(name, anchor, list(residuals.values()))
    chi2 = _scalar_sum(name, anchor, list(residuals.values()), part="chi2")
    return BackProjection(num=num, resid=resid, var=tuple(var), chi2=chi2)


def _stager(staging, token: str):
    """``put(array, label)``: the array staged in ``staging/<token>/<label>``, or as it is without ``staging``."""
    if staging is None:
        return lambda a, label: a
    folder = Path(staging) / token

    def put(a, label):
        return stage(a, folder / label)

    return put


def _forward(f, plan: ForwardPlan, put) -> list:
    """``B_G f`` for each PSF group, as ``put`` leaves it (staged, ``f`` too, or dask arrays)."""
    fs = put(f, "f")
    return [put(convolve_tiled(fs, g.psf), f"bf-{gi}") for gi, g in enumerate(plan.groups)]


def _scalar_sum(name, anchor, tile_residuals, part: str = "resid") -> da.Array:
    """The sums of the tiles' ``[resid, npix]`` (``part="resid"``) or ``[chi2, nchi]`` (``"chi2"``), a float64 array of 2.

    The tiles' numbers are in ``tile_residuals`` (keys in the anchor's layer, each ``[resid,
    npix, chi2, nchi]``).

    The tiles' two numbers are tasks of their own (:func:`_pair_graph`), so that the sum
    depends on small arrays only: one task depending on the tile sums themselves would hold
    every tile's corrections and variances at once -- the whole mosaic's worth.
    """
    key = f"{name}-{'residual' if part == 'resid' else part}"
    layer = {(key, 0): (functools.partial(_sum_residuals, _PARTS[part]), *tile_residuals)}
    graph = HighLevelGraph.from_collections(key, layer, dependencies=[anchor])
    return da.Array(graph, key, chunks=((2,),), dtype=np.float64)


def _residual_of_tile(sums) -> np.ndarray:
    return np.array([sums["resid"], sums["npix"], sums["chi2"], sums["nchi"]], dtype=np.float64)


_PARTS = {"resid": slice(0, 2), "chi2": slice(2, 4)}


def _sum_residuals(part, *tiles) -> np.ndarray:
    return np.sum([t[part] for t in tiles], axis=0) if tiles else np.zeros(2, dtype=np.float64)


def normalisation(plan: ForwardPlan, source, *, like=None, staging=None, drizzle: bool = False, variances: bool = True):
    """The coverage normalisation ``sum_G B_G^*(sum_{k in G} D_k(w_k))`` on the grid (float64).

    It is Richardson-Lucy's ``A^T W 1``: the per-pixel ``1/L_E`` of eq. 1 where exposures
    cover the mosaic unevenly. ``like`` (an array) sets the array module of the chunks;
    ``staging`` as in :func:`backproject`.

    With ``drizzle``, returns ``(den, planes)``: ``planes`` the drizzle mosaic (square kernel,
    pixfrac 1, the plan's weights) made in the same pass over the pairs (:func:`pair_drizzle`),
    a dict of lazy arrays ``sci``, ``wht``, ``con`` (``(plane, y, x)`` int32) and, with
    ``variances``, each of :data:`VARIANCES` and ``err``: the planes of
    :func:`mosaic.coadd.drizzle.drizzle_mosaic` with the same options, to float32 round-off.
    """
    meta = _meta(da.asarray(like)) if like is not None else np.empty((0, 0), np.float64)
    kind = "drizzle" if drizzle else "weight"
    n_planes = -(-len(plan.exptimes) // 32)
    options = {"n_planes": n_planes, "variances": bool(variances)} if drizzle else {}
    token = tokenize(plan.token(), source.token, kind, options)
    put = _stager(staging, token)
    name, anchor, roots, _ = _pair_graph(kind, None, plan, source, options, token)
    den = None
    for gi, group in enumerate(plan.groups):
        u = _tile_array(name, anchor, roots, plan, gi, "num", None, meta)
        term = convolve_tiled(put(u, f"weight-{gi}"), group.psf, adjoint=True)
        den = term if den is None else den + term
    if not drizzle:
        return den

    def total(field_name, index=None):
        return functools.reduce(
            operator.add, (_tile_array(name, anchor, roots, plan, gi, field_name, index, meta) for gi in range(len(plan.groups)))
        )

    wht = total("num")
    has = wht > 0
    safe = da.where(has, wht, 1.0)
    planes = {"sci": da.where(has, total("sci") / safe, np.nan).astype(np.float32), "wht": wht.astype(np.float32)}
    if variances:
        var = [da.where(has, total("var", i) / (safe * safe), np.nan) for i in range(len(VARIANCES))]
        planes.update({v: a.astype(np.float32) for v, a in zip(VARIANCES, var, strict=True)})
        planes["err"] = da.sqrt(functools.reduce(operator.add, var)).astype(np.float32)
    # bits as float64 sums (exact: one exposure per bit and tile), stored as the int32 bit pattern
    con = [total("con", p).astype(np.uint32).view(np.int32) for p in range(n_planes)]
    planes["con"] = da.stack(con)
    return den, planes


def data_residual(f, plan: ForwardPlan, source, *, staging=None, chi2: bool = False) -> da.Array:
    """``[sum_k sum_i w (g_k - m_k)^2, number of pixels]`` for the mosaic ``f`` (lazy, float64).

    With ``chi2``, also ``sum_k sum_i (g_k - m_k)^2 / var`` and the number of pixels with a
    variance (:data:`RESIDUAL_SIZE` entries). ``staging`` as in :func:`backproject`.
    """
    f = _as_grid_array(f, plan.grid)
    token = tokenize(f.name, plan.token(), source.token, "residual")
    convolved = _forward(f, plan, _stager(staging, token))
    name, anchor, _, residuals = _pair_graph("residual", convolved, plan, source, {}, token)
    resid = _scalar_sum(name, anchor, list(residuals.values()))
    return da.concatenate([resid, _scalar_sum(name, anchor, list(residuals.values()), part="chi2")]) if chi2 else resid
