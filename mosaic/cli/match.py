"""``mosaic match``: cross-match two catalogues on the sky (iterations, bands).

    mosaic match CAT1 CAT2 [--max-sep 0.1] [--out MATCHED.ecsv] [--all] [--overwrite]

Prints how many sources matched and writes, with ``--out``, one row per match: the columns of
both catalogues with suffixes ``_1`` and ``_2`` and the separation in arcsec.
"""

from __future__ import annotations

import argparse
import logging
import sys

from mosaic.cli._common import positive_float, refuse_existing

__all__ = ["add_parser", "run"]

log = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``match`` subcommand on ``subparsers``; returns its parser."""
    p = subparsers.add_parser(
        "match", help="cross-match two catalogues on the sky",
        description="Match two catalogues (ECSV or Parquet with ra/dec) by nearest neighbours within a separation.",
    )
    p.add_argument("catalog1", metavar="CAT1", help="first catalogue (.ecsv or .parquet)")
    p.add_argument("catalog2", metavar="CAT2", help="second catalogue (.ecsv or .parquet)")
    p.add_argument("--max-sep", type=positive_float, default=0.1, metavar="ARCSEC", help="largest separation in arcsec (default 0.1)")
    p.add_argument("--all", action="store_true", help="every pair within --max-sep, not only mutual nearest neighbours")
    p.add_argument("--out", metavar="MATCHED", help="write the matched pairs (.ecsv or .parquet)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``mosaic match``; returns the exit code."""
    from astropy.table import QTable, hstack  # noqa: PLC0415

    from mosaic.catalog.match import cross_match, matches_within  # noqa: PLC0415
    from mosaic.io.catalogs import read_catalog, write_catalog  # noqa: PLC0415

    if args.out:
        refuse_existing(args.out, args.overwrite)
    t1, t2 = read_catalog(args.catalog1), read_catalog(args.catalog2)
    pairs = (matches_within if args.all else cross_match)(t1, t2, max_sep=args.max_sep)
    i1, i2 = pairs["index1"], pairs["index2"]
    print(f"{len(pairs)} matches within {args.max_sep} arcsec: {len(set(i1.tolist()))} of {len(t1)} in {args.catalog1}, {len(set(i2.tolist()))} of {len(t2)} in {args.catalog2}", file=sys.stdout)
    if args.out:
        joined = hstack([QTable(t1[i1]), QTable(t2[i2]), QTable({"separation": pairs["separation"]})], table_names=["1", "2", ""], join_type="exact")
        write_catalog(joined, args.out, overwrite=args.overwrite)
    return 0
