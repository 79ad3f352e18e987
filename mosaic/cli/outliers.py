"""``mosaic outliers``: flag cosmic rays and hot pixels against the other exposures; write _crf.fits.

    mosaic outliers FILES... --out DIR [--snr 5.0 4.0] [--scale 1.2 0.7]
                    [--replace interpolate|flag] [--psr 1.0] [--tile PIX] [--workers N] [--overwrite]
"""

from __future__ import annotations

import argparse
import logging

from mosaic.cli._common import add_workers_argument, check_workers, forked_workers, local_client, positive_float, positive_int
from mosaic.ops.outliers import REPLACE_MODES

__all__ = ["add_parser", "run"]

log = logging.getLogger(__name__)


def _non_negative_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return v


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``outliers`` subcommand on ``subparsers``; returns its parser."""
    p = subparsers.add_parser(
        "outliers",
        help="flag cosmic rays and hot pixels against the other exposures; write _crf.fits",
        description=(
            "Compare every exposure with the median of all of them at the same sky position "
            "(drizzled onto a common grid tile by tile, blotted back), flag pixels where "
            "|SCI - median| > snr * ERR + scale * |d median| (the lower thresholds for neighbours "
            "of flagged pixels), and write <name>_crf.fits files in the cal layout with the "
            "outliers replaced by the median (interpolate) or flagged DO_NOT_USE (flag); DQ gets "
            "OUTLIER. Needs two exposures or more (three for a median)."
        ),
    )
    p.add_argument("files", nargs="+", metavar="FILES", help="_cal.fits exposures (one band, one shape)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory of the _crf.fits files")
    p.add_argument("--snr", type=positive_float, nargs=2, default=(5.0, 4.0), metavar=("FIRST", "NEIGHBOUR"),
                   help="signal-to-noise thresholds (default 5.0 4.0)")
    p.add_argument("--scale", type=_non_negative_float, nargs=2, default=(1.2, 0.7), metavar=("FIRST", "NEIGHBOUR"),
                   help="multipliers of the median's derivative (default 1.2 0.7)")
    p.add_argument("--replace", choices=REPLACE_MODES, default="interpolate",
                   help="interpolate: replace by the median of the others (default); flag: zero weight")
    p.add_argument("--psr", type=positive_float, default=1.0, help="pixel-scale ratio of the median's grid (default 1.0)")
    p.add_argument("--tile", type=positive_int, default=1024, metavar="PIX", help="tile size of the median (default 1024)")
    add_workers_argument(p)
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``mosaic outliers``; returns the exit code. Bad input raises :class:`InputError`."""
    from mosaic.prep.outliers import clean_exposures  # noqa: PLC0415

    check_workers(args.workers)
    with forked_workers(), local_client(args.workers) as client:
        written = clean_exposures(
            args.files, args.out, snr=tuple(args.snr), scale=tuple(args.scale), replace=args.replace,
            psr=args.psr, tile=args.tile, overwrite=args.overwrite, client=client,
        )
    log.info("outliers: wrote %d files to %s", len(written), args.out)
    return 0
