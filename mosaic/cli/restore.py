"""``mosaic restore``: learned restoration (seed 002, Restormer) of a mosaic, tiled, with ONNX Runtime.

    mosaic restore IMAGE_i2d.fits --out OUT_i2d.fits [--model PATH] [--tile 512] [--overlap PIX]
                   [--workers N] [--overwrite]

The shipped model (F200W, 0.0155"/pix) is used unless ``--model`` names another ONNX file
written by ``python -m mosaic.restore.export``. The output's SCI keeps the input's WCS and BUNIT;
ERR is not propagated (the primary header says so).
"""

from __future__ import annotations

import argparse
import logging

from mosaic.cli._common import add_workers_argument, check_workers, local_client, non_negative_int, positive_int

__all__ = ["add_parser", "run"]

log = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``restore`` subcommand on ``subparsers``; returns its parser."""
    p = subparsers.add_parser(
        "restore",
        help="learned restoration of a mosaic (Restormer, seed 002) with the shipped ONNX model, tiled",
        description=(
            "Deconvolve and denoise a drizzle mosaic with a trained Restormer (ONNX Runtime, no PyTorch), "
            "tile by tile with overlaps blended by a smooth window and one global normalisation. "
            "A learned model can invent structure: compare with the input."
        ),
    )
    p.add_argument("image", metavar="IMAGE", help="input mosaic (SCI of an _i2d.fits file) with a WCS")
    p.add_argument("--out", required=True, metavar="OUT.fits", help="output FITS file")
    p.add_argument("--model", default=None, metavar="PATH", help="ONNX model (default: the shipped F200W model)")
    p.add_argument("--tile", type=positive_int, default=512, metavar="PIX", help="tile side in pixels, a multiple of 8 (default 512)")
    p.add_argument("--overlap", type=non_negative_int, default=None, metavar="PIX",
                   help="overlap in pixels, a multiple of 8 (default: the model's halo, 128 for the shipped model)")
    add_workers_argument(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``mosaic restore``; returns the exit code."""
    from mosaic.cli._common import refuse_existing  # noqa: PLC0415
    from mosaic.restore.product import restore_i2d  # noqa: PLC0415

    out = refuse_existing(args.out, args.overwrite)
    check_workers(args.workers)
    with local_client(args.workers):
        path = restore_i2d(args.image, out, model=args.model, tile=args.tile, overlap=args.overlap, overwrite=args.overwrite)
    log.info("wrote %s", path)
    return 0
