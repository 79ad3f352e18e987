"""``mosaic psf``: a PSF from the stars of an image (empirical ePSF or hybrid model + stars).

    mosaic psf IMAGE --out PSF.fits [--method empirical|hybrid] [--band F200W] [--size 51]
               [--oversample 2] [--n-components N] [--n-iterations N] [--pixel-scale ARCSEC] [--snr-min 50]
               [--saturation LEVEL] [--ext SCI] [--overwrite]
"""

from __future__ import annotations

import argparse
import logging

import numpy as np

from mosaic.cli._common import non_negative_int, positive_float, positive_int, refuse_existing
from mosaic.exceptions import InputError

__all__ = ["add_parser", "run", "METHODS", "read_image"]

log = logging.getLogger(__name__)

METHODS = ("hybrid", "empirical")
#: DQ flags that keep a pixel out of the PSF stars
_BAD_FLAGS = ("DO_NOT_USE", "SATURATED", "JUMP_DET", "OUTLIER", "DEAD", "HOT", "NON_SCIENCE", "RC", "TELEGRAPH")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``psf`` subcommand on ``subparsers``; returns its parser."""
    p = subparsers.add_parser(
        "psf",
        help="build a PSF from the stars of an image (hybrid model + stars, or empirical ePSF)",
        description=(
            "Select isolated, unsaturated, bright, compact stars in a FITS image (SCI, with ERR "
            "and DQ where present) and build a PSF sampled OVERSAMPLE times finer than the image: "
            "'hybrid' corrects the JWST-like model PSF with the stars' residuals and their principal "
            "components (the optical PSF, as UPDC wants it); 'empirical' is photutils' effective PSF "
            "(pixel response included)."
        ),
    )
    p.add_argument("image", metavar="IMAGE", help="FITS image (_cal.fits, _i2d.fits or a plain image)")
    p.add_argument("--out", required=True, metavar="PSF.fits", help="output PSF file")
    p.add_argument("--method", choices=METHODS, default="hybrid", help="PSF method (default hybrid)")
    p.add_argument("--band", help="NIRCam filter (default: the FILTER keyword)")
    p.add_argument("--size", type=positive_int, default=51, help="PSF side in output pixels, odd (default 51)")
    p.add_argument("--oversample", type=positive_int, default=2, help="PSF pixels per image pixel (default 2)")
    p.add_argument("--n-components", type=non_negative_int, default=None, metavar="N",
                   help="hybrid: principal components to add (default: by explained variance)")
    p.add_argument("--n-iterations", type=positive_int, default=None, metavar="N",
                   help="rounds of star fitting and stacking (default 2 for hybrid, 10 for empirical)")
    p.add_argument("--pixel-scale", type=positive_float, metavar="ARCSEC", help="image pixel scale (default: from the WCS)")
    p.add_argument("--snr-min", type=positive_float, default=50.0, help="least S/N of a PSF star (default 50)")
    p.add_argument("--saturation", type=float, help="pixel value at which the detector saturates")
    p.add_argument("--ext", help="image extension (default SCI, else the first image)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run)
    return p


def read_image(path, *, ext=None):
    """``(sci, err or None, bad mask, header)`` of a FITS image in memory, bad = NaN or a flagged DQ bit.

    The header is the primary header updated with the image extension's.
    """
    import dask  # noqa: PLC0415

    from mosaic.io.cal import DQ  # noqa: PLC0415
    from mosaic.io.images import read_fits_image  # noqa: PLC0415

    image = read_fits_image(path, ext=ext, dtype=np.float64)
    err, dq = image.extension("ERR", dtype=np.float64), image.extension("DQ")
    sci, err, dq = dask.compute(image.data, err, dq)
    header = image.primary.copy()
    header.update({k: v for k, v in image.header.items() if k not in ("", "COMMENT", "HISTORY")})
    bad = ~np.isfinite(sci)
    if dq is not None:
        bits = 0
        for name in _BAD_FLAGS:
            bits |= DQ[name]
        bad |= (dq.astype(np.int64) & bits) != 0
    return sci, err, bad, header


def _pixel_scale(header, path, given) -> float:
    if given is not None:
        return float(given)
    from astropy.wcs.utils import proj_plane_pixel_scales  # noqa: PLC0415

    from mosaic.io.images import celestial_wcs  # noqa: PLC0415

    wcs = celestial_wcs(header, path=path)
    if wcs is None:
        msg = f"{path}: no celestial WCS to give the pixel scale; pass --pixel-scale ARCSEC"
        raise InputError(msg)
    return float(np.mean(proj_plane_pixel_scales(wcs)) * 3600.0)


def run(args: argparse.Namespace) -> int:
    """Run ``mosaic psf``; returns the exit code. Bad input raises :class:`InputError`."""
    from mosaic.psf.empirical import empirical_psf  # noqa: PLC0415
    from mosaic.psf.files import write_psf  # noqa: PLC0415
    from mosaic.psf.hybrid import hybrid_psf  # noqa: PLC0415
    from mosaic.psf.model import jwst_psf  # noqa: PLC0415
    from mosaic.psf.stars import require_stars, select_stars  # noqa: PLC0415

    out = refuse_existing(args.out, args.overwrite)
    if not out.parent.is_dir():
        msg = f"{out}: directory {out.parent} does not exist; create it or choose another --out"
        raise InputError(msg)
    if args.size % 2 == 0 or args.size < 3:
        msg = f"--size {args.size} is even or too small; expected an odd number of pixels >= 3"
        raise InputError(msg)
    sci, err, bad, header = read_image(args.image, ext=args.ext)
    band = args.band or header.get("FILTER")
    if not band:
        msg = f"{args.image}: no FILTER keyword; pass --band (e.g. --band F200W)"
        raise InputError(msg)
    scale = _pixel_scale(header, args.image, args.pixel_scale)
    os_ = args.oversample
    if args.method == "hybrid":
        widest = args.size // os_ - 4
        stamp = widest if widest % 2 else widest - 1
    else:
        n = args.size // os_
        stamp = n if n % 2 else n - 1
    if stamp < 5:
        msg = f"--size {args.size} at --oversample {os_} leaves star stamps of {stamp} pixels; expected >= 5 (raise --size)"
        raise InputError(msg)
    reference = jwst_psf(band, pixel_scale_arcsec=scale, size=stamp)
    stars = select_stars(sci, psf=reference, error=err, mask=bad, snr_min=args.snr_min, saturation=args.saturation,
                         stamp_size=stamp)
    require_stars(stars, args.method, source=str(args.image))
    if args.method == "hybrid":
        model = jwst_psf(band, pixel_scale_arcsec=scale / os_, size=args.size)
        psf = hybrid_psf(sci, stars, model=model, oversample=os_, stamp_size=stamp, error=err, mask=bad,
                         n_components=args.n_components, n_iterations=args.n_iterations or 2)
    else:
        psf = empirical_psf(sci, stars, size=args.size, oversample=os_, stamp_size=stamp, mask=bad,
                            n_iterations=args.n_iterations or 10)
    write_psf(out, psf, pixel_scale_arcsec=scale / os_, band=band)
    log.info("psf: %s PSF from %d stars of %s -> %s (%d px at %.5g arcsec)", args.method, len(stars), args.image, out,
             args.size, scale / os_)
    return 0
