"""``mosaic skymatch``: match the exposures' sky levels over their overlaps; write _skm.fits.

    mosaic skymatch FILES... --out DIR [--box PIX] [--workers N] [--overwrite]
"""

from __future__ import annotations

import argparse
import logging

from mosaic.cli._common import add_workers_argument, check_workers, forked_workers, local_client, positive_int

__all__ = ["add_parser", "run"]

log = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``skymatch`` subcommand on ``subparsers``; returns its parser."""
    p = subparsers.add_parser(
        "skymatch",
        help="match the sky levels of exposures over their overlaps; write _skm.fits",
        description=(
            "Measure every exposure's sky in meshes with the sources masked, compare the meshes of "
            "exposures that cover the same sky, fit one offset per exposure to all the overlaps "
            "(each group of overlapping exposures keeps its mean sky), subtract it, and write "
            "<name>_skm.fits files in the cal layout (SKYMATCH in the header)."
        ),
    )
    p.add_argument("files", nargs="+", metavar="FILES", help="_cal.fits (or _crf.fits, _1fc.fits, _bkg.fits) exposures of one band")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory of the _skm.fits files")
    p.add_argument("--box", type=positive_int, default=64, metavar="PIX", help="mesh size in detector pixels (default 64)")
    add_workers_argument(p)
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``mosaic skymatch``; returns the exit code. Bad input raises :class:`InputError`."""
    from mosaic.prep.skymatch import match_skies  # noqa: PLC0415

    check_workers(args.workers)
    with forked_workers(), local_client(args.workers) as client:
        written = match_skies(args.files, args.out, box_size=args.box, overwrite=args.overwrite, client=client)
    log.info("skymatch: wrote %d files to %s", len(written), args.out)
    return 0
