"""The drizzle mosaic (UPDC iteration 0) and blot as tiled dask graphs.

The graph is driven by the output tiles: one task per tile takes the cut-out of every exposure
that lands on it (:func:`mosaic.ops.pixmap.cutout_for_region`), computes each cut-out's pixel
map once, and drizzles them all, in exposure order, in one run of the ``drizzle`` package
(:func:`mosaic.ops.drizzle.drizzle_block`), as a whole-output loop over the exposures would;
it returns the tile's SCI, WHT, CON, ERR and VAR_*. A tile's inputs are only the exposures
that touch it, and a task's memory is set by the tile and its cut-outs. Tasks are coarse
(seconds each), so scheduling is a small part of the time, and nothing but finished tiles
moves between workers.

Where the cut-outs come from decides the schedule. Given a ``cutout_reader`` (cut-outs read
straight from the files, as ``mosaic drizzle`` does), the tiles share no input, and the peak
memory of the whole run is set by the tile, not the mosaic. Taken from the exposure set's dask
arrays instead (right for exposures changed in memory), each exposure block feeds every tile it
lands on.

The result equals one whole-output run of the ``drizzle`` package over the same exposures (to
float32 round-off), on any tiling and any scheduler. Two things make that so: every task works
on its own copy of the WCSs, which reach distributed workers without losing digits
(:class:`_PortableWCS`), and cut-outs are drizzled onto a canvas that holds their whole
footprint (:func:`mosaic.ops.drizzle.drizzle_block`).
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import pickle
import warnings
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from astropy.wcs import WCS
from drizzle.utils import estimate_pixel_scale_ratio

from mosaic.exceptions import InputError, NoOverlapWarning
from mosaic.io.grid import MosaicGrid
from mosaic.ops.drizzle import (
    DEFAULT_BLOT,
    INTERPOLATION_HALO,
    KERNELS,
    WEIGHTS,
    DrizzleInput,
    blot_exact,
    blot_interp,
    drizzle_block,
    kernel_radius,
    weight_map,
)
from mosaic.ops.pixmap import LATTICE_STEP, calc_pixmap, cutout_for_region, cutout_rows_for_region, lattice_pixmap
from mosaic.registry import algorithm
from mosaic.threads import thread_map

if TYPE_CHECKING:  # dask and xarray are imported where a graph is built
    import xarray as xr

__all__ = ["VARIANCES", "DrizzlePlan", "blot_to_exposure", "drizzle_mosaic", "exposure_cutouts", "exposure_wcs", "plan_drizzle"]

log = logging.getLogger(__name__)

#: variance arrays propagated, in this order
VARIANCES = ("var_poisson", "var_rnoise", "var_flat")

CTX_PLANE_BITS = 32

#: lattice spacing (exposure pixels) of the drizzle's cut-outs: fine, so that each row of a
#: rotated cut-out maps little more than the pixels that reach its tile (the lattice costs
#: one WCS evaluation per 64 pixels)
DRIZZLE_LATTICE_STEP = 8


def _exposure_names(exposures: xr.Dataset) -> list[str]:
    if "path" in exposures.coords:
        return [str(p) for p in exposures["path"].values]
    return [f"exposure {k}" for k in range(exposures.sizes["exposure"])]


def _check_single_band(exposures: xr.Dataset) -> str | None:
    if "band" not in exposures.coords:
        return None
    bands = [str(b) for b in exposures["band"].values]
    names = _exposure_names(exposures)
    if len(set(bands)) > 1:
        first = {b: names[bands.index(b)] for b in sorted(set(bands))}
        msg = f"exposures mix filters {sorted(set(bands))} (e.g. {first}); expected one band per mosaic"
        raise InputError(msg)
    return bands[0] if bands else None


def exposure_wcs(exposures: xr.Dataset) -> list:
    """The exposures' WCS objects, one per exposure of the set.

    ``attrs["wcs"]`` is used when it has one WCS per exposure; a subset of a set
    (``ds.isel(exposure=...)``) keeps the whole list in its attributes, so then the WCSs are
    rebuilt from the ``wcs_header`` coordinate, which follows the selection.
    """
    n = exposures.sizes["exposure"]
    wcs = exposures.attrs.get("wcs")
    if wcs is not None and len(wcs) == n:
        return list(wcs)
    if "wcs_header" in exposures.coords:
        from astropy.io import fits  # noqa: PLC0415
        from astropy.wcs import FITSFixedWarning  # noqa: PLC0415

        out = []
        for text in exposures["wcs_header"].values:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FITSFixedWarning)
                w = WCS(fits.Header.fromstring(str(text), sep="\n"))
            w.pixel_shape = (exposures.sizes["x"], exposures.sizes["y"])
            out.append(w)
        return out
    have = "no attrs['wcs']" if wcs is None else f"{len(wcs)} WCSs in attrs['wcs']"
    msg = f"exposure set has {n} exposures but {have} and no wcs_header coordinate; expected one WCS per exposure (read it with mosaic.io.cal.read_exposures)"
    raise InputError(msg)


def exposure_cutouts(
    wcs_list, shape, grid: MosaicGrid, *, margin: float, step: int = LATTICE_STEP, rows: bool = False
) -> list[dict]:
    """For every exposure, the cut-out of it that reaches each tile it lands on.

    Parameters
    ----------
    wcs_list : list of WCS
        The exposures' WCSs.
    shape : tuple of int
        ``(ny, nx)`` of the exposures.
    grid : MosaicGrid
        The output grid and its tiling.
    margin : float
        Output pixels around a tile's core that an input pixel's centre may be in and still
        reach the core (:func:`mosaic.ops.drizzle.kernel_radius` plus a pixel).
    step : int
        Lattice spacing (exposure pixels) of the coarse pixel map.
    rows : bool
        Give each cut-out's column range row by row (:class:`mosaic.ops.pixmap.Cutout`)
        instead of its bounding box.

    Returns
    -------
    list of dict
        Per exposure, ``{tile index: (y slice, x slice) of the exposure}`` (or ``Cutout``).
    """
    tiles = grid.tiles()
    find = cutout_rows_for_region if rows else cutout_for_region
    one = functools.partial(_exposure_cutouts, shape=shape, grid=grid, tiles=tiles, margin=margin, step=step, find=find)
    # the lattices' WCS transformations and NumPy leave the GIL for most of their time: 36
    # flagship exposures at step 8, 1.1 s one after the other, 0.66 s on two threads
    # (benchmarks/README.md, round 16); a survey's thousand exposures planned before any task
    return thread_map(one, wcs_list, most=PLAN_THREADS, name="mosaic-plan")


#: most threads that find the exposures' cut-outs at once (:func:`exposure_cutouts`)
PLAN_THREADS = 8


def _exposure_cutouts(w, *, shape, grid: MosaicGrid, tiles, margin: float, step: int, find) -> dict:
    """One exposure's ``{tile index: cut-out}`` (:func:`exposure_cutouts`); both WCSs are copied,
    so that threads share no wcslib structure."""
    lattice = lattice_pixmap(copy.deepcopy(w), copy.deepcopy(grid.wcs), shape, step=step)
    # the tiles the exposure's footprint (grown by the margin) can meet: an exposure lands on a
    # few of a survey field's tiles, and testing each cell against every tile is the run plan's cost
    x, y = lattice.xy[..., 0], lattice.xy[..., 1]
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    if x.size == 0 or y.size == 0:  # an exposure wholly off the sky of the grid
        return {}
    x0, x1 = x.min() - margin - 1, x.max() + margin + 1
    y0, y1 = y.min() - margin - 1, y.max() + margin + 1
    cuts = {}
    for t in tiles:
        (cy, cx) = t.core
        if not (cx.start - 0.5 <= x1 and cx.stop - 0.5 >= x0 and cy.start - 0.5 <= y1 and cy.stop - 0.5 >= y0):
            continue
        region = find(lattice, t.core, margin=margin)
        if region is not None:
            cuts[t.index] = region
    return cuts


class _PortableWCS:
    """A WCS that reaches every task exactly and as the task's own copy.

    astropy's WCS objects are not thread-safe: tasks sharing one object in a threaded worker
    corrupt each other's transformations (seen here as wrong pixel maps in a few runs of
    ten), so every task works on a copy (tens of microseconds). And astropy pickles a WCS
    through a FITS header at 14 significant digits, which moves pixel maps by ~1e-8 pixel on
    distributed workers; this wrapper pickles an astropy WCS through a 17-digit header instead
    (lossless), other WCS kinds (gwcs) as they pickle themselves.
    """

    def __init__(self, wcs):
        self.wcs = wcs
        self._reduced = None

    def get(self):
        """A private copy of the WCS."""
        if isinstance(self.wcs, WCS):
            return self.wcs.deepcopy()
        return copy.deepcopy(self.wcs)

    def __reduce__(self):
        # made once: distributed pickles each task on its own, and every pair task of a pass
        # carries its exposure's WCS (a header written per task took seconds of the client's
        # event loop per pass on the flagship field, while the workers waited for the graph)
        if self._reduced is None:
            self._reduced = self._reduce()
        return self._reduced

    def _reduce(self):
        w = self.wcs
        lossless = isinstance(w, WCS) and not any(
            getattr(w, name, None) is not None for name in ("cpdis1", "cpdis2", "det2im1", "det2im2")
        )
        if not lossless:
            return (_PortableWCS, (w,))
        from astropy.wcs import WCSHDO_P17, WCSHDO_all  # noqa: PLC0415
        from astropy.wcs.wcs import WCSHDO_SIP  # noqa: PLC0415

        text = w.to_header(relax=WCSHDO_all | WCSHDO_P17 | WCSHDO_SIP).tostring()
        return (_portable_from_header, (text, w.pixel_shape))


@functools.lru_cache(maxsize=512)
def _portable_from_header(text, pixel_shape):
    """The WCS of a pickled :class:`_PortableWCS`, parsed once per process and header.

    Every task of a pass carries the WCSs of its pairs, and parsing a SIP header costs about a
    millisecond (a second of a worker's CPU over a small run); the wrapper is shared, and each
    task still works on its own copy (:meth:`_PortableWCS.get`), as on threads.
    """
    from astropy.io import fits  # noqa: PLC0415
    from astropy.wcs import FITSFixedWarning  # noqa: PLC0415

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        w = WCS(fits.Header.fromstring(text))
    w.pixel_shape = pixel_shape
    return _PortableWCS(w)


def _cut(pieces, shape):
    """One exposure's cut-out of every variable, assembled from the blocks that hold it.

    ``pieces`` has, per variable, None or a list of ``(block, source slices, target slices)``.
    """
    out = []
    for var in pieces:
        if var is None:
            out.append(None)
            continue
        if len(var) == 1:
            block, src, _ = var[0]
            out.append(np.asarray(block[src]))
            continue
        arr = np.empty(shape, dtype=np.asarray(var[0][0]).dtype)
        for block, src, dst in var:
            arr[dst] = block[src]
        out.append(arr)
    return tuple(out)


def _read_cut(reader, k, region, var_names):
    got = reader(k, region)
    return (got["sci"], got["good"], got.get("var_rnoise"), *(got[v] for v in var_names))


def _drizzle_tile(
    sources, exptimes, wcs_exposures, wcs_grid, *,
    regions, core, exposures, n_planes, weight, kernel, pixfrac, pixel_scale_ratios, var_names,
):
    """One tile's task: every exposure that lands on it, drizzled in one pass; the tile's products.

    ``sources`` holds, per exposure, the cut-out reader or the pieces of the exposure blocks
    the cut-out is assembled from. Each cut-out's pixel map is computed here, once.
    """
    grid_wcs = wcs_grid.get()
    shape = (core[0].stop - core[0].start, core[1].stop - core[1].start)
    inputs = []
    for i, k in enumerate(exposures):
        ys, xs = regions[i].region
        if callable(sources[i]):
            cutout = _read_cut(sources[i], k, (ys, xs), var_names)
        else:
            cutout = _cut(sources[i], (ys.stop - ys.start, xs.stop - xs.start))
        sci, good, var_rnoise, *variances = cutout
        # the square kernel is compiled (mosaic.ops.overlap), so its maps are too
        pixmap = calc_pixmap(
            wcs_exposures[i].get(), grid_wcs, (ys, xs), offset=(core[1].start, core[0].start),
            columns=(regions[i].lo, regions[i].hi), compiled=kernel == "square",
        )
        w = weight_map(good, var_rnoise, weight=weight, exptime=exptimes[i])
        inputs.append(DrizzleInput(sci, pixmap, w, tuple(variances), k, pixel_scale_ratios[i]))
    res = drizzle_block(inputs, shape, n_planes=n_planes, pixfrac=pixfrac, kernel=kernel)
    out = {"sci": res["sci"], "wht": res["wht"], "con": res["con"], "err": res["err"]}
    out.update(zip(VARIANCES, res["var"], strict=False))
    return out


class _ExposureBlocks:
    """The dask blocks of an ``(exposure, y, x)`` array, as Delayed objects, by region.

    A cut-out depends only on the blocks it overlaps: with exposures chunked in regions, a
    tile's tasks read only the parts of the exposures that land on it. The graph is left
    unoptimised so that every cut-out shares each block's one read.
    """

    def __init__(self, a):
        self.graph = a.__dask_graph__()
        self.keys = np.empty(a.numblocks, dtype=object)
        for index in np.ndindex(*a.numblocks):
            self.keys[index] = (a.name, *index)
        self.starts = [np.cumsum((0, *c)) for c in a.chunks]
        self._blocks = {}

    def block(self, index):
        """The block as a Delayed whose graph holds only what the block needs.

        Passing Delayed objects that carry the whole array's graph to many ``delayed``
        calls makes dask cull that graph once per call (seconds for a survey field);
        culled once per block here, building the graph stays linear and fast.
        """
        if index not in self._blocks:
            from dask.delayed import Delayed  # noqa: PLC0415

            key = self.keys[index]
            self._blocks[index] = Delayed(key, dict(self.graph.cull({key})))
        return self._blocks[index]

    def pieces(self, k, region):
        """``[(Delayed block, slices in the block, slices in the cut-out), ...]`` for exposure k."""
        se, sy, sx = self.starts
        b = int(np.searchsorted(se, k, side="right")) - 1
        out = []
        ys, xs = region
        for by in range(int(np.searchsorted(sy, ys.start, side="right")) - 1, len(sy) - 1):
            if sy[by] >= ys.stop:
                break
            y0, y1 = max(ys.start, sy[by]), min(ys.stop, sy[by + 1])
            for bx in range(int(np.searchsorted(sx, xs.start, side="right")) - 1, len(sx) - 1):
                if sx[bx] >= xs.stop:
                    break
                x0, x1 = max(xs.start, sx[bx]), min(xs.stop, sx[bx + 1])
                src = (int(k - se[b]), slice(int(y0 - sy[by]), int(y1 - sy[by])), slice(int(x0 - sx[bx]), int(x1 - sx[bx])))
                dst = (slice(int(y0 - ys.start), int(y1 - ys.start)), slice(int(x0 - xs.start), int(x1 - xs.start)))
                out.append((self.block((b, by, bx)), src, dst))
        return out


def _block(a):
    """A dask array as one Delayed block, its graph left unoptimised.

    Optimising each cut-out's graph on its own would fuse (and so repeat) the read of the
    whole exposure into every cut-out; unoptimised, all cut-outs share one read per exposure.
    """
    if a.npartitions > 1:
        a = a.rechunk(-1)
    return a.to_delayed(optimize_graph=False).ravel()[0]


class DrizzlePlan(NamedTuple):
    """Which cut-out of which exposure each output tile drizzles (:func:`plan_drizzle`).

    Attributes
    ----------
    psrs : list of float
        Per exposure, the output over input pixel scale its kernel is sized by.
    cutouts : list of dict
        Per exposure, ``{tile index: Cutout}`` (:class:`mosaic.ops.pixmap.Cutout`).
    used : list of int
        The exposures that land on the grid.
    by_tile : dict
        ``{tile index: [exposure, ...]}`` in exposure order (empty for tiles nothing reaches).
    n_planes : int
        Context planes of the mosaic, ``ceil(n_exposures / 32)``.
    """

    psrs: list
    cutouts: list
    used: list
    by_tile: dict
    n_planes: int

    def pixels(self, index) -> int:
        """Exposure pixels the tile ``index`` drizzles (a measure of its task's work)."""
        cuts = [self.cutouts[k][index] for k in self.by_tile[index]]
        return int(sum(np.maximum(c.hi - c.lo + 1, 0).sum() for c in cuts))


def plan_drizzle(
    wcs_list, shape, grid: MosaicGrid, *, kernel: str = "square", pixfrac: float = 1.0,
    pixel_scale_ratio: float | None = None, lattice_step: int = DRIZZLE_LATTICE_STEP, names=None, stacklevel: int = 2,
) -> DrizzlePlan:
    """The geometry of a drizzle mosaic, computed once: each tile's exposures and their cut-outs.

    Parameters
    ----------
    wcs_list : list of WCS
        The exposures' WCSs.
    shape : tuple of int
        ``(ny, nx)`` of the exposures.
    grid : MosaicGrid
        The output grid and its tiling.
    kernel, pixfrac, pixel_scale_ratio, lattice_step
        As :func:`drizzle_mosaic`.
    names : list of str, optional
        The exposures' names, for messages.

    Warns
    -----
    NoOverlapWarning
        For each exposure that lands on no tile.

    Raises
    ------
    InputError
        When no exposure lands on the grid.
    """
    n_exp = len(wcs_list)
    names = list(names) if names is not None else [f"exposure {k}" for k in range(n_exp)]
    if pixel_scale_ratio is None:
        psrs = [float(estimate_pixel_scale_ratio(w, grid.wcs)) for w in wcs_list]
    else:
        psrs = [float(pixel_scale_ratio)] * n_exp
    reach = max(kernel_radius(kernel, pixfrac=pixfrac, pixel_scale_ratio=p) for p in psrs)
    cutouts = exposure_cutouts(wcs_list, shape, grid, margin=reach + 1.0, step=lattice_step, rows=True)
    used = [k for k in range(n_exp) if cutouts[k]]
    for k in range(n_exp):
        if not cutouts[k]:
            warnings.warn(f"{names[k]}: does not land on the output grid; exposure skipped", NoOverlapWarning, stacklevel=stacklevel)
    if not used:
        msg = f"none of the {n_exp} exposures ({names[0]}, ...) lands on the output grid; nothing to drizzle"
        raise InputError(msg)
    by_tile: dict[tuple[int, int], list[int]] = {t.index: [] for t in grid.tiles()}
    for k in used:
        for ti in cutouts[k]:
            by_tile[ti].append(k)
    n_planes = max(1, math.ceil(n_exp / CTX_PLANE_BITS))
    return DrizzlePlan(psrs, cutouts, used, by_tile, n_planes)


def drizzle_attrs(exposures: xr.Dataset, grid: MosaicGrid, *, kernel: str, pixfrac: float, weight: str, psrs, used) -> dict:
    """The attributes of a drizzle mosaic of ``exposures`` on ``grid`` (``psrs``: the exposures'
    pixel scale ratios, used where the grid has none; ``used``: the exposures that landed)."""
    attrs = {
        "wcs_header": grid.to_header().tostring(sep="\n"),
        "product": "drizzle",
        "kernel": kernel,
        "pixfrac": float(pixfrac),
        "weight_type": weight,
        "pixel_scale_ratio": float(grid.psr) if grid.psr is not None else float(np.median(psrs)),
        "n_exposures": int(exposures.sizes["exposure"]),
        "exposures_used": [int(k) for k in used],
        "exposure_paths": _exposure_names(exposures),
        "bunit": "MJy/sr",
    }
    band = _check_single_band(exposures)
    if band is not None:
        attrs["band"] = band
    return attrs


@algorithm("coaddition")
def drizzle_mosaic(
    exposures: xr.Dataset,
    grid: MosaicGrid,
    *,
    pixfrac: float = 1.0,
    kernel: str = "square",
    weight: str = "ivm",
    pixel_scale_ratio: float | None = None,
    variance: bool = True,
    split_every: int = 8,
    lattice_step: int = DRIZZLE_LATTICE_STEP,
    cutout_reader=None,
) -> xr.Dataset:
    """The drizzle mosaic of an exposure set on a grid, as a lazy tiled dataset.

    Parameters
    ----------
    exposures : xarray.Dataset
        Exposure set (:func:`mosaic.io.cal.read_exposures`): ``sci``, ``good`` (or ``dq``-free
        data whose NaN pixels are bad), ``var_rnoise``, ``var_poisson``, ``var_flat``, the
        ``exptime`` coordinate and ``attrs["wcs"]``. SCI is surface brightness (MJy/sr),
        drizzled with ``iscale = 1`` as the JWST resample step does.
    grid : MosaicGrid
        Output grid; its tiles are the dask chunks of the result.
    pixfrac : float
        Linear fraction of an input pixel its flux is confined to (1.0 for UPDC).
    kernel : str
        One of ``square, turbo, point, gaussian, lanczos2, lanczos3``.
    weight : str
        ``"ivm"`` (1/VAR_RNOISE, the JWST default), ``"exptime"`` or ``"uniform"``; bad
        pixels (NaN SCI, flagged DQ) always get zero weight.
    pixel_scale_ratio : float, optional
        Output over input pixel scale, for the size of the turbo, gaussian and lanczos
        kernels; estimated per exposure from the WCSs by default (as the ``drizzle``
        package's ``estimate_pixel_scale_ratio`` does).
    variance : bool
        Propagate VAR_POISSON, VAR_RNOISE and VAR_FLAT (squared weights) and make ERR.
    split_every : int
        Kept so that existing calls work: a tile's exposures are drizzled in one task, with no
        reduction of partial sums.
    lattice_step : int
        Spacing (exposure pixels) of the coarse pixel map used to find cut-outs.
    cutout_reader : callable, optional
        ``reader(k, (ys, xs)) -> dict`` with ``sci``, ``good``, ``var_rnoise``,
        ``var_poisson`` and ``var_flat`` arrays of exposure ``k``'s region, read straight
        from storage (picklable: it travels to the workers). Then each tile's task reads
        its own cut-outs, tiles share no input, and peak memory is set by the tile. Without
        it, cut-outs are taken from the exposure set's dask arrays, whose blocks are shared
        by all the tiles an exposure lands on (they wait in memory until those tiles are
        done). Use a reader for unmodified files
        (:class:`mosaic.io.cal.CalCutouts` for _cal.fits); the arrays for exposures
        changed in memory.

    Returns
    -------
    xarray.Dataset
        ``sci, wht, err, var_poisson, var_rnoise, var_flat`` (float32, dims ``(y, x)``) and
        ``con`` (int32, dims ``(plane, y, x)``; bit ``k % 32`` of plane ``k // 32`` says
        exposure ``k`` contributed), dask chunks = grid tiles. ``attrs`` hold the grid WCS
        header and the drizzle parameters.

    Warns
    -----
    NoOverlapWarning
        For each exposure that lands on no tile (it is skipped).
    """
    if kernel not in KERNELS:
        msg = f"kernel {kernel!r} is not supported; expected one of {KERNELS}"
        raise ValueError(msg)
    if weight not in WEIGHTS:
        msg = f"weight {weight!r} is not supported; expected one of {WEIGHTS}"
        raise ValueError(msg)
    if int(split_every) < 2:
        msg = f"split_every must be an integer of at least 2; got {split_every!r}"
        raise ValueError(msg)
    for name in ("sci",) + (VARIANCES if variance else ()) + (("var_rnoise",) if weight == "ivm" else ()):
        if name not in exposures:
            msg = f"exposure set has no {name!r} variable; expected {('sci', *VARIANCES)} (or pass variance=False, weight='uniform')"
            raise InputError(msg)
    _check_single_band(exposures)  # one band, or a clear error before any graph is built
    names = _exposure_names(exposures)
    n_exp = exposures.sizes["exposure"]
    wcs_list = exposure_wcs(exposures)
    shape = (exposures.sizes["y"], exposures.sizes["x"])
    exptimes = np.asarray(exposures["exptime"].values if "exptime" in exposures.coords else np.ones(n_exp), float)
    if weight == "exptime":
        bad = [names[k] for k in range(n_exp) if not (np.isfinite(exptimes[k]) and exptimes[k] > 0)]
        if bad:
            msg = f"{bad[0]}: exposure time {exptimes[names.index(bad[0])]!r} is not positive; weight 'exptime' needs EFFEXPTM/EXPTIME"
            raise InputError(msg)

    import dask  # noqa: PLC0415  (dask and xarray only where a graph is built)
    import dask.array as da  # noqa: PLC0415
    import xarray as xr  # noqa: PLC0415
    from dask.base import tokenize  # noqa: PLC0415

    plan = plan_drizzle(
        wcs_list, shape, grid, kernel=kernel, pixfrac=pixfrac, pixel_scale_ratio=pixel_scale_ratio,
        lattice_step=lattice_step, names=names, stacklevel=3,
    )
    psrs, cutouts, used, by_tile = plan.psrs, plan.cutouts, plan.used, plan.by_tile
    n_planes = plan.n_planes
    var_names = VARIANCES if variance else ()
    token = tokenize(
        [exposures[v].data.name for v in ("sci", *var_names) if v in exposures],
        grid.to_header().tostring(), grid.tile, pixfrac, kernel, weight, psrs, variance, split_every,
    )
    good = exposures["good"].data if "good" in exposures else da.isfinite(exposures["sci"].data)
    arrays = [exposures["sci"].data, good, exposures["var_rnoise"].data if "var_rnoise" in exposures else None]
    arrays += [exposures[v].data for v in var_names]
    blocks = [None if a is None else _ExposureBlocks(a) for a in arrays]
    grid_wcs = dask.delayed(_PortableWCS(grid.wcs), name=f"drizzle-grid-wcs-{token}", pure=True)
    exp_wcs = {k: dask.delayed(_PortableWCS(wcs_list[k]), name=f"drizzle-wcs-{token}-{k}", pure=True) for k in used}

    finals = {}
    for t in grid.tiles():
        ks = by_tile[t.index]
        if not ks:
            continue
        regions = [cutouts[k][t.index] for k in ks]
        if cutout_reader is not None:
            sources = [cutout_reader] * len(ks)
        else:
            sources = [[None if b is None else b.pieces(k, r.region) for b in blocks] for k, r in zip(ks, regions, strict=True)]
        finals[t.index] = dask.delayed(_drizzle_tile, pure=True)(
            sources, [float(exptimes[k]) for k in ks], [exp_wcs[k] for k in ks], grid_wcs,
            regions=regions, core=t.core, exposures=ks, n_planes=n_planes, weight=weight, kernel=kernel,
            pixfrac=pixfrac, pixel_scale_ratios=[psrs[k] for k in ks], var_names=var_names,
            dask_key_name=(f"drizzle-tile-{token}", *t.index),
        )

    out_vars = {"sci": (np.float32, np.nan), "wht": (np.float32, 0.0), "err": (np.float32, np.nan)}
    out_vars.update({v: (np.float32, np.nan) for v in var_names})
    nty, ntx = grid.n_tiles
    data_vars = {}
    for name, (dtype, fill) in out_vars.items():
        rows = []
        for iy in range(nty):
            row = []
            for ix in range(ntx):
                t = grid.tile_at((iy, ix))
                if t.index in finals:
                    row.append(da.from_delayed(finals[t.index][name], shape=t.shape, dtype=dtype))
                else:
                    row.append(da.full(t.shape, fill, dtype=dtype, chunks=t.shape))
            rows.append(row)
        data_vars[name] = (("y", "x"), da.block(rows))
    rows = []
    for iy in range(nty):
        row = []
        for ix in range(ntx):
            t = grid.tile_at((iy, ix))
            cshape = (n_planes, *t.shape)
            if t.index in finals:
                row.append(da.from_delayed(finals[t.index]["con"], shape=cshape, dtype=np.int32))
            else:
                row.append(da.zeros(cshape, dtype=np.int32, chunks=cshape))
        rows.append(row)
    data_vars["con"] = (("plane", "y", "x"), da.block([rows]))

    attrs = drizzle_attrs(exposures, grid, kernel=kernel, pixfrac=pixfrac, weight=weight, psrs=psrs, used=used)
    log.info(
        "drizzle graph: %d exposures on %d x %d tiles, %d tile tasks of %d (exposure, tile) pairs",
        len(used), nty, ntx, len(finals), sum(len(v) for v in by_tile.values()),
    )
    return xr.Dataset(data_vars, attrs=attrs)


# -- blot ------------------------------------------------------------------------------------


def _blot_strip(image, wcs_exposure, wcs_grid, *, rows, shape, origin, method, interp, fillval):
    # the exact blot's pixel corners come from the neighbouring rows' positions: map one row
    # more on each side (where the detector has one) so that a strip's edge rows are not
    # extrapolated, then keep the strip's own rows
    y0, y1 = max(rows.start - 1, 0), min(rows.stop + 1, shape[0])
    region = (slice(y0, y1), slice(0, shape[1]))
    pixmap = calc_pixmap(wcs_exposure.get(), wcs_grid.get(), region, offset=origin)
    if method == "exact":
        out = blot_exact(image, pixmap, fillval=fillval).astype(np.float32)
    else:
        out = blot_interp(image, pixmap, interp=interp, fillval=fillval)
    return out[rows.start - y0 : rows.stop - y0]


@algorithm("coaddition")
def blot_to_exposure(
    image,
    grid: MosaicGrid,
    wcs,
    shape,
    *,
    method: str = DEFAULT_BLOT,
    interp: str = "poly5",
    fillval: float = np.nan,
    rows_per_chunk: int = 256,
    lattice_step: int = LATTICE_STEP,
):
    """Blot a mosaic-grid image onto one exposure's pixels, lazily (``D_k^h`` of DESIGN.md).

    The exposure is cut into strips of rows; each strip's task reads only the region of the
    mosaic the strip lands on (plus the blot's halo), so memory is set by the strip.

    Parameters
    ----------
    image : dask.array.Array or numpy.ndarray
        ``(ny, nx)`` image on ``grid``.
    grid : MosaicGrid
        The grid of ``image``.
    wcs : WCS
        The exposure's WCS.
    shape : tuple of int
        ``(ny, nx)`` of the exposure.
    method : str
        ``"exact"`` (area-weighted mean under each detector pixel, the transpose of drizzle
        with pixfrac 1; the default) or ``"interp"`` (drizzle's interpolating blot).
    interp : str
        Interpolation of ``"interp"``.
    fillval : float
        Value of exposure pixels that land off the grid.
    rows_per_chunk : int
        Exposure rows per task (the result's chunks).

    Returns
    -------
    dask.array.Array
        float32 ``(ny, nx)`` array, chunks of ``rows_per_chunk`` rows.
    """
    import dask  # noqa: PLC0415
    import dask.array as da  # noqa: PLC0415
    from dask.base import tokenize  # noqa: PLC0415

    if method not in ("exact", "interp"):
        msg = f"blot method {method!r} is not supported; expected one of ('exact', 'interp')"
        raise ValueError(msg)
    image = da.asarray(image)
    if image.shape != grid.shape:
        msg = f"image has shape {image.shape}; expected the grid's {grid.shape}"
        raise ValueError(msg)
    halo = 2 if method == "exact" else INTERPOLATION_HALO.get(interp, 5) + 1
    lattice = lattice_pixmap(wcs, grid.wcs, shape, step=lattice_step)
    ny, nx = (int(s) for s in shape)
    token = tokenize(grid.to_header().tostring(), pickle.dumps(_PortableWCS(wcs)), shape, method, interp, fillval, rows_per_chunk)
    grid_wcs = dask.delayed(_PortableWCS(grid.wcs), name=f"blot-grid-wcs-{token}", pure=True)
    exp_wcs = dask.delayed(_PortableWCS(wcs), name=f"blot-wcs-{token}", pure=True)
    strips = []
    for y0 in range(0, ny, int(rows_per_chunk)):
        rows = slice(y0, min(y0 + int(rows_per_chunk), ny))
        sub = lattice.xy[(lattice.ys >= rows.start - lattice_step) & (lattice.ys <= rows.stop - 1 + lattice_step)]
        finite = np.isfinite(sub).all(axis=-1)
        nrows = rows.stop - rows.start
        if not finite.any():
            strips.append(da.full((nrows, nx), fillval, dtype=np.float32, chunks=(nrows, nx)))
            continue
        # the strip's pixels reach at most one input pixel (in output pixels: 1/psr) past the lattice
        reach = halo + 2.0 / (grid.psr or 0.5) + 2
        x0 = max(int(math.floor(sub[finite][:, 0].min() - reach)), 0)
        x1 = min(int(math.ceil(sub[finite][:, 0].max() + reach)) + 1, grid.shape[1])
        y0g = max(int(math.floor(sub[finite][:, 1].min() - reach)), 0)
        y1g = min(int(math.ceil(sub[finite][:, 1].max() + reach)) + 1, grid.shape[0])
        if x0 >= x1 or y0g >= y1g:
            strips.append(da.full((nrows, nx), fillval, dtype=np.float32, chunks=(nrows, nx)))
            continue
        part = dask.delayed(_blot_strip, pure=True)(
            _block(image[y0g:y1g, x0:x1]), exp_wcs, grid_wcs, rows=rows, shape=(ny, nx), origin=(x0, y0g),
            method=method, interp=interp, fillval=fillval,
        )
        strips.append(da.from_delayed(part, shape=(nrows, nx), dtype=np.float32))
    return da.concatenate(strips, axis=0)
