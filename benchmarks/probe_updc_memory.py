"""Probe: what fills the workers at their peak during UPDC on a region of the flagship field.

Run (the field from `mosaic simulate flagship/ --flagship`)::

    python benchmarks/probe_updc_memory.py flagship/ [--area 0.5] [--iterations 1] [--psf 301]

Once a second a thread asks the scheduler which keys are in memory and which tasks still wait
for them, and asks each worker for its RSS and the keys it holds. Printed: the moment the
scheduler held the most, grouped by key name and by the tasks waiting (what keeps each group
alive), and each worker's peak RSS with its keys. Key names have their tokens removed.
A diagnostic, not a figure: it samples once a second and runs one area.
"""

from __future__ import annotations

import argparse
import collections
import logging
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

from distributed import Client, LocalCluster

sys.path.insert(0, str(Path(__file__).parent))
import bench_updc_flagship as flagship  # noqa: E402

__all__ = ["main"]

MiB = 2.0**20


def _name(key) -> str:
    n = key[0] if isinstance(key, tuple) else str(key)
    return re.sub(r"-?[0-9a-f]{32}", "", str(n))[:60]


def _held_by_scheduler(dask_scheduler) -> dict:
    size, count = collections.Counter(), collections.Counter()
    for ts in list(dask_scheduler.tasks.values()):
        if ts.state == "memory" and ts.nbytes > 0:
            waiting = ",".join(sorted({_name(d.key) for d in ts.waiters})) if ts.waiters else "(a client)"
            size[(_name(ts.key), waiting)] += ts.nbytes
            count[(_name(ts.key), waiting)] += 1
    queued = collections.Counter(_name(ts.key) for ts in list(dask_scheduler.queued))
    return {"total": sum(size.values()), "groups": [(k, n, count[k]) for k, n in size.most_common(15)], "queued": dict(queued)}


def _held_by_worker(dask_worker) -> dict:
    import psutil  # noqa: PLC0415

    size = collections.Counter()
    for key, ts in list(dask_worker.state.tasks.items()):
        if ts.state == "memory" and ts.nbytes:
            size[_name(key)] += ts.nbytes
    return {"rss": psutil.Process().memory_info().rss, "managed": sum(size.values()), "groups": size.most_common(10)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("field", help="folder written by `mosaic simulate --flagship`")
    p.add_argument("--area", type=float, default=0.5, help="fraction of the grid's area (default 0.5)")
    p.add_argument("--iterations", type=int, default=1, help="UPDC iterations after iteration 0 (default 1)")
    p.add_argument("--psf", type=int, default=301, help="PSF side (default 301)")
    p.add_argument("--tile", type=int, default=1024, help="tile side (default 1024)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from astropy.io import fits

    from mosaic.coadd.updc import updc
    from mosaic.io.cal import CalCutouts, read_exposures
    from mosaic.io.grid import MosaicGrid
    from mosaic.io.store import Store

    folder = Path(args.field)
    files = sorted(folder.glob("*_cal.fits"))
    grid = MosaicGrid.from_header(fits.Header.fromfile(folder / "grid.hdr", sep="\n", endcard=False, padding=False))
    psf = flagship._psf(folder, args.psf, grid)
    sub = flagship._region(grid, args.area, args.tile)
    everything = read_exposures(files)
    shape = (everything.sizes["y"], everything.sizes["x"])
    used = [k for k, w in enumerate(everything.attrs["wcs"]) if sub.touches(w, shape)]
    exposures = read_exposures([files[k] for k in used])
    reader = CalCutouts(exposures["path"].values, exposures.attrs["bad_bits"])
    stamps = [time.perf_counter()]
    peaks: dict = {}
    done = threading.Event()

    def poll(client):
        while not done.is_set():
            t, it = time.perf_counter() - stamps[0], len(stamps) - 1
            try:
                held = client.run_on_scheduler(_held_by_scheduler)
                workers = client.run(_held_by_worker)
            except Exception as e:  # noqa: BLE001 (a probe: a failed sample is skipped)
                print(f"sample failed: {e}", flush=True)
            else:
                if held["total"] > peaks.get("scheduler", {"total": -1})["total"]:
                    peaks["scheduler"] = {**held, "t": t, "it": it}
                for w, got in workers.items():
                    if got["rss"] > peaks.get(w, {"rss": -1})["rss"]:
                        peaks[w] = {**got, "t": t, "it": it}
            done.wait(1.0)

    with (
        tempfile.TemporaryDirectory(prefix="probe_updc_") as scratch,
        LocalCluster(n_workers=2, threads_per_worker=1, memory_limit="6GB", dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        thread = threading.Thread(target=poll, args=(client,), daemon=True)
        thread.start()
        updc(
            exposures, sub, psf, n_iterations=args.iterations, store=Store(Path(scratch) / "probe.zarr"), cutout_reader=reader,
            client=client, final_residual=False, save=(), callback=lambda n, ds: stamps.append(time.perf_counter()),
        )
        done.set()
        thread.join()
    print(f"area {args.area:g}: grid {sub.shape[0]}x{sub.shape[1]}, tiles {sub.n_tiles}, {len(used)} exposures; "
          f"iterations done at {' '.join(f'{s - stamps[0]:.0f}' for s in stamps[1:])} s")
    held = peaks.pop("scheduler")
    print(f"\nscheduler: most held {held['total'] / 2**30:.2f} GiB at {held['t']:.0f} s (computing iteration {held['it']}); queued {held['queued']}")
    for (name, waiting), n, c in held["groups"]:
        print(f"  {n / MiB:8.1f} MiB in {c:4d} keys  {name}  <- waited for by {waiting}")
    for w, got in peaks.items():
        print(f"\nworker {w}: peak RSS {got['rss'] / 2**30:.2f} GiB at {got['t']:.0f} s (computing iteration {got['it']}), keys {got['managed'] / 2**30:.2f} GiB")
        for name, n in got["groups"]:
            print(f"  {n / MiB:8.1f} MiB  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
