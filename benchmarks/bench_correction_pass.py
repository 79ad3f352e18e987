"""Benchmark: one UPDC pair's correction pass fused into one compiled loop
(:func:`mosaic.ops.correction.correction_pass`) against its separate steps (the exact blot
``blot_sums``, the correction in NumPy, ``drizzle_sums`` of the correction and its three
variances), in one process.

Run::

    python benchmarks/bench_correction_pass.py [--size 560] [--scale 2.0] [--roll 70] [--repeat 5]

A cut-out of ``size``² exposure pixels drizzled at ``scale`` output pixels per input pixel (2 is
the flagship's 0.031" -> 0.0155"), rolled by ``roll`` degrees (the flagship's detectors are at
70°), onto a window with room around it; a ratio correction with errors, as a flagship
iteration makes. Printed: the best of ``repeat`` for each, their ratio, and whether the sums
are equal to the bit. Nothing here gates anything on time.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mosaic.coadd.forward import DAMPING_POWER, correction_planes
from mosaic.ops.correction import correction_pass
from mosaic.ops.overlap import blot_sums, drizzle_sums
from mosaic.ops.pixmap import pixel_corners


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=560)
    p.add_argument("--scale", type=float, default=2.0)
    p.add_argument("--roll", type=float, default=70.0)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)

    n = args.size
    side = int(np.ceil(n * args.scale * 1.45)) + 8
    out = (side, side)
    y, x = np.indices((n, n), dtype=float)
    a = np.deg2rad(args.roll)
    u = args.scale * (np.cos(a) * (x - n / 2) - np.sin(a) * (y - n / 2)) + side / 2
    v = args.scale * (np.sin(a) * (x - n / 2) + np.cos(a) * (y - n / 2)) + side / 2
    xc, yc = pixel_corners(np.stack([u, v], axis=-1))
    rng = np.random.default_rng(0)
    window = rng.normal(1.0, 0.1, out)
    w = np.ones((n, n))
    sci = rng.normal(1.0, 0.1, (n, n))
    components = [np.full((n, n), 0.01), np.full((n, n), 0.02), None]
    options = {"correction": "ratio", "pedestal": 0.0, "mock_floor": 0.0, "damping": 0.0, "variances": True}

    def separate():
        num, _, jaco = blot_sums(xc, yc, window)
        m = np.divide(num, jaco, out=np.zeros_like(num), where=jaco != 0)
        _, m, _, x, per_pixel = correction_planes(sci, m, w, components, **options)
        return drizzle_sums(xc, yc, [x, *per_pixel], out, powers=[1, 2, 2, 2])

    def fused():
        return correction_pass(xc, yc, window, w, sci, components, damping_power=DAMPING_POWER, **options)[1]

    results = {f.__name__: f() for f in (separate, fused)}  # compile and warm
    best = {}
    for _ in range(args.repeat):
        for f in (separate, fused):
            t0 = time.perf_counter()
            f()
            best[f.__name__] = min(best.get(f.__name__, np.inf), time.perf_counter() - t0)
    print(f"cut-out {n}² at scale {args.scale}, rolled {args.roll}°, window {side}², ratio with errors; best of {args.repeat}")
    print("| correction pass | s | ratio |\n| --- | --- | --- |")
    print(f"| separate: blot_sums, NumPy, drizzle_sums | {best['separate']:.3f} | 1.00 |")
    print(f"| fused: correction_pass | {best['fused']:.3f} | {best['fused'] / best['separate']:.2f} |")
    print(f"equal to the bit: {np.array_equal(results['separate'], results['fused'])}")


if __name__ == "__main__":
    main()
