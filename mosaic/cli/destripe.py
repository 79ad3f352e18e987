"""``mosaic destripe``: remove 1/f striping (per-amplifier rows, columns); write _1fc.fits.

    mosaic destripe FILES... --out DIR [--amps N] [--no-columns] [--box PIX] [--workers N] [--overwrite]
"""

from __future__ import annotations

import argparse
import logging

from mosaic.cli._common import add_workers_argument, check_workers, forked_workers, local_client, positive_int

__all__ = ["add_parser", "run"]

log = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``destripe`` subcommand on ``subparsers``; returns its parser."""
    p = subparsers.add_parser(
        "destripe",
        help="remove 1/f striping from exposures; write _1fc.fits",
        description=(
            "Measure the 1/f stripe pattern of every exposure (per row and amplifier, then per "
            "column, sigma-clipped medians of the source-masked, background-subtracted pixels), "
            "subtract it, and write <name>_1fc.fits files in the cal layout. Amplifiers: the "
            "NOUTPUTS keyword, else four for 2048-wide full frames and one otherwise."
        ),
    )
    p.add_argument("files", nargs="+", metavar="FILES", help="_cal.fits (or _crf.fits) exposures")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory of the _1fc.fits files")
    p.add_argument("--amps", type=positive_int, default=None, metavar="N", help="amplifiers along x (default: from the file)")
    p.add_argument("--no-columns", dest="columns", action="store_false", help="do not remove the column pattern")
    p.add_argument("--box", type=positive_int, default=256, metavar="PIX", help="background mesh size (default 256)")
    add_workers_argument(p)
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``mosaic destripe``; returns the exit code. Bad input raises :class:`InputError`."""
    from mosaic.prep.destripe import destripe_exposures  # noqa: PLC0415

    check_workers(args.workers)
    with forked_workers(), local_client(args.workers) as client:
        written = destripe_exposures(
            args.files, args.out, n_amps=args.amps, columns=args.columns, box_size=args.box,
            overwrite=args.overwrite, client=client,
        )
    log.info("destripe: wrote %d files to %s", len(written), args.out)
    return 0
