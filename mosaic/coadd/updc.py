"""UPDC: upsampling and PSF-deconvolution coaddition (seed 000, eq. 1 and 2), resumable, tile by tile.

Starting from the drizzle mosaic ``f_0`` (pixfrac 1, square kernel, on the grid given -- psr 0.5
in the paper), each iteration is the multi-frame Richardson-Lucy step

    f_{n+1} + s = P+( (f_n + s) * sum_G B_G^*(sum_k D_k(w_k (g_k + s) / (m_k + s))) / sum_G B_G^*(sum_k D_k(w_k)) ),
    m_k = D_k^h(B_k f_n),

(``s`` the read-noise pedestal below; ``s = 0`` is eq. 1 as printed)

with the per-pixel coverage normalisation in the denominator (the ``1/L_E`` of eq. 1 where
exposures cover the mosaic unevenly; bad and uncovered pixels have ``w = 0`` and contribute
nothing), ratios guarded where the mock is at or below a floor (they count as 1), and the
non-strict positivity projection of eq. 2: a pixel whose update would be negative keeps its
previous value. The graphs are in :mod:`mosaic.coadd.forward`; baselines in the same framework
(multi-frame Landweber, single-image Richardson-Lucy) in :mod:`mosaic.coadd.baselines`;
VAR_* and ERR in :mod:`mosaic.coadd.errors`.

*Noise: the read-noise-corrected ratio.* Real data have read noise, and on faint skies or after
background subtraction many pixels (of the exposures and of the drizzle mosaic) are negative;
the plain ratio ``g / m`` then flips the sign of a pixel (a negative ratio) or freezes it (a
negative pixel times a positive ratio stays negative for good, and eq. 2 keeps it). Every
method therefore updates ``h = f + s`` with the data ``g + s``: the ratio is

    (g + s) / (m + s),

the read-noise correction of Snyder, Hammoud & White (1993, JOSA A 10, 1014): Poisson counts
plus Gaussian read noise of variance ``sigma^2`` (electrons) are nearly Poisson once
``sigma^2`` is added, so Richardson-Lucy on ``g + sigma^2`` is the maximum-likelihood step for
such data. ``s`` (``pedestal="auto"``) is that ``sigma^2`` in the data's units, ``VAR_RNOISE /
c`` with the gain ``c`` (MJy/sr per electron) from a straight-line fit of VAR_POISSON against
SCI, plus the sky subtracted from the data if any (the fit's intercept; VAR_POISSON still holds
the sky's photons): background-subtracted input then iterates exactly as the same input with
its sky. ``s`` is at least :data:`PEDESTAL_SIGMAS` times the exposures' noise per pixel, so
``g + s`` and ``h`` are positive on all but rare outliers (ratios are clipped at 0; ``h``
starts at least at :data:`PEDESTAL_FLOOR` ``s``). On noiseless data ``g = m`` gives the ratio 1
for any ``s``: the fixed point is that of eq. 1. The update keeps the flux: ``sum den h'`` is
``sum w (g + s)``, and ``sum den s = sum w s``, so ``sum den f' = sum w g`` at every iteration.
``s`` is not in the products: the store keeps ``f`` (the data's units, sky included), and
``f = h - s``. Landweber moves ``f`` by the same differences as before (``s`` cancels) and gets
no positivity projection: eq. 2 held up its negative lobes and added 3-18 % of the flux.
``pedestal=None`` gives eq. 1-2 as printed: the plain ratio, eq. 2 for every method, no
margin prior (see :func:`_update_block`).

*Damping and convergence.* ``damping`` (in sigmas) pulls the ratio (or difference) of each
exposure pixel to neutral where ``|g - m|`` is within that many times its error (White's damped
RL, :func:`mosaic.coadd.forward.damping_factor`): fitted data stop feeding noise back. Every
iterate's chi-squared per degree of freedom against the exposures' ERR (the drizzle mosaic's
ERR for ``"rl"``), ``sum (g - m)^2 / ERR^2`` over the data pixels divided by their number, is
logged, kept in the store's manifest (``chi2_dof``, beside the data residual) and in
:attr:`UPDCResult.chi2`: near 1 the data are fitted to their noise and more iterations add noise.

*Errors.* VAR_* and ERR are propagated through the iteration (:mod:`mosaic.coadd.errors`);
the products (:meth:`UPDCResult.product`, the files) carry them calibrated on the run's own
blank sky and floored at iteration 0's ERR (see the notes there; ``err_scale`` in the
manifest, ``ERRSCALE`` in the files).

*Sky.* The sky is removed from the products: ``background="median"`` (the default) takes the
median of the drizzle mosaic's sky with its sources masked (a strided sample of it, so no task
holds the mosaic; :func:`mosaic.catalog.noise.sky_noise`) -- one level for the field, so a
gradient or intracluster light stays in; a number gives a known level; None keeps it.
The store keeps the iterate itself (sky included), so a resumed run is bit for bit the run
that was stopped; the background is subtracted in :meth:`UPDCResult.product` and in the
``_i2d.fits`` files.

*GPU.* With ``array="cupy"`` each iteration moves its inputs to CuPy chunks: the convolutions
(cuFFT), the update and the error propagation run on the workers' GPUs (a dask-cuda cluster,
:mod:`mosaic.cluster` kind ``cuda``); the pair tasks' overlaps stay CPU code, so each tile's
window comes to the host once and its sums go back once; products come back to the host to be
written. The result equals the NumPy run to round-off.

*Store.* Every iteration is written whole (``<method>/iter_NN``: sci, err, wht, var_*; con and
the drizzle attributes in ``iter_00``) with the coverage normalisation (``<method>/norm``).
The manifest records the data residual ``sum_k sum_i w (g - m)^2`` and the chi-squared per
degree of freedom of each iterate, and the pedestal in ``iter_00``. A re-run
continues after the last complete iteration; one whose settings differ is refused.

*Staging.* A convolution with halos and a pair window that reaches over a seam need parts of
neighbouring tiles, so in a graph held in memory a tile waits for its neighbours: a front of
tiles as wide as the mosaic (at the flagship's scale, 40 of its 100 tiles, 4 planes each). With
a store, each iteration stages the iterate, its convolution and the tiles' sums in a temporary
folder of the store's group (:mod:`mosaic.coadd.staging`): a tile is written as soon as it is
made, and the tasks that need a window read it back from disk. The memory held is then set by
the tile and the PSF; the numbers are the same to the bit. The folder is removed after each
iteration (and by :meth:`~mosaic.io.store.Store.clean_temporaries` after a killed run).
By default (``staging="auto"``) only grids whose staged planes would pass
:data:`STAGE_ABOVE_BYTES` are staged: below that the whole front fits in a worker's memory
many times over, and the round trips through the disk would only cost time (a second of an
8 x 512² run's 10).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr
from dask.array.utils import meta_from_array
from dask.base import tokenize
from dask.graph_manipulation import clone
from dask.highlevelgraph import HighLevelGraph
from drizzle.utils import estimate_pixel_scale_ratio

from mosaic.coadd import baselines
from mosaic.coadd.drizzle import drizzle_attrs, drizzle_mosaic
from mosaic.coadd.errors import VARIANCES, additive_update, multiplicative_update, total_error, weight_map_from_variance
from mosaic.coadd.forward import (
    CutReading,
    backproject,
    data_residual,
    maps_need_a_folder,
    normalisation,
    pixel_maps_kept,
    plan_forward,
    region_pieces,
)
from mosaic.exceptions import InputError
from mosaic.io.grid import MosaicGrid
from mosaic.ops.convolve import PreparedPSF, to_host
from mosaic.ops.gain_sums import gain_sums
from mosaic.ops.update import update_tile
from mosaic.registry import algorithm

__all__ = [
    "ARRAYS",
    "MARGIN_PRIOR",
    "METHODS",
    "PEDESTAL_FLOOR",
    "PEDESTAL_SIGMAS",
    "ExposureSource",
    "PSFGroup",
    "UPDCResult",
    "check_save",
    "noise_sums",
    "prepare_psfs",
    "updc",
]

log = logging.getLogger(__name__)

#: iteration schemes: UPDC (multi-frame Richardson-Lucy), multi-frame Landweber, single-image RL
METHODS = ("updc", "landweber", "rl")
#: where the iteration's arrays live: host memory, or CuPy chunks on the workers' GPUs
ARRAYS = ("numpy", "cupy")
#: iterations written as _i2d.fits files by default (those up to n_iterations, and the last)
DEFAULT_SAVE = (0, 5, 10)
#: mocks below this fraction of the 99th percentile of |f_0| give the neutral ratio 1
MOCK_FLOOR = 1e-6
#: normalisation below this fraction of its maximum: the pixel is not updated
NORM_FLOOR = 1e-6
#: ERR calibration: blank sky is farther than SKY_DILATE pixels from any pixel of iteration 0
#: above SKY_SOURCE_CUT x its ERR
SKY_SOURCE_CUT = 3.0
SKY_DILATE = 5
#: ERR of an iteration is never below this times iteration 0's (the noise gain limit, see the module notes)
ERR_FLOOR = 1.0
#: fewest blank-sky pixels in the sample for a measured ERR scale (else 1)
SKY_MIN_PIXELS = 200
#: prior weight (a fraction of the normalisation's maximum) that pulls the margin's updates to
#: neutral: pixels that only the PSF wings of edge pixels reach otherwise random-walk upwards
#: (multiplicative noise: growth is unbounded, decay stops at 0), 7 % of the field's flux by
#: iteration 10 on a faint sky; data-covered pixels are not touched
MARGIN_PRIOR = 0.1
#: the automatic pedestal is at least this many times the exposures' median noise per pixel
PEDESTAL_SIGMAS = 5.0
#: ``f + s`` starts at least at this fraction of the pedestal ``s`` (a multiplicative update cannot lift a zero)
PEDESTAL_FLOOR = 1e-3
_SAMPLE_PIXELS = 1_000_000
#: ``staging="auto"`` stages grids whose six float64 planes (iterate, convolutions, sums) pass this
STAGE_ABOVE_BYTES = 256 * 2**20


# -- PSFs ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PSFGroup:
    """Exposures that share one PSF (on the output grid, normalised to sum 1).

    Attributes
    ----------
    psf : PreparedPSF
        The PSF ``B``.
    exposures : tuple of int
        The exposures it belongs to.
    digest : str
        SHA-256 of its values (graph keys, resume checks).
    """

    psf: PreparedPSF
    exposures: tuple[int, ...]
    digest: str

    @functools.cached_property
    def squared(self) -> PreparedPSF:
        """The PSF squared pixel by pixel: the kernel that carries variances through ``B``."""
        return PreparedPSF(self.psf.psf**2)


def _checked_psf(psf, where: str) -> np.ndarray:
    psf = np.asarray(psf)
    if psf.ndim != 2 or psf.shape[0] != psf.shape[1] or psf.shape[0] % 2 == 0:
        msg = f"{where}: PSF has shape {psf.shape!r}; expected a 2-D square image of odd size"
        raise InputError(msg)
    if not (np.issubdtype(psf.dtype, np.floating) or np.issubdtype(psf.dtype, np.integer)):
        msg = f"{where}: PSF has dtype {psf.dtype!r}; expected real numbers"
        raise InputError(msg)
    psf = psf.astype(np.float64)
    if not np.all(np.isfinite(psf)):
        msg = f"{where}: PSF has NaN or infinite pixels; expected finite values"
        raise InputError(msg)
    total = float(psf.sum())
    if not total > 0:
        msg = f"{where}: PSF sums to {total!r}; expected a positive sum to normalise to 1"
        raise InputError(msg)
    return psf / total


def _is_path(p) -> bool:
    return isinstance(p, str | bytes) or hasattr(p, "__fspath__")


def prepare_psfs(psfs, n_exposures: int, *, pixel_scale_arcsec: float | None = None) -> list[PSFGroup]:
    """PSF groups from one PSF for every exposure, or one per exposure.

    Parameters
    ----------
    psfs : array, path, or sequence of arrays or paths
        A 2-D PSF on the output grid (or a PSF file, read and resampled onto the grid by
        :func:`mosaic.psf.files.read_psf`), or a sequence with one per exposure. Each is
        normalised to sum 1; exposures whose PSFs are identical share a group (and its
        convolutions).
    n_exposures : int
        Number of exposures.
    pixel_scale_arcsec : float, optional
        Output pixel scale, to resample PSF files onto.

    Returns
    -------
    list of PSFGroup
        In order of first appearance.

    Raises
    ------
    InputError
        For a PSF that is not 2-D, square and odd, has non-finite values or a sum <= 0, or a
        number of PSFs other than 1 or ``n_exposures``.
    """
    from mosaic.psf.files import read_psf  # noqa: PLC0415

    def load(p, where):
        if _is_path(p):
            arr, _ = read_psf(p, pixel_scale_arcsec=pixel_scale_arcsec)
            return _checked_psf(arr, str(p))
        return _checked_psf(p, where)

    if _is_path(psfs) or isinstance(psfs, np.ndarray):
        arrays = [load(psfs, "psf")] * n_exposures
    else:
        psfs = list(psfs)
        if len(psfs) != n_exposures:
            msg = f"got {len(psfs)} PSFs for {n_exposures} exposures; expected one PSF or one per exposure"
            raise InputError(msg)
        arrays = [load(p, f"PSF of exposure {k}") for k, p in enumerate(psfs)]
    groups: dict[str, list[int]] = {}
    first: dict[str, np.ndarray] = {}
    for k, a in enumerate(arrays):
        h = hashlib.sha256(repr(a.shape).encode() + np.ascontiguousarray(a).tobytes()).hexdigest()
        groups.setdefault(h, []).append(k)
        first.setdefault(h, a)
    return [PSFGroup(PreparedPSF(first[h]), tuple(ks), h) for h, ks in groups.items()]


# -- exposure cut-outs ------------------------------------------------------------------------------


def _cut_from_blocks(names, shapes, places_per_var, *blocks):
    out = {}
    i = 0
    for name, shape, places in zip(names, shapes, places_per_var, strict=True):
        n = len(places)
        arr = np.empty(shape, dtype=np.asarray(blocks[i][places[0][0]]).dtype)
        for (src, dst), block in zip(places, blocks[i : i + n], strict=True):
            arr[dst] = np.asarray(block[src])
        out[name] = arr
        i += n
    return out


class ExposureSource:
    """Where pair tasks get exposure cut-outs: the exposure set's dask arrays, or a reader.

    Parameters
    ----------
    exposures : xarray.Dataset
        The exposure set.
    reader : callable, optional
        ``reader(k, (ys, xs)) -> dict`` of ``sci``, ``good``, ``var_*`` arrays read straight
        from storage (e.g. :class:`mosaic.cli.drizzle.CalCutouts`); then every pair task reads
        only its own cut-out and tiles share no input, so memory is set by the tile.
    variances : bool
        Kept for callers: ``var_poisson``, ``var_rnoise`` and ``var_flat`` are always delivered
        (damping and the chi-squared need the data's errors).
    """

    def __init__(self, exposures: xr.Dataset, *, reader=None, variances: bool = False):
        self.reader = reader
        # every variance: damping and the chi-squared need the data's errors even without ``variances``
        self.names = ["sci", "good", "var_rnoise", *(v for v in VARIANCES if v != "var_rnoise")]
        arrays = {}
        for v in self.names:
            if v == "good" and "good" not in exposures:
                arrays[v] = da.isfinite(exposures["sci"].data)
            elif v in exposures:
                arrays[v] = exposures[v].data
            else:
                arrays[v] = da.full(exposures["sci"].shape, np.nan, dtype=np.float32, chunks=exposures["sci"].data.chunks)
        self.arrays = arrays
        self.token = tokenize(reader, *(a.name for a in arrays.values())) if reader is None else tokenize(reader, self.names)

    def dependencies(self) -> list:
        """Dask collections the cut-out tasks depend on."""
        return [] if self.reader is not None else list(self.arrays.values())

    def reading(self, k: int, region: tuple[slice, slice]):
        """Exposure ``k``'s cut-out as the pair tasks take it: with a reader a
        :class:`~mosaic.coadd.forward.CutReading` (read by the task that uses it), else a task
        (tuple) that assembles the cut-out dict from the exposure blocks."""
        if self.reader is not None:
            return CutReading(self.reader, k, region, self.names)
        shape = (region[0].stop - region[0].start, region[1].stop - region[1].start)
        places_per_var, keys, shapes = [], [], []
        for name in self.names:
            a = self.arrays[name]
            se = np.cumsum((0, *a.chunks[0]))
            b = int(np.searchsorted(se, k, side="right")) - 1
            kk = int(k - se[b])
            pieces = region_pieces(a.chunks[1:], region)
            places_per_var.append([((kk, *src), dst) for _, src, dst in pieces])
            keys.extend((a.name, b, *ij) for ij, _, _ in pieces)
            shapes.append(shape)
        return (_cut_from_blocks, self.names, shapes, places_per_var, *keys)


# -- options ---------------------------------------------------------------------------------------


def check_save(save, n_iterations: int) -> tuple[int, ...]:
    """The iterations to write as files: ``save`` validated against ``n_iterations``.

    ``None`` means :data:`DEFAULT_SAVE` up to ``n_iterations``, and ``n_iterations`` itself.

    Raises
    ------
    InputError
        For an entry that is not an integer in ``[0, n_iterations]``.
    """
    if save is None:
        return tuple(sorted({s for s in DEFAULT_SAVE if s <= n_iterations} | {n_iterations}))
    out = set()
    for s in save:
        if isinstance(s, bool) or not isinstance(s, int | np.integer) or not 0 <= s <= n_iterations:
            msg = f"save list {tuple(save)!r} has {s!r}; expected iteration numbers in 0..{n_iterations}"
            raise InputError(msg)
        out.add(int(s))
    return tuple(sorted(out))


# -- checkpoints ------------------------------------------------------------------------------------


class _Checkpoints:
    """Iteration products in a :class:`~mosaic.io.store.Store`, or in memory without one."""

    def __init__(self, store, field_name: str, band: str, grid: MosaicGrid, client=None):
        self.store, self.field, self.band, self.grid, self.client = store, field_name, band, grid, client
        self._memory: dict[str, tuple[xr.Dataset, dict]] = {}

    def complete(self, name: str) -> bool:
        if self.store is None:
            return name in self._memory
        return self.store.is_complete(self.field, self.band, name)

    def info(self, name: str) -> dict:
        if self.store is None:
            return dict(self._memory[name][1])
        entry = dict(self.store.manifest(self.field, self.band).get(name, {}))
        entry.pop("completed", None)
        return entry

    def set_info(self, name: str, **info) -> None:
        """Add to a product's manifest entry (its completion time is kept)."""
        if self.store is None:
            self._memory[name] = (self._memory[name][0], {**self.info(name), **info})
        else:
            entry = dict(self.store.manifest(self.field, self.band).get(name, {}))
            # mark_complete stamps the time; an explicit "completed" keeps the original one
            self.store.mark_complete(self.field, self.band, name, **{**entry, **info})

    @contextlib.contextmanager
    def staging(self, method: str, *, enabled: bool = True, what: str = "staging"):
        """A new temporary folder in the store's group for staged arrays (or ``what`` else), removed
        on exit (None without a store, or not ``enabled``).

        Its name is one :meth:`~mosaic.io.store.Store.clean_temporaries` removes, should a
        killed run leave it behind.
        """
        if self.store is None or not enabled:
            yield None
            return
        path = self.store.group_path(self.field, self.band) / f".{method}-{what}.tmp-{uuid.uuid4().hex[:12]}"
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def read(self, name: str) -> xr.Dataset:
        if self.store is None:
            return self._memory[name][0]
        return self.store.read_product(self.field, self.band, name)

    def forget(self, prefix: str) -> None:
        if self.store is None:
            for k in [k for k in self._memory if k.startswith(f"{prefix}/")]:
                del self._memory[k]
            return
        for k in [k for k in self.store.manifest(self.field, self.band) if k.startswith(f"{prefix}/")]:
            self.store.forget(self.field, self.band, k)

    def write(self, name: str, ds: xr.Dataset, extras=(), *, description: str, info=None, also=(), files=()) -> list:
        """Compute ``ds`` and the arrays ``extras`` together, keep ``ds`` whole; ``info(extras) -> dict`` for the manifest.

        ``also``: more products ``(name, ds, extras, info)`` computed in the same call (tasks
        they share run once, and the workers never wait between them). ``files``: laid-out
        files (:class:`~mosaic.io.images.PendingFile`) whose tile writes join the call; they
        are committed after the products. Returns the extras of ``name``.
        """
        items = [(name, ds, list(extras), info), *((n, d, list(e), i) for n, d, e, i in also)]
        laid, arrays = [], []
        for n, d, e, i in items:
            d = self._on_grid(d)
            if self.store is None:
                lazy = [d[v].data for v in d.data_vars]
                laid.append((n, d, i, len(arrays), len(e), len(lazy), None))
            else:
                lazy, pending = self.store.write_product(
                    self.field, self.band, n, d, wcs_header=self.grid.to_header().tostring(sep="\n"),
                    attrs=_jsonable(d.attrs), overwrite=True, compute=False,
                )
                laid.append((n, d, i, len(arrays), len(e), len(lazy), pending))
            arrays += [*e, *lazy]
        # one call: the extras, the products and the files share their tasks (each pair task runs once)
        got = _compute_with_files(arrays, files, description, self.client)
        out = None
        for n, d, i, start, n_extra, n_lazy, pending in laid:
            extra = list(got[start : start + n_extra])
            lazy = got[start + n_extra : start + n_extra + n_lazy]
            if pending is None:
                kept = xr.Dataset(
                    {v: (d[v].dims, da.from_array(to_host(a), chunks=d[v].data.chunks)) for v, a in zip(d.data_vars, lazy, strict=True)},
                    attrs=d.attrs,
                )
                self._memory[n] = (kept, i(extra) if i else {})
            else:
                pending.commit(lazy, **(i(extra) if i else {}))  # the writes' checksums
            out = extra if out is None else out
        return out

    def _on_grid(self, ds: xr.Dataset) -> xr.Dataset:
        """``ds`` with its 2-D dask arrays in the grid's tiles."""
        ds = ds.copy()
        for v in ds.data_vars:
            if isinstance(ds[v].data, da.Array) and ds[v].ndim == 2 and ds[v].data.chunks != self.grid.chunks:
                ds[v] = ds[v].chunk(dict(zip(ds[v].dims, self.grid.chunks, strict=True)))
        return ds


def _clear_later(folder: Path) -> threading.Thread | None:
    """Empty ``folder`` at once and delete what it held in a thread (joined before the run ends).

    The folder is renamed aside (a name :meth:`~mosaic.io.store.Store.clean_temporaries` still
    removes, should the run be killed first), so the next iteration stages into a new one while
    the old files are unlinked: on one process that is a quarter of a second to a few seconds a
    pass during which no worker had a task.
    """
    if not folder.exists():
        return None
    aside = folder.with_name(f"{folder.name}-old-{uuid.uuid4().hex[:8]}")
    os.replace(folder, aside)
    thread = threading.Thread(target=shutil.rmtree, args=(aside,), kwargs={"ignore_errors": True}, name="mosaic-clear", daemon=True)
    thread.start()
    return thread


def _jsonable(attrs: dict) -> dict:
    out = {}
    for k, v in attrs.items():
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, str | int | float | bool | list | tuple) or v is None:
            out[k] = list(v) if isinstance(v, tuple) else v
    return out


# -- the iteration -----------------------------------------------------------------------------------


@dataclass
class UPDCResult:
    """The iterations of a run.

    Attributes
    ----------
    method : str
        ``"updc"``, ``"landweber"`` or ``"rl"``.
    iterations : list of xarray.Dataset
        Iteration ``n`` (lazy when read from a store): ``sci`` the iterate itself (sky
        included), ``err``, ``wht``, ``var_*``; ``con`` in iteration 0.
    residuals : list of float
        Data residual of each iterate (``sum_k sum_i w (g - m)^2``; for ``"rl"`` the
        mosaic's ``sum (d - B f)^2``).
    background : float
        Sky subtracted by :meth:`product` and in the files.
    files : dict
        ``{iteration: path}`` of the ``_i2d.fits`` files written.
    grid : MosaicGrid
        The output grid.
    fill : float
        Start value of the pixels the data reach through the PSF but do not cover (the
        iterate's margin): the sky, or the mock floor if the sky is not positive.
    chi2 : list of float
        chi-squared per degree of freedom of each iterate against the exposures' ERR (the
        drizzle mosaic's for ``"rl"``): ``sum_k sum_i (g - m)^2 / ERR^2`` over the data pixels,
        divided by their number (None where it was not measured).
    pedestal : float
        The pedestal ``s`` of the update (0: the plain ratio).
    err_scales : list of float
        Calibration of each iteration's propagated ERR, measured on blank sky (1 for iteration 0
        and without errors); :meth:`product` and the files apply it.
    """

    method: str
    iterations: list
    residuals: list
    background: float
    grid: MosaicGrid
    files: dict = field(default_factory=dict)
    fill: float = 0.0
    chi2: list = field(default_factory=list)
    pedestal: float = 0.0
    err_scales: list = field(default_factory=list)

    def product(self, n: int = -1) -> xr.Dataset:
        """Iteration ``n`` as an i2d product: sky subtracted, ``con`` of iteration 0, ERR calibrated."""
        scale = self.err_scales[n] if self.err_scales else 1.0
        return _product(self.iterations[n], self.iterations[0], self.background, 1.0 if scale is None else scale)


def _product(ds: xr.Dataset, it0: xr.Dataset, background: float, err_scale: float = 1.0) -> xr.Dataset:
    """Sky subtracted; pixels without data (the iterate's margin beyond the coverage) NaN; ERR
    calibrated (``err_scale`` times the propagated ERR, at least :data:`ERR_FLOOR` times iteration
    0's) with VAR_* and WHT scaled alike."""
    out = ds.copy()
    covered = np.isfinite(it0["sci"])
    if "err" in ds and "err" in it0:
        err = ds["err"].astype(np.float64)
        calibrated = np.maximum(float(err_scale) * err, ERR_FLOOR * it0["err"].astype(np.float64))
        factor = (calibrated / err.where(err > 0)).fillna(1.0)
        out["err"] = calibrated.astype(np.float32)
        for v in VARIANCES:
            if v in out:
                out[v] = (out[v] * factor**2).astype(np.float32)
        if "wht" in out:
            out["wht"] = (out["wht"] / factor**2).astype(np.float32)
    for v in out.data_vars:
        if v != "sci" and v != "wht" and out[v].dtype.kind == "f" and out[v].dims == ("y", "x"):
            out[v] = out[v].where(covered)
    out["sci"] = (ds["sci"] - np.float32(background)).where(covered).astype(np.float32)
    if "con" not in out and "con" in it0:
        out["con"] = it0["con"]
    out.attrs = {**it0.attrs, **ds.attrs}
    return out


def _support(sci0, den, den_floor: float):
    """``(covered, ok, support)`` of one tile: pixels with data, pixels the normalisation allows
    to update, and the iterate's support (either)."""
    covered = np.isfinite(sci0)
    ok = den > den_floor
    return covered, ok, covered | ok


def _start_block(sci, sci0, den, *, den_floor: float, fill: float, pedestal: float = 0.0):
    """One tile of ``f_n`` as the iteration starts from it: the stored iterate (float64), ``fill``
    on support pixels that have none yet, zero off the support; with a pedestal ``s``, at least
    ``(PEDESTAL_FLOOR - 1) s`` on the support, so that ``f + s`` is positive."""
    _, _, support = _support(sci0, den, den_floor)
    sci = sci.astype(np.float64)
    f = np.where(np.isfinite(sci), sci, np.where(support, fill, 0.0))
    if pedestal > 0:
        f = np.where(support, np.maximum(f, (PEDESTAL_FLOOR - 1.0) * pedestal), f)
    return f


def _update_block(
    sci, sci0, den, num, *rest, multiplicative: bool, tau: float, den_floor: float, fill: float, errors: bool, pedestal: float = 0.0,
    noise_aware: bool = False,
):
    """One tile of ``f_{n+1}`` (eq. 1 or Landweber, then eq. 2) and its variances, stacked (float32).

    The updates act on ``h = f + s`` (``s`` the pedestal; see the module notes): ``h q`` or
    ``h + tau N / den``; eq. 2 keeps ``h`` where the new one would be negative. ``noise_aware``
    (a pedestal was asked for) leaves Landweber unprojected and pulls the margin's updates to
    neutral (:data:`MARGIN_PRIOR`); without it the update is eq. 1-2 as printed.

    ``rest`` is, with ``errors``, the iterate's variances (:data:`VARIANCES` order), the
    back-projected variances, iteration 0's WHT and VAR_RNOISE. The planes out are ``sci``, then
    with ``errors`` each of :data:`VARIANCES`, ``err`` and ``wht`` (see :func:`_planes`).
    NumPy tiles go through :func:`mosaic.ops.update.update_tile` (the same numbers to the bit,
    in one compiled pass), others (CuPy) through :func:`_update_arrays`.
    """
    if all(isinstance(a, np.ndarray) for a in (sci, sci0, den, num, *rest)):
        # NumPy tiles: the same operations, one compiled pass (mosaic.ops.update)
        return update_tile(
            sci, sci0, den, num, *rest, multiplicative=multiplicative, tau=tau, den_floor=den_floor, fill=fill, errors=errors,
            pedestal=pedestal, noise_aware=noise_aware, floor=(PEDESTAL_FLOOR - 1.0) * pedestal,
            lam_margin=MARGIN_PRIOR * den_floor / NORM_FLOOR,
        )
    return _update_arrays(
        sci, sci0, den, num, *rest, multiplicative=multiplicative, tau=tau, den_floor=den_floor, fill=fill, errors=errors,
        pedestal=pedestal, noise_aware=noise_aware,
    )


def _update_arrays(
    sci, sci0, den, num, *rest, multiplicative: bool, tau: float, den_floor: float, fill: float, errors: bool, pedestal: float = 0.0,
    noise_aware: bool = False,
):
    """:func:`_update_block` in array operations: any array module (CuPy tiles on GPU workers)."""
    covered, ok, support = _support(sci0, den, den_floor)
    f = _start_block(sci, sci0, den, den_floor=den_floor, fill=fill, pedestal=pedestal)
    h = f + pedestal
    # margin pixels (no data, reached by PSF wings only) are pulled to neutral by a prior weight
    lam = np.where(covered | (not noise_aware), 0.0, MARGIN_PRIOR * den_floor / NORM_FLOOR)
    if multiplicative:
        q = np.where(ok, (num + lam) / np.where(ok, den + lam, 1.0), 1.0)
        h_new = h * q
    else:
        h_new = baselines.landweber_update(h, num, den + lam, tau=tau, ok=ok)
    # eq. 2: a pixel whose update would be negative keeps its value; not for the linear
    # Landweber step, whose negative lobes it would hold up (adding flux at every iteration)
    keep = ((h_new < 0) & (multiplicative or not noise_aware)) | ~ok
    out = [np.where(support, np.where(keep, h, h_new) - pedestal, np.nan)]
    if errors:
        n = len(VARIANCES)
        prev, back, (wht0, rn0) = rest[:n], rest[n : 2 * n], rest[2 * n :]
        new = []
        for v, var_n in zip(prev, back, strict=True):
            v = _zero_nan(v)
            if multiplicative:
                new.append(multiplicative_update(v, h, q, var_n, den, keep))
            else:
                new.append(additive_update(v, tau, var_n, den, keep))
        out += [np.where(support, v, np.nan) for v in new]
        out.append(total_error(new, support))
        out.append(weight_map_from_variance(_zero_nan(wht0), _zero_nan(rn0), new[1], covered))
    return np.stack([o.astype(np.float32) for o in out])


def _zero_nan(a):
    """``a`` in float64, zero where not finite (NumPy, CuPy or dask arrays)."""
    a = a.astype(np.float64)
    return np.where(np.isfinite(a), a, 0.0)


def _stored_source(a: da.Array, chunks: tuple):
    """``(key, value)`` of the array ``a`` reads, where ``a`` is a read of stored data held in a
    key of its own (``from_array`` with its source not inlined: the store's arrays) on ``chunks``;
    otherwise None."""
    source = f"original-{a.name}"
    layers = a.__dask_graph__().layers
    if source not in layers or a.chunks != chunks:
        return None
    return source, layers[source][source]


def _update_after(update, inputs: list, gate: da.Array, n_planes: int, on_device, meta) -> da.Array:
    """The update's tiles, ``(n_planes, *tile)`` each: ``update(*inputs)`` block by block, where
    the stored inputs are read inside the tile's task.

    dask marks its reads of stored data as data producers, and so any task they are fused into:
    distributed queues those like root tasks, behind every other task that is ready. An update
    fused with its reads waited so, while the back-projected tiles it needed piled up. Here a
    tile's update depends on its back-projection (``gate``) and reads its stored inputs itself
    once that is done, so nothing it needs is made long before it, and a tile's seven reads are
    not seven tasks for the scheduler. Inputs that are not stored reads on ``gate``'s tiles are
    computed by tasks of their own, as usual.
    """
    name = f"updc-update-{tokenize(update, *(a.name for a in inputs))}"
    dsk, deps, args = {}, [gate], []
    for a in inputs:
        stored = _stored_source(a, gate.chunks)
        if stored is None:
            a = on_device(da.asarray(a)).rechunk(gate.chunks)
            deps.append(a)
            args.append((False, a.name))
        else:
            dsk[stored[0]] = stored[1]
            args.append((True, stored[0]))
    block = getattr(on_device, "block", None)  # a tile moved to the device (CuPy), or None (NumPy)
    starts = [np.cumsum((0, *c)) for c in gate.chunks]
    for i in range(gate.numblocks[0]):
        for j in range(gate.numblocks[1]):
            region = (slice(int(starts[0][i]), int(starts[0][i + 1])), slice(int(starts[1][j]), int(starts[1][j + 1])))
            call = []
            for is_read, key in args:
                if not is_read:
                    call.append((key, i, j))
                    continue
                read = (_read_region, key, region)
                call.append(read if block is None else (block, read))
            dsk[(name, 0, i, j)] = (update, *call)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=deps)
    return da.Array(graph, name, chunks=((n_planes,), *gate.chunks), dtype=np.float32, meta=meta)


def _read_region(source, region):
    """``source[region]`` as an array."""
    return np.asarray(source[region])


def _planes(errors: bool) -> list[str]:
    """The planes :func:`_update_block` stacks, in order."""
    return ["sci", *VARIANCES, "err", "wht"] if errors else ["sci"]


def _step(
    prev: xr.Dataset, it0: xr.Dataset, den, *, correct, multiplicative: bool, tau: float, den_floor: float, errors: bool, fill: float,
    on_device, pedestal: float = 0.0, noise_aware: bool = False,
):
    """One update: ``(dataset of f_{n+1}, delayed residual of f_n)``.

    The iterate lives on the *support*: the pixels with data (finite in iteration 0) and those
    the data reach through the PSF (``den`` above its floor) -- a margin around the coverage
    where light from sources beyond the exposures' edges can go instead of piling up on the
    edge. Support pixels without data start at ``fill`` (the sky), since a multiplicative
    update cannot grow a pixel from 0, and (with a pedestal) their updates are pulled to
    neutral by the prior weight :data:`MARGIN_PRIOR` (few data constrain them). ``on_device``
    moves the inputs to the array module the iteration runs on (:func:`_mover`); the outputs
    come back to the host.

    *Memory.* The forward model starts from its own reading of the stored iterate (a clone of
    its graph), and the update of a tile is one task, whose stored inputs (the iterate, the
    normalisation, the variances) are read again once the tile's back-projection is done
    (:func:`_update_after`). So no tile of the mosaic is held from the start of the iteration to
    its end, and nothing the update needs is made long before it: a worker holds the tiles in
    flight, not the mosaic. What the tiles' neighbours need is staged by ``correct`` (see the
    module notes).
    """
    f_in = (prev["sci"].data, it0["sci"].data, den)
    start = functools.partial(_start_block, den_floor=den_floor, fill=fill, pedestal=pedestal)
    forward_in = clone(*f_in, seed=tokenize(*f_in, "forward"))
    moved = [on_device(a) for a in forward_in]
    # meta given, not found by calling the block function on empty arrays in this process (for
    # the update that compiles its kernel here: a second of the client's time each iteration)
    f = da.map_blocks(start, *moved, meta=meta_from_array(moved[0], ndim=2, dtype=np.float64), token="updc-start")
    bp = correct(f)
    stored = list(f_in)
    if errors:
        stored += [prev[v].data for v in VARIANCES] + [it0["wht"].data, it0["var_rnoise"].data]
    inputs = [*stored[:3], bp.num]
    if errors:
        n = len(VARIANCES)
        inputs += stored[3 : 3 + n] + list(bp.var) + stored[3 + n :]
    planes = _planes(errors)
    update = functools.partial(
        _update_block, multiplicative=multiplicative, tau=tau, den_floor=den_floor, fill=fill, errors=errors, pedestal=pedestal,
        noise_aware=noise_aware,
    )
    meta = meta_from_array(on_device(da.asarray(bp.num))._meta, ndim=3, dtype=np.float32)
    stacked = _on_host(_update_after(update, inputs, bp.num, len(planes), on_device, meta))
    out = {name: stacked[i] for i, name in enumerate(planes)}
    if not errors:
        out["wht"] = it0["wht"].data
    resid = bp.resid if bp.chi2 is None else da.concatenate([bp.resid, bp.chi2])
    return xr.Dataset({k: (("y", "x"), v) for k, v in out.items()}, attrs=dict(it0.attrs)), _on_host(resid)


@algorithm("coaddition")
def updc(
    exposures: xr.Dataset,
    grid: MosaicGrid,
    psfs,
    *,
    n_iterations: int = 10,
    method: str = "updc",
    blot: str = "exact",
    interp: str = "poly5",
    weight: str = "ivm",
    tau: float = 1.0,
    errors: bool = True,
    background="median",
    store=None,
    field: str = "field",
    save=None,
    outdir=None,
    name: str | None = None,
    overwrite: bool = False,
    cutout_reader=None,
    client=None,
    callback=None,
    final_residual: bool = True,
    array: str = "numpy",
    staging: bool | str = "auto",
    pedestal="auto",
    damping: float = 0.0,
    drizzled: xr.Dataset | None = None,
) -> UPDCResult:
    """Run UPDC (or a baseline) for ``n_iterations``, checkpointing every iteration.

    Parameters
    ----------
    exposures : xarray.Dataset
        Exposure set with its sky (:func:`mosaic.io.cal.read_exposures`), one band.
    grid : MosaicGrid
        Output grid (psr 0.5 for the paper's mosaics); its tiles are the tasks' tiles.
    psfs : array, path or sequence
        PSF on the output grid for all exposures, or one per exposure (:func:`prepare_psfs`).
    n_iterations : int
        Iterations after the drizzle mosaic (iteration 0).
    method : {"updc", "landweber", "rl"}
        UPDC; multi-frame Landweber (step ``tau``); single-image Richardson-Lucy of the
        drizzle mosaic with the first group's PSF (:mod:`mosaic.coadd.baselines`).
    blot : {"exact", "interp"}
        ``D^h``: exact-area blot (transpose of the drizzle; default) or drizzle's interpolating
        blot (``interp`` kind, what the paper used).
    weight : {"ivm", "exptime", "uniform"}
        Input weights ``w`` of the data (drizzle and back-projection).
    tau : float
        Landweber step (``0 < tau < 2``).
    errors : bool
        Propagate VAR_* and ERR (:mod:`mosaic.coadd.errors`).
    background : "median", float or None
        Sky removed from the products (see the module notes).
    store : mosaic.io.store.Store, optional
        Where iterations are checkpointed (``<field>/<band>/<method>/iter_NN``); in memory
        without one (no resume).
    field : str
        Field name in the store.
    save : sequence of int, optional
        Iterations written as ``<name>_iterNN_i2d.fits`` in ``outdir`` (default: 0, 5, 10 up
        to ``n_iterations``, and the last). A file is written by the computation after its
        iteration's (the next iteration's, or the final residual's), so that it adds no phase
        of its own; a run stopped before then leaves no part of it, and a re-run writes it.
    outdir : path-like, optional
        Folder of the files; no files without it.
    name : str, optional
        File name stem (default: the method).
    overwrite : bool
        Start again: forget this method's iterations in the store, replace files.
    cutout_reader : callable, optional
        Read exposure cut-outs straight from the files (:class:`mosaic.cli.drizzle.CalCutouts`).
    client : distributed.Client, optional
        Cluster to compute on (default: the current client, else the local scheduler).
    callback : callable, optional
        ``callback(n, dataset)`` after each iteration ``n`` this run computes (iterations read
        back from the store are skipped); an exception raised in it stops the run, and a
        re-run continues after ``n``.
    final_residual : bool
        Also mock the last iterate for its data residual (one forward pass; the residual of
        every earlier iterate comes with the next iteration).
    array : {"numpy", "cupy"}
        Iterate on host arrays, or on CuPy chunks on the workers' GPUs (needs CuPy and a CUDA
        device where the tasks run; see the module notes).
    staging : bool or "auto"
        With a store: stage the iterate, its convolutions and the tiles' sums in a temporary
        folder of the store's group (:mod:`mosaic.coadd.staging`), so that tiles do not wait
        in memory for their neighbours' halos; the folder is removed after each iteration. The
        results are the same to the bit. Without a store nothing is staged. ``"auto"``
        (default): only grids whose six float64 planes pass :data:`STAGE_ABOVE_BYTES`.
    pedestal : "auto", float or None
        ``s`` of the read-noise-corrected update (see the module notes): ``"auto"`` (default)
        from VAR_RNOISE and the gain the VAR_POISSON of the exposures imply, at least
        :data:`PEDESTAL_SIGMAS` times their noise; a number (data units, MJy/sr) as given;
        None or 0 for the plain ratio of eq. 1 (the data must then be positive).
    damping : float
        Damping threshold in units of the exposures' ERR (0: none): where ``|g - m|`` is within
        it the correction is pulled to neutral (:func:`mosaic.coadd.forward.damping_factor`).
    drizzled : xarray.Dataset, optional
        Iteration 0 when it is already made: the drizzle mosaic of these exposures on this grid
        with pixfrac 1, the square kernel and ``weight``, with its variances
        (:func:`mosaic.coadd.drizzle.drizzle_mosaic`, e.g. the pipeline's drizzle product read
        from the store), so that the mosaic is not drizzled twice. Default: drizzled here.

    Returns
    -------
    UPDCResult
    """
    n_iterations = _check_int("n_iterations", n_iterations, 0)
    if method not in METHODS:
        msg = f"method {method!r} is not supported; expected one of {METHODS}"
        raise InputError(msg)
    if method == "landweber" and not 0 < tau < 2:
        msg = f"tau {tau!r} is out of range; expected 0 < tau < 2 for a convergent Landweber step"
        raise InputError(msg)
    if not (background is None or background == "median" or _is_finite_number(background)):
        msg = f"background {background!r} is not supported; expected 'median', a number (MJy/sr) or None"
        raise InputError(msg)
    if not (pedestal is None or pedestal == "auto" or (_is_finite_number(pedestal) and pedestal >= 0)):
        msg = f"pedestal {pedestal!r} is not supported; expected 'auto', a number >= 0 (MJy/sr) or None"
        raise InputError(msg)
    if not (_is_finite_number(damping) and damping >= 0):
        msg = f"damping {damping!r} is not allowed; expected a number of sigmas >= 0 (0: no damping)"
        raise InputError(msg)
    save = check_save(save, n_iterations)
    if staging == "auto":
        staging = 6 * 8 * grid.shape[0] * grid.shape[1] > STAGE_ABOVE_BYTES
    elif not isinstance(staging, bool):
        msg = f"staging {staging!r} is not supported; expected True, False or 'auto'"
        raise InputError(msg)
    on_device = _mover(array)
    n_exp = exposures.sizes["exposure"]
    groups = prepare_psfs(psfs, n_exp, pixel_scale_arcsec=grid.pixel_scale_arcsec)
    plan = plan_forward(exposures, grid, groups, blot=blot, interp=interp, weight=weight)
    band = str(exposures.attrs.get("band", "UNKNOWN"))
    ck = _Checkpoints(store, field, band, grid, client)
    token = tokenize(plan.token(), method, float(tau), bool(errors), str(background), str(pedestal), float(damping))
    if overwrite:
        ck.forget(method)
    name = name or method
    outdir = Path(outdir) if outdir is not None else None
    if outdir is not None:
        outdir.mkdir(parents=True, exist_ok=True)

    files: dict[int, Path] = {}
    pending: list = []  # laid-out files whose writes join the next computation
    removals: list = []  # threads removing the staged arrays of past iterations
    try:
        share_maps = ck.store is not None and maps_need_a_folder(plan, client)
        with (
            pixel_maps_kept(client),
            ck.staging(method, enabled=staging) as scratch,
            ck.staging(method, what="pixmaps", enabled=share_maps) as maps,
        ):
            if maps is not None:
                # the pairs' pixel maps kept beside the store for every worker: made once per run,
                # wherever a tile's task runs in each pass (workers alone keep only their own)
                plan = replace(plan, maps_folder=str(maps))
            # the coverage normalisation needs only the exposures (not for "rl"): computed with iteration 0,
            # and iteration 0 (unless given) drizzled by the same pass over the pairs
            norm, fused = None, None
            if method != "rl":
                norm, fused = _normalisation_product(
                    ck, plan, exposures, method, cutout_reader, scratch, drizzle=drizzled is None, errors=errors, weight=weight,
                )
            it0, info0, fresh = _iteration_zero(
                ck, exposures, grid, method, weight, token, background, errors, cutout_reader, pedestal,
                drizzled=drizzled if fused is None else fused, also=[norm] if norm is not None else [],
            )
            bkg, mock_floor, ped = float(info0["background"]), float(info0["mock_floor"]), float(info0["pedestal"])
            den, den_floor = _normalisation(ck, plan, exposures, it0, method, groups, cutout_reader, scratch)
            fill = max(bkg, mock_floor)
            correct, residual = _operators(
                method, it0, groups, plan, exposures, cutout_reader, scratch, on_device=on_device, errors=errors,
                mock_floor=mock_floor, pedestal=ped, damping=damping,
            )
            iterations = [it0]
            prefix = f"{method}/iter_"
            pending = [p for p in [_lay_out(files, 0, save, outdir, name, it0, it0, bkg, grid, method, overwrite, fresh=fresh)] if p]
            if callback is not None and fresh:
                callback(0, it0)
            for n in range(1, n_iterations + 1):
                key = f"{prefix}{n:02d}"
                if ck.complete(key):
                    iterations.append(ck.read(key))
                    got = _lay_out(
                        files, n, save, outdir, name, iterations[-1], it0, bkg, grid, method, overwrite, fresh=False,
                        err_scale=ck.info(key).get("err_scale", 1.0),
                    )
                    pending += [got] if got else []
                    continue
                t0 = time.perf_counter()
                ds, resid = _step(
                    iterations[-1], it0, den, correct=correct, multiplicative=method != "landweber",
                    tau=float(tau), den_floor=den_floor, errors=errors, fill=fill, on_device=on_device, pedestal=ped,
                    noise_aware=pedestal is not None,
                )
                ds.attrs.update({"product": method, "iteration": n})
                extras = [resid, _sky_sample(ds, it0, bkg)] if errors else [resid]

                def calibration(extra):
                    return {"err_scale": _err_scale(extra[1])} if errors else {}

                # the files laid out so far are written by the same call: no phase of their own
                r, *_ = ck.write(key, ds, extras, description=f"{method} iteration {n}/{n_iterations}", info=calibration, files=pending)
                pending = []
                if scratch is not None:
                    removals.append(_clear_later(scratch))
                ck.set_info(f"{prefix}{n - 1:02d}", **_residual_info(r))
                log.info(
                    "%s iteration %d/%d done in %.1f s; iteration %d: chi2/dof %.4g (residuals in units of the exposures' ERR, "
                    "%d pixels), data residual %.6g (MJy/sr)^2 weighted, %.4g per pixel",
                    method, n, n_iterations, time.perf_counter() - t0, n - 1, _chi2_dof(r), r[3], r[0], r[0] / max(r[1], 1),
                )
                iterations.append(ck.read(key))
                got = _lay_out(
                    files, n, save, outdir, name, iterations[-1], it0, bkg, grid, method, overwrite, fresh=True,
                    err_scale=ck.info(key).get("err_scale", 1.0),
                )
                pending += [got] if got else []
                if callback is not None:
                    callback(n, iterations[-1])
            last = f"{prefix}{n_iterations:02d}"
            wanted = [residual(on_device(_zero_nan(iterations[-1]["sci"].data)))] if final_residual and "residual" not in ck.info(last) else []
            if wanted or pending:
                # the last files and the last iterate's residual in one call
                what = f"{method} residual of iteration {n_iterations}" if wanted else f"writing {', '.join(p.final.name for p in pending)}"
                got = _compute_with_files(wanted, pending, what, client)
                pending = []
                if wanted:
                    (r,) = got
                    ck.set_info(last, **_residual_info(r))
                    log.info(
                        "%s iteration %d: chi2/dof %.4g (in units of the exposures' ERR, %d pixels), data residual %.6g (MJy/sr)^2 over %d pixels",
                        method, n_iterations, _chi2_dof(r), r[3], r[0], r[1],
                    )
    finally:
        for p in pending:  # a run stopped before writing them leaves no temporary file
            p.abort()
        for t in removals:
            if t is not None:
                t.join()
    infos = [ck.info(f"{prefix}{n:02d}") for n in range(n_iterations + 1)]
    return UPDCResult(
        method=method, iterations=iterations, residuals=[i.get("residual") for i in infos], background=bkg, grid=grid,
        files=files, fill=fill, chi2=[i.get("chi2_dof") for i in infos], pedestal=ped,
        err_scales=[i.get("err_scale", 1.0) for i in infos],
    )


def _operators(method, it0, groups, plan, exposures, reader, scratch, *, on_device, errors, mock_floor, pedestal, damping):
    """``correct(f)`` (the back-projected correction of an iterate) and ``residual(f)`` (its data residual) of ``method``."""
    if method == "rl":
        d, mask = on_device(_zero_nan(it0["sci"].data)), on_device(da.isfinite(it0["sci"].data))
        # the drizzle mosaic's variances (for errors, damping and chi-squared) when it has them
        v0 = [on_device(_zero_nan(it0[v].data)) for v in VARIANCES if v in it0]
        var_d = sum(v0[1:], v0[0]) if len(v0) == len(VARIANCES) else None
        psf = groups[0].psf

        def correct(f):
            return baselines.single_image_backproject(
                f, d, mask, psf, variances=v0 if errors else (), mock_floor=mock_floor, pedestal=pedestal, damping=damping, variance=var_d,
            )

        def residual(f):
            return baselines.single_image_residual(f, d, mask, psf, variance=var_d)

        return correct, residual
    corr = "ratio" if method == "updc" else "difference"
    source = ExposureSource(exposures, reader=reader, variances=errors)

    def correct(f):
        return backproject(
            f, plan, source, correction=corr, mock_floor=mock_floor, variances=errors, staging=scratch,
            pedestal=pedestal if corr == "ratio" else 0.0, damping=damping,
        )

    def residual(f):
        return data_residual(f, plan, source, staging=scratch, chi2=True)

    return correct, residual


def _compute_with_files(items, files, description, client):
    """Compute ``items`` and the writes of the laid-out ``files`` in one call, then commit the files
    (a failed call removes them; a full disk or quota is one error naming the first)."""
    try:
        got = _compute([*items, *(f.writes for f in files)], description, client)[: len(items)]
    except OSError as err:
        if not files:
            raise
        from mosaic.io.images import _write_error  # noqa: PLC0415

        for f in files:
            f.abort()
        raise _write_error(files[0].final, err, sum(f.size for f in files)) from None
    for f in files:
        f.commit()
    return got


def _sky_z_block(sci, err, sci0, err0, *, background: float, cut: float, dilate: int):
    """``(f_n - sky) / ERR_n`` on one tile's blank sky (NaN elsewhere): pixels of iteration 0 farther
    than ``dilate`` pixels from any above ``cut`` times its ERR."""
    from scipy.ndimage import binary_dilation  # noqa: PLC0415

    sci, err, sci0, err0 = (np.asarray(to_host(a), dtype=np.float64) for a in (sci, err, sci0, err0))
    covered = np.isfinite(sci0) & np.isfinite(err0)
    source = covered & (sci0 - background > cut * err0)
    if dilate > 0 and source.any():
        source = binary_dilation(source, iterations=dilate)
    sky = covered & ~source & np.isfinite(sci) & (err > 0)
    return np.where(sky, (sci - background) / np.where(sky, err, 1.0), np.nan).astype(np.float32)


def _sky_sample(ds: xr.Dataset, it0: xr.Dataset, background: float) -> da.Array:
    """A strided sample (about ``_SAMPLE_PIXELS``) of ``(f_n - sky) / ERR_n`` on blank sky, lazily."""
    block = functools.partial(_sky_z_block, background=float(background), cut=SKY_SOURCE_CUT, dilate=SKY_DILATE)
    arrays = [ds["sci"].data, ds["err"].data, it0["sci"].data, it0["err"].data]
    chunks = arrays[0].chunks
    z = da.map_blocks(block, *(da.asarray(a).rechunk(chunks) for a in arrays), meta=np.empty((0, 0), dtype=np.float32))
    step = max(1, int(np.ceil(np.sqrt(z.size / _SAMPLE_PIXELS))))
    return z[::step, ::step]


def _err_scale(sample) -> float:
    """The robust scatter (1.4826 x MAD) of normalised blank-sky residuals: the factor that makes
    the propagated ERR the measured noise (1 with fewer than :data:`SKY_MIN_PIXELS` pixels)."""
    z = np.asarray(sample, dtype=np.float64)
    z = z[np.isfinite(z)]
    if z.size < SKY_MIN_PIXELS:
        log.warning("ERR calibration: %d blank-sky pixels (fewer than %d); the propagated ERR is kept", z.size, SKY_MIN_PIXELS)
        return 1.0
    scale = float(1.4826 * np.median(np.abs(z - np.median(z))))
    log.info("ERR calibration: blank-sky scatter %.3f x the propagated ERR (%d pixels)", scale, z.size)
    return scale


def _chi2_dof(r) -> float:
    """chi-squared per degree of freedom (per data pixel with a variance) of a residual array; NaN without variances."""
    return float(r[2]) / float(r[3]) if r[3] > 0 else float("nan")


def _residual_info(r) -> dict:
    """A residual array (:data:`mosaic.coadd.forward.RESIDUAL_SIZE` entries) as manifest entries."""
    dof = _chi2_dof(r)
    return {
        "residual": float(r[0]), "n_pixels": int(r[1]), "chi2": float(r[2]), "chi2_pixels": int(r[3]),
        "chi2_dof": dof if np.isfinite(dof) else None,
    }


def _mover(array: str):
    """``a -> a`` on the array module ``array`` names (a dask array's chunks moved there, lazily)."""
    if array not in ARRAYS:
        msg = f"array {array!r} is not supported; expected one of {ARRAYS}"
        raise InputError(msg)
    if array == "numpy":
        return lambda a: a
    try:
        import cupy  # noqa: PLC0415
    except ImportError:
        msg = "array 'cupy' needs CuPy, which is not installed; pip install 'mosaic-jwst[gpu]', or use array 'numpy'"
        raise InputError(msg) from None

    def on_device(a):
        a = da.asarray(a)
        return a.map_blocks(cupy.asarray, dtype=a.dtype, meta=cupy.empty((0,) * a.ndim, dtype=a.dtype))

    on_device.block = cupy.asarray  # one tile (a stored read inside a task: _update_after)
    return on_device


def _on_host(a) -> da.Array:
    """A dask array's chunks as NumPy arrays (a no-op for NumPy chunks and NumPy arrays)."""
    if isinstance(getattr(a, "_meta", a), np.ndarray):
        return a
    return a.map_blocks(to_host, dtype=a.dtype, meta=np.empty((0,) * a.ndim, dtype=a.dtype))


def _is_finite_number(value) -> bool:
    return isinstance(value, int | float | np.number) and not isinstance(value, bool) and bool(np.isfinite(value))


def _check_int(label, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        msg = f"{label} {value!r} is not allowed; expected an integer >= {minimum}"
        raise InputError(msg)
    return int(value)


def _compute(items, description, client):
    from mosaic.progress import compute  # noqa: PLC0415

    return compute(*items, description=description, client=client)


def _iteration_zero(ck, exposures, grid, method, weight, token, background, errors, reader, pedestal="auto", *, drizzled=None, also=()):
    """The drizzle mosaic (pixfrac 1; ``drizzled`` when given), its sky, the mock floor and the pedestal: computed once, then read.

    ``also``: more products ``(name, ds, extras, info)`` to compute in the same call, when iteration 0 is computed.
    """
    key = f"{method}/iter_00"
    if ck.complete(key):
        info = ck.info(key)
        if info.get("token") != token:
            where = ck.store.path if ck.store is not None else "memory"
            msg = (
                f"{where}: {ck.field}/{ck.band}/{key} was made with other settings (exposures, PSFs, grid or options); "
                "pass overwrite=True (--overwrite) to start again"
            )
            raise InputError(msg)
        return ck.read(key), info, False
    if drizzled is None:
        mosaic = drizzle_mosaic(exposures, grid, pixfrac=1.0, kernel="square", weight=weight, variance=errors, cutout_reader=reader)
    else:
        mosaic = _given_drizzle(drizzled, grid, errors)
    if not errors:
        mosaic = mosaic.drop_vars([v for v in ("err",) if v in mosaic])
    mosaic.attrs.update({"product": method, "iteration": 0})
    sci = mosaic["sci"].data
    step = max(1, int(np.ceil(np.sqrt(sci.size / _SAMPLE_PIXELS))))
    # one task on the whole sample, in the array's graph (a delayed call would be optimised apart
    # from the products and compute every pair task a second time)
    sample = sci[::step, ::step].rechunk(-1)
    levels = sample.map_blocks(_sky_levels, background=background, drop_axis=1, chunks=((2,),), meta=np.empty((0,), dtype=np.float64))

    def info(extra):
        return {**_sky_info(extra[0], background, token), **_pedestal_info(extra[1], pedestal)}

    ck.write(key, mosaic, [levels, noise_sums(exposures)], description=f"{method} iteration 0 (drizzle)", info=info, also=also)
    return ck.read(key), ck.info(key), True


def _given_drizzle(drizzled: xr.Dataset, grid: MosaicGrid, errors: bool) -> xr.Dataset:
    """The planes of a drizzle mosaic made elsewhere that iteration 0 keeps (those :func:`drizzle_mosaic` makes)."""
    planes = ["sci", "wht", "con", *((["err", *VARIANCES]) if errors else [])]
    missing = [v for v in planes if v not in drizzled]
    if missing:
        msg = f"drizzled mosaic lacks {missing}; expected the planes of drizzle_mosaic(..., variance={errors})"
        raise InputError(msg)
    if tuple(drizzled["sci"].shape) != tuple(grid.shape):
        msg = f"drizzled mosaic has shape {tuple(drizzled['sci'].shape)}; expected the grid's {tuple(grid.shape)}"
        raise InputError(msg)
    out = drizzled[planes]
    out.attrs = dict(drizzled.attrs)
    return out


def noise_sums(exposures: xr.Dataset) -> da.Array:
    """Per exposure, the sums that give its gain and the sky taken from it (lazy, ``(n, 8)`` float64).

    Over good pixels with ``VAR_POISSON > 0`` (where the ramp fit's Poisson variance is
    ``c (SCI + b)``, ``c`` in MJy/sr per electron, ``b`` the sky subtracted since, if any):
    ``n, sum x, sum y, sum x^2, sum x y`` with ``x = SCI``, ``y = VAR_POISSON``; then over good
    pixels the count, ``sum VAR_RNOISE`` and ``sum`` of the total variance. See :func:`_pedestal_info`.

    One task per exposure block reads its planes and reduces them at once: as a graph of
    element-wise steps, the scheduler held the float64 planes of many exposures at a time
    (3 GiB per worker on the 36-exposure flagship field, the peak of iteration 0).
    """
    sci = exposures["sci"].data
    good = exposures["good"].data if "good" in exposures else da.isfinite(sci)
    planes = [exposures[v].data if v in exposures else None for v in ("var_poisson", "var_rnoise", "var_flat")]
    present = tuple(p is not None for p in planes)
    # whole exposures per block (how read_exposures chunks them; other chunkings are merged)
    args = [da.asarray(a).rechunk({1: -1, 2: -1}) for a in (sci, good, *(p for p in planes if p is not None))]
    sci = args[0]
    return da.map_blocks(
        _noise_sums_block, *args, present=present, dtype=np.float64, drop_axis=2, chunks=(sci.chunks[0], (8,)),
        name=f"noise-sums-{tokenize(*args, present)}",
    )


def _noise_sums_block(sci, good, *given, present) -> np.ndarray:
    """:func:`noise_sums` of a block of exposures ``(n, ny, nx)``: ``(n, 8)``."""
    given = iter(given)
    vp, vr, vf = (next(given) if p else None for p in present)
    sums = [gain_sums(sci[e], good[e], *(None if v is None else v[e] for v in (vp, vr, vf))) for e in range(sci.shape[0])]
    return np.stack(sums) if sums else np.empty((0, 8))


def _pedestal_info(sums, pedestal) -> dict:
    """The pedestal ``s`` of the update from :func:`noise_sums` (``pedestal="auto"``), or as given.

    Per exposure, a straight-line fit ``VAR_POISSON = c SCI + c b`` gives the gain ``c`` (data
    units per electron) and the sky ``b`` subtracted from the data (0 if none); the read-noise
    variance in the data's units is ``VAR_RNOISE / c`` (Snyder, Hammoud & White's shift), and
    ``s_k = VAR_RNOISE / c + b`` is the offset that makes the data Poisson-like again. ``s`` is
    the median over exposures, at least :data:`PEDESTAL_SIGMAS` times the median noise per
    pixel (so ``g + s > 0`` on all but a few outliers even when the read noise is a few
    electrons), or that floor alone where no gain can be fitted.
    """
    sums = np.asarray(sums, dtype=np.float64).reshape(-1, 8)
    if pedestal is None or (pedestal != "auto" and float(pedestal) == 0.0):
        return {"pedestal": 0.0, "pedestal_mode": "none"}
    if pedestal != "auto":
        return {"pedestal": float(pedestal), "pedestal_mode": "given"}
    shw, noise = [], []
    for n, sx, sy, sxx, sxy, n_rn, s_rn, s_tot in sums:
        if n_rn > 0:
            noise.append(np.sqrt(s_tot / n_rn))
        spread = sxx - sx * sx / n if n > 2 else 0.0
        if n > 2 and spread > 0 and n_rn > 0:
            c = (sxy - sx * sy / n) / spread
            if c > 0:
                b = (sy - c * sx) / n / c
                shw.append(s_rn / n_rn / c + max(b, 0.0))
    floor = PEDESTAL_SIGMAS * float(np.median(noise)) if noise else 0.0
    value = max(float(np.median(shw)) if shw else 0.0, floor)
    log.info(
        "pedestal %.6g MJy/sr (read-noise-corrected ratio): from VAR_RNOISE and the gain %s, floor %.3g (%g x the noise per pixel)",
        value, f"{np.median(shw):.6g}" if shw else "(no gain fitted)", floor, PEDESTAL_SIGMAS,
    )
    return {"pedestal": value, "pedestal_mode": "auto", "pedestal_shw": float(np.median(shw)) if shw else None, "pedestal_floor": floor}


def _sky_levels(sample, background) -> np.ndarray:
    """The sky level that every product has removed (``background``: "median", a number or None)
    and the mock floor, from a strided 2-D sample of the drizzle mosaic: ``[background,
    mock_floor]``. The one block of a dask array in iteration 0's graph: it runs on a worker while
    the last tiles of the mosaic and of the normalisation are written, not on the client between
    two passes.

    "median" is the median of the sky with the sources masked (:func:`mosaic.catalog.noise.sky_noise`):
    a clipped median of every pixel sits on the sources' wings, above the sky (a field with 29 %
    of its pixels in sources: +0.15 sigma a pixel, 1.3 sigma of flux in a 5-pixel aperture;
    tests/coadd/test_updc.py).
    """
    from mosaic.catalog.noise import sky_noise  # noqa: PLC0415

    sample = np.asarray(to_host(sample), dtype=np.float64)
    finite = np.isfinite(sample)
    s = sample[finite]
    if s.size == 0:
        msg = "the drizzle mosaic has no finite pixel; expected exposures with good pixels on the grid"
        raise InputError(msg)
    if background == "median":
        if s.size >= 100:
            bkg = float(sky_noise(sample, finite).sky)
        else:  # too few pixels to mask sources in
            bkg = float(np.median(s))
    else:
        bkg = 0.0 if background is None else float(background)
    return np.array([bkg, MOCK_FLOOR * float(np.percentile(np.abs(s), 99.0))])


def _sky_info(levels, background, token) -> dict:
    """The manifest's sky entries of iteration 0 from ``levels`` (:func:`_sky_levels`) and the ``token``, logged."""
    bkg, floor = (float(v) for v in np.asarray(to_host(levels)))
    log.info("iteration 0: sky %.6g MJy/sr (%s), mock floor %.3g", bkg, background, floor)
    return {"token": token, "background": bkg, "mock_floor": floor}


def _normalisation_product(ck, plan, exposures, method, reader, scratch, *, drizzle=False, errors=True, weight="ivm"):
    """The product ``(name, ds, extras, info)`` of the multi-frame normalisation ``sum_G B_G^*(sum_k D_k(w_k))``
    for :meth:`_Checkpoints.write` (None when it is already complete), and with ``drizzle`` the
    drizzle mosaic of iteration 0 made by the same pass over the pairs (None when iteration 0 is
    already complete): ``(product, mosaic)``.

    The normalisation drizzles the weights with the square kernel and pixfrac 1, as iteration 0
    drizzles the data: one pass computes each pair's overlaps once for both, and the pixel maps
    it makes serve every later pass (:func:`mosaic.coadd.forward.pair_drizzle`).
    """
    key = f"{method}/norm"
    drizzle = drizzle and not ck.complete(f"{method}/iter_00")
    if ck.complete(key) and not drizzle:
        return None, None
    source = ExposureSource(exposures, reader=reader)
    if not drizzle:
        return _norm_product(key, normalisation(plan, source, staging=scratch)), None
    den, planes = normalisation(plan, source, staging=scratch, drizzle=True, variances=errors)
    wcs = [w.get() for w in plan.wcs]
    psrs = [float(estimate_pixel_scale_ratio(wcs[k], plan.grid.wcs)) for k in plan.used] if plan.grid.psr is None else []
    attrs = drizzle_attrs(exposures, plan.grid, kernel="square", pixfrac=1.0, weight=weight, psrs=psrs, used=plan.used)
    mosaic = xr.Dataset(
        {name: (("plane", "y", "x") if name == "con" else ("y", "x"), a) for name, a in planes.items()}, attrs=attrs,
    )
    return (None if ck.complete(key) else _norm_product(key, den)), mosaic


def _norm_product(key, den):
    def info(extra):
        return {"max": float(extra[0])}

    return key, xr.Dataset({"norm": (("y", "x"), den)}), [den.max()], info


def _normalisation(ck, plan, exposures, it0, method, groups, reader, scratch):
    """``sum_G B_G^*(sum_k D_k(w_k))`` (or ``B^*(mask)`` for ``"rl"``), written once (if iteration 0 did not), and its floor."""
    key = f"{method}/norm"
    if not ck.complete(key):
        if method == "rl":
            den = baselines.single_image_normalisation(da.isfinite(it0["sci"].data), groups[0].psf)
            item = _norm_product(key, den)
        else:
            item, _ = _normalisation_product(ck, plan, exposures, method, reader, scratch)
        name, ds, extras, info = item
        ck.write(name, ds, extras, description=f"{method} normalisation", info=info)
    den = ck.read(key)["norm"].data.astype(np.float64)
    return den, NORM_FLOOR * float(ck.info(key)["max"])


def _lay_out(files, n, save, outdir, name, ds, it0, bkg, grid, method, overwrite, *, fresh: bool, err_scale: float = 1.0):
    """Lay out iteration ``n``'s _i2d.fits file if asked (not a resumed one already on disk): its
    :class:`~mosaic.io.images.PendingFile`, whose writes join the next computation; else None."""
    if outdir is None or n not in save:
        return None
    from mosaic.io.products import write_i2d  # noqa: PLC0415

    path = outdir / f"{name}_iter{n:02d}_i2d.fits"
    files[n] = path
    if path.exists() and not (fresh or overwrite):
        return None
    header = {"UPDCMETH": method, "UPDCITER": n, "BKGLEVEL": bkg, "BKGSUB": bkg != 0.0, "ERRSCALE": err_scale}
    return write_i2d(path, _product(ds, it0, bkg, err_scale), grid, primary_header=header, overwrite=True, compute=False)
