"""Benchmark: a detector's pixel map onto a mosaic grid, compiled TAN-SIP (``mosaic.ops.pixmap.calc_pixmap``
with ``compiled=True``, as UPDC's pair tasks map) against the ``drizzle`` package's ``calc_pixmap``
(astropy, wcslib), in one process.

Run::

    python benchmarks/bench_pixmap.py [--size 2048] [--roll 70] [--repeat 3] [--header FILE]

The exposure is a NIRCam SW detector's SIP WCS (``mosaic.simulate.pointing.detector_cutout_wcs``,
or the SCI header of ``--header``, a cal file) rolled ``roll`` degrees against a 0.0155" grid. Printed: the
best of ``repeat`` for each, per pixel, their ratio, and the largest difference of the maps in
pixels. Nothing here gates anything on time.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from drizzle.utils import calc_pixmap as drizzle_calc_pixmap

from mosaic.io.grid import MosaicGrid
from mosaic.ops.pixmap import calc_pixmap
from mosaic.simulate.pointing import detector_cutout_wcs


def _best(f, repeat):
    best, out = np.inf, None
    for _ in range(repeat):
        t = time.perf_counter()
        out = f()
        best = min(best, time.perf_counter() - t)
    return best, out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--roll", type=float, default=70.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--header", help="a cal file whose SCI header gives the exposure's WCS")
    args = p.parse_args(argv)

    if args.header:
        from astropy.io import fits
        from astropy.wcs import WCS

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            w = WCS(fits.getheader(args.header, "SCI"))
        shape = (int(w.pixel_shape[1]), int(w.pixel_shape[0]))
    else:
        shape = (args.size, args.size)
        w = detector_cutout_wcs(shape, corner=(0, 0), roll_deg=args.roll)
    w.pixel_shape = (shape[1], shape[0])
    grid = MosaicGrid.from_exposures([w], [shape], psr=0.5)
    calc_pixmap(w, grid.wcs, (slice(0, 8), slice(0, 8)), compiled=True)  # load the kernel outside the timing
    t_ref, ref = _best(lambda: drizzle_calc_pixmap(w, grid.wcs, shape), args.repeat)
    t_ours, ours = _best(lambda: calc_pixmap(w, grid.wcs, shape=shape, compiled=True), args.repeat)
    n = shape[0] * shape[1]
    diff = float(np.nanmax(np.abs(ours - ref)))
    print(f"{shape[0]}x{shape[1]} exposure onto a {grid.shape[0]}x{grid.shape[1]} grid")
    print("| map | s | ns per pixel | x drizzle.utils.calc_pixmap |")
    print("| --- | --- | --- | --- |")
    print(f"| drizzle.utils.calc_pixmap (astropy) | {t_ref:.3f} | {1e9 * t_ref / n:.0f} | 1.00 |")
    print(f"| mosaic calc_pixmap (compiled TAN-SIP) | {t_ours:.3f} | {1e9 * t_ours / n:.0f} | {t_ours / t_ref:.3f} |")
    print(f"largest difference: {diff:.2e} pixel")


if __name__ == "__main__":
    main()
