"""Benchmark: ``mosaic skymatch --workers N`` against the plain single-process loop of the same maths.

    python benchmarks/bench_skymatch.py FILES... [--workers 1 2] [--box 64] [--rounds 1]

Peer (``--plain``): one process, no dask: per exposure, astropy reads SCI, DQ and the variances,
:func:`mosaic.ops.skymatch.sky_meshes` measures its meshes; then the pairs' differences and the
offsets (:func:`mosaic.prep.skymatch.pair_differences`, :func:`mosaic.ops.skymatch.solve_offsets`);
then each exposure is written with its offset subtracted (:func:`mosaic.prep.write_cleaned`).
Ours: ``mosaic skymatch FILES --out DIR --box B --workers N``. Each run is a fresh process; wall,
CPU and the peak summed RSS of its process tree are printed, and the two runs' offsets compared.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_drizzle_cli import timed  # noqa: E402


def plain_loop(files, outdir, box: int) -> None:
    """The peer: the same steps one exposure after the other in this process."""
    from astropy.io import fits

    from mosaic.io.cal import DEFAULT_BAD_BITS, VARIANCE_EXTENSIONS, read_wcs, usable
    from mosaic.ops.skymatch import sky_meshes, solve_offsets
    from mosaic.prep import cleaned_path, write_cleaned
    from mosaic.prep.skymatch import pair_differences

    levels, wcss = [], []
    for f in files:
        with fits.open(f) as hdul:
            sci = hdul["SCI"].data.astype(np.float32)
            good = usable(sci, hdul["DQ"].data, DEFAULT_BAD_BITS, [hdul[v].data for v in VARIANCE_EXTENSIONS if v in hdul])
            levels.append(sky_meshes(sci, good, box))
        wcss.append(read_wcs(f, prefer_gwcs=False))
    pairs = pair_differences(levels, wcss, sci.shape, box)
    offsets, _ = solve_offsets(len(files), pairs)
    Path(outdir).mkdir(parents=True, exist_ok=True)
    for f, o in zip(files, offsets, strict=True):
        with fits.open(f) as hdul:
            arrays = {e.lower(): hdul[e].data for e in ("ERR", "DQ", *VARIANCE_EXTENSIONS)}
            arrays["sci"] = (hdul["SCI"].data.astype(np.float64) - o).astype(np.float32)
        write_cleaned(f, cleaned_path(f, outdir, "_skm"), arrays, status_key="S_SKYMAT", keywords={"SKYMATCH": float(o)})


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--box", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--plain", metavar="OUTDIR", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.plain:
        plain_loop(args.files, args.plain, args.box)
        return
    from astropy.io import fits

    work = Path(tempfile.mkdtemp(prefix="bench_skymatch_"))
    try:
        runs = {"plain": [sys.executable, __file__, *args.files, "--box", str(args.box), "--plain", str(work / "plain")]}
        for w in args.workers:
            runs[f"mosaic w{w}"] = [sys.executable, "-m", "mosaic", "--log-level", "WARNING", "skymatch", *args.files,
                                    "--out", str(work / f"w{w}"), "--box", str(args.box), "--workers", str(w)]
        print(f"{len(args.files)} exposures, meshes of {args.box} pixels")
        print(f"{'round':>5} {'run':>10} {'wall s':>7} {'CPU s':>7} {'peak MiB':>9} {'x plain':>8}")
        for r in range(args.rounds):
            got = {}
            for name, cmd in runs.items():
                for d in work.glob("*"):
                    shutil.rmtree(d)
                got[name] = timed(cmd)
                if name == "plain":
                    plain = sorted((work / "plain").glob("*_skm.fits"))
                    ref = np.array([fits.getheader(p)["SKYMATCH"] for p in plain])
                else:
                    out = sorted((work / name.split()[1]).glob("*_skm.fits"))
                    mine = np.array([fits.getheader(p)["SKYMATCH"] for p in out])
                    got[name]["diff"] = float(np.abs(mine - ref).max())
            for name, g in got.items():
                print(f"{r:>5} {name:>10} {g['wall']:>7.2f} {g['cpu']:>7.2f} {g['peak'] / 2**20:>9.0f} {g['wall'] / got['plain']['wall']:>8.2f}"
                      + (f"   max |offset - plain's| {g['diff']:.1e}" if "diff" in g else ""))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
