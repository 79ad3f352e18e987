"""Benchmark: one UPDC pair's blot and drizzle with the overlaps kept (``OverlapTable``) against
computing them in each pass (``blot_sums`` + ``drizzle_sums``), in one process.

Run::

    python benchmarks/bench_overlap_table.py [--size 560] [--scale 2.0] [--planes 4] [--repeat 5]

A cut-out of ``size``² exposure pixels drizzled at ``scale`` output pixels per input pixel (2 is
the flagship's 0.031" -> 0.0155"), rotated by 23°, onto a window with room around it; the blot
reads a random window and the drizzle sums ``planes`` planes (the correction and three variances
with squared weights, as a correction pass with errors does). Printed: the best of ``repeat``
for each, their ratio, the table's bytes, and whether the sums are equal to the bit. Nothing here
gates anything on time.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mosaic.ops.overlap import OverlapTable, blot_sums, drizzle_sums
from mosaic.ops.pixmap import pixel_corners


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=560)
    p.add_argument("--scale", type=float, default=2.0)
    p.add_argument("--planes", type=int, default=4)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)

    n = args.size
    side = int(np.ceil(n * args.scale * 1.45)) + 8
    out = (side, side)
    y, x = np.indices((n, n), dtype=float)
    a = np.deg2rad(23.0)
    u = args.scale * (np.cos(a) * (x - n / 2) - np.sin(a) * (y - n / 2)) + side / 2
    v = args.scale * (np.sin(a) * (x - n / 2) + np.cos(a) * (y - n / 2)) + side / 2
    xc, yc = pixel_corners(np.stack([u, v], axis=-1))
    rng = np.random.default_rng(0)
    window = rng.normal(size=out)
    planes = [rng.normal(size=(n, n)) for _ in range(args.planes)]
    powers = [1] + [2] * (args.planes - 1)

    def on_the_fly():
        return blot_sums(xc, yc, window), drizzle_sums(xc, yc, planes, out, powers=powers)

    def kept():
        t = OverlapTable(xc, yc, out)
        return t.blot_sums(window), t.drizzle_sums(planes, powers=powers)

    best = {}
    results = {}
    for f in (on_the_fly, kept):
        results[f.__name__] = f()  # compile and warm
    for _ in range(args.repeat):
        for f in (on_the_fly, kept):
            t0 = time.perf_counter()
            f()
            dt = time.perf_counter() - t0
            best[f.__name__] = min(best.get(f.__name__, np.inf), dt)
    (b1, d1), (b2, d2) = results["on_the_fly"], results["kept"]
    same = all(np.array_equal(p, q) for p, q in zip(b1, b2, strict=True)) and np.array_equal(d1, d2)
    nbytes = OverlapTable(xc, yc, out).nbytes
    print(f"cut-out {n}² at scale {args.scale}, window {side}², {args.planes} planes; best of {args.repeat}")
    print(f"| blot + drizzle | s | ratio |\n| --- | --- | --- |\n| overlaps in each pass | {best['on_the_fly']:.3f} | 1.00 |")
    print(f"| overlaps kept (OverlapTable, {nbytes / 2**20:.0f} MiB) | {best['kept']:.3f} | {best['kept'] / best['on_the_fly']:.2f} |")
    print(f"equal to the bit: {same}")


if __name__ == "__main__":
    main()
