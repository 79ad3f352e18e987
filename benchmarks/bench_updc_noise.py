"""Cost per iteration of the noise-aware UPDC update against an older one, on the same simulated field.

    python benchmarks/bench_updc_noise.py [--size 256] [--iterations 3] [--compare-to REF]

Times iterations 1..N (after the drizzle mosaic) of ``updc`` with errors, in one process on the
local threaded scheduler, for: ``pedestal="auto"`` (the default), ``damping=2``, and
``pedestal=None`` (eq. 1-2 as printed) of this working tree; with ``--compare-to REF`` also the
default run of the package as it was at git ``REF`` (``git archive``, run in a subprocess), on
the same files. Prints seconds per iteration and the ratios to the old update.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def time_iterations(folder: Path, n_iterations: int, options: dict) -> float:
    """Median seconds per iteration (1..n) of ``updc`` on the field simulated in ``folder``."""
    import numpy as np

    from mosaic.coadd.updc import updc
    from mosaic.io.cal import read_exposures
    from mosaic.io.grid import MosaicGrid
    from mosaic.psf.files import read_psf

    paths = sorted(str(p) for p in (folder / "field").glob("*_cal.fits"))
    exposures = read_exposures(paths)
    shape = (exposures.sizes["y"], exposures.sizes["x"])
    grid = MosaicGrid.from_exposures(exposures.attrs["wcs"], [shape] * len(paths), psr=0.5, tile=512)
    psf = read_psf(next((folder / "field").glob("psf_*.fits")), pixel_scale_arcsec=grid.pixel_scale_arcsec)[0]
    stamps = []
    updc(exposures, grid, psf, n_iterations=n_iterations, callback=lambda n, ds: stamps.append(time.perf_counter()), final_residual=False, **options)
    return float(np.median(np.diff(stamps)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--compare-to", default=None, metavar="REF")
    parser.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--options", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.options is not None:  # a child run: one configuration, seconds on stdout
        print(json.dumps(time_iterations(Path(args.folder), args.iterations, json.loads(args.options))))
        return 0
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _field import simulate_updc_field

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        simulate_updc_field(folder, size=args.size, n_exposures=4, psf_size=101, n_stars=6, n_pairs=2)
        runs = {
            "noise-aware (pedestal auto)": {},
            "noise-aware + damping 2": {"damping": 2.0},
            "pedestal None (eq. 1-2)": {"pedestal": None},
        }
        seconds = {label: time_iterations(folder, args.iterations, options) for label, options in runs.items()}
        if args.compare_to:
            old = folder / "old"
            old.mkdir()
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.compare_to, "mosaic"], check=True, capture_output=True).stdout
            with tarfile.open(fileobj=__import__("io").BytesIO(archive)) as tar:
                tar.extractall(old, filter="data")
            env = {**os.environ, "PYTHONPATH": str(old)}
            out = subprocess.run(
                [sys.executable, __file__, "--folder", str(folder), "--iterations", str(args.iterations), "--options", "{}"],
                check=True, capture_output=True, text=True, env=env, cwd=str(old),
            ).stdout
            seconds[f"old update ({args.compare_to})"] = json.loads(out.strip().splitlines()[-1])
    reference = seconds.get(f"old update ({args.compare_to})", seconds["pedestal None (eq. 1-2)"])
    print(f"UPDC, 4 exposures of {args.size}², PSF 101², errors on, median of iterations 1..{args.iterations}:")
    for label, s in seconds.items():
        print(f"  {label:34s} {s:7.2f} s/iteration  ({s / reference:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
