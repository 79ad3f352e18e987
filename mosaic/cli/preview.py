"""``mosaic preview``: a PNG preview of an image of any size (block means, then a stretch).

    mosaic preview IMAGE --out PNG [--stretch asinh] [--interval percentile] [--percent 99.5]
                   [--max-size 2048] [--cmap gray] [--ext SCI] [--overwrite]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mosaic.cli._common import positive_float, positive_int, refuse_existing
from mosaic.viz.stretch import INTERVALS, STRETCHES

__all__ = ["add_parser", "run"]

log = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``preview`` subcommand on ``subparsers``; returns its parser."""
    p = subparsers.add_parser(
        "preview",
        help="write a PNG preview of a FITS image or zarr array of any size",
        description=(
            "Reduce a FITS image (SCI, else the first image) or a zarr array to at most MAX_SIZE "
            "pixels on a side by NaN-aware block means, read chunk by chunk (never whole), "
            "stretch it and write a PNG (north up, NaN black)."
        ),
    )
    p.add_argument("image", metavar="IMAGE", help="FITS file or zarr array")
    p.add_argument("--out", required=True, metavar="PNG", help="output PNG")
    p.add_argument("--stretch", choices=STRETCHES, default="asinh", help="display stretch (default asinh)")
    p.add_argument("--interval", choices=INTERVALS, default="percentile", help="black and white levels (default percentile)")
    p.add_argument("--percent", type=positive_float, default=99.5, help="percent of pixels inside the interval (default 99.5)")
    p.add_argument("--max-size", type=positive_int, default=2048, help="longest side of the PNG (default 2048)")
    p.add_argument("--cmap", default="gray", help="matplotlib colormap (default gray)")
    p.add_argument("--ext", help="FITS extension or zarr component")
    p.add_argument("--overwrite", action="store_true", help="replace an existing PNG")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``mosaic preview``; returns the exit code."""
    from mosaic.viz.preview import open_image, write_preview  # noqa: PLC0415

    out = refuse_existing(args.out, args.overwrite)
    image = open_image(args.image, ext=args.ext) if args.ext is not None else Path(args.image)
    write_preview(out, image, max_size=args.max_size, stretch=args.stretch, interval=args.interval,
                  percent=args.percent, cmap=args.cmap)
    log.info("preview: %s -> %s", args.image, out)
    return 0
