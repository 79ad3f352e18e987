"""``mosaic background``: the background (and RMS) of a FITS image, tiled, as a FITS file.

    mosaic background IMAGE --out OUT.fits [--box 64] [--filter 3]
                      [--estimator median|biweight|mean|sextractor|mode] [--rms-estimator std|mad_std|biweight]
                      [--sigma 3] [--exclude-percentile 10] [--icl] [--tile PIX] [--ext NAME]
                      [--workers N] [--overwrite]

The output holds ``SCI`` (the image minus the background), ``BKG``, ``BKG_RMS`` and, with
``--icl``, ``SRCMASK`` (the detected sources, 1 where masked), each with the input's header
(WCS included). The image is read lazily (one tile at a time from the file) and the output is
written tile by tile under a temporary name, renamed when whole (:mod:`mosaic.io.images`).

This module also holds :func:`check_output`, which ``mosaic filter`` shares.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mosaic.cli._common import (
    add_workers_argument,
    check_workers,
    forked_workers,
    local_client,
    positive_float,
    positive_int,
    refuse_existing,
)
from mosaic.exceptions import InputError
from mosaic.ops.background import ESTIMATORS, RMS_ESTIMATORS

__all__ = ["add_parser", "check_output", "run"]

log = logging.getLogger(__name__)

def check_output(out, overwrite: bool) -> Path:
    """The output path, refused when it exists (without ``overwrite``) or its directory does not."""
    out = refuse_existing(out, overwrite)
    if not out.parent.exists():
        msg = f"{out}: directory {out.parent} does not exist; create it or choose another --out"
        raise InputError(msg)
    return out


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``background`` subcommand on ``subparsers``; returns its parser."""
    p = subparsers.add_parser(
        "background",
        help="background and RMS maps of a FITS image (photutils Background2D, tiled; ICL option)",
        description=(
            "Estimate the background of a FITS image from sigma-clipped boxes, median filtered and "
            "zoomed (photutils Background2D semantics), tile by tile; with --icl the three-step "
            "intracluster-light background (initial background, four tiers of detection, masked final "
            "background). Writes SCI (image minus background), BKG, BKG_RMS (and SRCMASK with --icl)."
        ),
    )
    p.add_argument("image", metavar="IMAGE", help="FITS image (SCI of an _i2d.fits file, or the first 2-D HDU)")
    p.add_argument("--out", required=True, metavar="OUT.fits", help="output FITS file")
    p.add_argument("--ext", default=None, help="image extension to read (default SCI, else the first 2-D image)")
    p.add_argument("--box", type=positive_int, default=None, metavar="PIX", help="box size in pixels (default 64; 60 with --icl)")
    p.add_argument("--filter", type=positive_int, default=None, metavar="N", help="median filter over boxes, odd (default 3; 5 with --icl)")
    p.add_argument("--estimator", choices=sorted(ESTIMATORS), default=None, help="box background estimator (default median; biweight with --icl)")
    p.add_argument("--rms-estimator", choices=sorted(RMS_ESTIMATORS), default="std", help="box RMS estimator (default std)")
    p.add_argument("--sigma", type=positive_float, default=3.0, help="sigma-clipping limit in each box (default 3)")
    p.add_argument("--exclude-percentile", type=float, default=10.0, metavar="P", help="exclude boxes with more than P%% masked (default 10)")
    p.add_argument("--icl", action="store_true", help="three-step ICL background (seed 000 sec. 2.2)")
    p.add_argument("--tile", type=positive_int, default=1024, metavar="PIX", help="tile side in pixels, rounded to whole boxes (default 1024)")
    add_workers_argument(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``mosaic background``; returns the exit code."""
    import dask.array as da  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    from mosaic.image.background import background_2d, icl_background  # noqa: PLC0415
    from mosaic.io.images import read_fits_image, write_fits_image  # noqa: PLC0415

    out = check_output(args.out, args.overwrite)
    check_workers(args.workers)
    box = args.box or (60 if args.icl else 64)
    filt = args.filter or (5 if args.icl else 3)
    estimator = args.estimator or ("biweight" if args.icl else "median")
    source = read_fits_image(args.image, ext=args.ext, tile=args.tile)
    image = source.data
    # NaN marks pixels without data in JWST products: masked, not warned about
    bad = ~da.isfinite(image)
    common = {
        "box_size": box, "filter_size": filt, "estimator": estimator, "rms_estimator": args.rms_estimator,
        "sigma": args.sigma, "exclude_percentile": args.exclude_percentile, "tile": args.tile,
    }
    with forked_workers(), local_client(args.workers):
        if args.icl:
            result = icl_background(image, mask=bad, **common)
            bkg = result.final
            extra = {"SRCMASK": result.source_mask.astype(np.uint8)}
        else:
            bkg = background_2d(image, mask=bad, **common)
            extra = {}
        image = image.rechunk(bkg.background.chunks)
        images = {"SCI": image - bkg.background, "BKG": bkg.background, "BKG_RMS": bkg.background_rms, **extra}
        history = [
            f"mosaic background: box {box}, filter {filt}, estimator {estimator}, rms {args.rms_estimator}, "
            f"sigma {args.sigma}, exclude {args.exclude_percentile}%{', ICL three-step' if args.icl else ''}",
        ]
        write_fits_image(out, images, header=source.header, primary=source.primary, history=history, overwrite=args.overwrite)
    log.info("background: median %.6g, rms median %.6g", bkg.background_median, bkg.background_rms_median)
    return 0
