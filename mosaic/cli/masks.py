"""``mosaic masks``: value-sliced or derivative source masks scored against a reference (seed 004).

    mosaic masks IMAGE --reference CAT [--percent 5] [--kind value|derivative] [--radius 3]
                 [--out MASK.fits] [--scores SCORES.ecsv] [--tile PIX] [--overwrite]

Reference positions come from the catalogue's ``ra``/``dec`` through the image's WCS, or from
its pixel columns (``x_centroid``/``y_centroid`` or ``x``/``y``) when the image has no WCS.
Prints successes, near misses and failures as seed 004's table 3 counts them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from mosaic.cli._common import positive_float, positive_int, refuse_existing
from mosaic.exceptions import InputError

__all__ = ["add_parser", "run", "reference_pixels"]

log = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``masks`` subcommand on ``subparsers``; returns its parser."""
    p = subparsers.add_parser(
        "masks", help="value-sliced / derivative source masks scored against a reference catalogue",
        description="Keep the top PERCENT %% of pixels (or of the gradient magnitude) and score the mask against reference positions.",
    )
    p.add_argument("image", metavar="IMAGE", help="_i2d.fits mosaic or FITS image")
    p.add_argument("--reference", required=True, metavar="CAT", help="reference catalogue (.ecsv or .parquet)")
    p.add_argument("--percent", type=positive_float, default=5.0, help="share of pixels kept, percent (default 5)")
    p.add_argument("--kind", choices=("value", "derivative"), default="value", help="slice the values or the gradient (default value)")
    p.add_argument("--radius", type=positive_float, default=3.0, help="success radius in pixels (default 3)")
    p.add_argument("--out", metavar="MASK.fits", help="write the mask as FITS (uint8)")
    p.add_argument("--scores", metavar="SCORES.ecsv", help="write the per-reference scores")
    p.add_argument("--tile", type=positive_int, default=1024, metavar="PIX", help="tile size in pixels (default 1024)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=run)
    return p


def reference_pixels(table, wcs, name: str):
    """``(x, y)`` pixel positions of a reference catalogue on an image."""
    cols = table.colnames
    if wcs is not None and "ra" in cols and "dec" in cols:
        ra = np.asarray(getattr(table["ra"], "value", table["ra"]), dtype=float)
        dec = np.asarray(getattr(table["dec"], "value", table["dec"]), dtype=float)
        if np.all(np.isfinite(ra) & np.isfinite(dec)):
            return wcs.world_to_pixel_values(ra, dec)
    for cx, cy in (("x_centroid", "y_centroid"), ("x", "y")):
        if cx in cols and cy in cols:
            return (np.asarray(getattr(table[cx], "value", table[cx]), float), np.asarray(getattr(table[cy], "value", table[cy]), float))
    msg = f"{name}: no usable positions; expected ra/dec (with an image WCS) or x_centroid/y_centroid or x/y columns, got {cols}"
    raise InputError(msg)


def run(args: argparse.Namespace) -> int:
    """Run ``mosaic masks``; returns the exit code."""
    from astropy.io import fits  # noqa: PLC0415

    from mosaic.catalog.masks import score_mask, source_mask  # noqa: PLC0415
    from mosaic.io.catalogs import read_catalog, read_image, write_catalog  # noqa: PLC0415

    if args.percent > 100:
        msg = f"--percent {args.percent!r} is out of range; expected a value in (0, 100]"
        raise InputError(msg)
    for opt in ("out", "scores"):
        value = getattr(args, opt)
        if value:
            refuse_existing(value, args.overwrite)
    image = read_image(args.image, tile=args.tile)
    ref = read_catalog(args.reference)
    x, y = reference_pixels(ref, image.wcs, args.reference)
    mask, cut = source_mask(image.sci, percent=args.percent, kind=args.kind, tile=args.tile)
    scores = score_mask(mask, x, y, radius=args.radius, tile=args.tile)
    m = scores.meta
    print(f"{args.kind} mask, top {args.percent:g}% (cut {cut:.6g}): success {m['n_success']}, near {m['n_near']}, failure {m['n_failure']} of {len(scores)} references", file=sys.stdout)
    if args.scores:
        write_catalog(scores, args.scores, overwrite=args.overwrite)
    if args.out:
        import os  # noqa: PLC0415
        import uuid  # noqa: PLC0415

        out = Path(args.out)
        tmp = out.with_name(f".{out.name}.part-{uuid.uuid4().hex[:8]}")
        header = image.wcs.to_header() if image.wcs is not None else None
        # a mask is a byte per pixel: small enough to write in one piece
        fits.PrimaryHDU(np.asarray(mask).astype(np.uint8), header=header).writeto(tmp)
        os.replace(tmp, out)
    return 0
