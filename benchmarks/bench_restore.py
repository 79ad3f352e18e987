"""``mosaic restore`` on a large synthetic mosaic: seconds and peak memory; tiled vs whole-image figures.

    python benchmarks/bench_restore.py [--size 4096] [--tile 512] [--overlap 96] [--workers 2]
                                       [--check-size 0] [--model PATH]

Writes an F200W-like mosaic of ``size``^2 (sky, noise, Gaussian sources, a NaN border; written
in bands, never whole in memory) with the shipped model's pixel scale, and restores it with
:func:`mosaic.restore.product.restore_i2d` on a local cluster of ``workers`` processes (0:
threads here). Prints the wall time, megapixels per second and the peak memory of all processes
(``PeakMemory``). With ``--check-size N``, also restores an N^2 crop whole and tiled with tiles of
128, 256 and 512 and prints the interior maximum of |tiled - whole| (network space) and the
largest difference on the seams over the median interior difference.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import dask.array as da
import numpy as np
from _memory import PeakMemory
from astropy.io import fits
from astropy.wcs import WCS

from mosaic.cli._common import local_client
from mosaic.restore.infer import RestorationModel, restore_tiled, restore_whole
from mosaic.restore.normalise import estimate_normalisation
from mosaic.restore.product import restore_i2d


def _band(rng, y0, rows, n):
    img = 0.2 + rng.normal(0, 0.012, (rows, n)).astype(np.float32)
    for _ in range(max(1, rows * n // 20000)):
        y, x, s = rng.uniform(0, rows), rng.uniform(0, n), rng.uniform(0.7, 3.0)
        a = 10 ** rng.uniform(-1.5, 1.0)
        ys = slice(max(0, int(y - 4 * s)), min(rows, int(y + 4 * s) + 1))
        xs = slice(max(0, int(x - 4 * s)), min(n, int(x + 4 * s) + 1))
        yy, xx = np.mgrid[ys, xs]
        img[ys, xs] += a * np.exp(-0.5 * ((yy - y) ** 2 + (xx - x) ** 2) / s**2)
    return img


def write_mosaic(path: Path, n: int, scale_arcsec: float, seed: int = 0) -> None:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [34.46, -5.24]
    w.wcs.crpix = [n / 2, n / 2]
    w.wcs.cd = np.diag([-scale_arcsec / 3600, scale_arcsec / 3600])
    header = w.to_header()
    header["BUNIT"] = "MJy/sr"
    hdu = fits.ImageHDU(np.zeros((1, 1), np.float32), header=header, name="SCI")
    primary = fits.PrimaryHDU()
    primary.header["FILTER"] = "F200W"
    fits.HDUList([primary, hdu]).writeto(path)
    # the real data, band by band, into a file of the full size
    with fits.open(path, mode="update", memmap=True) as hdul:
        hdul["SCI"].data = np.zeros((n, n), np.float32)
    with fits.open(path, mode="update", memmap=True) as hdul:
        data = hdul["SCI"].data
        rng = np.random.default_rng(seed)
        for y0 in range(0, n, 512):
            rows = min(512, n - y0)
            band = _band(rng, y0, rows, n)
            band[:, : n // 50] = np.nan
            data[y0 : y0 + rows] = band


def check_tiling(model: RestorationModel, n: int, overlap: int) -> None:
    rng = np.random.default_rng(1)
    img = _band(rng, 0, n, n)
    norm = estimate_normalisation(img)
    u = norm.forward(img)
    t = time.perf_counter()
    whole = restore_whole(u, model, overlap=overlap)
    print(f"whole {n}^2: {time.perf_counter() - t:.1f} s")
    for tile in (128, 256, 512):
        if tile < overlap:
            continue
        t = time.perf_counter()
        tiled = restore_tiled(da.from_array(u, chunks=tile), model, tile=tile, overlap=overlap)
        got = tiled.compute(scheduler="threads", num_workers=2)
        d = np.abs(got - whole)
        inner = d[overlap:-overlap, overlap:-overlap]
        seams = np.zeros(d.shape, bool)
        for axis, sizes in enumerate(tiled.chunks):
            for e in np.cumsum(sizes)[:-1]:
                idx = [slice(overlap, -overlap)] * 2
                idx[axis] = slice(e - 1, e + 1)
                seams[tuple(idx)] = True
        seam = d[seams].max() if seams.any() else float("nan")
        print(f"tile {tile}, overlap {overlap}: {time.perf_counter() - t:.1f} s, interior max |tiled - whole| {inner.max():.2e}, "
              f"median {np.median(inner):.2e}, seam max {seam:.2e}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--overlap", type=int, default=None)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--check-size", type=int, default=0)
    p.add_argument("--model", default=None)
    args = p.parse_args()
    model = RestorationModel(args.model)
    overlap = model.halo if args.overlap is None else args.overlap
    if args.check_size:
        check_tiling(model, args.check_size, overlap)
    if not args.size:
        return
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "in_i2d.fits", Path(tmp) / "out_i2d.fits"
        write_mosaic(src, args.size, model.pixel_scale_arcsec)
        with local_client(args.workers, dashboard=False), PeakMemory() as mem:
            t = time.perf_counter()
            restore_i2d(src, out, model=model, tile=args.tile, overlap=overlap)
            wall = time.perf_counter() - t
        mpix = args.size**2 / 1e6
        print(f"restore {args.size}^2 ({mpix:.1f} Mpix), tile {args.tile}, overlap {overlap}, {args.workers} workers: "
              f"{wall:.1f} s, {mpix / wall:.3f} Mpix/s, peak memory {mem.peak / 2**30:.2f} GiB "
              f"(added {(mem.peak - mem.baseline) / 2**30:.2f} GiB)")


if __name__ == "__main__":
    sys.exit(main())
