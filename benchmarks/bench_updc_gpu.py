"""Benchmark: UPDC iterations on a GPU (CuPy chunks on a dask-cuda worker) against CPU workers, same machine.

Run (on a GPU node; needs CuPy and dask-cuda)::

    python benchmarks/bench_updc_gpu.py [--size 1024] [--exposures 8] [--psf 301] [--tile 1024]
                                        [--psf-file PSF.fits] [--cpu-workers 16] [--gpu-threads 16]
                                        [--iterations 2]

A noisy simulated field (``mosaic.simulate``) is written once. Two contenders run the same
UPDC iterations from the same _cal.fits files, each into its own zarr store, reading their
cut-outs straight from the files (``CalCutouts``, as ``mosaic updc`` does):

- *cpu*: ``distributed.LocalCluster`` of ``--cpu-workers`` processes x 1 thread, NumPy chunks
  (the peer);
- *gpu*: ``dask_cuda.LocalCUDACluster``, one worker on the GPU with ``--gpu-threads`` threads,
  ``array="cupy"``: convolutions (cuFFT), updates and errors on the GPU; the pair tasks' exact
  overlaps are CPU code and run on the worker's threads.

Iteration 0 (drizzle) and the normalisation are made first, untimed. Printed per contender and
iteration: wall time, the ratio to the cpu peer, the peak host memory of all processes (RSS
summed over this process and its children) and the largest difference of the products
relative to the peer's peak. Nothing here gates anything on time.
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

sys.path.insert(0, str(Path(__file__).parent))
from _field import simulate_updc_field  # noqa: E402
from _memory import PeakMemory  # noqa: E402

__all__ = ["main"]

GiB = 2.0**30


def _cluster(kind: str, args):
    if kind == "gpu":
        from dask_cuda import LocalCUDACluster

        return LocalCUDACluster(n_workers=1, threads_per_worker=args.gpu_threads, dashboard_address=":0")
    from distributed import LocalCluster

    return LocalCluster(n_workers=args.cpu_workers, threads_per_worker=1, dashboard_address=":0")


def _contender(kind, args, exposures, grid, psf, reader, store) -> list[dict]:
    from distributed import Client

    from mosaic.coadd.updc import updc

    array = "cupy" if kind == "gpu" else "numpy"
    rows = []
    with _cluster(kind, args) as cluster, Client(cluster) as client:
        t0 = time.perf_counter()
        updc(exposures, grid, psf, n_iterations=0, store=store, cutout_reader=reader, client=client, final_residual=False, array=array)
        print(f"{kind}: iteration 0 and normalisation in {time.perf_counter() - t0:.1f} s (untimed)", flush=True)
        for n in range(1, args.iterations + 1):
            t0 = time.perf_counter()
            with PeakMemory() as pm:
                result = updc(
                    exposures, grid, psf, n_iterations=n, store=store, cutout_reader=reader, client=client,
                    final_residual=False, save=(), array=array,
                )
            rows.append({"kind": kind, "n": n, "wall": time.perf_counter() - t0, "peak": pm.peak / GiB,
                         "sci": result.iterations[n]["sci"].values, "err": result.iterations[n]["err"].values})
            print(f"{kind}: iteration {n} in {rows[-1]['wall']:.1f} s, peak {rows[-1]['peak']:.2f} GiB", flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=1024, help="detector side of the simulated exposures (default 1024)")
    p.add_argument("--exposures", type=int, default=8, help="number of exposures (default 8)")
    p.add_argument("--psf", type=int, default=301, help="PSF size on the output grid, odd (default 301)")
    p.add_argument("--tile", type=int, default=1024, help="tile side (default 1024)")
    p.add_argument(
        "--psf-file", default=None,
        help="deconvolve with this PSF file (on the grid's sampling) instead of the simulation's: a 1501² PSF without simulating with it",
    )
    p.add_argument("--iterations", type=int, default=2, help="timed iterations (default 2)")
    p.add_argument("--cpu-workers", type=int, default=16, help="LocalCluster processes of the cpu peer (default 16)")
    p.add_argument("--gpu-threads", type=int, default=16, help="threads of the dask-cuda worker (default 16)")
    p.add_argument("--contenders", nargs="+", default=["cpu", "gpu"], choices=["cpu", "gpu"], help="what to run (default both)")
    p.add_argument("--keep", default=None, help="keep the field and stores in this folder")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from mosaic.io.store import Store
    from mosaic.psf.files import read_psf

    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_updc_gpu_"))
    try:
        sim = simulate_updc_field(folder, size=args.size, n_exposures=args.exposures, psf_size=args.psf, n_stars=40, n_pairs=4)
        field, exposures, reader = sim.field, sim.exposures, sim.reader
        grid = field.grid.with_tiling(args.tile)
        print(f"field: {args.exposures} exposures of {args.size}², grid {grid.shape[0]}x{grid.shape[1]} in tiles of {args.tile}², "
              f"PSF {args.psf}² ({sim.seconds:.0f} s to simulate)", flush=True)
        psf = read_psf(args.psf_file or field.psf)[0]
        print(f"UPDC PSF {psf.shape[0]}x{psf.shape[1]} from {args.psf_file or field.psf}", flush=True)
        rows = []
        for kind in args.contenders:
            rows += _contender(kind, args, exposures, grid, psf, reader, Store(folder / f"{kind}.zarr"))
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"\ncpu: LocalCluster {args.cpu_workers} x 1 thread; gpu: LocalCUDACluster 1 worker x {args.gpu_threads} threads, CuPy chunks")
    print("| iteration | run | wall s | ratio to cpu | peak host GiB (all processes) | max |diff| / peak (sci, err) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for n in range(1, args.iterations + 1):
        ref = next((r for r in rows if r["n"] == n and r["kind"] == args.contenders[0]), None)
        for r in (x for x in rows if x["n"] == n):
            d = [np.nanmax(np.abs(r[k] - ref[k])) / np.nanmax(np.abs(ref[k])) for k in ("sci", "err")]
            print(f"| {n} | {r['kind']} | {r['wall']:.1f} | {r['wall'] / ref['wall']:.2f} | {r['peak']:.2f} | {d[0]:.1e}, {d[1]:.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
