"""``mosaic fuse``: NIRCam images + a NIRSpec IFU cube -> a hyperspectral cube at NIRCam resolution (seed 003).

    mosaic fuse --images F182M.fits F210M.fits ... --cube IFU_s3d.fits --out FUSED.fits
                [--filters F182M F210M ...] [--factor 3] [--components 5] [--mean projected|data] [--gamma 1] [--mu 1e-3]
                [--solver exact|cg] [--tile N] [--halo N] [--boundary periodic|reflect]
                [--align wcs|phase] [--no-resample] [--no-cross-calibration] [--psf-size 21]
                [--previews] [--overwrite]
"""

from __future__ import annotations

import argparse
import logging

from mosaic.cli._common import positive_float, positive_int, refuse_existing

__all__ = ["add_parser", "run"]

log = logging.getLogger(__name__)

HELP = "fuse NIRCam images with a NIRSpec IFU cube into a cube at NIRCam resolution (seed 003)"


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``fuse`` subcommand on ``subparsers``; returns its parser."""
    p = subparsers.add_parser(
        "fuse",
        help=HELP,
        description=(
            "Co-register NIRCam images with an IFU cube (the cube's grid refined FACTOR times; images "
            "resampled bicubically by WCS, or also aligned by phase cross-correlation for moving targets), "
            "cross-calibrate the filter throughputs against the cube (seed 003, eqs. 6-7), and solve objective (9) "
            "-- PCA subspace of the cube, Sobolev regulariser -- exactly in Fourier (or by conjugate gradients). "
            "Throughputs are top-hat approximations of the JDox half-power bands (F182M, F187N, F200W, F210M, F212N); "
            "PSFs are mosaic's JWST-like diffraction model at the cube's wavelengths."
        ),
    )
    p.add_argument("--images", nargs="+", required=True, metavar="IMAGE.fits", help="NIRCam images (SCI or first image HDU), one per filter")
    p.add_argument("--cube", required=True, metavar="IFU.fits", help="IFU cube with a spectral WCS (an _s3d.fits)")
    p.add_argument("--out", required=True, metavar="FUSED.fits", help="output cube")
    p.add_argument("--filters", nargs="+", metavar="FILTER", help="filter of each image (default: the FILTER keyword)")
    p.add_argument("--factor", type=positive_int, default=3, help="fine pixels per IFU spaxel and axis (default 3: 0.033\" for 0.1\" spaxels)")
    p.add_argument("--components", type=positive_int, default=5, help="principal spectra kept, k (default 5)")
    p.add_argument("--mean", choices=("projected", "data"), default="projected",
                   help="the model's mean spectrum: the IFU's projected on its signal subspace (default), or as it is (seed 003)")
    p.add_argument("--gamma", type=positive_float, default=1.0, help="weight of the IFU term (default 1)")
    p.add_argument("--mu", type=float, default=1e-3, help="weight of the Sobolev regulariser (default 1e-3)")
    p.add_argument("--solver", choices=("exact", "cg"), default="exact", help="exact Fourier blocks or conjugate gradients (default exact)")
    p.add_argument("--cg-iterations", type=positive_int, default=1000, help="CG: most iterations (default 1000)")
    p.add_argument("--tile", type=positive_int, help="solve in tiles of this many spaxels (exact solver)")
    p.add_argument("--halo", type=int, help="spaxels solved around each tile (default from the PSFs)")
    p.add_argument("--boundary", choices=("periodic", "reflect"), default="reflect", help="the field beyond its edges (default reflect)")
    p.add_argument("--align", choices=("wcs", "phase"), default="wcs", help="wcs, or also phase cross-correlation (moving targets)")
    p.add_argument("--no-resample", action="store_true", help="images are already on the fine grid: do not resample them")
    p.add_argument("--no-cross-calibration", action="store_true", help="keep the throughputs as tabulated")
    p.add_argument("--psf-size", type=positive_int, default=21, help="PSF side in fine pixels, odd (default 21)")
    p.add_argument("--previews", action="store_true", help="also write PNG previews of three planes beside the output")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from mosaic.fusion.files import fuse_files  # noqa: PLC0415

    out = refuse_existing(args.out, args.overwrite)
    fuse_files(
        args.images,
        args.cube,
        out,
        filters=args.filters,
        factor=args.factor,
        components=args.components,
        gamma=args.gamma,
        mu=args.mu,
        solver=args.solver,
        cg_iterations=args.cg_iterations,
        tile=args.tile,
        halo=args.halo,
        boundary=args.boundary,
        align=args.align,
        resample=not args.no_resample,
        cross_calibration=not args.no_cross_calibration,
        psf_size=args.psf_size,
        previews=args.previews,
        mean=args.mean,
    )
    return 0
