"""Tiled PSF convolution on a dask LocalCluster against whole-image scipy.signal.fftconvolve.

Run::

    python benchmarks/bench_convolve.py --size 4096 --psf 301 --chunk 1024

Both run in the same process tree on the same float32 image (a sky with point sources,
generated block by block from a seed so the cluster and the peer see identical pixels) and the
same normalised JWST-like PSF. Printed per contender: the fastest wall time of ``--repeat`` runs, the ratio to the peer, the
largest difference from the peer relative to its peak, and the peak memory of all processes
(RSS summed over this process and its children, sampled every 20 ms in a thread) above the
baseline just before the run. Nothing here gates anything on time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import dask.array as da
import numpy as np
import psutil
import scipy.fft
from dask.core import flatten
from distributed import Client, LocalCluster, wait
from scipy.signal import fftconvolve

from mosaic.coadd.convolve import METHODS, convolve_tiled
from mosaic.psf.model import jwst_psf

sys.path.insert(0, str(Path(__file__).parent))
from _memory import PeakMemory  # noqa: E402

__all__ = ["main"]

MiB = 2.0**20


def _sky_block(block_info=None, seed=0, n_sources=40):
    """One block of a deterministic sky: pedestal, noise and point sources (float32)."""
    info = block_info[None]
    (y0, y1), (x0, x1) = info["array-location"]
    rng = np.random.default_rng([seed, y0, x0])
    block = 1.0 + 0.01 * rng.standard_normal((y1 - y0, x1 - x0))
    ys = rng.integers(0, y1 - y0, n_sources)
    xs = rng.integers(0, x1 - x0, n_sources)
    block[ys, xs] += 10.0 ** rng.uniform(0, 4, n_sources)
    return block.astype(np.float32)


def _sky(size: int, chunk: int, seed: int) -> da.Array:
    return da.map_blocks(_sky_block, seed=seed, chunks=((chunk,) * (size // chunk) + ((size % chunk,) if size % chunk else ()),) * 2, dtype=np.float32, meta=np.empty((0, 0), np.float32))


def _forget(client: Client, collection, timeout_s: float = 30.0) -> None:
    """Release a persisted collection and wait until the workers have dropped its keys."""
    keys = list(flatten(collection.__dask_keys__()))
    client.cancel(collection)
    deadline = time.monotonic() + timeout_s
    while any(client.who_has(keys).values()) and time.monotonic() < deadline:
        time.sleep(0.02)


def _row(name, seconds, peer_seconds, err, mem):
    peak = (mem.peak - mem.baseline) / MiB
    return f"{name:<28s} {seconds:9.2f} {seconds / peer_seconds:8.2f} {err:10.1e} {peak:10.0f} {mem.peak / MiB:10.0f}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="image side N (default 4096)")
    parser.add_argument("--psf", type=int, default=301, help="PSF side P, odd (default 301)")
    parser.add_argument("--chunk", type=int, default=1024, help="tile side (default 1024)")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="threads per worker (default 1)")
    parser.add_argument("--band", default="F200W", help="NIRCam band of the PSF (default F200W)")
    parser.add_argument("--scale", type=float, default=0.0155, help="pixel scale in arcsec (default 0.0155)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per contender; the fastest is shown (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    n_pupil = 256 if args.psf * args.scale < 12.0 else 512
    psf = jwst_psf(args.band, pixel_scale_arcsec=args.scale, size=args.psf, oversample=1, n_pupil=n_pupil)
    x = _sky(args.size, args.chunk, args.seed)
    image = x.compute(scheduler="synchronous")
    cores = args.workers * args.threads
    print(f"image {args.size}² float32 in {args.chunk}² tiles, PSF {args.psf}² ({args.band}), "
          f"cluster {args.workers} workers x {args.threads} threads, {psutil.cpu_count()} cores")

    def peer(threads):
        ref, best = None, np.inf
        with PeakMemory() as mem, scipy.fft.set_workers(threads):
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                ref = fftconvolve(image, psf, mode="same")  # float32 image * float64 PSF: float64 FFTs
                best = min(best, time.perf_counter() - t0)
                del ref
            ref = fftconvolve(image, psf, mode="same") if threads == 1 else None
        return ref, best, mem

    ref, t_peer, mem = peer(1)
    peak_ref = float(np.abs(ref).max())
    rows = [_row("scipy fftconvolve, 1 thread", t_peer, t_peer, 0.0, mem)]
    _, t, mem = peer(cores)
    rows.append(_row(f"scipy fftconvolve, {cores} thr", t, t_peer, 0.0, mem))

    with (
        LocalCluster(n_workers=args.workers, threads_per_worker=args.threads, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        xs = client.persist(x)
        wait(xs)
        for method in METHODS:
            t, ys = np.inf, None
            with PeakMemory() as mem:
                for _ in range(args.repeat):
                    if ys is not None:
                        _forget(client, ys)  # else the same keys would be found in memory
                    t0 = time.perf_counter()
                    ys = client.persist(convolve_tiled(xs, psf, method=method))
                    wait(ys)
                    t = min(t, time.perf_counter() - t0)
            err = float(np.abs(ys.compute() - ref).max()) / peak_ref
            rows.append(_row(f"convolve_tiled {method}", t, t_peer, err, mem))
            del ys

    print(f"{'contender':<28s} {'wall s':>9s} {'/ peer':>8s} {'max |d|/pk':>10s} {'peak+ MiB':>10s} {'peak MiB':>10s}")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
