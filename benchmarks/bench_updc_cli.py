"""Benchmark: ``mosaic updc --workers N`` against a plain single-process UPDC script, as commands.

Both are run as fresh processes from the same _cal.fits files and PSF, so every figure includes
start-up, reading and writing:

- *plain* (this script with ``--plain``): the maths of ``mosaic updc --blot interp`` without
  its bookkeeping, in one process with whole arrays: iteration 0 is one whole-output
  ``drizzle.resample.Drizzle`` with variances; each exposure's pixel map is computed once; the
  coverage normalisation ``B^T sum_k D_k(w_k)`` once; then per iteration the forward model
  ``m_k = blot_image(B f)`` (poly5), the read-noise-corrected ratios ``(g + s) / (m + s)``
  (ratios of mocks at or below the floor count as 1), their weighted drizzle
  ``sum_k D_k(w_k r_k)`` (the ``drizzle`` package, numerator ``out_img * out_wht``), the
  adjoint convolution and the multiplicative update with eq. 2 (scipy ``fftconvolve``); the
  last iterate is written as an _i2d file (SCI, WHT);
- *mosaic wN*: ``mosaic updc FILES --psf PSF --out DIR --iterations I --blot interp --workers N``
  (defaults otherwise: errors propagated, checkpoints in a store, files of iterations 0 and I,
  the final residual): what a user runs. ``--no-errors`` adds that option (no VAR_*/ERR
  propagated), the like-for-like comparison with the plain script, which keeps no errors.

The pedestal ``s`` of the plain script is the one ``mosaic updc`` found (read from its store
after the first mosaic run; before that, the plain ratio). Printed per run: wall and CPU
seconds (all processes), peak memory (RSS summed over the process tree) and the ratio to the
plain script of the same round, then the median ratios, the speed-up of 2 workers over 1 (beside
the machine's own 2-process speed-up on a fixed NumPy job, measured before each round: see
``_ceiling.py``), and the largest difference of the last iterates relative to the peak.

Usage::

    python benchmarks/bench_updc_cli.py --data DIR [--size 512] [--n-exposures 8] [--psf-size 101]
                                        [--iterations 2] [--rounds 1] [--workers 1 2] [--no-errors]
                                        [--no-ceiling]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _ceiling import ceiling_row, speedup_summary  # noqa: E402
from bench_drizzle_cli import timed  # noqa: E402

MOCK_FLOOR = 1e-30


def plain_updc(header: str, psf_path: str, out: str, iterations: int, pedestal: float, paths: list[str]) -> None:
    """The peer: UPDC in one process, whole arrays, the drizzle package and scipy."""
    import numpy as np
    from astropy.io import fits
    from astropy.wcs import WCS
    from drizzle.resample import Drizzle, blot_image
    from drizzle.utils import calc_pixmap, estimate_pixel_scale_ratio
    from scipy.signal import fftconvolve

    hdr = fits.Header.fromtextfile(header)
    gw = WCS(hdr)
    shape = (hdr["NAXIS2"], hdr["NAXIS1"])
    psf = fits.getdata(psf_path).astype(np.float64)
    psf /= psf.sum()
    psf_t = psf[::-1, ::-1]
    exps = []
    d0 = Drizzle(kernel="square", out_shape=shape, begin_ctx_id=0, max_ctx_id=len(paths) - 1)
    for p in paths:
        with fits.open(p) as hdul:
            w = WCS(hdul["SCI"].header)
            sci = hdul["SCI"].data.astype(np.float32)
            vr = hdul["VAR_RNOISE"].data.astype(np.float32)
            good = np.isfinite(sci) & ((hdul["DQ"].data & 513) == 0)
            wt = np.where(good & (vr > 0), 1.0 / vr, 0.0).astype(np.float32)
            data2 = [hdul[e].data.astype(np.float32) for e in ("VAR_POISSON", "VAR_RNOISE", "VAR_FLAT")]
        pixmap = calc_pixmap(w, gw, sci.shape)  # once per exposure
        psr = estimate_pixel_scale_ratio(w, gw)
        g = np.where(wt > 0, sci, 0).astype(np.float32)
        d0.add_image(g, exptime=1.0, pixmap=pixmap, data2=data2, weight_map=wt, pixfrac=1.0, iscale=1.0, pixel_scale_ratio=psr)
        exps.append((g, wt, pixmap, psr))

    def drizzle_sum(values):
        """``sum_k D_k(w_k v_k)``: the weighted drizzle's numerator, out_img * out_wht."""
        d = Drizzle(kernel="square", out_shape=shape, begin_ctx_id=0, max_ctx_id=len(exps) - 1)
        for (_, wt, pixmap, psr), v in zip(exps, values, strict=True):
            d.add_image(v.astype(np.float32), exptime=1.0, pixmap=pixmap, weight_map=wt, pixfrac=1.0, iscale=1.0, pixel_scale_ratio=psr)
        # out_img is NaN where nothing landed
        return np.where(d.out_wht > 0, d.out_img, 0.0).astype(np.float64) * d.out_wht

    den = fftconvolve(drizzle_sum([np.ones_like(g) for g, *_ in exps]), psf_t, mode="same")  # once
    ok = den > 1e-6 * den.max()
    covered = np.isfinite(d0.out_img) & (d0.out_wht > 0)
    f = np.where(covered, d0.out_img, 0.0).astype(np.float64)
    s = float(pedestal)
    for _ in range(iterations):
        model = fftconvolve(f, psf, mode="same").astype(np.float32)
        ratios = []
        for g, wt, pixmap, _ in exps:
            m = blot_image(model, pixmap, fillval=0.0, iscale=1.0, interp="poly5")
            use = (wt > 0) & (m + s > MOCK_FLOOR)
            ratios.append(np.where(use, np.maximum(g + s, 0.0) / np.where(use, m + s, 1.0), 1.0))
        num = fftconvolve(drizzle_sum(ratios), psf_t, mode="same")
        h = f + s
        q = np.where(ok, num / np.where(ok, den, 1.0), 1.0)
        h_new = h * q
        f = np.where((h_new < 0) | ~ok, h, h_new) - s
    hdus = [fits.PrimaryHDU(), fits.ImageHDU(np.where(covered | ok, f, np.nan).astype(np.float32), header=hdr, name="SCI")]
    hdus.append(fits.ImageHDU(d0.out_wht, header=hdr, name="WHT"))
    fits.HDUList(hdus).writeto(out, overwrite=True)


def _pedestal(outdir: Path) -> float | None:
    """The pedestal ``mosaic updc`` used, from its store's manifest (None before a run)."""
    for group in outdir.glob("mosaic.zarr/*/*/zarr.json"):  # <field>/<band>: the manifest is in its attributes
        manifest = json.loads(group.read_text()).get("attributes", {}).get("mosaic_manifest", {})
        found = _find(manifest.get("updc/iter_00", {}), "pedestal")
        if found is not None:
            return float(found)
    return None


def _find(obj, key):
    if isinstance(obj, dict):
        if key in obj and isinstance(obj[key], int | float):
            return obj[key]
        for v in obj.values():
            got = _find(v, key)
            if got is not None:
                return got
    if isinstance(obj, list):
        for v in obj:
            got = _find(v, key)
            if got is not None:
                return got
    return None


def _max_difference(plain: Path, outdir: Path, iterations: int) -> float:
    import numpy as np
    from astropy.io import fits

    a = fits.getdata(plain, "SCI")
    files = sorted(outdir.glob(f"*iter{iterations:02d}_i2d.fits"))
    if not files:
        return float("nan")
    b = fits.getdata(files[0], "SCI")
    with fits.open(files[0]) as hdul:
        bkg = float(hdul[0].header.get("BKGLEVEL", hdul["SCI"].header.get("BKGLEVEL", 0.0)))
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.max(np.abs(a[ok] - (b[ok] + bkg))) / np.max(np.abs(a[ok])))


def prepare(folder: Path, size: int, n: int, psf_size: int) -> tuple[list[str], str, str]:
    """Simulated exposures (made once, reused) with their PSF, and the grid header of ``mosaic updc``."""
    from mosaic.io.cal import check_exposures
    from mosaic.io.grid import MosaicGrid

    data = folder / f"u{size}"
    paths = sorted(str(p) for p in data.glob("*_cal.fits"))
    if len(paths) != n:
        subprocess.run(
            [sys.executable, "-m", "mosaic", "--log-level", "WARNING", "simulate", str(data), "--exposures", str(n),
             "--size", str(size), "--psf-size", str(psf_size), "--seed", "0"], check=True,
        )
        paths = sorted(str(p) for p in data.glob("*_cal.fits"))
    psf = sorted(data.glob("psf_*.fits"))[0]
    infos = check_exposures(paths)
    grid = MosaicGrid.from_exposures([i["wcs"] for i in infos], [i["shape"] for i in infos], psr=0.5, tile=1024)
    hdr = grid.to_header()
    hdr["NAXIS"], hdr["NAXIS1"], hdr["NAXIS2"] = 2, grid.shape[1], grid.shape[0]
    header = folder / f"updc_grid{size}.hdr"
    hdr.totextfile(header, overwrite=True)
    return paths, str(psf), str(header)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, help="folder for the exposures and outputs (kept and reused; required)")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--n-exposures", type=int, default=8)
    ap.add_argument("--psf-size", type=int, default=101)
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--no-errors", action="store_true", help="run mosaic updc with --no-errors (the plain script keeps no errors either)")
    ap.add_argument(
        "--no-ceiling", dest="ceiling", action="store_false",
        help="skip the machine's own 2-process speed-up on a fixed NumPy job, measured before each round (benchmarks/_ceiling.py)",
    )
    ap.add_argument("--plain", nargs="+", metavar="ARG", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.plain:
        header, psf, out, iterations, pedestal, *paths = args.plain
        plain_updc(header, psf, out, int(iterations), float(pedestal), paths)
        return
    if args.data is None:
        ap.error("--data DIR is required")

    folder = args.data
    folder.mkdir(parents=True, exist_ok=True)
    paths, psf, header = prepare(folder, args.size, args.n_exposures, args.psf_size)
    mib = 2**20
    it = str(args.iterations)
    mosaic = [sys.executable, "-m", "mosaic", "--log-level", "WARNING", "updc", *paths, "--psf", psf, "--iterations", it, "--blot", "interp"]
    if args.no_errors:
        mosaic.append("--no-errors")
    runs = {f"mosaic w{w}": [*mosaic, "--out", str(folder / f"updc_w{w}"), "--workers", str(w), "--overwrite"] for w in args.workers}
    names = ["plain", *runs]
    print(f"{os.cpu_count()} CPUs; load average now {os.getloadavg()[0]:.1f}")
    print(f"{'size':>5} {'round':>5} {'run':>9} {'load':>5} {'wall s':>7} {'CPU s':>7} {'peak MiB':>9} {'x plain':>8}")
    ratios = {n: [] for n in names}
    speedups, ceilings = [], []
    for r in range(args.rounds):
        if args.ceiling and {1, 2} <= set(args.workers):
            ceilings.append(ceiling_row(args.size, r))
        # the plain script after a mosaic run in the first round: it takes that run's pedestal
        k = (r + 1) % len(names)
        order = names[k:] + names[:k]
        got = {}
        for n in order:
            if n == "plain":
                ped = next((p for w in args.workers if (p := _pedestal(folder / f"updc_w{w}")) is not None), 0.0)
                cmd = [sys.executable, __file__, "--plain", header, psf, str(folder / "plain_updc_i2d.fits"), it, str(ped), *paths]
                got[n] = timed(cmd)
            else:
                got[n] = timed(runs[n])
        for n in names:
            g = got[n]
            ratio = g["wall"] / got["plain"]["wall"]
            ratios[n].append(ratio)
            print(f"{args.size:>5} {r:>5} {n:>9} {g['load']:>5.1f} {g['wall']:>7.2f} {g['cpu']:>7.2f} {g['peak'] / mib:>9.0f} {ratio:>8.2f}")
        if "mosaic w1" in got and "mosaic w2" in got:
            speedups.append(got["mosaic w1"]["wall"] / got["mosaic w2"]["wall"])
    line = ", ".join(f"{n} {statistics.median(v):.2f}x" for n, v in ratios.items() if n != "plain")
    print(f"{args.size}²: median wall ratio to the plain script: {line}", end="")
    print(f"; {speedup_summary(speedups, ceilings)}" if speedups else "")
    for w in args.workers:
        diff = _max_difference(folder / "plain_updc_i2d.fits", folder / f"updc_w{w}", args.iterations)
        print(f"  max |SCI w{w} - plain| / max |SCI| (iteration {args.iterations}, sky added back) = {diff:.1e}")


if __name__ == "__main__":
    main()
