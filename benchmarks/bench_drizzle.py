"""Benchmark: the tiled drizzle mosaic on a LocalCluster against one whole-output Drizzle run.

Both runs start from the same _cal.fits files and end with an _i2d.fits file on disk:

- *whole*: the classic single-node way -- one ``drizzle.resample.Drizzle`` holding the whole
  output (SCI, WHT, CON and three squared-weight variance co-adds) in memory, exposures read
  and added one at a time, then the file written with astropy;
- *tiled*: what ``mosaic drizzle`` does -- ``mosaic.coadd.drizzle.drizzle_mosaic`` with cut-outs
  read from the files (``CalCutouts``) + ``mosaic.io.products.write_i2d`` on a
  ``distributed.LocalCluster`` (worker processes), each tile computed and written by tasks.

Printed: wall time of each and their ratio, and the peak memory of all processes (RSS summed
over this process and its children, sampled every 20 ms in a thread), above the idle baseline
measured just before each run. Exposures are made from the real NRCB5 SIP distortion, cut to
the requested size, dithered and rolled.

Usage::

    python benchmarks/bench_drizzle.py [--n-exposures 8] [--size 1024] [--tile 1024]
                                       [--psr 0.5] [--workers 2] [--rotation DEG]
                                       [--dither ARCSEC] [--arrays] [--keep DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

sys.path.insert(0, str(Path(__file__).parent))
from _memory import PeakMemory  # noqa: E402


def make_exposures(folder: Path, n: int, size: int, *, dither: float = 3.0, seed: int = 0) -> list[Path]:
    from mosaic.io.cal import write_cal

    rng = np.random.default_rng(seed)
    text = resources.files("mosaic").joinpath("data/nrcb5_sip_wcs.hdr").read_text()
    paths = []
    yy, xx = np.mgrid[0:size, 0:size]
    for k in range(n):
        h = fits.Header.fromstring(text, sep="\n")
        h["NAXIS1"] = h["NAXIS2"] = size
        h["CRPIX1"] -= (2048 - size) / 2
        h["CRPIX2"] -= (2048 - size) / 2
        dx, dy = rng.uniform(-dither, dither, 2) / 3600.0
        h["CRVAL1"] += dx / np.cos(np.deg2rad(h["CRVAL2"]))
        h["CRVAL2"] += dy
        t = np.deg2rad(rng.uniform(-0.5, 0.5))
        rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
        cd = rot @ np.array([[h["CD1_1"], h["CD1_2"]], [h["CD2_1"], h["CD2_2"]]])
        h["CD1_1"], h["CD1_2"], h["CD2_1"], h["CD2_2"] = cd.ravel()
        w = WCS(h)
        sci = 0.3 + rng.normal(0, 0.02, (size, size))
        for _ in range(max(size // 16, 4)):
            x0, y0 = rng.uniform(0, size, 2)
            sci += rng.uniform(1, 50) * np.exp(-0.5 * ((xx - x0) ** 2 + (yy - y0) ** 2) / 1.3**2) * (
                (np.abs(xx - x0) < 8) & (np.abs(yy - y0) < 8)
            )
        var = np.full((size, size), 4e-4, np.float32)
        paths.append(
            write_cal(
                folder / f"bench{k:03d}_cal.fits",
                sci=sci.astype(np.float32), err=np.sqrt(2 * var), dq=np.zeros((size, size), np.uint32),
                var_poisson=var, var_rnoise=var, var_flat=var, wcs=w,
                meta={"FILTER": "F200W", "DETECTOR": "NRCB5", "EFFEXPTM": 100.0},
                overwrite=True,
            )
        )
    return paths


def run_whole(paths, grid, out: Path):
    """One Drizzle over the whole output, exposures added one at a time, then written."""
    from drizzle.resample import Drizzle
    from drizzle.utils import calc_pixmap, estimate_pixel_scale_ratio

    d = Drizzle(kernel="square", out_shape=grid.shape, begin_ctx_id=0, max_ctx_id=len(paths) - 1)
    for p in paths:
        with fits.open(p) as hdul:
            w = WCS(hdul["SCI"].header)
            sci = hdul["SCI"].data.astype(np.float32)
            vr = hdul["VAR_RNOISE"].data.astype(np.float32)
            good = np.isfinite(sci) & ((hdul["DQ"].data & 513) == 0)
            wt = np.where(good & (vr > 0), 1.0 / vr, 0.0).astype(np.float32)
            data2 = [hdul[e].data.astype(np.float32) for e in ("VAR_POISSON", "VAR_RNOISE", "VAR_FLAT")]
        pixmap = calc_pixmap(w, grid.wcs, sci.shape)
        d.add_image(
            np.where(wt > 0, sci, 0).astype(np.float32), exptime=1.0, pixmap=pixmap, data2=data2, weight_map=wt,
            pixfrac=1.0, iscale=1.0, pixel_scale_ratio=estimate_pixel_scale_ratio(w, grid.wcs),
        )
        del pixmap, sci, data2
    err = np.sqrt(sum(d.out_img2))
    hdr = grid.to_header()
    hdus = [fits.PrimaryHDU()]
    for name, arr in [("SCI", d.out_img), ("ERR", err), ("CON", d.out_ctx), ("WHT", d.out_wht)] + list(
        zip(("VAR_POISSON", "VAR_RNOISE", "VAR_FLAT"), d.out_img2, strict=True)
    ):
        hdus.append(fits.ImageHDU(arr, header=hdr, name=name))
    fits.HDUList(hdus).writeto(out, overwrite=True)
    return d


def run_tiled(paths, grid, out: Path, workers: int, arrays: bool) -> dict:
    """What ``mosaic drizzle`` does: cut-outs read from the files, tiles computed and written.

    Returns the cluster's start time and idle memory, and the run's time and peak memory.
    """
    import distributed

    from mosaic.cli.drizzle import CalCutouts
    from mosaic.coadd.drizzle import drizzle_mosaic
    from mosaic.io.cal import read_exposures
    from mosaic.io.products import write_i2d

    base = PeakMemory.now()
    t0 = time.perf_counter()
    with (
        distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
        client.wait_for_workers(workers)
        t_start = time.perf_counter() - t0
        time.sleep(0.5)
        idle = PeakMemory.now()
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            ds = read_exposures(paths)
            reader = None if arrays else CalCutouts(paths, ds.attrs["bad_bits"])
            mosaic = drizzle_mosaic(ds, grid, cutout_reader=reader)
            t_graph = time.perf_counter() - t0
            write_i2d(out, mosaic, grid, overwrite=True)
            t_run = time.perf_counter() - t0
    return {"start": t_start, "idle": idle - base, "graph": t_graph, "run": t_run, "peak": mem.peak - idle}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-exposures", type=int, default=8)
    ap.add_argument("--size", type=int, default=1024, help="exposure side in pixels (<= 2048)")
    ap.add_argument("--tile", type=int, default=1024, help="tile side in output pixels")
    ap.add_argument("--psr", type=float, default=0.5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--dither", type=float, default=3.0, help="dither amplitude (arcsec): larger spreads the mosaic")
    ap.add_argument("--rotation", type=float, default=0.0, help="grid position angle (deg); 0 is north up")
    ap.add_argument(
        "--arrays", action="store_true",
        help="take cut-outs from the exposure set's dask arrays instead of reading them from the files",
    )
    ap.add_argument("--keep", type=Path, help="keep the files in this folder")
    args = ap.parse_args(argv)

    from mosaic.io.cal import read_exposures
    from mosaic.io.grid import MosaicGrid

    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench_drizzle_"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        paths = make_exposures(folder, args.n_exposures, args.size, dither=args.dither)
        print(f"made {len(paths)} exposures of {args.size}^2 in {time.perf_counter() - t0:.1f} s")
        ds = read_exposures(paths)
        shapes = [(args.size, args.size)] * len(paths)
        grid = MosaicGrid.from_exposures(ds.attrs["wcs"], shapes, psr=args.psr, tile=args.tile, rotation_deg=args.rotation)
        del ds
        n_out = grid.shape[0] * grid.shape[1]
        print(f"output grid {grid.shape[0]} x {grid.shape[1]} ({n_out * 4 / 2**20:.0f} MiB per float32 array), "
              f"tiles {args.tile}^2 ({grid.n_tiles[0]} x {grid.n_tiles[1]})")

        base = PeakMemory.now()
        with PeakMemory() as mem_whole:
            t0 = time.perf_counter()
            run_whole(paths, grid, folder / "whole_i2d.fits")
            t_whole = time.perf_counter() - t0
        peak_whole = mem_whole.peak - base

        tiled = run_tiled(paths, grid, folder / "tiled_i2d.fits", args.workers, args.arrays)

        with fits.open(folder / "whole_i2d.fits") as a, fits.open(folder / "tiled_i2d.fits") as b:
            sa, sb = a["SCI"].data, b["SCI"].data
            ok = np.isfinite(sa) & np.isfinite(sb)
            rel = np.max(np.abs(sa[ok] - sb[ok]) / np.maximum(np.abs(sa[ok]), 1e-30))
            same_nan = bool(np.array_equal(np.isnan(sa), np.isnan(sb)))

        mib = 2**20
        print(f"whole-output Drizzle : {t_whole:7.2f} s, peak memory {peak_whole / mib:6.0f} MiB above idle")
        print(f"tiled on {args.workers} workers   : {tiled['run']:7.2f} s (graph {tiled['graph']:.2f} s), "
              f"peak memory {tiled['peak'] / mib:6.0f} MiB above the idle cluster (all processes); "
              f"cluster start {tiled['start']:.1f} s and {tiled['idle'] / mib:.0f} MiB")
        print(f"ratio tiled/whole    : time {tiled['run'] / t_whole:.2f}, peak memory {tiled['peak'] / peak_whole:.2f}")
        print(f"max |SCI| relative difference {rel:.2e}; same coverage: {same_nan}")
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
