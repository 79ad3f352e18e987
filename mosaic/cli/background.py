"""``mosaic background``: the background (and RMS) of a FITS image, tiled, as a FITS file.

    mosaic background IMAGE --out OUT.fits [--box 64] [--filter 3]
                      [--estimator median|biweight|mean|sextractor|mode] [--rms-estimator std|mad_std|biweight]
                      [--sigma 3] [--exclude-percentile 10] [--icl] [--tile PIX] [--ext NAME]
                      [--workers N] [--overwrite]

The output holds ``SCI`` (the image minus the background), ``BKG``, ``BKG_RMS`` and, with
``--icl``, ``SRCMASK`` (the detected sources, 1 where masked), each with the input's header
(WCS included). The image is read lazily (one tile at a time from the file) and the output is
written row band by row band under a temporary name, renamed when whole.

This module also holds the FITS reading and writing that ``mosaic filter`` and ``mosaic stats``
share: :func:`read_image` and :func:`write_images`.
"""

from __future__ import annotations

import argparse
import logging
import os
import uuid
from pathlib import Path

import dask.array as da
import numpy as np

from mosaic.cli._common import local_client, positive_float, positive_int
from mosaic.exceptions import InputError
from mosaic.ops.background import ESTIMATORS, RMS_ESTIMATORS

__all__ = ["add_parser", "read_image", "run", "write_images"]

log = logging.getLogger(__name__)

# header keywords that describe the data layout, not the image: never copied
_STRUCTURAL = {
    "SIMPLE", "XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "PCOUNT", "GCOUNT", "BSCALE", "BZERO",
    "BLANK", "EXTNAME", "EXTVER", "CHECKSUM", "DATASUM", "ZIMAGE", "ZBITPIX", "ZNAXIS", "ZNAXIS1", "ZNAXIS2",
}
_BITPIX = {np.dtype(np.float32): -32, np.dtype(np.float64): -64, np.dtype(np.uint8): 8, np.dtype(np.int16): 16, np.dtype(np.int32): 32}


class _FitsSection:
    """A lazily read 2-D FITS image: slicing opens the file and reads only that section."""

    def __init__(self, path: str, ext, shape, dtype):
        self.path, self.ext = path, ext
        self.shape, self.dtype, self.ndim = tuple(shape), np.dtype(dtype), 2

    def __getitem__(self, key):
        from astropy.io import fits  # noqa: PLC0415

        with fits.open(self.path, memmap=True) as hdul:
            return np.asarray(hdul[self.ext].section[key], dtype=self.dtype)


def read_image(path, *, ext=None, tile: int = 1024):
    """A FITS image as a lazy dask array, with its headers.

    Parameters
    ----------
    path : path-like
        FITS file; a multi-extension file (``_i2d.fits``) is read from ``SCI``.
    ext : str or int, optional
        Extension to read instead.
    tile : int
        Chunk side in pixels.

    Returns
    -------
    image : dask.array.Array
    header : astropy.io.fits.Header
        The image extension's header.
    primary : astropy.io.fits.Header
        The primary header.
    """
    from astropy.io import fits  # noqa: PLC0415

    path = Path(path)
    if not path.exists():
        msg = f"{path}: no such file"
        raise FileNotFoundError(msg)
    try:
        hdul = fits.open(path, memmap=True)
    except OSError as err:
        msg = f"{path}: not a readable FITS file ({err})"
        raise InputError(msg) from None
    with hdul:
        names = [h.name for h in hdul]
        if ext is None:
            ext = "SCI" if "SCI" in names else next((i for i, h in enumerate(hdul) if h.is_image and h.header.get("NAXIS") == 2), None)
            if ext is None:
                msg = f"{path}: no 2-D image extension; expected SCI or a 2-D image HDU (extensions: {names})"
                raise InputError(msg)
        try:
            hdu = hdul[ext]
        except (KeyError, IndexError):
            msg = f"{path}: no extension {ext!r}; expected one of {names}"
            raise InputError(msg) from None
        if not hdu.is_image or hdu.header.get("NAXIS") != 2:
            msg = f"{path}[{ext}]: not a 2-D image (NAXIS={hdu.header.get('NAXIS')}); expected NAXIS=2"
            raise InputError(msg)
        shape = (hdu.header["NAXIS2"], hdu.header["NAXIS1"])
        dtype = hdu.section[0:1, 0:1].dtype
        header, primary = hdu.header.copy(), hdul[0].header.copy()
    dtype = np.dtype(dtype).newbyteorder("=")
    source = _FitsSection(str(path), ext, shape, dtype)
    image = da.from_array(source, chunks=(tile, tile), asarray=False, lock=False, meta=np.empty((0, 0), dtype=dtype), name=f"fits-{uuid.uuid4().hex}")
    log.info("read %s[%s]: %d x %d %s", path, ext, shape[0], shape[1], dtype)
    return image, header, primary


def _image_header(source: "fits.Header", name: str, shape, dtype):  # noqa: F821
    from astropy.io import fits  # noqa: PLC0415

    h = fits.Header()
    h["XTENSION"] = "IMAGE"
    h["BITPIX"] = _BITPIX[np.dtype(dtype)]
    h["NAXIS"] = 2
    h["NAXIS1"] = int(shape[1])
    h["NAXIS2"] = int(shape[0])
    h["PCOUNT"] = 0
    h["GCOUNT"] = 1
    h["EXTNAME"] = name
    for card in source.cards:
        if card.keyword not in _STRUCTURAL and card.keyword != "":
            h.append(card)
    return h


def write_images(path, images: dict, *, header, primary=None, history=(), overwrite: bool = False) -> Path:
    """Write lazy 2-D images as named FITS extensions, row band by row band, atomically.

    Parameters
    ----------
    path : path-like
        Output file; written under a temporary name and renamed when whole.
    images : dict of str to dask.array.Array
        Extension name to image (float32, float64, uint8, int16 or int32).
    header : astropy.io.fits.Header
        Header copied into every extension (WCS and the rest; layout keywords are not).
    primary : astropy.io.fits.Header, optional
        Primary header to copy.
    history : sequence of str
        HISTORY lines for the primary header.
    overwrite : bool
        Replace an existing file.
    """
    import dask  # noqa: PLC0415
    from astropy.io import fits  # noqa: PLC0415

    path = Path(path)
    if path.exists() and not overwrite:
        msg = f"{path}: exists; pass --overwrite to replace it"
        raise FileExistsError(msg)
    tmp = path.with_name(f".{path.name}.part-{uuid.uuid4().hex[:8]}")
    prim = fits.Header()
    prim["SIMPLE"] = True
    prim["BITPIX"] = 8
    prim["NAXIS"] = 0
    prim["EXTEND"] = True
    for card in (primary or fits.Header()).cards:
        if card.keyword not in _STRUCTURAL and card.keyword != "":
            prim.append(card)
    prim["ORIGIN"] = ("mosaic", "made by the mosaic package")
    for line in history:
        prim.add_history(line)
    try:
        fits.PrimaryHDU(header=prim).writeto(tmp)
        for name, image in images.items():
            if np.dtype(image.dtype) not in _BITPIX:
                image = image.astype(np.float32 if image.dtype.kind == "f" else np.int32)
            # a str: astropy reads only the name of a Path here
            stream = fits.StreamingHDU(str(tmp), _image_header(header, name, image.shape, image.dtype))
            log.info("writing %s %s: %d row bands", path.name, name, len(image.chunks[0]))
            try:
                start = 0
                for rows in image.chunks[0]:
                    # FITS stores rows in order: one band of tiles in memory at a time
                    (band,) = dask.compute(image[start : start + rows])
                    stream.write(np.ascontiguousarray(band, dtype=image.dtype))
                    log.debug("%s %s: rows %d-%d written", path.name, name, start, start + rows)
                    start += rows
            finally:
                stream.close()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.info("wrote %s (%s)", path, ", ".join(images))
    return path


def check_output(out, overwrite: bool) -> Path:
    """The output path, refused when it exists (without ``overwrite``) or its directory does not."""
    out = Path(out)
    if out.exists() and not overwrite:
        msg = f"{out}: exists; pass --overwrite to replace it"
        raise InputError(msg)
    if not out.parent.exists():
        msg = f"{out}: directory {out.parent} does not exist; create it or choose another --out"
        raise InputError(msg)
    return out


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``background`` subcommand on ``subparsers``; returns its parser."""
    p = subparsers.add_parser(
        "background",
        help="background and RMS maps of a FITS image (photutils Background2D, tiled; ICL option)",
        description=(
            "Estimate the background of a FITS image from sigma-clipped boxes, median filtered and "
            "zoomed (photutils Background2D semantics), tile by tile; with --icl the three-step "
            "intracluster-light background (initial background, four tiers of detection, masked final "
            "background). Writes SCI (image minus background), BKG, BKG_RMS (and SRCMASK with --icl)."
        ),
    )
    p.add_argument("image", metavar="IMAGE", help="FITS image (SCI of an _i2d.fits file, or the first 2-D HDU)")
    p.add_argument("--out", required=True, metavar="OUT.fits", help="output FITS file")
    p.add_argument("--ext", default=None, help="image extension to read (default SCI, else the first 2-D image)")
    p.add_argument("--box", type=positive_int, default=None, metavar="PIX", help="box size in pixels (default 64; 60 with --icl)")
    p.add_argument("--filter", type=positive_int, default=None, metavar="N", help="median filter over boxes, odd (default 3; 5 with --icl)")
    p.add_argument("--estimator", choices=sorted(ESTIMATORS), default=None, help="box background estimator (default median; biweight with --icl)")
    p.add_argument("--rms-estimator", choices=sorted(RMS_ESTIMATORS), default="std", help="box RMS estimator (default std)")
    p.add_argument("--sigma", type=positive_float, default=3.0, help="sigma-clipping limit in each box (default 3)")
    p.add_argument("--exclude-percentile", type=float, default=10.0, metavar="P", help="exclude boxes with more than P%% masked (default 10)")
    p.add_argument("--icl", action="store_true", help="three-step ICL background (seed 000 sec. 2.2)")
    p.add_argument("--tile", type=positive_int, default=1024, metavar="PIX", help="tile side in pixels, rounded to whole boxes (default 1024)")
    p.add_argument("--workers", type=int, default=0, metavar="N", help="local dask cluster of N processes (default 0: threads)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``mosaic background``; returns the exit code."""
    from mosaic.image.background import background_2d, icl_background  # noqa: PLC0415

    out = check_output(args.out, args.overwrite)
    if args.workers < 0:
        msg = f"--workers {args.workers!r} is negative; expected 0 (threads) or a number of processes"
        raise InputError(msg)
    box = args.box or (60 if args.icl else 64)
    filt = args.filter or (5 if args.icl else 3)
    estimator = args.estimator or ("biweight" if args.icl else "median")
    image, header, primary = read_image(args.image, ext=args.ext, tile=args.tile)
    # NaN marks pixels without data in JWST products: masked, not warned about
    bad = ~da.isfinite(image)
    common = {
        "box_size": box, "filter_size": filt, "estimator": estimator, "rms_estimator": args.rms_estimator,
        "sigma": args.sigma, "exclude_percentile": args.exclude_percentile, "tile": args.tile,
    }
    with local_client(args.workers):
        if args.icl:
            result = icl_background(image, mask=bad, **common)
            bkg = result.final
            extra = {"SRCMASK": result.source_mask.astype(np.uint8)}
        else:
            bkg = background_2d(image, mask=bad, **common)
            extra = {}
        image = image.rechunk(bkg.background.chunks)
        images = {"SCI": image - bkg.background, "BKG": bkg.background, "BKG_RMS": bkg.background_rms, **extra}
        history = [
            f"mosaic background: box {box}, filter {filt}, estimator {estimator}, rms {args.rms_estimator}, "
            f"sigma {args.sigma}, exclude {args.exclude_percentile}%{', ICL three-step' if args.icl else ''}",
        ]
        write_images(out, images, header=header, primary=primary, history=history, overwrite=args.overwrite)
    log.info("background: median %.6g, rms median %.6g", bkg.background_median, bkg.background_rms_median)
    return 0
