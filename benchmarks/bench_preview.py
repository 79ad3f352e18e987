"""PNG preview of a mosaic larger than comfortable memory: block by block against whole-array.

Run::

    python benchmarks/bench_preview.py --size 9584 --max-size 2048

Writes a ``size``² float32 FITS image (a noisy sky with sources and a NaN border, generated row
block by row block), then makes the same PNG preview twice in this process:

* ``blocked``: :func:`mosaic.viz.preview.write_preview` on the file: FITS sections read chunk by
  chunk on dask's threaded scheduler, NaN-aware block means, a stretch of the small result;
* ``naive`` (the peer): ``fits.getdata`` of the whole image, a float64 copy, NaN-aware block
  means with one ``reshape``, then the same stretch and PNG writer.

Printed per contender: wall time, peak memory of the process tree above the baseline (RSS
sampled every 20 ms), and the ratios to the peer; the two previews are compared (largest
difference relative to the preview's range). Nothing here gates anything on time.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

sys.path.insert(0, str(Path(__file__).parent))
from _memory import PeakMemory  # noqa: E402

from mosaic.viz.preview import downsample_factor, write_png, write_preview  # noqa: E402

__all__ = ["main"]

MiB = 2.0**20


def make_image(path: Path, size: int, seed: int = 0, rows: int = 512) -> Path:
    """A size x size float32 FITS image written row block by row block (never whole in memory)."""
    header = fits.Header()
    header["SIMPLE"] = True
    header["BITPIX"] = -32
    header["NAXIS"] = 2
    header["NAXIS1"] = size
    header["NAXIS2"] = size
    header["EXTEND"] = True
    n_bytes = size * size * 4
    padded = -(-n_bytes // 2880) * 2880
    header_bytes = header.tostring().encode()
    with open(path, "wb") as f:
        f.write(header_bytes)
        f.seek(len(header_bytes) + padded - 1)
        f.write(b"\0")
    data = np.memmap(path, dtype=">f4", mode="r+", offset=len(header_bytes), shape=(size, size))
    for y0 in range(0, size, rows):
        y1 = min(y0 + rows, size)
        rng = np.random.default_rng([seed, y0])
        block = 0.1 + 0.02 * rng.standard_normal((y1 - y0, size))
        ys, xs = rng.integers(0, y1 - y0, 200), rng.integers(0, size, 200)
        block[ys, xs] += 10.0 ** rng.uniform(0, 3, 200)
        block[:, :100] = np.nan  # an uncovered strip
        data[y0:y1] = block
    data.flush()
    del data
    return path


def naive_preview(path: Path, out: Path, max_size: int, stretch: str) -> np.ndarray:
    """The peer: the whole image in memory, block means by one reshape."""
    image = fits.getdata(path).astype(np.float64)
    f = downsample_factor(image.shape, max_size)
    ny, nx = image.shape
    padded = np.full((-(-ny // f) * f, -(-nx // f) * f), np.nan)
    padded[:ny, :nx] = image
    cells = padded.reshape(padded.shape[0] // f, f, padded.shape[1] // f, f)
    good = np.isfinite(cells)
    total = np.where(good, cells, 0.0).sum(axis=(1, 3))
    count = good.sum(axis=(1, 3))
    small = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    write_png(out, small, stretch=stretch)
    return small


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=9584, help="image side (default 9584, the paper's mosaic)")
    parser.add_argument("--max-size", type=int, default=2048, help="longest side of the preview (default 2048)")
    parser.add_argument("--stretch", default="asinh", help="display stretch (default asinh)")
    parser.add_argument("--dir", default=None, help="directory for the image (default a temporary one)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        path = make_image(tmp / "mosaic.fits", args.size)
        print(f"image: {args.size}² float32 ({path.stat().st_size / MiB:.0f} MiB on disk), written in {time.perf_counter() - t0:.1f} s")
        from mosaic.viz.preview import preview_array  # noqa: PLC0415

        gc.collect()
        with PeakMemory() as mem_b:
            t0 = time.perf_counter()
            write_preview(tmp / "blocked.png", path, max_size=args.max_size, stretch=args.stretch)
            t_b = time.perf_counter() - t0
        small_b = preview_array(path, max_size=args.max_size)
        gc.collect()
        with PeakMemory() as mem_n:
            t0 = time.perf_counter()
            small_n = naive_preview(path, tmp / "naive.png", args.max_size, args.stretch)
            t_n = time.perf_counter() - t0
        both = np.isfinite(small_b) & np.isfinite(small_n)
        same_nan = np.array_equal(np.isnan(small_b), np.isnan(small_n))
        span = np.nanmax(small_n) - np.nanmin(small_n)
        diff = np.abs(small_b[both] - small_n[both]).max() / span
        print(f"preview: {small_b.shape[0]} x {small_b.shape[1]} (factor {downsample_factor((args.size,) * 2, args.max_size)}); "
              f"largest difference {diff:.1e} of the range; NaN blocks equal: {same_nan}")
        print(f"{'contender':<10s} {'time s':>8s} {'ratio':>7s} {'peak MiB':>10s} {'ratio':>7s}")
        for name, t, mem in (("blocked", t_b, mem_b), ("naive", t_n, mem_n)):
            peak = (mem.peak - mem.baseline) / MiB
            peer = (mem_n.peak - mem_n.baseline) / MiB
            print(f"{name:<10s} {t:8.2f} {t / t_n:7.2f} {peak:10.0f} {peak / peer:7.3f}")


if __name__ == "__main__":
    main()
