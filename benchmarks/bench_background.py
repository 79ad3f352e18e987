"""Tiled background (mosaic.image.background.background_2d) vs whole-image photutils Background2D.

    python benchmarks/bench_background.py [--size 8192] [--box 64] [--tile 1024] [--estimator median]

Both run on the same simulated sky (float32, gradient, sources, noise) in this process; the
tiled run reads the image from a memory-mapped .npy file (as a FITS memmap would be read), so
its peak memory is set by the tiles. Prints the times, the peak memory of all processes
(``PeakMemory``) and the tiled/whole ratios, and checks the maps agree to 1e-5.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import photutils.background as pb
from _memory import PeakMemory

from mosaic.image.background import background_2d
from mosaic.ops.background import ESTIMATORS


def make_sky(path: Path, n: int, seed: int = 0) -> None:
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, n))
    rng = np.random.default_rng(seed)
    for y0 in range(0, n, 1024):  # written in bands: never the whole float64 image
        yy, xx = np.mgrid[y0 : min(n, y0 + 1024), :n].astype(np.float32)
        band = 10 + 1e-3 * xx - 5e-4 * yy + rng.normal(0, 1, yy.shape).astype(np.float32)
        band[rng.random(yy.shape) < 1e-3] += 100
        out[y0 : y0 + yy.shape[0]] = band
    out.flush()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=8192)
    p.add_argument("--box", type=int, default=64)
    p.add_argument("--tile", type=int, default=1024)
    p.add_argument("--estimator", default="median", choices=sorted(ESTIMATORS))
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sky.npy"
        make_sky(path, args.size)

        gc.collect()
        with PeakMemory() as mem_tiled:
            t0 = time.perf_counter()
            image = da.from_array(np.load(path, mmap_mode="r"), chunks=(args.tile, args.tile))
            bkg = background_2d(image, box_size=args.box, estimator=args.estimator, tile=args.tile)
            # the maps are streamed tile by tile (as mosaic background writes them); one kept for the check
            checks = dask.compute(bkg.background[:args.tile, :args.tile], bkg.background.sum(), bkg.background_rms.sum())
            t_tiled = time.perf_counter() - t0

        gc.collect()
        with PeakMemory() as mem_whole:
            t0 = time.perf_counter()
            data = np.load(path)
            ref = pb.Background2D(data, args.box, bkg_estimator=getattr(pb, ESTIMATORS[args.estimator])())
            ref_bkg, ref_rms = ref.background, ref.background_rms
            t_whole = time.perf_counter() - t0

    err = np.abs(checks[0] - ref_bkg[: args.tile, : args.tile]).max()
    rel_sum = abs(checks[1] / ref_bkg.astype(np.float64).sum() - 1)
    rel_rms = abs(checks[2] / ref_rms.astype(np.float64).sum() - 1)
    print(f"image {args.size}x{args.size} float32, box {args.box}, tile {args.tile}, estimator {args.estimator}")
    print(f"whole Background2D : {t_whole:8.2f} s  peak {mem_whole.peak_gib:6.2f} GiB (+{(mem_whole.peak - mem_whole.baseline) / 2**30:.2f})")
    print(f"tiled background_2d: {t_tiled:8.2f} s  peak {mem_tiled.peak_gib:6.2f} GiB (+{(mem_tiled.peak - mem_tiled.baseline) / 2**30:.2f})")
    print(f"ratio tiled/whole  : time {t_tiled / t_whole:.2f}x, peak memory {mem_tiled.peak / mem_whole.peak:.2f}x, "
          f"added memory {(mem_tiled.peak - mem_tiled.baseline) / max(1, mem_whole.peak - mem_whole.baseline):.2f}x")
    print(f"agreement: max |diff| on the first tile {err:.2e}, relative difference of the map sums {rel_sum:.1e} (rms {rel_rms:.1e})")


if __name__ == "__main__":
    main()
