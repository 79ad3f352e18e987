"""Benchmark: ``mosaic drizzle --workers N`` against the plain drizzle-package loop, as commands.

Both are run as fresh processes from the same _cal.fits files to an _i2d.fits file on disk, so
every figure includes start-up (imports, the local cluster), reading and writing:

- *plain*: one whole-output ``drizzle.resample.Drizzle``, ``add_image`` per exposure with its
  three variances (``data2``) and 1/VAR_RNOISE weights, then SCI, ERR, CON, WHT and VAR_*
  written with astropy (this script run with ``--plain``);
- *mosaic wN*: ``mosaic drizzle FILES --out OUT --workers N`` (default options).

Runs are interleaved (plain, w1, w2, then the next round in another order) and each ratio is
taken within its round, because the 2-core machine is shared: the 1-minute load average before
each run is printed. Printed per run: wall and CPU seconds (all processes), the peak memory of
all processes (RSS summed over the process tree, read every 20 ms, the tree walked every 0.5 s) and the ratio to the plain
loop of the same round; then, per size, the median ratios and the speed-up of 2 workers over 1,
and the largest SCI difference between the two products.

Before each round's runs (with ``--workers`` 1 and 2), the machine's own speed-up from a second
process is measured on a fixed NumPy job (``_ceiling.py``) and printed as a ``ceiling`` row: on a
shared virtual machine it moved between 1.6x and 2.1x from one minute to the next, so the
speed-up of 2 workers is printed beside it and as a share of it.

Usage::

    python benchmarks/bench_drizzle_cli.py [--sizes 512 1024] [--n-exposures 8] [--rounds 2]
                                           [--workers 1 2] [--data DIR] [--no-ceiling]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parent))
from _ceiling import ceiling_row, speedup_summary  # noqa: E402
from _memory import PeakMemory  # noqa: E402


def plain_loop(header: str, out: str, paths: list[str]) -> None:
    """The peer: one whole-output Drizzle over the exposures, then the i2d file."""
    import numpy as np
    from astropy.io import fits
    from astropy.wcs import WCS
    from drizzle.resample import Drizzle
    from drizzle.utils import calc_pixmap, estimate_pixel_scale_ratio

    hdr = fits.Header.fromtextfile(header)
    gw = WCS(hdr)
    shape = (hdr["NAXIS2"], hdr["NAXIS1"])
    d = Drizzle(kernel="square", out_shape=shape, begin_ctx_id=0, max_ctx_id=len(paths) - 1)
    for p in paths:
        with fits.open(p) as hdul:
            w = WCS(hdul["SCI"].header)
            sci = hdul["SCI"].data.astype(np.float32)
            vr = hdul["VAR_RNOISE"].data.astype(np.float32)
            good = np.isfinite(sci) & ((hdul["DQ"].data & 513) == 0)
            wt = np.where(good & (vr > 0), 1.0 / vr, 0.0).astype(np.float32)
            data2 = [hdul[e].data.astype(np.float32) for e in ("VAR_POISSON", "VAR_RNOISE", "VAR_FLAT")]
        pixmap = calc_pixmap(w, gw, sci.shape)
        d.add_image(
            np.where(wt > 0, sci, 0).astype(np.float32), exptime=1.0, pixmap=pixmap, data2=data2, weight_map=wt,
            pixfrac=1.0, iscale=1.0, pixel_scale_ratio=estimate_pixel_scale_ratio(w, gw),
        )
    err = np.sqrt(sum(d.out_img2))
    hdus = [fits.PrimaryHDU()]
    planes = [("SCI", d.out_img), ("ERR", err), ("CON", d.out_ctx), ("WHT", d.out_wht)]
    planes += list(zip(("VAR_POISSON", "VAR_RNOISE", "VAR_FLAT"), d.out_img2, strict=True))
    for name, arr in planes:
        hdus.append(fits.ImageHDU(arr, header=hdr, name=name))
    fits.HDUList(hdus).writeto(out, overwrite=True)


def timed(cmd: list[str]) -> dict:
    """Run ``cmd``; its wall and CPU seconds (it and its descendants) and peak summed RSS."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = psutil.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # the tree walked twice a second, its RSS read every 20 ms: a walk per sample took 15 % of a
    # core, from the two-worker runs (both cores busy) and not from the one-worker runs
    with PeakMemory(root=proc) as memory:
        _, err = proc.communicate()
        wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}... failed ({proc.returncode}):\n{err.decode()[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "peak": memory.peak, "load": load}


def prepare(folder: Path, size: int, n: int) -> tuple[list[str], str]:
    """Exposures of ``size``² (made once, reused from ``folder``) and the grid header of ``mosaic drizzle``."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_drizzle import make_exposures

    from mosaic.io.cal import read_exposures
    from mosaic.io.grid import MosaicGrid

    data = folder / f"s{size}"
    paths = sorted(str(p) for p in data.glob("*_cal.fits"))
    if len(paths) != n:
        data.mkdir(parents=True, exist_ok=True)
        paths = [str(p) for p in make_exposures(data, n, size)]
    ds = read_exposures(paths)
    # the grid mosaic drizzle makes by default (psr 0.5, rotation 0, tiles of 1024)
    grid = MosaicGrid.from_exposures(ds.attrs["wcs"], [(size, size)] * n, psr=0.5, tile=1024)
    hdr = grid.to_header()
    hdr["NAXIS"], hdr["NAXIS1"], hdr["NAXIS2"] = 2, grid.shape[1], grid.shape[0]
    header = folder / f"grid{size}.hdr"
    hdr.totextfile(header, overwrite=True)
    return paths, str(header)


def max_sci_difference(a: Path, b: Path) -> float:
    import numpy as np
    from astropy.io import fits

    sa, sb = fits.getdata(a, "SCI"), fits.getdata(b, "SCI")
    ok = np.isfinite(sa) & np.isfinite(sb)
    if not np.array_equal(np.isfinite(sa), np.isfinite(sb)):
        return float("inf")
    return float(np.max(np.abs(sa[ok] - sb[ok])) / np.max(np.abs(sa[ok])))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--n-exposures", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--data", type=Path, help="folder for the exposures (kept and reused)")
    ap.add_argument(
        "--no-ceiling", dest="ceiling", action="store_false",
        help="skip the machine's own 2-process speed-up on a fixed NumPy job, measured before each round (benchmarks/_ceiling.py)",
    )
    ap.add_argument("--plain", nargs="+", metavar="ARG", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.plain:
        plain_loop(args.plain[0], args.plain[1], args.plain[2:])
        return

    folder = args.data or Path(tempfile.mkdtemp(prefix="bench_drizzle_cli_"))
    folder.mkdir(parents=True, exist_ok=True)
    mosaic = [sys.executable, "-m", "mosaic", "--log-level", "WARNING", "drizzle"]
    mib = 2**20
    print(f"{os.cpu_count()} CPUs; load average now {os.getloadavg()[0]:.1f}")
    print(f"{'size':>5} {'round':>5} {'run':>9} {'load':>5} {'wall s':>7} {'CPU s':>7} {'peak MiB':>9} {'x plain':>8}")
    for size in args.sizes:
        paths, header = prepare(folder, size, args.n_exposures)
        runs = {"plain": [sys.executable, __file__, "--plain", header, str(folder / "plain_i2d.fits"), *paths]}
        for w in args.workers:
            runs[f"mosaic w{w}"] = [*mosaic, *paths, "--out", str(folder / f"w{w}_i2d.fits"), "--workers", str(w), "--overwrite"]
        names = list(runs)
        ratios = {n: [] for n in names}
        speedups, ceilings = [], []
        for r in range(args.rounds):
            order = names[r % len(names):] + names[: r % len(names)]
            if args.ceiling and {1, 2} <= set(args.workers):
                ceilings.append(ceiling_row(size, r))
            got = {n: timed(runs[n]) for n in order}
            for n in names:
                g = got[n]
                ratio = g["wall"] / got["plain"]["wall"]
                ratios[n].append(ratio)
                print(f"{size:>5} {r:>5} {n:>9} {g['load']:>5.1f} {g['wall']:>7.2f} {g['cpu']:>7.2f} {g['peak'] / mib:>9.0f} {ratio:>8.2f}")
            if "mosaic w1" in got and "mosaic w2" in got:
                speedups.append(got["mosaic w1"]["wall"] / got["mosaic w2"]["wall"])
        line = ", ".join(f"{n} {statistics.median(v):.2f}x" for n, v in ratios.items() if n != "plain")
        print(f"{size}²: median wall ratio to the plain loop: {line}", end="")
        print(f"; {speedup_summary(speedups, ceilings)}" if speedups else "")
        for w in args.workers:
            diff = max_sci_difference(folder / "plain_i2d.fits", folder / f"w{w}_i2d.fits")
            print(f"  max |SCI w{w} - plain| / max |SCI| = {diff:.1e}")


if __name__ == "__main__":
    main()
