"""The pre-flight plan of a run: grid size, bytes on disk, memory per worker, checked before anything is allocated.

:func:`plan_run` reads only headers (the output grid comes from the exposures' WCSs through
:meth:`mosaic.io.grid.MosaicGrid.from_exposures`, which refuses a grid wider than the side limit
and names the exposures that stretch it); :meth:`RunPlan.check` refuses a run whose products and
staging would pass the byte limit or not fit the free space of the disks they go to. The limits
are dask configuration keys, so a site sets them once (``~/.config/dask/mosaic.yaml``)::

    mosaic:
      limits:
        max-grid-side: 50000     # output pixels on either axis
        max-bytes: 1TB           # products + store + staging of one field/band

Every figure is an estimate from array sizes (uncompressed), stated as such.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import dask.config
from dask.utils import format_bytes, parse_bytes

from mosaic.exceptions import LimitError

__all__ = ["DEFAULT_MAX_BYTES", "RunPlan", "max_bytes", "plan_run"]

log = logging.getLogger(__name__)

#: the largest estimated disk use of one field/band unless dask's ``mosaic.limits.max-bytes`` says otherwise
DEFAULT_MAX_BYTES = "1TB"

#: float32 planes of a mosaic product: sci, err, wht, var_poisson, var_rnoise, var_flat
_PLANES = 6


def max_bytes() -> int:
    """The byte limit of one field/band: dask config ``mosaic.limits.max-bytes`` (default 1 TB)."""
    value = dask.config.get("mosaic.limits.max-bytes", default=DEFAULT_MAX_BYTES)
    try:
        n = parse_bytes(value) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        msg = f"dask config mosaic.limits.max-bytes: got {value!r}; expected a size such as '500GB'"
        raise ValueError(msg)
    return n


@dataclass(frozen=True)
class RunPlan:
    """What a field/band run will need, from headers alone.

    Attributes
    ----------
    name : str
        ``<field>/<band>``, for messages.
    shape : tuple of int
        The output grid.
    n_exposures : int
    file_bytes : int
        The ``_i2d.fits`` files (drizzle and saved iterations).
    store_bytes : int
        The store's products (drizzle and every UPDC iteration), uncompressed.
    staging_bytes : int
        UPDC's temporary folders: staging during an iteration (six float64 planes) and the pairs'
        pixel maps, kept for the run when it has several worker processes (two float64 per
        exposure pixel, and the tiles' overlaps).
    worker_bytes : int
        Memory of one tile task (the tile with its PSF margin, a few float64 planes and FFTs).
    """

    name: str
    shape: tuple[int, int]
    n_exposures: int
    file_bytes: int
    store_bytes: int
    staging_bytes: int
    worker_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.file_bytes + self.store_bytes + self.staging_bytes

    def describe(self) -> str:
        """One line: grid, bytes and memory per worker."""
        ny, nx = self.shape
        return (
            f"{self.name}: {self.n_exposures} exposures -> {ny:,} x {nx:,} grid; about {format_bytes(self.file_bytes)} of files, "
            f"{format_bytes(self.store_bytes)} in the store, {format_bytes(self.staging_bytes)} of staging; "
            f"about {format_bytes(self.worker_bytes)} per tile task"
        )

    def check(self, *, outdir, store, worker_memory=None) -> None:
        """Refuse a run beyond the byte limit, one whose files and store would not fit their disks,
        or one whose tile tasks would not fit a worker's ``worker_memory`` (bytes, where known).

        Raises
        ------
        LimitError
            Naming the figure, the limit or the free space, and what to change.
        """
        limit = max_bytes()
        if self.total_bytes > limit:
            msg = (
                f"{self.name}: the run would write about {format_bytes(self.total_bytes)} ({self.shape[0]:,} x {self.shape[1]:,} grid); "
                f"expected at most {format_bytes(limit)} (dask config mosaic.limits.max-bytes): raise psr, save fewer iterations, or raise the limit"
            )
            raise LimitError(msg)
        if worker_memory is not None and self.worker_bytes > worker_memory:
            msg = (
                f"{self.name}: a tile task needs about {format_bytes(self.worker_bytes)} and a worker has {format_bytes(worker_memory)} "
                f"(cluster memory_limit); expected tasks that fit: lower grid.tile, or give the workers more memory"
            )
            raise LimitError(msg)
        needs = {}
        for path, n in ((Path(outdir), self.file_bytes), (Path(store), self.store_bytes + self.staging_bytes)):
            disk = _existing(path)
            key = disk.stat().st_dev
            free, total_n, where = needs.get(key, (shutil.disk_usage(disk).free, 0, disk))
            needs[key] = (free, total_n + n, where)
        for free, n, where in needs.values():
            if n > free:
                msg = (
                    f"{self.name}: needs about {format_bytes(n)} on {where}, which has {format_bytes(free)} free; "
                    f"expected room for the products: free space, or choose another products.outdir / store"
                )
                raise LimitError(msg)


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing parent (where its disk is)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def plan_run(
    grid,
    *,
    name: str,
    n_exposures: int,
    drizzle: bool = True,
    iterations: int = 0,
    saved: int = 0,
    psf_size: int = 0,
    exposure_pixels: int = 0,
) -> RunPlan:
    """The plan of one field/band on ``grid`` (a :class:`~mosaic.io.grid.MosaicGrid`).

    Parameters
    ----------
    grid : MosaicGrid
    name : str
        ``<field>/<band>`` for messages.
    n_exposures : int
    drizzle : bool
        Whether the drizzle mosaic is written (always computed when UPDC runs).
    iterations : int
        UPDC iterations (0: UPDC off).
    saved : int
        Iterations written as ``_i2d.fits`` files.
    psf_size : int
        Side of the PSF in output pixels (the UPDC grid grows by its radius; tiles carry it as a halo).
    exposure_pixels : int
        Pixels of all the exposures together (their pixel maps may be kept on disk during UPDC).
    """
    ny, nx = grid.shape
    if iterations:
        ny, nx = ny + 2 * (psf_size // 2), nx + 2 * (psf_size // 2)
    pixels = ny * nx
    con = 4 * -(-max(n_exposures, 1) // 32)
    i2d = pixels * (4 * _PLANES + con)
    file_bytes = (i2d if drizzle else 0) + saved * i2d
    store_bytes = (i2d if drizzle or iterations else 0) + iterations * pixels * 4 * _PLANES
    # the maps: two float64 per exposure pixel, a quarter more where the tiles' cut-outs overlap
    staging_bytes = pixels * 8 * 6 + 20 * exposure_pixels if iterations else 0
    ty, tx = min(grid.tile[0], ny), min(grid.tile[1], nx)
    side = max(ty, tx) + 2 * grid.halo + (psf_size if iterations else 0)
    # a tile's arrays in float64 (a dozen planes) and the FFTs of a padded tile (complex128, three)
    worker_bytes = side * side * 8 * 12 + (2 * side) ** 2 * 16 * 3
    return RunPlan(name, (ny, nx), int(n_exposures), int(file_bytes), int(store_bytes), int(staging_bytes), int(worker_bytes))
