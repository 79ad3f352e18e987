"""``mosaic info``: a table of exposures (shape, band, detector, centre, exposure time, flags)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from astropy.table import Table

__all__ = ["add_parser", "run", "info_table"]


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="describe _cal.fits exposures", description="Print a table per exposure: shape, band, detector, WCS centre, exposure time, flagged fraction.")
    p.add_argument("files", nargs="+", help="_cal.fits files")
    p.add_argument("--bad-bits", default=None, help="DQ bits counted as flagged (default DO_NOT_USE+NON_SCIENCE)")
    p.set_defaults(func=run)


def info_table(paths, *, bad_bits=None) -> Table:
    """One row per exposure; reads headers and, in row blocks, SCI and DQ."""
    from astropy.table import Table  # noqa: PLC0415

    from mosaic.io.cal import bad_bits_from, exposure_header_info, good_fraction  # noqa: PLC0415

    bits = bad_bits_from(bad_bits)
    rows = []
    for p in paths:
        i = exposure_header_info(p)
        ny, nx = i["shape"]
        c = i["wcs"].pixel_to_world((nx - 1) / 2.0, (ny - 1) / 2.0)
        rows.append(
            (
                str(p),
                f"{ny}x{nx}",
                i["band"],
                i["detector"],
                round(float(c.ra.deg), 6),
                round(float(c.dec.deg), 6),
                i["exptime"],
                round(100.0 * (1.0 - good_fraction(i["path"], bits)), 3),
            )
        )
    names = ("file", "shape", "band", "detector", "ra", "dec", "exptime", "flagged_pct")
    return Table(rows=rows, names=names) if rows else Table(names=names)


def run(args) -> int:
    import numpy as np  # noqa: PLC0415

    table = info_table(args.files, bad_bits=args.bad_bits)
    table.pprint_all()
    if len(set(table["band"])) > 1:
        print(f"note: {len(set(table['band']))} bands: {sorted(set(np.asarray(table['band'])))}", file=sys.stderr)
    return 0
