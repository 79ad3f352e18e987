"""Benchmark: UPDC at the paper's scale -- seconds per iteration and peak memory against the area.

Run (the field is simulated once: 22 min on a quiet 2-core machine)::

    mosaic simulate flagship/ --flagship --workers 2
    python benchmarks/bench_updc_flagship.py flagship/ [--psf 301] [--iterations 2] [--areas 0.25 0.5 1]
                                              [--tile 1024] [--workers 2] [--memory-limit 4GB] [--staging on|off|both] [--dask-malloc]
                                              [--tasks]

For each fraction of the 9587 x 9559 flagship grid (a region from its lower-left corner, with the
exposures that touch it) UPDC runs ``--iterations`` iterations from the drizzle mosaic on
mosaic's local cluster (a ``LocalCluster`` with :data:`mosaic.cluster.WORKER_MALLOC_ENV`;
``--dask-malloc``: dask's own worker settings), reading the exposures' cut-outs straight from the ``_cal.fits`` files and
writing every iteration to a zarr store, as ``mosaic updc`` does. Printed per area: the seconds
of iteration 0 (drizzle and normalisation) and the mean seconds of iterations 1.., the time per
iteration relative to the smallest area against the area ratio and against the ratio of exposure
pixels mocked (the peers: linear growth; regions from the corner grow into the deeper middle of
the field, so the pixels grow faster than the area), and the peak memory of all processes (RSS summed over this process and the workers, sampled every 50
ms). ``--psf 1501`` makes the paper's 1501² PSF (``mosaic.psf.model.jwst_psf``, cached in the
field's folder). ``--staging both`` runs each area twice, with the tiles kept in memory between
neighbours and then staged on disk (:mod:`mosaic.coadd.staging`, the default), and prints the
ratios of the second to the first. Nothing here gates anything on time.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from dask.utils import key_split
from distributed import Client, get_task_stream

sys.path.insert(0, str(Path(__file__).parent))
from _memory import PeakMemory  # noqa: E402

__all__ = ["main"]

GiB = 2.0**30


def _psf(folder: Path, size: int, grid):
    from mosaic.psf.files import read_psf, write_psf
    from mosaic.psf.model import jwst_psf

    own = folder / "psf_f200w.fits"
    if own.exists():
        psf = read_psf(own)[0]
        if psf.shape[0] == size:
            return psf
    path = folder / f"psf_F200W_grid_{size}.fits"
    if not path.exists():
        t0 = time.perf_counter()
        psf = jwst_psf("F200W", pixel_scale_arcsec=grid.pixel_scale_arcsec, size=size, n_pupil=512 if size > 801 else 256)
        write_psf(path, psf, pixel_scale_arcsec=grid.pixel_scale_arcsec, band="F200W")
        print(f"made a {size}² PSF in {time.perf_counter() - t0:.0f} s")
    return read_psf(path)[0]


def _region(grid, fraction: float, tile: int):
    from mosaic.io.grid import MosaicGrid

    side = np.sqrt(fraction)
    ny, nx = (max(1, int(round(n * side))) for n in grid.shape)
    return MosaicGrid(wcs=grid.slice_wcs((slice(0, ny), slice(0, nx))), shape=(ny, nx), tile=tile, psr=grid.psr)


def _cluster(args):
    from distributed import LocalCluster

    from mosaic.cluster import make_cluster

    if args.dask_malloc:
        return LocalCluster(n_workers=args.workers, threads_per_worker=1, memory_limit=args.memory_limit, dashboard_address=":0")
    spec = {"kind": "local", "n_workers": args.workers, "threads_per_worker": 1, "memory_limit": args.memory_limit, "dashboard_address": ":0"}
    return make_cluster(spec)


def _print_tasks(records, marks, steps, n_workers) -> None:
    """Per iteration (``marks``, its bounds on the task stream's clock): the workers' compute
    seconds by task prefix, and the share of worker time idle."""
    for n, (a, b) in enumerate(zip(marks, marks[1:], strict=False)):
        busy: dict[str, float] = {}
        for r in records:
            prefix = key_split(r["key"])
            for s in r["startstops"]:
                if s["action"] == "compute" and s["stop"] > a and s["start"] < b:
                    busy[prefix] = busy.get(prefix, 0.0) + min(s["stop"], b) - max(s["start"], a)
        total = sum(busy.values())
        # stretches with no task on any worker (the client building the next graph, commits)
        spans = sorted(
            (max(s["start"], a), min(s["stop"], b)) for r in records for s in r["startstops"]
            if s["action"] == "compute" and s["stop"] > a and s["start"] < b
        )
        none, reached = 0.0, a
        for start, stop in spans:
            none += max(start - reached, 0.0)
            reached = max(reached, stop)
        none += max(b - reached, 0.0)
        parts = ", ".join(f"{k} {v:.1f}" for k, v in sorted(busy.items(), key=lambda kv: -kv[1])[:8])
        print(f"  iteration {n}: {steps[n]:.1f} s wall, workers busy {total:.1f} s of {n_workers * steps[n]:.1f} "
              f"({1 - total / (n_workers * steps[n]):.0%} idle; {none:.1f} s with no task running): {parts}", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("field", help="folder written by `mosaic simulate --flagship`")
    p.add_argument("--psf", type=int, default=301, help="PSF side on the output grid (default 301; paper 1501)")
    p.add_argument("--iterations", type=int, default=2, help="UPDC iterations after iteration 0 (default 2; 0 times iteration 0 alone)")
    p.add_argument("--areas", type=float, nargs="+", default=[0.25, 0.5, 1.0], help="fractions of the grid's area (default 0.25 0.5 1)")
    p.add_argument("--tile", type=int, default=1024, help="tile side (default 1024)")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default 2)")
    p.add_argument("--dask-malloc", action="store_true", help="workers with dask's MALLOC_TRIM_THRESHOLD_ (64 KiB), not mosaic's")
    p.add_argument("--memory-limit", default="6GB", help="per worker (default 6GB)")
    p.add_argument("--scratch", default=None, help="folder for the stores (default a temporary one, removed)")
    p.add_argument(
        "--staging", choices=("on", "off", "both"), default="on",
        help="stage tiles on disk between neighbours (updc's default), keep them in memory, or both in turn (the peer)",
    )
    p.add_argument("--tasks", action="store_true", help="also print, per iteration, the workers' busy seconds by task prefix and their idle share")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from mosaic.coadd.forward import plan_forward
    from mosaic.coadd.updc import prepare_psfs, updc
    from mosaic.io.cal import CalCutouts, read_exposures
    from mosaic.io.grid import MosaicGrid
    from mosaic.io.store import Store

    folder = Path(args.field)
    files = sorted(folder.glob("*_cal.fits"))
    from astropy.io import fits

    grid = MosaicGrid.from_header(fits.Header.fromfile(folder / "grid.hdr", sep="\n", endcard=False, padding=False))
    psf = _psf(folder, args.psf, grid)
    scratch = Path(args.scratch) if args.scratch else Path(tempfile.mkdtemp(prefix="bench_flagship_"))
    rows = []
    try:
        with (
            # mosaic's own local cluster: a LocalCluster with the worker settings mosaic ships
            # (mosaic.cluster.WORKER_MALLOC_ENV); --dask-malloc keeps dask's, for the comparison
            _cluster(args) as cluster,
            Client(cluster) as client,
        ):
            everything = read_exposures(files)
            shapes = [(everything.sizes["y"], everything.sizes["x"])] * len(files)
            modes = {"on": [True], "off": [False], "both": [False, True]}[args.staging]
            for fraction, staging in ((f, m) for f in sorted(args.areas) for m in modes):
                sub = _region(grid, fraction, args.tile)
                used = [k for k, w in enumerate(everything.attrs["wcs"]) if sub.touches(w, shapes[k])]
                exposures = read_exposures([files[k] for k in used])
                reader = CalCutouts(exposures["path"].values, exposures.attrs["bad_bits"])
                plan = plan_forward(exposures, sub, prepare_psfs(psf, len(used)))
                n_in = sum((p.cut[0].stop - p.cut[0].start) * (p.cut[1].stop - p.cut[1].start) for ps in plan.pairs.values() for p in ps)
                stamps, phases, marks = [time.perf_counter()], [], [time.time()]
                with PeakMemory() as pm, get_task_stream(client) if args.tasks else contextlib.nullcontext() as stream:

                    def done(n, ds, pm=pm, stamps=stamps, phases=phases, marks=marks, stream=stream):
                        stamps.append(time.perf_counter())
                        phases.append(pm.mark() / GiB)
                        marks.append(time.time())  # the task stream's clock

                    updc(
                        exposures, sub, psf, n_iterations=args.iterations, store=Store(scratch / f"area_{fraction:g}.zarr"),
                        cutout_reader=reader, client=client, final_residual=False, save=(), callback=done, staging=staging,
                    )
                steps = np.diff(stamps)
                if args.tasks:
                    _print_tasks(stream.data, marks, steps, args.workers)
                rows.append(
                    {"fraction": fraction, "staging": staging, "shape": sub.shape, "n_exp": len(used), "n_in": n_in / 1e6, "it0": steps[0],
                     # --iterations 0 times iteration 0 alone (no per-iteration figures)
                     "per_it": float(np.mean(steps[1:])) if len(steps) > 1 else float("nan"), "peak": pm.peak / GiB,
                     "client": pm.by_process[os.getpid()] / GiB, "worker": pm.largest_child() / GiB,
                     "peak0": phases[0], "peak_it": max(phases[1:], default=float("nan"))}
                )
                r = rows[-1]
                print(f"area {fraction:g}, staging {'on' if staging else 'off'}: {r['shape'][0]}x{r['shape'][1]}, {r['n_exp']} exposures: "
                      f"iteration 0 {r['it0']:.0f} s, "
                      f"{r['per_it']:.0f} s per iteration ({' '.join(f'{t:.0f}' for t in steps[1:])}), peak {r['peak']:.2f} GiB "
                      f"(client and scheduler {r['client']:.2f}, largest worker {r['worker']:.2f}; "
                      f"in iteration 0 {r['peak0']:.2f}, in iterations 1-{args.iterations} {r['peak_it']:.2f})", flush=True)
                shutil.rmtree(scratch / f"area_{fraction:g}.zarr", ignore_errors=True)
    finally:
        if not args.scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"\nPSF {args.psf}², tiles {args.tile}², LocalCluster {args.workers} workers x 1 thread, {args.memory_limit} each")
    print("| area | staging | grid | exposures | exposure pixels mocked (M) | iteration 0 s | s per iteration | time ratio | area ratio "
          "| pixels ratio | peak GiB (all processes) | in iteration 0, in iterations 1-N | client, largest worker GiB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        # the peer: the smallest area run the same way
        base = next(b for b in rows if b["staging"] == r["staging"])
        area = (r["shape"][0] * r["shape"][1]) / (base["shape"][0] * base["shape"][1])
        print(f"| {r['fraction']:g} | {'on' if r['staging'] else 'off'} | {r['shape'][0]}x{r['shape'][1]} | {r['n_exp']} | {r['n_in']:.1f} | "
              f"{r['it0']:.0f} | {r['per_it']:.0f} | {r['per_it'] / base['per_it']:.2f} | {area:.2f} | {r['n_in'] / base['n_in']:.2f} | "
              f"{r['peak']:.2f} | {r['peak0']:.2f}, {r['peak_it']:.2f} | {r['client']:.2f}, {r['worker']:.2f} |")
    for off, on in zip(rows[::2], rows[1::2], strict=False) if args.staging == "both" else ():
        print(f"area {off['fraction']:g}: staging on against off: {on['per_it'] / off['per_it']:.2f}x the time per iteration, "
              f"{on['peak'] / off['peak']:.2f}x the peak memory, {on['worker'] / off['worker']:.2f}x the largest worker's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
