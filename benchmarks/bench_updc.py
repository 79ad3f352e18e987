"""Benchmark: one UPDC iteration on tiles against the same iteration on one tile, on a LocalCluster.

Run::

    python benchmarks/bench_updc.py [--size 512] [--exposures 4] [--psf 101] [--tile 256]
                                    [--workers 2] [--keep DIR]

A noisy simulated field (``mosaic.simulate``) is written once; both contenders start from the
same _cal.fits files, read their cut-outs straight from them (``CalCutouts``, as ``mosaic updc``
does) and write to their own zarr store on the same ``distributed.LocalCluster``:

- *untiled*: the grid as one tile (one task per exposure holds the whole mosaic window);
- *tiled*: the grid in tiles of ``--tile`` pixels (one task per overlapping (exposure, tile)).

Iteration 0 (drizzle) and the normalisation are made first, untimed. Then the workers are
restarted and iteration 1 is timed ("cold": fresh processes, which load the compiled overlap
kernels and open the files), then iteration 2 ("warm"). Printed per contender: wall time, the ratio to the
untiled run, the peak memory of all processes (RSS summed over this process and its children,
sampled every 50 ms) above the idle baseline, and the largest difference of the two results
relative to the image's peak. Nothing here gates anything on time.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from distributed import Client, LocalCluster

sys.path.insert(0, str(Path(__file__).parent))
from _field import simulate_updc_field  # noqa: E402
from _memory import PeakMemory  # noqa: E402

__all__ = ["main"]

MiB = 2.0**20


def _idle_rss() -> int:
    with PeakMemory() as pm:
        pass
    return pm.peak


def _run(label, exposures, grid, psf, store, reader, client, n):
    from mosaic.coadd.updc import updc

    client.restart() if n == 1 else None
    base = _idle_rss()
    t0 = time.perf_counter()
    with PeakMemory() as pm:
        result = updc(exposures, grid, psf, n_iterations=n, store=store, cutout_reader=reader, client=client, final_residual=False)
    wall = time.perf_counter() - t0
    return {"label": label, "wall": wall, "peak": (pm.peak - base) / MiB, "result": result}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=512, help="detector side of the simulated exposures (default 512)")
    p.add_argument("--exposures", type=int, default=4, help="number of exposures (default 4)")
    p.add_argument("--psf", type=int, default=101, help="PSF size on the output grid, odd (default 101)")
    p.add_argument("--tile", type=int, default=256, help="tile side of the tiled run (default 256)")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default 2)")
    p.add_argument("--keep", default=None, help="keep the field and stores in this folder")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from mosaic.io.store import Store
    from mosaic.psf.files import read_psf

    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_updc_"))
    try:
        sim = simulate_updc_field(folder, size=args.size, n_exposures=args.exposures, psf_size=args.psf, n_stars=8, n_pairs=2)
        field, exposures, reader = sim.field, sim.exposures, sim.reader
        print(f"field: {args.exposures} exposures of {args.size}², grid {field.grid.shape[0]}x{field.grid.shape[1]}, PSF {args.psf}² ({sim.seconds:.0f} s to simulate)")
        psf = read_psf(field.psf)[0]
        grids = {"untiled": field.grid.with_tiling(max(field.grid.shape)), "tiled": field.grid.with_tiling(args.tile)}
        stores = {k: Store(folder / f"{k}.zarr") for k in grids}
        with (
            LocalCluster(n_workers=args.workers, threads_per_worker=1, dashboard_address=None) as cluster,
            Client(cluster) as client,
        ):
            from mosaic.coadd.updc import updc

            for k, grid in grids.items():
                t0 = time.perf_counter()
                updc(exposures, grid, psf, n_iterations=0, store=stores[k], cutout_reader=reader, client=client, final_residual=False)
                print(f"{k}: iteration 0 and normalisation in {time.perf_counter() - t0:.1f} s (untimed)")
            rows = []
            for n, kind in ((1, "cold"), (2, "warm")):
                for k, grid in grids.items():
                    rows.append({**_run(k, exposures, grid, psf, stores[k], reader, client, n), "n": n, "kind": kind})
        print(f"\nLocalCluster {args.workers} workers x 1 thread; tiles of {args.tile}² vs one tile of {max(field.grid.shape)}²")
        print("| iteration | run | wall s | ratio to untiled | peak MiB above idle | max |diff| / peak |")
        print("| --- | --- | --- | --- | --- | --- |")
        for n in (1, 2):
            untiled = next(r for r in rows if r["n"] == n and r["label"] == "untiled")
            ref = untiled["result"].iterations[n]["sci"].values
            peak = np.nanmax(np.abs(ref))
            for r in (x for x in rows if x["n"] == n):
                sci = r["result"].iterations[n]["sci"].values
                diff = np.nanmax(np.abs(sci - ref)) / peak
                print(f"| {n} ({r['kind']}) | {r['label']} | {r['wall']:.2f} | {r['wall'] / untiled['wall']:.2f} | {r['peak']:.0f} | {diff:.1e} |")
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
