"""The drizzle mosaic of _cal.fits files, written straight into an _i2d.fits file by worker processes.

What ``mosaic drizzle`` runs when it writes a file only (no store, no preprocessing): the same
tile tasks as :func:`mosaic.coadd.drizzle.drizzle_mosaic` (one per output tile, every exposure
that lands on it drizzled in one pass, cut-outs read from the files), so the products are the
same to the bit, but without a dask graph or scheduler:

- the geometry (which cut-out of which exposure reaches which tile) is computed once, here,
  and handed to the workers once, when the pool starts (forked workers inherit it; nothing
  of it travels with a task, which is a tile index);
- each worker writes its finished tile into the laid-out file itself (``os.pwrite`` at the
  tile's offsets), so no array moves between processes and no process holds the mosaic;
- tiles are handed out largest first, so that the workers finish together;
- nothing heavier than astropy and the ``drizzle`` package is imported here: dask.array,
  xarray, pandas and distributed cost about 2.5 s of CPU at start-up, more than the whole
  drizzle of a small field. The workers load the square kernel's compiled code
  (:mod:`mosaic.ops.overlap`, Numba) at their first tile, side by side: ~0.4 s each, most of
  it Numba's own start (its NumPy support imports scipy.linalg). Loaded here before the fork
  instead, it cost the same time on one core, and the runs were no faster.

The drizzle C code (the other kernels) holds the GIL, so threads would not run tiles side by
side: workers are processes, forked on Linux (no imports repeated), spawned elsewhere.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import sys
import time
import uuid
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from pathlib import Path
from typing import NamedTuple

import numpy as np
from astropy.io import fits

from mosaic.coadd.drizzle import VARIANCES, _drizzle_tile, _PortableWCS, plan_drizzle
from mosaic.exceptions import InputError
from mosaic.io.grid import MosaicGrid
from mosaic.io.images import padded_size, refuse_input_as_output
from mosaic.io.products import I2D_EXTENSIONS, i2d_image_header, i2d_primary_header

__all__ = ["I2D_LAYOUT", "drizzle_files"]

log = logging.getLogger(__name__)

#: the i2d file's image extensions in file order (:data:`mosaic.io.products.I2D_EXTENSIONS`):
#: (EXTNAME, variable, dtype, fill where nothing landed)
I2D_LAYOUT = tuple(
    (name, var, np.int32 if var == "con" else np.float32, {"con": 0, "wht": 0.0}.get(var, np.nan))
    for name, var in I2D_EXTENSIONS.items()
)


class _Image(NamedTuple):
    """Where one image extension's data lie in the file: ``shape`` (slowest first) from ``offset``."""

    offset: int
    shape: tuple
    dtype: np.dtype


class _I2DFile:
    """An i2d file laid out under a temporary name (headers written, data areas reserved, sparse).

    Picklable (a path and offsets): any process can write tiles into it.
    """

    def __init__(self, path: Path, primary: fits.Header, headers: list[tuple[str, fits.Header, tuple, np.dtype]]):
        self.final = Path(path)
        self.tmp = self.final.absolute().with_name(f".{self.final.name}.part-{uuid.uuid4().hex[:8]}")
        self.images = {}
        size = len(primary.tostring()) + sum(len(h.tostring()) + padded_size(int(np.prod(s)) * np.dtype(d).itemsize) for _, h, s, d in headers)
        try:
            with open(self.tmp, "xb") as fh:  # exclusive: never through a planted file or link
                if size > shutil.disk_usage(self.tmp.parent).free:
                    msg = f"{self.final}: the file needs {size:,} bytes, more than the free space of {self.final.parent}; free space or choose another --out"
                    raise InputError(msg)
                fh.write(primary.tostring().encode("ascii"))
                for name, header, shape, dtype in headers:
                    fh.write(header.tostring().encode("ascii"))
                    offset = fh.tell()
                    fh.seek(offset + padded_size(int(np.prod(shape)) * np.dtype(dtype).itemsize))
                    self.images[name] = _Image(offset, tuple(shape), np.dtype(dtype).newbyteorder(">"))
                fh.truncate()
        except BaseException:
            self.tmp.unlink(missing_ok=True)
            raise

    def write(self, name: str, core: tuple[slice, slice], block) -> None:
        """Write ``block`` (2-D, or 3-D with the planes first) into image ``name`` at the tile ``core``."""
        img = self.images[name]
        ys, xs = core
        ny, nx = img.shape[-2:]
        item = img.dtype.itemsize
        block = np.ascontiguousarray(block, dtype=img.dtype).reshape(-1, ys.stop - ys.start, xs.stop - xs.start)
        fd = os.open(self.tmp, os.O_WRONLY)
        try:
            for p, plane in enumerate(block):
                base = img.offset + p * ny * nx * item
                if xs.start == 0 and xs.stop == nx:  # whole rows are contiguous: one write
                    os.pwrite(fd, plane.tobytes(), base + ys.start * nx * item)
                    continue
                for r, row in enumerate(plane):
                    os.pwrite(fd, row.tobytes(), base + ((ys.start + r) * nx + xs.start) * item)
        finally:
            os.close(fd)

    def commit(self) -> Path:
        from mosaic.io.replace import replace_file  # noqa: PLC0415

        return replace_file(self.tmp, self.final)

    def abort(self) -> None:
        self.tmp.unlink(missing_ok=True)


def _headers(grid: MosaicGrid, attrs: dict, n_planes: int) -> tuple[fits.Header, list]:
    """The primary header and ``(EXTNAME, header, shape, dtype)`` of each image extension, those of :func:`~mosaic.io.products.write_i2d`."""
    wcs_header = grid.to_header()
    out = []
    for name, _, dtype, _ in I2D_LAYOUT:
        shape = (n_planes, *grid.shape) if name == "CON" else grid.shape
        out.append((name, i2d_image_header(name, shape, dtype, wcs_header), shape, dtype))
    return i2d_primary_header(attrs, None), out


class _Job(NamedTuple):
    """What every tile task needs, handed to each worker once (inherited when forked)."""

    reader: object
    exptimes: list
    wcs: list
    grid_wcs: _PortableWCS
    cutouts: list
    by_tile: dict
    cores: dict
    n_planes: int
    weight: str
    kernel: str
    pixfrac: float
    psrs: list
    file: _I2DFile


_JOB: _Job | None = None


def _start_worker(job: _Job) -> None:
    global _JOB  # noqa: PLW0603  (a worker process's one job)
    _JOB = job


def _run_tile(index) -> tuple:
    """Drizzle tile ``index`` and write it into the file; returns ``(index, CPU seconds)``."""
    job = _JOB
    t0 = time.process_time()
    ks = job.by_tile[index]
    core = job.cores[index]
    res = _drizzle_tile(
        [job.reader] * len(ks), [job.exptimes[k] for k in ks], [job.wcs[k] for k in ks], job.grid_wcs,
        regions=[job.cutouts[k][index] for k in ks], core=core, exposures=ks, n_planes=job.n_planes,
        weight=job.weight, kernel=job.kernel, pixfrac=job.pixfrac, pixel_scale_ratios=[job.psrs[k] for k in ks],
        var_names=VARIANCES,
    )
    for name, var, _, _ in I2D_LAYOUT:
        job.file.write(name, core, res[var])
    return index, time.process_time() - t0


def _pool(workers: int, job: _Job) -> ProcessPoolExecutor:
    # forked workers inherit the imports and the job; elsewhere forking is unsafe
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else None)
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_start_worker, initargs=(job,))


def drizzle_files(
    infos: list[dict],
    grid: MosaicGrid,
    out,
    *,
    bad_bits: int,
    pixfrac: float = 1.0,
    kernel: str = "square",
    weight: str = "ivm",
    workers: int = 0,
    n_given: int | None = None,
) -> Path:
    """Drizzle validated exposures onto ``grid`` and write the ``_i2d.fits`` file ``out``.

    Parameters
    ----------
    infos : list of dict
        The exposures, as :func:`mosaic.io.cal.check_exposures` returns them.
    grid : MosaicGrid
        The output grid and its tiling (one task per tile).
    out : path-like
        The ``_i2d.fits`` file; written under a temporary name, renamed when whole.
    bad_bits : int
        DQ bits that make a pixel bad.
    pixfrac, kernel, weight
        As :func:`mosaic.coadd.drizzle.drizzle_mosaic` (variances are always propagated).
    workers : int
        Worker processes (0: the tiles are drizzled in this process, one after the other).
    n_given : int, optional
        Exposures given (``NDRIZIM``; default: ``len(infos)``).

    Returns
    -------
    pathlib.Path
        The file written; SCI, ERR, CON, WHT and VAR_* equal those of
        :func:`mosaic.io.products.write_i2d` of :func:`~mosaic.coadd.drizzle.drizzle_mosaic`.
    """
    from mosaic.io.cal import CalCutouts  # noqa: PLC0415

    out = Path(out)
    paths = [str(i["path"]) for i in infos]
    refuse_input_as_output(out, inputs=paths)
    wcs_list = [i["wcs"] for i in infos]
    shape = tuple(infos[0]["shape"])
    t0 = time.perf_counter()
    plan = plan_drizzle(wcs_list, shape, grid, kernel=kernel, pixfrac=pixfrac, names=paths, stacklevel=3)
    attrs = {
        "band": infos[0]["band"], "kernel": kernel, "pixfrac": float(pixfrac), "weight_type": weight,
        "pixel_scale_ratio": float(grid.psr) if grid.psr is not None else float(np.median(plan.psrs)),
        "n_exposures": int(n_given if n_given is not None else len(infos)), "exposures_used": plan.used,
    }
    primary, headers = _headers(grid, attrs, plan.n_planes)
    target = _I2DFile(out, primary, headers)
    cores = {t.index: t.core for t in grid.tiles()}
    todo = sorted((i for i, ks in plan.by_tile.items() if ks), key=plan.pixels, reverse=True)
    job = _Job(
        CalCutouts(paths, bad_bits).prepare(), [float(i["exptime"]) for i in infos], [_PortableWCS(w) for w in wcs_list],
        _PortableWCS(grid.wcs), plan.cutouts, plan.by_tile, cores, plan.n_planes, weight, kernel, float(pixfrac),
        plan.psrs, target,
    )
    log.info(
        "drizzle: %d exposures on %d tiles (%d with data, %d (exposure, tile) pairs), %s; planned in %.2f s",
        len(plan.used), len(cores), len(todo), sum(len(v) for v in plan.by_tile.values()),
        f"{workers} worker processes" if workers else "in this process", time.perf_counter() - t0,
    )
    try:
        # the tiles nothing reaches: their fill values (the reserved areas read as zeros)
        for index, ks in plan.by_tile.items():
            if ks:
                continue
            ys, xs = cores[index]
            for name, _, dtype, fill in I2D_LAYOUT:
                if fill != 0:
                    planes = (plan.n_planes,) if name == "CON" else ()
                    target.write(name, cores[index], np.full((*planes, ys.stop - ys.start, xs.stop - xs.start), fill, dtype))
        cpu = 0.0
        if workers <= 0:
            _start_worker(job)
            try:
                for n, index in enumerate(todo, start=1):
                    cpu += _run_tile(index)[1]
                    log.debug("drizzle: tile %s done (%d of %d)", index, n, len(todo))
            finally:
                _start_worker(None)
        else:
            with _pool(workers, job) as pool:
                futures = [pool.submit(_run_tile, index) for index in todo]
                done, _ = wait(futures, return_when=FIRST_EXCEPTION)
                for f in futures:
                    if f in done and f.exception() is not None:
                        for g in futures:
                            g.cancel()
                        raise f.exception()
                cpu = sum(f.result()[1] for f in futures)
    except BaseException:
        target.abort()
        raise
    written = target.commit()
    log.info("drizzle: %d tiles in %.1f s (%.1f s of CPU in the tasks) -> %s", len(todo), time.perf_counter() - t0, cpu, written)
    return written
