"""``mosaic updc``: deconvolved, super-resolved mosaics of _cal.fits exposures (UPDC or a baseline).

    mosaic updc FILES... (--psf PSF.fits | --psf-dir DIR) --out OUTDIR [--iterations 10]
                [--psr 0.5] [--save 0,5,10] [--method updc|landweber|rl] [--blot exact|interp]
                [--weight ivm|exptime|uniform] [--background median|none|VALUE]
                [--store STORE.zarr] [--field NAME] [--name STEM] [--tile PIX]
                [--rotation DEG] [--workers N] [--overwrite] [--array numpy|cupy]
                [--pedestal auto|none|VALUE] [--damping SIGMAS] [--no-errors]

Iterations are checkpointed in the store (default ``OUTDIR/mosaic.zarr``): a run that was
stopped continues after its last complete iteration when the same command is given again.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
from pathlib import Path

from mosaic.cli._common import (
    add_preprocessing_arguments,
    add_workers_argument,
    check_workers,
    forked_workers,
    local_client,
    non_negative_int,
    positive_float,
    positive_int,
    preprocess,
)
from mosaic.exceptions import InputError
from mosaic.ops.drizzle import BLOT_METHODS, WEIGHTS

__all__ = ["add_parser", "parse_save", "psf_paths", "run"]

log = logging.getLogger(__name__)

_METHODS = ("updc", "landweber", "rl")
_ARRAYS = ("numpy", "cupy")


def parse_save(text: str) -> tuple[int, ...]:
    """``"0,5,10"`` -> ``(0, 5, 10)``; raises :class:`InputError` for anything else."""
    try:
        values = tuple(int(t) for t in str(text).split(",") if t.strip() != "")
    except ValueError:
        values = ()
    if not values:
        msg = f"--save {text!r} is not a list of iteration numbers; expected e.g. 0,5,10"
        raise InputError(msg)
    return values


def psf_paths(exposure_paths, band: str, *, psf=None, psf_dir=None) -> list[Path]:
    """The PSF file of every exposure: ``--psf`` for all, or per exposure from ``--psf-dir``.

    See :func:`mosaic.psf.files.psf_files_for`.

    Raises
    ------
    InputError
        When neither or both options are given, or a PSF file is missing.
    """
    from mosaic.psf.files import psf_files_for  # noqa: PLC0415

    if (psf is None) == (psf_dir is None):
        msg = "give exactly one of --psf PSF.fits (one PSF for all exposures) or --psf-dir DIR (one per exposure)"
        raise InputError(msg)
    try:
        return psf_files_for(exposure_paths, band, psf=psf, psf_dir=psf_dir)
    except InputError as err:
        if psf_dir is not None and not Path(psf_dir).is_dir():
            raise InputError(f"--psf-dir {err}") from None
        raise


def _background(text: str):
    if text.lower() == "median":
        return "median"
    if text.lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not 'median', 'none' or a number (MJy/sr)") from None


def _finite_non_negative(text: str) -> float | None:
    """``text`` as a finite number >= 0, or None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 0 <= value < float("inf") else None


def _pedestal(text: str):
    if text.lower() in ("auto", "none"):
        return text.lower() if text.lower() == "auto" else None
    value = _finite_non_negative(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not 'auto', 'none' or a number >= 0 (MJy/sr)")
    return value


def _sigmas(text: str) -> float:
    value = _finite_non_negative(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of sigmas >= 0 (0: no damping)")
    return value


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``updc`` subcommand on ``subparsers``; returns its parser."""
    p = subparsers.add_parser(
        "updc",
        help="deconvolved, super-resolved mosaic (UPDC) of _cal.fits exposures",
        description=(
            "Coadd JWST _cal.fits exposures of one band by UPDC (multi-frame Richardson-Lucy with "
            "drizzle and blot, seed 000 eq. 1-2) from the drizzle mosaic, tile by tile on dask; "
            "every iteration is checkpointed in a zarr store and chosen ones are written as "
            "_i2d.fits files (SCI with the sky removed, ERR, CON, WHT, VAR_*)."
        ),
    )
    p.add_argument("files", nargs="+", metavar="FILES", help="_cal.fits exposures (one band), with their sky")
    p.add_argument("--psf", metavar="PSF.fits", help="one PSF file for all exposures (PIXELSCL in the header)")
    p.add_argument("--psf-dir", metavar="DIR", help="PSF folder: <stem>_psf.fits per exposure, or psf_<band>.fits")
    p.add_argument("--out", required=True, metavar="OUTDIR", help="folder of the _i2d.fits files (created)")
    p.add_argument("--iterations", type=non_negative_int, default=10, help="iterations after the drizzle mosaic (default 10)")
    p.add_argument("--psr", type=positive_float, default=0.5, help="pixel-scale ratio output/input (default 0.5)")
    p.add_argument(
        "--save", default=None, metavar="LIST",
        help="iterations written as files, e.g. 0,5,10 (default: 0,5,10 up to --iterations, and the last)",
    )
    p.add_argument("--method", choices=_METHODS, default="updc", help="updc (default), landweber, or rl (single-image RL)")
    p.add_argument("--blot", choices=BLOT_METHODS, default="exact", help="exact-area blot (default) or interpolating blot")
    p.add_argument("--weight", choices=WEIGHTS, default="ivm", help="input weights (default ivm = 1/VAR_RNOISE)")
    p.add_argument(
        "--background", type=_background, default="median", metavar="median|none|VALUE",
        help="sky removed from the products (default median)",
    )
    p.add_argument(
        "--pedestal", type=_pedestal, default="auto", metavar="auto|none|VALUE",
        help="s of the read-noise-corrected ratio (g+s)/(m+s): auto (default; from VAR_RNOISE and the gain), "
        "none (the plain ratio: needs positive data), or a value in MJy/sr",
    )
    p.add_argument(
        "--damping", type=_sigmas, default=0.0, metavar="SIGMAS",
        help="damp the update where the data are fitted to within SIGMAS x their ERR (default 0: no damping; try 1-3)",
    )
    p.add_argument(
        "--no-errors", dest="errors", action="store_false",
        help="do not propagate VAR_* and ERR (files carry SCI, CON and the drizzle's WHT; about a third faster per iteration)",
    )
    p.add_argument("--store", metavar="STORE.zarr", help="checkpoint store (default OUTDIR/mosaic.zarr)")
    p.add_argument("--field", default="field", help="field name in the store (default 'field')")
    p.add_argument("--name", default=None, help="file name stem (default: the method)")
    p.add_argument("--tile", type=positive_int, default=1024, metavar="PIX", help="largest tile side in output pixels (default 1024); the grid is cut into equal tiles no larger")
    p.add_argument("--rotation", type=float, default=0.0, metavar="DEG", help="grid position angle east of north (default 0)")
    add_workers_argument(p)
    p.add_argument("--dashboard", action="store_true", help="serve the dask dashboard of the --workers cluster (on 127.0.0.1, a free port)")
    p.add_argument("--overwrite", action="store_true", help="start again: forget this method's iterations, replace files")
    p.add_argument(
        "--array", choices=_ARRAYS, default="numpy",
        help="iterate on host arrays (default) or CuPy chunks on the GPU (needs CuPy and a CUDA device)",
    )
    add_preprocessing_arguments(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``mosaic updc``; returns the exit code. Bad input raises :class:`InputError`."""
    from mosaic.cli.drizzle import CalCutouts  # noqa: PLC0415
    from mosaic.coadd.updc import check_save, updc  # noqa: PLC0415
    from mosaic.io.cal import read_exposures  # noqa: PLC0415
    from mosaic.io.grid import MosaicGrid, balanced_tile  # noqa: PLC0415
    from mosaic.io.store import Store  # noqa: PLC0415

    save = parse_save(args.save) if args.save is not None else None
    save = check_save(save, args.iterations)
    check_workers(args.workers)
    if args.array == "cupy" and importlib.util.find_spec("cupy") is None:
        msg = "--array cupy needs CuPy, which is not installed; pip install 'mosaic-jwst[gpu]', or use --array numpy"
        raise InputError(msg)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        msg = f"--out {out}: exists and is not a directory; expected a folder for the _i2d.fits files"
        raise InputError(msg)
    # bad input found before any work: the exposures and their PSFs
    exposures = read_exposures(args.files)
    band = str(exposures.attrs.get("band", "UNKNOWN"))
    psf_paths([str(p) for p in exposures["path"].values], band, psf=args.psf, psf_dir=args.psf_dir)
    out.mkdir(parents=True, exist_ok=True)
    with forked_workers(), local_client(args.workers, dashboard=args.dashboard) as client:
        files = preprocess([str(p) for p in exposures["path"].values], args, out / "prep", client=client)
        exposures = read_exposures(files) if files != [str(p) for p in exposures["path"].values] else exposures
        psfs = psf_paths([str(p) for p in exposures["path"].values], band, psf=args.psf, psf_dir=args.psf_dir)
        shape = (exposures.sizes["y"], exposures.sizes["x"])
        grid = MosaicGrid.from_exposures(
            exposures.attrs["wcs"], [shape] * exposures.sizes["exposure"], psr=args.psr, rotation_deg=args.rotation, tile=args.tile,
        )
        grid = grid.with_tiling(balanced_tile(grid.shape, args.tile))
        store = Store(args.store or out / "mosaic.zarr")
        reader = CalCutouts(exposures["path"].values, exposures.attrs["bad_bits"])
        log.info(
            "%s: %d %s exposures -> %s (%d x %d at psr %g, tiles of %d x %d), %d iterations, store %s",
            args.method, exposures.sizes["exposure"], band, out, *grid.shape, args.psr, *grid.tile, args.iterations, store.path,
        )
        result = updc(
            exposures, grid, psfs, n_iterations=args.iterations, method=args.method, blot=args.blot,
            weight=args.weight, background=args.background, store=store, field=args.field, save=save,
            outdir=out, name=args.name, overwrite=args.overwrite, cutout_reader=reader, client=client, array=args.array,
            pedestal=args.pedestal, damping=args.damping, errors=args.errors,
        )
    for n, chi2 in enumerate(result.chi2):
        if chi2 is not None:
            log.info("%s: iteration %d: chi2/dof %.4g (residuals in units of the exposures' ERR)", args.method, n, chi2)
    for n, path in sorted(result.files.items()):
        log.info("%s: iteration %d -> %s", args.method, n, path)
    return 0
