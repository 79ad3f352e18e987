"""JWST Stage-2 ``_cal.fits`` exposures: lazy reading into xarray, validation, and writing.

An *exposure set* is an :class:`xarray.Dataset` with dims ``(exposure, y, x)``, dask-backed with
one chunk per exposure, holding ``sci, err, dq, var_poisson, var_rnoise, var_flat`` and ``good``
(finite SCI and none of the chosen DQ bits set). Per-exposure metadata are coordinates along
``exposure``; the WCS objects are in ``ds.attrs["wcs"]`` (also as header text in the
``wcs_header`` coordinate so that the set can be written to a store).
"""

from __future__ import annotations

import functools
import logging
import os
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning
from astropy.wcs import WCS, FITSFixedWarning

from mosaic.exceptions import ExposureExcludedWarning, ExtremeValueWarning, InputError, LimitError, UnknownVarianceWarning
from mosaic.threads import thread_map

if TYPE_CHECKING:  # imported by read_exposures only
    import xarray as xr

__all__ = [
    "CalCutouts",
    "DQ",
    "DEFAULT_BAD_BITS",
    "EXTENSIONS",
    "SAFE_ABS",
    "bad_bits_from",
    "check_exposures",
    "read_exposures",
    "read_wcs",
    "exposure_header_info",
    "good_fraction",
    "write_cal",
]

log = logging.getLogger(__name__)

#: JWST data-quality bit values (jwst.datamodels.dqflags)
DQ = {
    "GOOD": 0,
    "DO_NOT_USE": 1 << 0,
    "SATURATED": 1 << 1,
    "JUMP_DET": 1 << 2,
    "DROPOUT": 1 << 3,
    "OUTLIER": 1 << 4,
    "PERSISTENCE": 1 << 5,
    "AD_FLOOR": 1 << 6,
    "CHARGELOSS": 1 << 7,
    "UNRELIABLE_ERROR": 1 << 8,
    "NON_SCIENCE": 1 << 9,
    "DEAD": 1 << 10,
    "HOT": 1 << 11,
    "WARM": 1 << 12,
    "LOW_QE": 1 << 13,
    "RC": 1 << 14,
    "TELEGRAPH": 1 << 15,
    "NONLINEAR": 1 << 16,
    "BAD_REF_PIXEL": 1 << 17,
    "NO_FLAT_FIELD": 1 << 18,
    "NO_GAIN_VALUE": 1 << 19,
    "NO_LIN_CORR": 1 << 20,
    "NO_SAT_CHECK": 1 << 21,
    "UNRELIABLE_BIAS": 1 << 22,
    "UNRELIABLE_DARK": 1 << 23,
    "UNRELIABLE_SLOPE": 1 << 24,
    "UNRELIABLE_FLAT": 1 << 25,
    "OPEN": 1 << 26,
    "ADJ_OPEN": 1 << 27,
    "UNRELIABLE_RESET": 1 << 28,
    "MSA_FAILED_OPEN": 1 << 29,
    "OTHER_BAD_PIXEL": 1 << 30,
    "REFERENCE_PIXEL": 1 << 31,
}

#: the JWST resample step's default: every pixel is good except DO_NOT_USE and NON_SCIENCE
DEFAULT_BAD_BITS = DQ["DO_NOT_USE"] | DQ["NON_SCIENCE"]

#: image extensions of a cal file, in the order they are read
EXTENSIONS = ("SCI", "ERR", "DQ", "VAR_POISSON", "VAR_RNOISE", "VAR_FLAT")
#: the variance components of a cal file's ERR
VARIANCE_EXTENSIONS = ("VAR_POISSON", "VAR_RNOISE", "VAR_FLAT")
_REQUIRED = ("SCI",)

#: pixels whose SCI or VAR_* magnitude exceeds this are left out: sums of a few of them overflow float32
SAFE_ABS = 1e30

#: exposures of one set whose pixel scales differ by more than this factor are refused (a broken WCS)
_SCALE_FACTOR = 1.5


#: BUNIT values of surface brightness in MJy/sr (compared without case or spaces)
_SURFACE_BRIGHTNESS = {"mjy/sr", "mjysr-1", "mjy/steradian", "mjy.sr**-1", "mjy.sr-1"}


def _unit_key(bunit: str) -> str:
    return "".join(str(bunit).split()).lower()


def usable(sci, dq, bad_bits: int, variances=()):
    """Pixels to combine: finite SCI within ±:data:`SAFE_ABS`, no bad DQ bit, and a finite value
    within ±SAFE_ABS in each of ``variances``.

    NumPy or dask arrays alike. Pass the variance extensions the file *has*: a pixel whose
    VAR_POISSON, say, is NaN has an unknown error; combined, it turned the mosaic's VAR_POISSON
    NaN wherever it landed, and ERR, leaving that term out there, too small (a NaN VAR_POISSON on
    half of one exposure's pixels of four: 3.4x at the median). An extension the file lacks
    leaves every pixel as it is (its variance is a known gap).
    """
    good = np.isfinite(sci) & (abs(sci) <= SAFE_ABS) & ((dq & np.uint32(bad_bits)) == 0)
    for v in variances:
        good = good & (abs(v) <= SAFE_ABS)  # False for NaN too
    return good


def bad_bits_from(spec) -> int:
    """DQ bits meaning "bad" from an int or names like ``"DO_NOT_USE+SATURATED"``."""
    if spec is None:
        return DEFAULT_BAD_BITS
    if isinstance(spec, (int, np.integer)):
        return int(spec)
    names = [spec] if isinstance(spec, str) else list(spec)
    bits = 0
    for part in (p.strip() for name in names for p in str(name).replace(",", "+").split("+")):
        if not part:
            continue
        if part.isdigit():
            bits |= int(part)
        elif part.upper() in DQ:
            bits |= DQ[part.upper()]
        else:
            msg = f"unknown DQ flag {part!r}; expected an integer or one of {sorted(DQ)}"
            raise ValueError(msg)
    return bits


# -- reading -------------------------------------------------------------------------------


def _open(path: Path):
    if not path.exists():
        msg = f"{path}: no such file; expected a JWST _cal.fits exposure"
        raise InputError(msg)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*truncated.*")  # found below, by name
            hdul = fits.open(path, memmap=True, lazy_load_hdus=False)
    except Exception as err:  # astropy raises OSError, TypeError, ValueError or warns, by case
        msg = f"{path}: not a readable FITS file ({_one_line(err)}); expected a JWST _cal.fits exposure"
        raise InputError(msg) from None
    try:
        _check_whole(path, hdul)
    except BaseException:
        hdul.close()
        raise
    return hdul


def _one_line(err) -> str:
    return " ".join(str(err).split())


def _check_whole(path: Path, hdul) -> None:
    """Raise :class:`InputError` when an image's data reach past the end of the file (a truncated copy)."""
    size = os.path.getsize(path)
    for i, hdu in enumerate(hdul):
        if not isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU):
            continue
        h = hdu.header
        naxis = int(h.get("NAXIS", 0) or 0)
        if naxis == 0:
            continue
        n = abs(int(h.get("BITPIX", 8))) // 8
        for k in range(1, naxis + 1):
            n *= int(h.get(f"NAXIS{k}", 0) or 0)
        end = int(hdul.fileinfo(i)["datLoc"]) + n
        if end > size:
            msg = f"{path}: truncated: {hdu.name or i} needs bytes up to {end:,} but the file has {size:,}; expected a whole FITS file"
            raise InputError(msg)


def read_wcs(path, *, prefer_gwcs: bool = True):
    """The celestial WCS of an exposure.

    The FITS WCS (with SIP) of the SCI header is used. Where ``stdatamodels`` is installed and
    the file carries an ASDF extension, its gwcs is returned instead (pipeline files carry the
    exact WCS there; the SIP is a fitted approximation).
    """
    path = Path(path)
    with _open(path) as hdul:
        if "SCI" not in hdul:
            msg = f"{path}: no SCI extension; expected a JWST _cal.fits with SCI, ERR, DQ, VAR_*"
            raise InputError(msg)
        has_asdf = "ASDF" in hdul
        wcs = _fits_wcs(path, hdul["SCI"].header)
    if prefer_gwcs and has_asdf:
        gw = _try_gwcs(path)
        if gw is not None:
            return gw
    return wcs


def _fits_wcs(path: Path, header: fits.Header) -> WCS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header)
        except Exception as err:
            msg = f"{path}: SCI header has an unreadable WCS ({err}); expected a celestial TAN(-SIP) WCS"
            raise InputError(msg) from None
    if not wcs.has_celestial or wcs.naxis != 2:
        msg = f"{path}: SCI header has no celestial WCS; expected CTYPE1/2 = RA---TAN(-SIP)/DEC--TAN(-SIP)"
        raise InputError(msg)
    wcs.pixel_shape = (header.get("NAXIS1"), header.get("NAXIS2"))
    return wcs


def _try_gwcs(path: Path):
    try:
        from stdatamodels.jwst import datamodels  # noqa: PLC0415 (optional dependency)
    except ImportError:
        return None
    try:
        with datamodels.open(str(path)) as model:
            return model.meta.wcs
    except Exception as err:  # a broken ASDF tree: fall back to the FITS WCS, say so
        log.warning("%s: could not read the ASDF gwcs (%s); using the FITS SIP WCS", path, err)
        return None


def exposure_header_info(path) -> dict:
    """Metadata of one exposure from its headers (no pixel data read)."""
    path = Path(path)
    try:
        return _header_info(path)
    except InputError:
        raise
    except Exception as err:  # a malformed header: astropy raises VerifyError, KeyError, ValueError... by case
        msg = f"{path}: headers cannot be read ({type(err).__name__}: {_one_line(err)}); expected a JWST _cal.fits exposure"
        raise InputError(msg) from None


def _header_info(path: Path) -> dict:
    with _open(path) as hdul:
        for ext in _REQUIRED:
            if ext not in hdul:
                msg = f"{path}: no {ext} extension; expected a JWST _cal.fits with SCI, ERR, DQ, VAR_*"
                raise InputError(msg)
        prim = hdul[0].header
        sci = hdul["SCI"].header
        if sci.get("NAXIS") != 2:
            msg = f"{path}: SCI is {sci.get('NAXIS')}-dimensional; expected a 2-D image"
            raise InputError(msg)
        shape = (int(sci["NAXIS2"]), int(sci["NAXIS1"]))
        present = []
        for ext in EXTENSIONS:
            if ext in hdul:
                h = hdul[ext].header
                ext_shape = (h.get("NAXIS2"), h.get("NAXIS1")) if h.get("NAXIS") == 2 else None
                if ext_shape != shape:
                    msg = f"{path}: {ext} has shape {ext_shape}; expected {shape} like SCI"
                    raise InputError(msg)
                present.append(ext)
        wcs = _fits_wcs(path, sci)

        def key(k, default=None):
            return sci.get(k, prim.get(k, default))

        exptime = key("EFFEXPTM", key("EXPTIME", key("XPOSURE", np.nan)))
        return {
            "path": str(path),
            "shape": shape,
            "extensions": present,
            "band": str(key("FILTER", "UNKNOWN")).strip().upper(),
            "pupil": str(key("PUPIL", "CLEAR")).strip().upper(),
            "detector": str(key("DETECTOR", "UNKNOWN")).strip().upper(),
            "exptime": float(exptime),
            "photmjsr": float(key("PHOTMJSR", np.nan)),
            "pixar_sr": float(key("PIXAR_SR", np.nan)),
            "bunit": str(sci.get("BUNIT", "")),
            "wcs": wcs,
            "wcs_header": wcs.to_header(relax=True).tostring(sep="\n"),
            "has_asdf": "ASDF" in hdul,
        }


def _read_ext(path: str, ext: str, dtype) -> np.ndarray:
    # unsigned DQ is stored as int32 with BZERO; read it raw through the memmap and unscale
    with fits.open(path, memmap=True, do_not_scale_image_data=True) as hdul:
        hdu = hdul[ext]
        return _unscaled(hdu, hdu.data, dtype)


def _unscaled(hdu, raw, dtype) -> np.ndarray:
    return _scaled(raw, hdu.header.get("BZERO", 0), hdu.header.get("BSCALE", 1), dtype)


def good_fraction(path: str, bad_bits: int, rows: int = 256) -> float:
    """Fraction of pixels with finite SCI and no bad DQ bit, read in row blocks."""
    with fits.open(path, memmap=True, do_not_scale_image_data=True) as hdul:
        sci_hdu = hdul["SCI"]
        dq_hdu = hdul["DQ"] if "DQ" in hdul else None
        ny = sci_hdu.header["NAXIS2"]
        n_good = 0
        for y in range(0, ny, rows):
            g = np.isfinite(_unscaled(sci_hdu, sci_hdu.data[y : y + rows], np.float32))
            if dq_hdu is not None:
                dq = _unscaled(dq_hdu, dq_hdu.data[y : y + rows], np.uint32)
                g &= (dq & np.uint32(bad_bits)) == 0
            n_good += int(g.sum())
        return n_good / (ny * sci_hdu.header["NAXIS1"])


def check_exposures(
    paths,
    *,
    bad_bits=None,
    band: str | None = None,
    single_band: bool = True,
    check_data: bool = True,
    prefer_gwcs: bool = True,
    weight: str = "ivm",
) -> list[dict]:
    """Validate ``_cal.fits`` exposures once and return what is known of the ones that count.

    The checks and exclusions of :func:`read_exposures` (same parameters), without building
    the lazy exposure set: no dask or xarray is imported.

    Returns
    -------
    list of dict
        Per kept exposure, in the given order: ``path``, ``shape``, ``extensions``, ``band``,
        ``detector``, ``exptime``, ``wcs``, ``wcs_header`` ... (:func:`exposure_header_info`).
    """
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    if not paths:
        msg = "no exposures given; expected one or more _cal.fits files"
        raise InputError(msg)
    bits = bad_bits_from(bad_bits)
    infos = [exposure_header_info(p) for p in paths]
    for i in infos:  # one unit for every exposure: a count rate mixed in would be taken as MJy/sr
        if i["bunit"].strip() and _unit_key(i["bunit"]) not in _SURFACE_BRIGHTNESS:
            msg = (f"{i['path']}: SCI is in BUNIT {i['bunit'].strip()!r}; expected 'MJy/sr' (a calibrated _cal.fits: "
                   "the jwst pipeline's photom step, or SCI, ERR times PHOTMJSR and VAR_* times its square)")
            raise InputError(msg)

    bands = sorted({i["band"] for i in infos})
    if band is not None:
        wrong = [i["path"] for i in infos if i["band"] != band.upper()]
        if wrong:
            msg = f"{wrong[0]}: filter {_band_of(infos, wrong[0])!r}; expected {band.upper()!r} for this set"
            raise InputError(msg)
    elif single_band and len(bands) > 1:
        first = {b: next(i["path"] for i in infos if i["band"] == b) for b in bands}
        msg = f"exposures mix filters {bands} (e.g. {first}); expected one band per set"
        raise InputError(msg)

    shape = infos[0]["shape"]
    for i in infos[1:]:
        if i["shape"] != shape:
            msg = f"{i['path']}: shape {i['shape']}; expected {shape} like {infos[0]['path']}"
            raise InputError(msg)
    _check_scales(infos)

    if check_data:
        kept, why = [], {}
        for i, counts in zip(infos, _scans(infos, bits), strict=True):
            if "DQ" not in i["extensions"]:
                log.info("%s: no DQ extension; all finite pixels are taken as good", i["path"])
            reason = _excluded(i, counts, weight)
            if reason is not None:
                why[i["path"]] = reason
                warnings.warn(f"{i['path']}: {reason}; exposure excluded", ExposureExcludedWarning, stacklevel=2)
                continue
            kept.append(i)
        if not kept:
            detail = "; ".join(f"{p}: {r}" for p, r in why.items())
            msg = f"all {len(infos)} exposures are excluded ({detail}); nothing to combine"
            raise InputError(msg)
        infos = kept
    for ext in VARIANCE_EXTENSIONS:
        lacking = [str(i["path"]) for i in infos if ext not in i["extensions"]]
        if 0 < len(lacking) < len(infos):
            warnings.warn(
                f"{len(lacking)} of {len(infos)} exposures have no {ext} extension ({', '.join(lacking[:3])}"
                f"{', ...' if len(lacking) > 3 else ''}): where they land, the mosaic's {ext} and ERR miss their share of it",
                UnknownVarianceWarning, stacklevel=2,
            )

    if prefer_gwcs:
        for i in infos:
            if i["has_asdf"]:
                i["wcs"] = read_wcs(i["path"], prefer_gwcs=True)

    return infos


def read_exposures(
    paths,
    *,
    bad_bits=None,
    band: str | None = None,
    single_band: bool = True,
    check_data: bool = True,
    prefer_gwcs: bool = True,
    weight: str = "ivm",
) -> xr.Dataset:
    """Read JWST ``_cal.fits`` exposures lazily into an exposure set.

    Inputs are validated once, here: headers and WCS of every file (a truncated file, a WCS
    without a finite pixel scale or with a scale unlike the others' is an error naming the
    file); with ``check_data``, one pass over the pixels excludes, with an
    :class:`~mosaic.exceptions.ExposureExcludedWarning` naming it and why, an exposure with no
    usable pixel or (for ``weight="ivm"``) no finite, positive VAR_RNOISE, or (for
    ``weight="exptime"``) no positive exposure time; pixels beyond ±:data:`SAFE_ABS` are left
    out with an :class:`~mosaic.exceptions.ExtremeValueWarning`, and pixels with a NaN in a
    VAR_* extension the file has (an unknown error) with an
    :class:`~mosaic.exceptions.UnknownVarianceWarning`. All excluded is an error.

    Parameters
    ----------
    paths : list of path-like
        The cal files.
    bad_bits : int, str or list of str, optional
        DQ bits that make a pixel bad (default: DO_NOT_USE + NON_SCIENCE, as the JWST
        resample step does).
    band : str, optional
        Keep only this filter; exposures of other filters are an error.
    single_band : bool
        Whether exposures of more than one filter are an error.
    check_data : bool
        Read each exposure once (in row blocks) to exclude unusable ones with a warning.
    prefer_gwcs : bool
        Use the ASDF gwcs where ``stdatamodels`` is installed and the file has one.
    weight : {"ivm", "exptime", "uniform"}
        The weighting the exposures are for: what an exposure must carry to count.

    Returns
    -------
    xarray.Dataset
        dims ``(exposure, y, x)``, one dask chunk per exposure.
    """
    # dask and xarray only here: commands that read cut-outs straight from the files
    # (mosaic drizzle) validate with check_exposures and never import them
    import dask  # noqa: PLC0415
    import dask.array as da  # noqa: PLC0415
    import xarray as xr  # noqa: PLC0415

    bits = bad_bits_from(bad_bits)
    infos = check_exposures(
        paths, bad_bits=bits, band=band, single_band=single_band, check_data=check_data, prefer_gwcs=prefer_gwcs, weight=weight,
    )
    shape = infos[0]["shape"]
    data = {}
    dtypes = {"DQ": np.uint32}
    variances = []  # the variances each exposure has: one it lacks reads as NaN, but leaves its pixels usable
    for ext in EXTENSIONS:
        dtype = dtypes.get(ext, np.float32)
        arrays, present = [], []
        for i in infos:
            if ext in i["extensions"]:
                d = dask.delayed(_read_ext, pure=True)(i["path"], ext, dtype)
                arrays.append(da.from_delayed(d, shape=shape, dtype=dtype))
                present.append(arrays[-1])
            elif ext == "DQ":
                arrays.append(da.zeros(shape, dtype=dtype, chunks=shape))
            else:
                arrays.append(da.full(shape, np.nan, dtype=dtype, chunks=shape))
                present.append(da.zeros(shape, dtype=dtype, chunks=shape))
        data[ext.lower()] = (("exposure", "y", "x"), da.stack(arrays))
        if ext in VARIANCE_EXTENSIONS:
            variances.append(da.stack(present))
    sci, dq = data["sci"][1], data["dq"][1]
    good = usable(sci, dq, bits, variances)
    data["good"] = (("exposure", "y", "x"), good)

    coords = {
        "exposure": np.arange(len(infos)),
        "path": ("exposure", [i["path"] for i in infos]),
        "band": ("exposure", [i["band"] for i in infos]),
        "detector": ("exposure", [i["detector"] for i in infos]),
        "exptime": ("exposure", np.array([i["exptime"] for i in infos])),
        "photmjsr": ("exposure", np.array([i["photmjsr"] for i in infos])),
        "pixar_sr": ("exposure", np.array([i["pixar_sr"] for i in infos])),
        "wcs_header": ("exposure", [i["wcs_header"] for i in infos]),
    }
    ds = xr.Dataset(data, coords=coords)
    from mosaic.io.grid import ExposureList  # noqa: PLC0415

    ds.attrs["wcs"] = ExposureList([i["wcs"] for i in infos], names=[i["path"] for i in infos])
    ds.attrs["bad_bits"] = bits
    ds.attrs["band"] = infos[0]["band"] if len({i["band"] for i in infos}) == 1 else "MIXED"
    log.info("read %d exposures of %s (%d x %d)", len(infos), ds.attrs["band"], *shape)
    return ds


def _check_scales(infos) -> None:
    """Refuse exposures whose WCS gives no finite pixel scale, or one unlike the set's."""
    from mosaic.io.grid import _local_pixel_scale_arcsec  # noqa: PLC0415

    scales = np.array([_local_pixel_scale_arcsec(i["wcs"], i["shape"]) for i in infos])
    for i, s in zip(infos, scales, strict=True):
        if not (np.isfinite(s) and 0 < s < 3600.0 * 180.0):
            msg = f"{i['path']}: the SCI WCS gives a pixel scale of {s!r} arcsec; expected a finite, positive scale (is the WCS broken?)"
            raise LimitError(msg)
    # per band (a set of several bands may mix the SW and LW channels): the scale most exposures
    # agree with; a broken WCS is refused, not the many good ones
    for band in sorted({i["band"] for i in infos}):
        group = [k for k, i in enumerate(infos) if i["band"] == band]
        _check_agreement([infos[k] for k in group], scales[group])


def _check_agreement(infos, scales) -> None:
    agree = [np.count_nonzero(np.abs(np.log(scales / s)) <= np.log(_SCALE_FACTOR)) for s in scales]
    ref = float(np.median(scales[np.asarray(agree) == max(agree)]))
    for i, s in zip(infos, scales, strict=True):
        if abs(np.log(s / ref)) > np.log(_SCALE_FACTOR):
            msg = (
                f"{i['path']}: the SCI WCS gives {s:.4g} arcsec per pixel, the other exposures {ref:.4g}; "
                f"expected exposures of one detector scale within {_SCALE_FACTOR}x (is its WCS broken?)"
            )
            raise LimitError(msg)


#: most threads that scan exposures at once (:func:`_scans`)
SCAN_THREADS = 8


def _scans(infos: list[dict], bits: int) -> list[dict]:
    """:func:`_scan` of every exposure, in order, several at a time.

    The scans read the files and count with NumPy, which leave the GIL, so threads take them side
    by side: the 36 exposures of the flagship field (2048², seven extensions each) in 1.17 s on
    2 cores against 2.0 s one after the other (benchmarks/README.md, round 15). A damaged file's
    error is raised as the serial loop would raise it (the first in the given order).
    """
    return thread_map(functools.partial(_scan, bits=bits), infos, most=SCAN_THREADS, name="mosaic-scan")


def _scan(info: dict, bits: int, rows: int = 256) -> dict:
    """Counts over one exposure's pixels, read in row blocks: what :func:`_excluded` decides on."""
    path = info["path"]
    counts = {"pixels": 0, "flagged_ok": 0, "usable": 0, "extreme": 0, "rnoise_ok": 0, "err_bad": 0}
    counts.update({f"{ext}_nan": 0 for ext in VARIANCE_EXTENSIONS})
    try:
        with fits.open(path, memmap=True, do_not_scale_image_data=True) as hdul:
            hdus = {ext: hdul[ext] for ext in EXTENSIONS if ext in hdul}
            ny = hdus["SCI"].header["NAXIS2"]
            for y in range(0, ny, rows):
                block = {}
                for ext, hdu in hdus.items():
                    block[ext] = _unscaled(hdu, hdu.data[y : y + rows], np.uint32 if ext == "DQ" else np.float32)
                sci = block["SCI"]
                dq = block.get("DQ", np.zeros(sci.shape, np.uint32))
                variances = [block[v] for v in VARIANCE_EXTENSIONS if v in block]
                with np.errstate(invalid="ignore", over="ignore"):
                    basic = np.isfinite(sci) & ((dq & np.uint32(bits)) == 0)
                    good = usable(sci, dq, bits, variances)
                    counts["pixels"] += sci.size
                    counts["flagged_ok"] += int(basic.sum())
                    counts["usable"] += int(good.sum())
                    unknown = np.zeros(sci.shape, bool)
                    for ext in VARIANCE_EXTENSIONS:
                        if ext in block:
                            nan = basic & ~np.isfinite(block[ext])
                            counts[f"{ext}_nan"] += int(nan.sum())
                            unknown |= nan
                    counts["extreme"] += int((basic & ~good & ~unknown).sum())
                    if "VAR_RNOISE" in block:
                        v = block["VAR_RNOISE"]
                        counts["rnoise_ok"] += int((good & np.isfinite(v) & (v > 0)).sum())
                    if "ERR" in block:
                        e = block["ERR"]
                        counts["err_bad"] += int((good & ~(np.isfinite(e) & (e >= 0))).sum())
    except InputError:
        raise
    except Exception as err:  # a damaged data area: astropy raises TypeError, ValueError or OSError by case
        msg = f"{path}: pixel data cannot be read ({_one_line(err)}); expected a whole JWST _cal.fits exposure"
        raise InputError(msg) from None
    return counts


def _excluded(info: dict, counts: dict, weight: str) -> str | None:
    """Why an exposure cannot count (None: it counts); warnings and log lines for lesser faults."""
    path = info["path"]
    info["good_fraction"] = counts["usable"] / max(counts["pixels"], 1)
    if counts["extreme"]:
        warnings.warn(
            f"{path}: {counts['extreme']} pixels with SCI or VAR_* beyond ±{SAFE_ABS:g} are left out (float32 sums would overflow)",
            ExtremeValueWarning, stacklevel=3,
        )
    if counts["flagged_ok"] == 0:
        return "every pixel is NaN or flagged"
    for ext in VARIANCE_EXTENSIONS:
        if counts[f"{ext}_nan"] == counts["flagged_ok"]:
            return f"{ext} is NaN or infinite on every finite, unflagged pixel, so no pixel's error is known; expected a finite variance (or no {ext} extension at all)"
    nan = {ext: counts[f"{ext}_nan"] for ext in VARIANCE_EXTENSIONS if counts[f"{ext}_nan"]}
    if nan:
        warnings.warn(
            f"{path}: {', '.join(f'{n} finite, unflagged pixels have a NaN or infinite {ext}' for ext, n in nan.items())}; "
            "their error is unknown, so they are left out",
            UnknownVarianceWarning, stacklevel=3,
        )
    if counts["usable"] == 0:
        return f"every finite, unflagged pixel has SCI or VAR_* beyond ±{SAFE_ABS:g} or a NaN VAR_*"
    if weight == "ivm":
        if "VAR_RNOISE" not in info["extensions"]:
            return "no VAR_RNOISE extension, so its inverse-variance (ivm) weight is 0 everywhere"
        if counts["rnoise_ok"] == 0:
            return "VAR_RNOISE is zero, negative or NaN on every usable pixel, so its inverse-variance (ivm) weight is 0"
        if counts["rnoise_ok"] < counts["usable"]:
            log.warning("%s: %d usable pixels have VAR_RNOISE <= 0 or NaN; they get weight 0", path, counts["usable"] - counts["rnoise_ok"])
    if weight == "exptime" and not (np.isfinite(info["exptime"]) and info["exptime"] > 0):
        return f"exposure time {info['exptime']!r} (EFFEXPTM/EXPTIME); weight 'exptime' needs a positive one"
    if counts["err_bad"]:
        log.warning("%s: %d usable pixels have a negative or NaN ERR", path, counts["err_bad"])
    return None


def _band_of(infos, path):
    return next(i["band"] for i in infos if i["path"] == path)


class CalCutouts:
    """Read regions of cal exposures straight from the files, no dask.

    A ``cutout_reader`` for :func:`mosaic.coadd.drizzle.drizzle_mosaic`: with it, every
    (exposure, tile) task reads only its own cut-out, so a mosaic is made tile by tile in memory
    set by the tile. The arrays are those of :func:`read_exposures`: a missing VAR_* extension
    reads as NaN, a missing DQ as 0, and ``good`` is :func:`usable` (finite SCI with none of
    ``bad_bits`` set, no value beyond ±:data:`SAFE_ABS`, finite variances in the extensions
    the file has).

    A cut-out is copied out of a memory map of its file, at offsets found once per process
    (:func:`_layout`), made for the read and closed after it: only the pages of the cut-out's
    columns are read (whole rows, before: 30 % slower on a third of a 2048-wide exposure), and
    no map outlives the read (the pages of a mapped file count in the worker's resident memory:
    a worker that kept its exposures mapped would look gigabytes larger than it is, and dask's
    memory manager would spill and pause it).

    Parameters
    ----------
    paths : list of path-like
        The exposures, in the order of the exposure set.
    bad_bits : int
        DQ bits that make a pixel bad.
    """

    def __init__(self, paths, bad_bits: int):
        self.paths = [str(p) for p in paths]
        self.bad_bits = int(bad_bits)

    def prepare(self) -> CalCutouts:
        """Read every file's layout now, into this process's cache: worker processes forked
        afterwards inherit it instead of each parsing every header again."""
        for path in self.paths:
            _layout(path)
        return self

    def __call__(self, k: int, region) -> dict:
        """Exposure ``k``'s ``(y, x)`` region: sci, good, var_poisson, var_rnoise, var_flat."""
        ys, xs = region
        shape = (ys.stop - ys.start, xs.stop - xs.start)
        path = self.paths[k]
        layout = _layout(path)
        out = {}
        with open(path, "rb") as fh:
            for ext, dtype, fill in _CUTOUT_EXTENSIONS:
                lay = layout.get(ext)
                if lay is None:
                    out[ext.lower()] = np.full(shape, fill, dtype=dtype)
                elif lay.offset is None:  # not a plain image (e.g. tile-compressed): astropy reads it
                    with fits.open(path) as hdul:
                        out[ext.lower()] = np.asarray(hdul[ext].section[ys, xs], dtype=dtype)
                else:
                    out[ext.lower()] = _scaled(lay.block(fh, ys, xs), lay.bzero, lay.bscale, dtype)
        with np.errstate(invalid="ignore"):
            variances = [out[ext.lower()] for ext in VARIANCE_EXTENSIONS if ext in layout]
            out["good"] = usable(out["sci"], out.pop("dq"), self.bad_bits, variances)
        return out


#: what a cut-out holds: extension, dtype, value where the file lacks the extension
_CUTOUT_EXTENSIONS = (
    ("SCI", np.float32, np.nan),
    ("DQ", np.uint32, 0),
    ("VAR_POISSON", np.float32, np.nan),
    ("VAR_RNOISE", np.float32, np.nan),
    ("VAR_FLAT", np.float32, np.nan),
)

#: FITS BITPIX to the (big-endian) dtype of the data on disk
_BITPIX = {8: np.dtype("u1"), 16: np.dtype(">i2"), 32: np.dtype(">i4"), 64: np.dtype(">i8"), -32: np.dtype(">f4"), -64: np.dtype(">f8")}


@dataclass(frozen=True)
class _ImageLayout:
    """Where a 2-D image extension's data lie in its file (``offset`` and ``dtype`` None: not a plain image)."""

    offset: int | None
    shape: tuple[int, int]
    dtype: np.dtype | None
    bzero: float
    bscale: float

    def block(self, fh, ys: slice, xs: slice) -> np.ndarray:
        """The ``(ys, xs)`` block of the image in the open file ``fh``, as a view of a memory map
        of it (read-only; the pages of the block's columns are all that is read)."""
        end = self.offset + self.shape[0] * self.shape[1] * self.dtype.itemsize
        size = os.fstat(fh.fileno()).st_size
        if size < end:
            msg = f"{fh.name}: data end early (the file has {size} bytes, the image ends at byte {end}); expected a whole FITS image"
            raise OSError(msg)
        return np.memmap(fh, dtype=self.dtype, mode="r", offset=self.offset, shape=self.shape)[ys, xs]


def _scaled(raw, bzero, bscale, dtype) -> np.ndarray:
    """``raw * bscale + bzero`` as ``dtype``: a new array, never a view of ``raw`` (a memory map)."""
    if bzero == 0 and bscale == 1:
        return np.array(raw, dtype=dtype)
    return (np.asarray(raw, dtype=np.float64 if bscale != 1 else np.int64) * bscale + bzero).astype(dtype)


def _layout(path: str) -> dict:
    """``{ext: _ImageLayout}`` of a file's cut-out extensions, cached per process.

    Parsing a cal file's headers costs about a millisecond; a UPDC iteration reads thousands
    of cut-outs, so each worker process keeps the layouts of the files it has read. The key
    holds the file's size and modification time: a file rewritten in place is parsed again.
    """
    st = os.stat(path)
    return _layout_cached(path, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _layout_cached(path: str, size: int, mtime_ns: int) -> dict:
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("error", category=AstropyUserWarning, message=".*truncated")
            return _parse_layout(path)
    except (OSError, IndexError, KeyError, ValueError, AstropyUserWarning) as exc:  # astropy on a cut-short or damaged file
        msg = f"{path}: cannot read its FITS headers and data offsets ({type(exc).__name__}: {exc}); expected a whole _cal.fits file"
        raise OSError(msg) from exc


def _parse_layout(path: str) -> dict:
    layout = {}
    with fits.open(path, memmap=False, do_not_scale_image_data=True) as hdul:
        for ext, _, _ in _CUTOUT_EXTENSIONS:
            if ext not in hdul:
                continue
            hdu = hdul[ext]
            h = hdu.header
            plain = type(hdu) is fits.ImageHDU and h.get("NAXIS") == 2 and h.get("BITPIX") in _BITPIX
            shape = (int(h.get("NAXIS2", 0)), int(h.get("NAXIS1", 0)))
            layout[ext] = _ImageLayout(
                offset=int(hdu.fileinfo()["datLoc"]) if plain else None,
                shape=shape,
                dtype=_BITPIX[h["BITPIX"]] if plain else None,
                bzero=h.get("BZERO", 0),
                bscale=h.get("BSCALE", 1),
            )
    return layout


# -- writing -------------------------------------------------------------------------------


def write_cal(
    path,
    *,
    sci: np.ndarray,
    err: np.ndarray,
    dq: np.ndarray,
    var_poisson: np.ndarray | None,
    var_rnoise: np.ndarray | None,
    var_flat: np.ndarray | None,
    wcs: WCS,
    meta: dict,
    overwrite: bool = False,
) -> Path:
    """Write one exposure as a JWST Stage-2 ``_cal.fits`` file (written whole, then renamed).

    ``meta`` holds primary-header keywords (FILTER, DETECTOR, EXPTIME, ...); PHOTMJSR,
    PHOTUJA2, PIXAR_SR and PIXAR_A2 go in the SCI header as the pipeline puts them. A variance
    that is None or NaN everywhere (an extension the source lacked, which reads as NaN) is not
    written: a NaN variance on a good pixel makes the pixel unusable (:func:`usable`).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        msg = f"{path}: exists; pass overwrite=True to replace it"
        raise FileExistsError(msg)
    prim = fits.PrimaryHDU()
    sci_keys = {"PHOTMJSR", "PHOTUJA2", "PIXAR_SR", "PIXAR_A2", "BUNIT"}
    for k, v in meta.items():
        if k not in sci_keys:
            prim.header[k] = v
    prim.header["FILENAME"] = path.name
    hdus = [prim]
    wcs_hdr = wcs.to_header(relax=True)
    units = {"SCI": "MJy/sr", "ERR": "MJy/sr", "VAR_POISSON": "(MJy/sr)^2", "VAR_RNOISE": "(MJy/sr)^2", "VAR_FLAT": "(MJy/sr)^2"}
    arrays = {
        "SCI": sci,
        "ERR": err,
        "DQ": dq,
        "VAR_POISSON": var_poisson,
        "VAR_RNOISE": var_rnoise,
        "VAR_FLAT": var_flat,
    }
    for name, arr in arrays.items():
        dtype = np.uint32 if name == "DQ" else np.float32
        data = None if arr is None else np.asarray(arr, dtype=dtype)
        if name in VARIANCE_EXTENSIONS and (data is None or not np.isfinite(data).any()):
            continue  # a variance the source lacks (read as NaN) stays missing, not NaN on every pixel
        hdu = fits.ImageHDU(data, name=name)
        if name in units:
            hdu.header["BUNIT"] = units[name]
        if name == "SCI":
            hdu.header.update(wcs_hdr)
            for k in sci_keys - {"BUNIT"}:
                if k in meta:
                    hdu.header[k] = meta[k]
        hdus.append(hdu)
    # a random name opened exclusively: never written through a planted file or link
    tmp = path.with_name(f".{path.name}.part-{uuid.uuid4().hex[:12]}")
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), "wb") as fh:
            fits.HDUList(hdus).writeto(fh)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
