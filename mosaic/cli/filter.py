"""``mosaic filter``: a noise filter of a FITS image, tiled, as a FITS file.

    mosaic filter IMAGE --out OUT.fits --kind gaussian|median|convolve [--sigma S] [--size N]
                  [--mode reflect] [--tile PIX] [--ext NAME] [--workers N] [--overwrite]

``gaussian`` is :func:`scipy.ndimage.gaussian_filter` (``--sigma``), ``median`` is
:func:`scipy.ndimage.median_filter` (``--size``), ``convolve`` is the NaN-safe
:func:`astropy.convolution.convolve` with a Gaussian kernel of ``--sigma`` (NaN pixels
interpolated over). The output's ``SCI`` carries the input's header (WCS included).
"""

from __future__ import annotations

import argparse
import logging

from mosaic.cli._common import add_workers_argument, check_workers, forked_workers, local_client, positive_float, positive_int
from mosaic.exceptions import InputError
from mosaic.ops.filters import FILTER_MODES

__all__ = ["KINDS", "add_parser", "run"]

log = logging.getLogger(__name__)

#: the filters offered on the command line
KINDS = ("gaussian", "median", "convolve")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``filter`` subcommand on ``subparsers``; returns its parser."""
    p = subparsers.add_parser(
        "filter",
        help="Gaussian, median or NaN-safe convolution filter of a FITS image, tiled",
        description=(
            "Filter a FITS image tile by tile with halos from the kernel's reach, so the result equals "
            "the whole-image scipy.ndimage / astropy.convolution call. Writes SCI with the input's header."
        ),
    )
    p.add_argument("image", metavar="IMAGE", help="FITS image (SCI of an _i2d.fits file, or the first 2-D HDU)")
    p.add_argument("--out", required=True, metavar="OUT.fits", help="output FITS file")
    p.add_argument("--kind", required=True, choices=KINDS, help="the filter")
    p.add_argument("--sigma", type=positive_float, default=None, help="Gaussian standard deviation in pixels (gaussian, convolve)")
    p.add_argument("--size", type=positive_int, default=None, metavar="N", help="median window in pixels")
    p.add_argument("--mode", choices=FILTER_MODES, default="reflect", help="edge mode of gaussian and median (default reflect)")
    p.add_argument("--ext", default=None, help="image extension to read (default SCI, else the first 2-D image)")
    p.add_argument("--tile", type=positive_int, default=1024, metavar="PIX", help="tile side in pixels (default 1024)")
    add_workers_argument(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``mosaic filter``; returns the exit code."""
    from astropy.convolution import Gaussian2DKernel  # noqa: PLC0415

    from mosaic.cli.background import check_output  # noqa: PLC0415
    from mosaic.image.filters import convolve, gaussian_filter, median_filter  # noqa: PLC0415
    from mosaic.io.images import read_fits_image, write_fits_image  # noqa: PLC0415

    out = check_output(args.out, args.overwrite)
    if args.kind in ("gaussian", "convolve") and args.sigma is None:
        msg = f"--kind {args.kind} needs --sigma (the Gaussian standard deviation in pixels, > 0)"
        raise InputError(msg)
    if args.kind == "median" and args.size is None:
        msg = "--kind median needs --size (the window side in pixels, >= 1)"
        raise InputError(msg)
    check_workers(args.workers)
    source = read_fits_image(args.image, ext=args.ext, tile=args.tile)
    image = source.data
    if args.kind == "gaussian":
        result, what = gaussian_filter(image, sigma=args.sigma, mode=args.mode), f"gaussian sigma {args.sigma} mode {args.mode}"
    elif args.kind == "median":
        result, what = median_filter(image, size=args.size, mode=args.mode), f"median size {args.size} mode {args.mode}"
    else:
        result = convolve(image, Gaussian2DKernel(args.sigma), nan_treatment="interpolate")
        what = f"astropy convolve, Gaussian2DKernel({args.sigma}), NaN interpolated"
    with forked_workers(), local_client(args.workers):
        write_fits_image(out, {"SCI": result}, header=source.header, primary=source.primary, history=[f"mosaic filter: {what}"], overwrite=args.overwrite)
    return 0
