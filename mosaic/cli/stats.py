"""``mosaic stats``: exact robust statistics of a FITS image, computed over tiles.

    mosaic stats IMAGE [--sigma 3] [--maxiters 5] [--json] [--ext NAME] [--tile PIX] [--workers N]

Prints pixel counts, min, max, the sigma-clipped mean / median / std, biweight location and
scale, MAD std and percentiles (exact order statistics, as numpy and astropy give them on the
finite pixels), as text or as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import math

from mosaic.cli._common import add_workers_argument, check_workers, forked_workers, local_client, positive_float, positive_int

__all__ = ["add_parser", "run"]

log = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``stats`` subcommand on ``subparsers``; returns its parser."""
    p = subparsers.add_parser(
        "stats",
        help="exact robust statistics of a FITS image (sigma-clipped, biweight, MAD, percentiles)",
        description=(
            "Compute robust statistics of a FITS image over its tiles without loading it: the exact "
            "median and percentiles by radix selection, sigma-clipped statistics as astropy, biweight "
            "location and scale, MAD std, min, max and pixel counts. NaN and inf pixels are left out."
        ),
    )
    p.add_argument("image", metavar="IMAGE", help="FITS image (SCI of an _i2d.fits file, or the first 2-D HDU)")
    p.add_argument("--sigma", type=positive_float, default=3.0, help="sigma-clipping limit (default 3)")
    p.add_argument("--maxiters", type=positive_int, default=5, help="most clipping iterations (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--ext", default=None, help="image extension to read (default SCI, else the first 2-D image)")
    p.add_argument("--tile", type=positive_int, default=1024, metavar="PIX", help="tile side in pixels (default 1024)")
    add_workers_argument(p)
    p.set_defaults(func=run)
    return p


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return v


def run(args: argparse.Namespace) -> int:
    """Run ``mosaic stats``; returns the exit code."""
    from mosaic.image.stats import image_statistics  # noqa: PLC0415
    from mosaic.io.images import read_fits_image  # noqa: PLC0415

    check_workers(args.workers)
    fits_image = read_fits_image(args.image, ext=args.ext, tile=args.tile)
    with forked_workers(), local_client(args.workers):
        stats = image_statistics(fits_image.data, sigma=args.sigma, maxiters=args.maxiters)
    unit = str(fits_image.header.get("BUNIT", "")).strip()
    stats = {"file": str(args.image), "unit": unit or None, **stats}
    if args.json:
        print(json.dumps(_jsonable(stats)))
        return 0
    print(_text(stats, sigma=args.sigma, unit=unit))
    return 0


#: the text output's names of the statistics whose JSON key alone would not say what they are
_LABELS = {"mean": "clipped mean", "median": "clipped median", "std": "clipped std"}
_COUNTS = {"n_pixels", "n_nan", "n_inf", "n_valid", "n_masked"}


def _text(stats: dict, *, sigma: float, unit: str) -> str:
    """The statistics as aligned lines: counts, then values in the image's unit (BUNIT)."""
    lines = [f"{'file':>18}  {stats['file']}", f"{'unit':>18}  {unit or '(no BUNIT)'}"]
    for key, value in stats.items():
        if key in ("file", "unit"):
            continue
        if key == "percentiles":
            for q, v in value.items():
                note = "  (the median of all finite pixels, not clipped)" if float(q) == 50 else ""
                lines.append(f"{'p' + format(q, 'g'):>18}  {v:.8g}{note}")
        elif isinstance(value, float) and key not in _COUNTS:
            note = f"  (sigma-clipped at {sigma:g} sigma)" if key in _LABELS else ""
            lines.append(f"{_LABELS.get(key, key):>18}  {value:.8g}{note}")
        else:
            lines.append(f"{key:>18}  {value}")
    return "\n".join(lines)
