"""``mosaic drizzle``: the drizzle mosaic of _cal.fits exposures, as an _i2d.fits file (and store).

    mosaic drizzle FILES... --out OUT.fits [--psr 0.5] [--pixfrac 1.0] [--kernel square]
                   [--weight ivm|exptime|uniform] [--rotation DEG] [--tile PIX]
                   [--store STORE.zarr] [--field NAME] [--workers N] [--overwrite]
"""

from __future__ import annotations

import argparse
import logging

from mosaic.cli._common import (
    add_preprocessing_arguments,
    check_workers,
    forked_workers,
    local_client,
    positive_float,
    positive_int,
    preprocess,
    refuse_existing,
)
from mosaic.exceptions import InputError
from mosaic.ops.drizzle import KERNELS, WEIGHTS

__all__ = ["add_parser", "run"]

log = logging.getLogger(__name__)


def __getattr__(name: str):
    # ``CalCutouts`` was imported here; it stays reachable without importing dask at start-up
    if name == "CalCutouts":
        from mosaic.io.cal import CalCutouts  # noqa: PLC0415

        return CalCutouts
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``drizzle`` subcommand on ``subparsers``; returns its parser."""
    p = subparsers.add_parser(
        "drizzle",
        help="drizzle _cal.fits exposures into an _i2d.fits mosaic (UPDC iteration 0)",
        description=(
            "Drizzle JWST _cal.fits exposures of one band onto a tangent-plane grid, tile by "
            "tile on dask, and write an _i2d.fits file (SCI, ERR, CON, WHT, VAR_*) and, with "
            "--store, the same arrays in a zarr store."
        ),
    )
    p.add_argument("files", nargs="+", metavar="FILES", help="_cal.fits exposures (one band)")
    p.add_argument("--out", required=True, metavar="OUT.fits", help="output _i2d.fits file")
    p.add_argument("--psr", type=positive_float, default=0.5, help="pixel-scale ratio output/input (default 0.5)")
    p.add_argument("--pixfrac", type=positive_float, default=1.0, help="drizzle pixel fraction (default 1.0)")
    p.add_argument("--kernel", choices=KERNELS, default="square", help="drizzle kernel (default square)")
    p.add_argument("--weight", choices=WEIGHTS, default="ivm", help="input weights (default ivm = 1/VAR_RNOISE)")
    p.add_argument("--rotation", type=float, default=0.0, metavar="DEG", help="grid position angle, deg east of north (default 0)")
    p.add_argument(
        "--tile", type=positive_int, default=1024, metavar="PIX",
        help="largest tile side in output pixels (default 1024); the grid is cut into equal tiles no larger",
    )
    p.add_argument("--store", metavar="STORE.zarr", help="also write the mosaic into this zarr store")
    p.add_argument("--field", help="field name in the store (default: the output file's stem)")
    p.add_argument(
        "--workers", type=int, default=0, metavar="N",
        help="drizzle the tiles in N worker processes (default 0: in this process); with --store or "
        "preprocessing, on a local dask cluster of N processes",
    )
    p.add_argument("--dashboard", action="store_true", help="serve the dask dashboard of the --workers cluster (on 127.0.0.1, a free port)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file or store product")
    add_preprocessing_arguments(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``mosaic drizzle``; returns the exit code. Bad input raises :class:`InputError`."""
    out = refuse_existing(args.out, args.overwrite)
    if not out.parent.exists():
        msg = f"{out}: directory {out.parent} does not exist; create it or choose another --out"
        raise InputError(msg)
    if not args.pixfrac <= 1.0:
        msg = f"--pixfrac {args.pixfrac!r} is out of range; expected a value in (0.001, 1]"
        raise InputError(msg)
    check_workers(args.workers)

    if not (args.store or args.outliers or args.destripe or args.flatten_background or args.skymatch):
        return _run_direct(args, out)
    return _run_dask(args, out)


def _run_direct(args: argparse.Namespace, out) -> int:
    """The file only: tile tasks on worker processes that write into the file, no dask (:mod:`mosaic.coadd.drizzle_files`)."""
    from mosaic.coadd.drizzle_files import drizzle_files  # noqa: PLC0415
    from mosaic.io.cal import bad_bits_from, check_exposures  # noqa: PLC0415
    from mosaic.io.grid import MosaicGrid, balanced_tile  # noqa: PLC0415

    infos = check_exposures(args.files, weight=args.weight)  # bad input found before any work
    grid = MosaicGrid.from_exposures(
        [i["wcs"] for i in infos], [i["shape"] for i in infos], psr=args.psr, rotation_deg=args.rotation, tile=args.tile,
        names=[str(i["path"]) for i in infos],  # a grid beyond the limits names the files that stretch it
    )
    # tiles of one size take one time, so the workers finish together (a 1454-pixel axis: two
    # tiles of 727, not 1024 and 430: 8 x 512² exposures on 2 workers, 2.23 -> 1.93 s)
    grid = grid.with_tiling(balanced_tile(grid.shape, args.tile))
    log.info("drizzle: %d exposures -> %s (%d x %d, tiles of %d x %d)", len(infos), out, *grid.shape, *grid.tile)
    written = drizzle_files(
        infos, grid, out, bad_bits=bad_bits_from(None), pixfrac=args.pixfrac, kernel=args.kernel, weight=args.weight,
        workers=args.workers, n_given=len(infos),
    )
    log.info("drizzle: wrote i2d %s", written)
    return 0


def _run_dask(args: argparse.Namespace, out) -> int:
    """With a store or preprocessing: the lazy mosaic (:func:`mosaic.coadd.drizzle.drizzle_mosaic`) on dask."""
    from mosaic.coadd.drizzle import drizzle_mosaic  # noqa: PLC0415
    from mosaic.io.cal import CalCutouts, read_exposures  # noqa: PLC0415
    from mosaic.io.grid import MosaicGrid, balanced_tile  # noqa: PLC0415
    from mosaic.io.products import write_drizzle_products  # noqa: PLC0415

    exposures = read_exposures(args.files, weight=args.weight)  # bad input found before any work
    store = None
    if args.store:
        from mosaic.io.store import Store  # noqa: PLC0415  (zarr: only with --store)

        store = Store(args.store)
    field = args.field or out.name.split(".")[0]
    band = str(exposures.attrs.get("band", "UNKNOWN"))
    if store is not None and store.is_complete(field, band, "drizzle") and not args.overwrite:
        msg = f"{store.path}: product {field}/{band}/drizzle is complete; pass --overwrite to redo it"
        raise InputError(msg)

    with forked_workers(), local_client(args.workers, dashboard=args.dashboard) as client:  # the computation finds the current client itself
        files = preprocess([str(p) for p in exposures["path"].values], args, out.parent / "prep", client=client)
        exposures = read_exposures(files, weight=args.weight) if files != [str(p) for p in exposures["path"].values] else exposures
        shape = (exposures.sizes["y"], exposures.sizes["x"])
        grid = MosaicGrid.from_exposures(
            exposures.attrs["wcs"], [shape] * exposures.sizes["exposure"],
            psr=args.psr, rotation_deg=args.rotation, tile=args.tile,
        )
        grid = grid.with_tiling(balanced_tile(grid.shape, args.tile))
        # cut-outs read straight from the files: the mosaic is made tile by tile
        reader = CalCutouts(exposures["path"].values, exposures.attrs["bad_bits"])
        mosaic = drizzle_mosaic(
            exposures, grid, pixfrac=args.pixfrac, kernel=args.kernel, weight=args.weight, cutout_reader=reader,
        )
        log.info("drizzle: %d exposures -> %s (%d x %d, tiles of %d x %d)", exposures.sizes["exposure"], out, *grid.shape, *grid.tile)
        written = write_drizzle_products(
            mosaic, grid, out=out, store=store, field=field, band=band, overwrite=args.overwrite,
        )
    for kind, path in written.items():
        log.info("drizzle: wrote %s %s", kind, path)
    return 0
