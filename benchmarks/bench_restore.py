"""``mosaic restore`` on a large synthetic mosaic: seconds and peak memory against whole-image inference.

    python benchmarks/bench_restore.py [--size 4096] [--tile 512] [--overlap 128] [--workers 2]
                                       [--peer] [--check-size 0] [--model PATH]

Writes an F200W-like mosaic of ``size``^2 (sky, noise, Gaussian sources, a NaN border; written
in bands, never whole in memory) with the shipped model's pixel scale, and restores it with
:func:`mosaic.restore.product.restore_i2d` on a local cluster of ``workers`` processes (0:
threads here). Prints the wall time, megapixels per second and the peak memory of all processes
(``PeakMemory``). With ``--peer``, the peer in the same run: whole-image ONNX inference in one
fresh process with ``workers`` ONNX threads (read the SCI whole, the same global normalisation,
the network on the whole image with the same zero border, written whole), its seconds and peak
memory, the ratios, and the largest difference of the two products. With ``--check-size N``, also restores an N^2 crop whole and tiled with tiles of
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
import psutil
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


def whole_image(src: str, out: str, model_path: str, overlap: int, threads: int, seconds=None) -> None:
    """The peer: whole-image inference in this process (run in a fresh one by :func:`run_peer`);
    its seconds from reading to written (the model loaded first) put on the queue ``seconds``."""
    model = RestorationModel(model_path, threads=threads)
    t = time.perf_counter()
    with fits.open(src) as hdul:
        img = hdul["SCI"].data.astype(np.float32)
        header = hdul["SCI"].header
    norm = estimate_normalisation(img, softening=model.softening)
    restored = norm.inverse(restore_whole(norm.forward(img), model, overlap=overlap))
    restored[~np.isfinite(img)] = np.nan
    fits.writeto(out, restored.astype(np.float32), header=header)
    if seconds is not None:
        seconds.put(time.perf_counter() - t)


#: bytes per pixel of the padded image that whole-image inference of the shipped model takes
#: (measured with the previous model: 2.87 GiB added for 1024² with its 96-pixel border; not re-measured)
PEER_BYTES_PER_PIXEL = 2100


def run_peer(src: Path, out: Path, model: RestorationModel, overlap: int, threads: int) -> tuple[float, float, PeakMemory]:
    """Seconds (the peer's own, and with its start-up) and peak memory (this process and the
    peer's) of :func:`whole_image` in a spawned process."""
    import multiprocessing  # noqa: PLC0415

    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    with PeakMemory() as mem:
        t = time.perf_counter()
        proc = ctx.Process(target=whole_image, args=(str(src), str(out), str(model.path), overlap, threads, queue))
        proc.start()
        proc.join()
        wall = time.perf_counter() - t
    if proc.exitcode != 0:
        msg = f"whole-image peer failed (exit code {proc.exitcode}; out of memory?)"
        raise RuntimeError(msg)
    return queue.get(timeout=10), wall, mem


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
    p.add_argument("--peer", action="store_true", help="also whole-image inference in one process (time, memory, ratios)")
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
        need = PEER_BYTES_PER_PIXEL * (args.size + 2 * overlap) ** 2
        if args.peer and need > 0.8 * psutil.virtual_memory().available:
            print(f"peer: not run: whole-image inference of {args.size}^2 needs about {need / 2**30:.0f} GiB; "
                  f"{psutil.virtual_memory().available / 2**30:.0f} GiB available")
        elif args.peer:
            ref = Path(tmp) / "whole.fits"
            peer_wall, peer_total, peer_mem = run_peer(src, ref, model, overlap, max(1, args.workers))
            got, want = fits.getdata(out, "SCI"), fits.getdata(ref)
            diff = float(np.nanmax(np.abs(got - want)))
            print(f"peer: whole-image inference in one process, {max(1, args.workers)} ONNX threads: {peer_wall:.1f} s "
                  f"({peer_total:.1f} s with the process's start-up), peak memory {peer_mem.peak / 2**30:.2f} GiB (added {(peer_mem.peak - peer_mem.baseline) / 2**30:.2f} GiB)")
            print(f"tiled / whole: time {wall / peer_wall:.2f}x, peak memory {mem.peak / peer_mem.peak:.2f}x "
                  f"(added {(mem.peak - mem.baseline) / max(1, peer_mem.peak - peer_mem.baseline):.2f}x); "
                  f"max |tiled - whole| {diff:.2e} MJy/sr (sky sigma 0.012)")


if __name__ == "__main__":
    sys.exit(main())
