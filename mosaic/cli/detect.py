"""``mosaic detect``: a source catalogue of a mosaic, tile by tile (segmentation or DAOFIND).

    mosaic detect IMAGE --out CAT.ecsv|CAT.parquet [--method segmentation|daofind]
                  [--threshold 1.5] [--npixels 10] [--deblend] [--fwhm PIX] [--radii R ...]
                  [--tile PIX] [--workers N] [--regions CAT.reg] [--segmentation SEG.fits]
                  [--store STORE.zarr] [--field NAME] [--overwrite]

IMAGE is an ``_i2d.fits`` mosaic (SCI, ERR, WHT) or a plain FITS image. The threshold is
``--threshold`` times the background RMS: the ERR extension where there is one, else the
sigma-clipped standard deviation of the image (from a strided sample). Pixels that are NaN or
have zero weight are masked. An image without a celestial WCS gives a catalogue whose RA/Dec
are NaN, with a warning (positions in pixels are still exact).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from mosaic.cli._common import local_client, positive_float, positive_int
from mosaic.exceptions import InputError

__all__ = ["add_parser", "run"]

log = logging.getLogger(__name__)

METHODS = ("segmentation", "daofind")


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
    p.add_argument("--method", choices=METHODS, default="segmentation", help="detection method (default segmentation)")
    p.add_argument("--threshold", type=positive_float, default=1.5, help="threshold in units of the background RMS (default 1.5)")
    p.add_argument("--npixels", type=positive_int, default=10, help="minimum connected pixels of a source (default 10)")
    p.add_argument("--deblend", action="store_true", help="deblend overlapping sources (multi-threshold + watershed)")
    p.add_argument("--fwhm", type=float, default=2.0, help="FWHM (pix) of the smoothing kernel / DAOFIND kernel; 0: no smoothing (default 2)")
    p.add_argument("--radii", type=positive_float, nargs="*", default=[3.0, 6.0], metavar="R", help="circular aperture radii in pixels (default 3 6)")
    p.add_argument("--tile", type=positive_int, default=1024, metavar="PIX", help="tile size in pixels (default 1024)")
    p.add_argument("--workers", type=int, default=0, metavar="N", help="local dask cluster of N processes (default 0: threads)")
    p.add_argument("--regions", metavar="CAT.reg", help="also write a DS9 region file")
    p.add_argument("--segmentation", metavar="SEG.fits", help="also write the segmentation map as FITS")
    p.add_argument("--store", metavar="STORE.zarr", help="also write the segmentation map into this zarr store")
    p.add_argument("--field", help="field name in the store (default: the image file's stem)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=run)
    return p


def _background_rms(sci, good) -> tuple[float, float]:
    """Sigma-clipped median and standard deviation from a strided sample of about 1e6 pixels."""
    from astropy.stats import sigma_clipped_stats  # noqa: PLC0415

    step = max(1, int(np.sqrt(sci.size / 1e6)))
    sample = np.asarray(sci[::step, ::step])
    ok = np.asarray(good[::step, ::step]) & np.isfinite(sample)
    if not ok.any():
        msg = "the image has no finite, unmasked pixel; expected data to detect sources on"
        raise InputError(msg)
    _, med, std = sigma_clipped_stats(sample[ok])
    return float(med), float(std)


def _check_outputs(args) -> None:
    for opt in ("out", "regions", "segmentation"):
        value = getattr(args, opt)
        if value is None:
            continue
        path = Path(value)
        if path.exists() and not args.overwrite:
            msg = f"{path}: exists; pass --overwrite to replace it"
            raise InputError(msg)
        if not path.parent.exists():
            msg = f"{path}: directory {path.parent} does not exist; create it or choose another --{opt}"
            raise InputError(msg)
    if Path(args.out).suffix.lower() not in (".ecsv", ".parquet"):
        msg = f"--out {args.out!r}: suffix {Path(args.out).suffix!r} is not allowed; expected one of ['.ecsv', '.parquet']"
        raise InputError(msg)
    if args.workers < 0:
        msg = f"--workers {args.workers!r} is negative; expected 0 (threads) or a number of processes"
        raise InputError(msg)
    if args.fwhm < 0 or (args.method == "daofind" and args.fwhm == 0):
        msg = f"--fwhm {args.fwhm!r} is out of range; expected > 0 (>= 0 for segmentation, 0 meaning no smoothing)"
        raise InputError(msg)


def run(args: argparse.Namespace) -> int:
    """Run ``mosaic detect``; returns the exit code. Bad input raises :class:`InputError`."""
    import dask.array as da  # noqa: PLC0415

    from mosaic.catalog.daofind import detect_daofind  # noqa: PLC0415
    from mosaic.catalog.detect import detect_segmentation, smooth  # noqa: PLC0415
    from mosaic.catalog.photometry import source_catalog  # noqa: PLC0415
    from mosaic.io.catalogs import read_image, write_catalog, write_segmentation_fits, write_segmentation_store  # noqa: PLC0415
    from mosaic.io.store import Store  # noqa: PLC0415

    _check_outputs(args)
    image = read_image(args.image, tile=args.tile)
    tile = (args.tile, args.tile)
    good = da.isfinite(image.sci)
    if image.wht is not None:
        good &= image.wht > 0
    med, std = _background_rms(image.sci, good)
    # i2d products are sky-subtracted; a plain image gets its clipped median removed
    sky = 0.0 if image.err is not None else med
    sci = da.where(good, image.sci - sky, np.nan)
    if image.err is not None:
        rms = da.where(good & (image.err > 0), image.err, np.inf)
        log.info("detect: threshold %g x ERR", args.threshold)
    else:
        rms = std
        log.info("detect: threshold %g x %.4g (clipped std of the image)", args.threshold, std)
    if image.wcs is None:
        log.warning("detect: %s has no celestial WCS; the catalogue has positions in pixels only (RA/Dec NaN)", args.image)
    threshold = args.threshold * rms
    with local_client(args.workers):
        if args.method == "daofind":
            table = detect_daofind(sci, threshold, fwhm=args.fwhm, mask=~good, tile=tile)
            if image.wcs is not None and len(table):
                ra, dec = image.wcs.pixel_to_world_values(np.asarray(table["x_centroid"]), np.asarray(table["y_centroid"]))
                table["ra"], table["dec"] = ra, dec
                table["ra"].unit = table["dec"].unit = "deg"
            seg = None
        else:
            filled = da.where(good, sci, 0.0)
            det = smooth(filled, fwhm=args.fwhm, tile=tile) if args.fwhm > 0 else filled
            seg = detect_segmentation(det, threshold, n_pixels=args.npixels, mask=~good, deblend=args.deblend, tile=tile)
            scale, unit = image.flux_scale
            table = source_catalog(
                filled, seg, error=image.err, mask=~good, convolved=det if args.fwhm > 0 else None, wcs=image.wcs,
                radii=args.radii, flux_scale=scale, flux_unit=unit,
            )
        table.meta.update(image=str(args.image), method=args.method, threshold_sigma=args.threshold, band=image.band)
        write_catalog(table, args.out, overwrite=args.overwrite)
        if args.regions:
            scale_arcsec = None if image.pixel_area_sr is None else float(np.sqrt(image.pixel_area_sr) * 206264.806)
            write_catalog(table, args.regions, overwrite=args.overwrite, pixel_scale_arcsec=scale_arcsec)
        if seg is not None and args.segmentation:
            write_segmentation_fits(seg.data, args.segmentation, wcs=image.wcs, overwrite=args.overwrite)
        if seg is not None and args.store:
            field = args.field or Path(args.image).name.split(".")[0]
            write_segmentation_store(Store(args.store), field, image.band, seg.data, wcs=image.wcs, overwrite=args.overwrite)
    log.info("detect: %d sources -> %s", len(table), args.out)
    return 0
