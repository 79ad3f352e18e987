"""``mosaic rgb``: an RGB composite PNG of images of several bands (the paper's fig. 5 colours).

    mosaic rgb IMAGES... --out PNG [--mapping paper|JSON] [--method stretch|lupton]
               [--stretch asinh] [--interval percentile] [--percent 99.5] [--q 8]
               [--reference BAND] [--max-size N] [--overwrite]
"""

from __future__ import annotations

import argparse
import logging

from mosaic.cli._common import positive_float, positive_int, refuse_existing
from mosaic.viz.rgb import METHODS
from mosaic.viz.stretch import INTERVALS, STRETCHES

__all__ = ["add_parser", "run"]

log = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``rgb`` subcommand on ``subparsers``; returns its parser."""
    p = subparsers.add_parser(
        "rgb",
        help="write an RGB composite PNG of images of several bands",
        description=(
            "Combine FITS images of several bands (FILTER keyword) into an RGB PNG. Images on "
            "different grids are reprojected onto the reference grid with reproject. The default "
            "colours are the paper's fig. 5: blue = F150W + F090W, green = F200W + F277W + "
            "165/255 F356W, red = F356W + F444W; --mapping takes a JSON object band -> [r, g, b] "
            "(inline or a file)."
        ),
    )
    p.add_argument("images", nargs="+", metavar="IMAGES", help="FITS images, one per band")
    p.add_argument("--out", required=True, metavar="PNG", help="output PNG")
    p.add_argument("--mapping", default="paper", help="'paper' (default) or a JSON object / file band -> [r, g, b]")
    p.add_argument("--method", choices=METHODS, default="stretch", help="per-channel stretch or Lupton et al. (default stretch)")
    p.add_argument("--stretch", choices=STRETCHES, default="asinh", help="per-channel stretch (default asinh)")
    p.add_argument("--interval", choices=INTERVALS, default="percentile", help="per-channel interval (default percentile)")
    p.add_argument("--percent", type=positive_float, default=99.5, help="percent inside a percentile interval (default 99.5)")
    p.add_argument("--q", type=positive_float, default=8.0, help="Lupton softening Q (default 8)")
    p.add_argument("--reference", metavar="BAND", help="band whose grid is used (default the finest pixels)")
    p.add_argument("--max-size", type=positive_int, default=None, help="longest side of the PNG (default: full size)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing PNG")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``mosaic rgb``; returns the exit code."""
    from mosaic.viz.rgb import write_rgb  # noqa: PLC0415

    out = refuse_existing(args.out, args.overwrite)
    write_rgb(out, args.images, mapping=args.mapping, method=args.method, stretch=args.stretch, interval=args.interval,
              percent=args.percent, q=args.q, reference=args.reference.upper() if args.reference else None,
              max_size=args.max_size)
    log.info("rgb: %d images -> %s", len(args.images), out)
    return 0
