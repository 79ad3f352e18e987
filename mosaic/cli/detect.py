"""``mosaic detect``: a source catalogue of a mosaic, tile by tile (segmentation or DAOFIND).

    mosaic detect IMAGE --out CAT.ecsv|CAT.parquet [--method segmentation|daofind]
                  [--threshold 1.5] [--npixels 10] [--deblend] [--fwhm PIX] [--radii R ...]
                  [--tile PIX] [--workers N] [--regions CAT.reg] [--segmentation SEG.fits]
                  [--store STORE.zarr] [--field NAME] [--overwrite] [--detection-image DRIZZLE_i2d.fits]
                  [--engine photutils|sep] [--noise measured|err] [--sep-whole-mpix MPIX]

IMAGE is an ``_i2d.fits`` mosaic (SCI, ERR, WHT) or a plain FITS image. The threshold is
``--threshold`` times the noise per pixel, measured on the image itself (``--noise measured``,
the default): the robust (MAD-based, clipped) scatter of the sky with the sources masked, as a
factor on ERR where there is an ERR extension (logged: "threshold N x K x ERR"), else as the
noise itself. ``--noise err`` takes ERR as it is (else the clipped standard deviation of the
image), as before. Pixels that are NaN or
have zero weight are masked. An image without a celestial WCS gives a catalogue whose RA/Dec
are NaN, with a warning (positions in pixels are still exact). With ``--detection-image`` the
sources are found on that image (the drizzle mosaic, smoothed by ``--fwhm``, threshold in units of
the noise measured on it) and deblended and measured on IMAGE (a UPDC iterate). ``--engine sep``
detects and measures with SEP (SExtractor's algorithms; ``pip install 'mosaic[sep]'``): the whole
image in one task where SEP on it fits in half a worker's memory (``--sep-whole-mpix``), else in
tiles joined across seams; the catalogue is the same.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mosaic.catalog.flux_errors import FLUX_ERRORS
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
from mosaic.pipeline.detect import DETECTION_ENGINES as ENGINES
from mosaic.pipeline.detect import DETECTION_METHODS as METHODS
from mosaic.pipeline.detect import DETECTION_NOISE as NOISE

__all__ = ["add_parser", "run"]

log = logging.getLogger(__name__)



def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``detect`` subcommand on ``subparsers``; returns its parser."""
    p = subparsers.add_parser(
        "detect",
        help="detect and measure sources in a mosaic (segmentation + photometry, or DAOFIND)",
        description=(
            "Detect sources tile by tile (segments joined across seams, equal to photutils on the "
            "whole image) and write a catalogue with RA/Dec, Kron and aperture photometry."
        ),
    )
    p.add_argument("image", metavar="IMAGE", help="_i2d.fits mosaic or FITS image")
    p.add_argument("--out", required=True, metavar="CAT", help="catalogue file (.ecsv or .parquet)")
    p.add_argument(
        "--detection-image", metavar="DRIZZLE", default=None,
        help="find sources on this image of the same grid (the drizzle mosaic, smoothed by --fwhm; threshold in units of its measured noise) and deblend/measure them on IMAGE",
    )
    p.add_argument("--method", choices=METHODS, default="segmentation", help="detection method (default segmentation)")
    p.add_argument(
        "--engine", choices=ENGINES, default="photutils",
        help="segmentation engine: photutils, or sep (SExtractor detection, Kron and circular apertures at SEP speed; needs 'pip install sep') (default photutils)",
    )
    p.add_argument("--threshold", type=positive_float, default=1.5, help="threshold in units of the noise per pixel (see --noise) (default 1.5)")
    p.add_argument(
        "--noise", choices=NOISE, default="measured",
        help="the threshold's unit: the noise measured on the image (ERR scaled to the robust scatter of the sky, sources masked; "
             "the scatter itself without ERR), or err: ERR as it is (else the image's clipped std) (default measured)",
    )
    p.add_argument("--npixels", type=positive_int, default=10, help="minimum connected pixels of a source (default 10)")
    p.add_argument("--deblend", action="store_true", help="deblend overlapping sources (multi-threshold + watershed)")
    p.add_argument(
        "--background-box", type=positive_int, default=None, metavar="PIX",
        help="subtract a local background of PIX-pixel meshes first (e.g. intracluster light); default none",
    )
    p.add_argument("--fwhm", type=float, default=2.0, help="FWHM (pix) of the smoothing kernel / DAOFIND kernel; 0: no smoothing (default 2)")
    p.add_argument("--radii", type=positive_float, nargs="*", default=[3.0, 6.0], metavar="R", help="circular aperture radii in pixels (default 3 6)")
    p.add_argument(
        "--flux-errors", choices=FLUX_ERRORS, default="correlated",
        help="correlated: on a drizzle mosaic (RESKERN, PIXFRAC, PXSCLRT in its header), scale each flux error for the noise "
             "the drizzle correlates between pixels (x1.9-2.3 at the default psr 0.5, pixfrac 1); independent: photutils' and "
             "SEP's sqrt(sum ERR^2) as they are (default correlated)",
    )
    p.add_argument("--tile", type=positive_int, default=1024, metavar="PIX", help="tile size in pixels (default 1024)")
    p.add_argument(
        "--sep-whole-mpix", type=float, default=None, metavar="MPIX",
        help="--engine sep: extract images of up to MPIX megapixels whole, in one task (faster than tiles), larger ones in tiles "
             "(default: whole when SEP needs at most half a worker's memory, about 64 bytes a pixel; 0: always tiles)",
    )
    add_workers_argument(p)
    p.add_argument("--regions", metavar="CAT.reg", help="also write a DS9 region file")
    p.add_argument("--segmentation", metavar="SEG.fits", help="also write the segmentation map as FITS")
    p.add_argument("--store", metavar="STORE.zarr", help="also write the segmentation map into this zarr store")
    p.add_argument("--field", help="field name in the store (default: the image file's stem)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=run)
    return p


def _check_outputs(args) -> None:
    for opt in ("out", "regions", "segmentation"):
        value = getattr(args, opt)
        if value is None:
            continue
        path = refuse_existing(value, args.overwrite)
        if not path.parent.exists():
            msg = f"{path}: directory {path.parent} does not exist; create it or choose another --{opt}"
            raise InputError(msg)
    if Path(args.out).suffix.lower() not in (".ecsv", ".parquet"):
        msg = f"--out {args.out!r}: suffix {Path(args.out).suffix!r} is not allowed; expected one of ['.ecsv', '.parquet']"
        raise InputError(msg)
    check_workers(args.workers)
    if args.noise != "measured" and args.detection_image is not None:
        msg = f"--noise {args.noise} with --detection-image is not allowed; expected --noise measured (a detection image's threshold is in its measured noise)"
        raise InputError(msg)
    if args.sep_whole_mpix is not None and not args.sep_whole_mpix >= 0:
        msg = f"--sep-whole-mpix {args.sep_whole_mpix!r} is out of range; expected megapixels >= 0 (0: always tiles)"
        raise InputError(msg)
    if args.fwhm < 0 or (args.method == "daofind" and args.fwhm == 0):
        msg = f"--fwhm {args.fwhm!r} is out of range; expected > 0 (>= 0 for segmentation, 0 meaning no smoothing)"
        raise InputError(msg)


def run(args: argparse.Namespace) -> int:
    """Run ``mosaic detect``; returns the exit code. Bad input raises :class:`InputError`."""
    from mosaic.io.store import Store  # noqa: PLC0415
    from mosaic.pipeline.detect import detect_image  # noqa: PLC0415

    _check_outputs(args)
    with forked_workers(), local_client(args.workers):
        detect_image(
            args.image, args.out, method=args.method, threshold=args.threshold, n_pixels=args.npixels, deblend=args.deblend,
            fwhm=args.fwhm, radii=args.radii, tile=args.tile, regions=args.regions, segmentation=args.segmentation,
            store=Store(args.store) if args.store else None, field=args.field, overwrite=args.overwrite,
            background_box=args.background_box, detection_image=args.detection_image, engine=args.engine, noise=args.noise,
            sep_max_whole=None if args.sep_whole_mpix is None else int(args.sep_whole_mpix * 1e6), flux_errors=args.flux_errors,
        )
    return 0
