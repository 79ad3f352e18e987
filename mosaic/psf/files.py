"""PSF files: read, validate, resample to the output grid, group exposures that share one.

A PSF file is a FITS image (primary HDU, or the first image extension with data, or the one
named by ``ext``) with odd square sides, centred on its middle pixel, and its pixel scale in
arcsec in the ``PIXELSCL`` keyword (as WebbPSF and :func:`write_psf` write it). Reading
validates and normalises it to sum 1; a PSF sampled differently from the output grid is
resampled onto the grid's pixels.

*Resampling.* The PSF is treated as band-limited (the optics cut off at ``D / lambda``) and
its pixel values as integrals over pixels of width ``s_in``. Its centred DFT is divided by the
input pixel response ``sinc(f s_in)``, multiplied by the output one ``sinc(f s_out)`` and
evaluated at the output pixel centres, one axis at a time (an ``n_out x n_in`` real matrix per
axis). This is sinc interpolation of the density followed by exact integration over each output
pixel: flux is conserved and, for a PSF sampled at or finer than Nyquist, the result agrees
with a PSF computed directly at the output sampling to ~1e-6 of its peak from a 2x finer one
(~2e-4 for other ratios, the accuracy of the reference's own pixel integration), where a cubic
spline on the cumulative flux gets ~1e-3. An undersampled PSF rings a little (negative wing
pixels of ~1e-6 of the peak for F090W at 0.0155 arcsec). The output keeps the centre on the middle
pixel, and its odd size is the largest that stays inside the input field, because the DFT
interpolant is periodic beyond it.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.fft
from astropy.io import fits

from mosaic.exceptions import InputError
from mosaic.registry import algorithm

__all__ = ["check_psf", "read_psf", "write_psf", "psf_files_for", "psf_groups", "exposure_stem", "resample_psf"]

log = logging.getLogger(__name__)

#: Two PSF files are one PSF when their normalised values differ by at most this fraction of the peak.
SAME_PSF_TOLERANCE = 1e-6

#: relative difference of pixel scales below which a PSF is used as it is
SCALE_RTOL = 1e-6

#: the least sum of a PSF relative to the sum of its absolute values: below it the negative
#: pixels cancel most of the light (a mean-subtracted or differenced image), and normalising
#: such a PSF to sum 1 blows its values up
MIN_SUM_FRACTION = 0.5

_SCALE_KEY = "PIXELSCL"
#: suffixes of exposure products that share the PSF of their exposure (cal, outliers, 1/f)
_PRODUCT_SUFFIXES = ("_cal", "_crf", "_1fc", "_bkg")


def _psf_hdu(hdul, path: Path, ext):
    if ext is not None:
        try:
            return hdul[ext]
        except (KeyError, IndexError):
            names = [h.name for h in hdul]
            msg = f"{path}: no extension {ext!r}; expected one of {names}"
            raise InputError(msg) from None
    for hdu in hdul:
        if isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU) and hdu.data is not None:
            return hdu
    msg = f"{path}: no image data; expected a 2-D PSF in the primary HDU or an image extension"
    raise InputError(msg)


def _check_array(psf, where: str) -> np.ndarray:
    """Validated float64 copy of a PSF array; ``where`` names its origin in errors."""
    psf = np.asarray(psf)
    if psf.ndim != 2:
        msg = f"{where}: PSF has shape {psf.shape!r}; expected a 2-D image (ny, nx)"
        raise InputError(msg)
    ny, nx = psf.shape
    if ny != nx:
        msg = f"{where}: PSF has shape {psf.shape!r}; expected a square image"
        raise InputError(msg)
    if ny % 2 == 0:
        msg = f"{where}: PSF has even size {ny}; expected odd sides so that the centre is a pixel"
        raise InputError(msg)
    if not (np.issubdtype(psf.dtype, np.floating) or np.issubdtype(psf.dtype, np.integer)):
        msg = f"{where}: PSF has dtype {psf.dtype!r}; expected real numbers"
        raise InputError(msg)
    psf = psf.astype(np.float64)
    n_bad = int(np.count_nonzero(~np.isfinite(psf)))
    if n_bad:
        msg = f"{where}: PSF has {n_bad} NaN or infinite pixels; expected finite values"
        raise InputError(msg)
    total = float(psf.sum())
    if total < 0:
        msg = f"{where}: PSF has a negative total {total!r}; expected a positive sum to normalise to 1"
        raise InputError(msg)
    if not total > np.finfo(np.float64).tiny:
        msg = f"{where}: PSF sums to {total!r}, so it cannot be normalised; expected a positive sum"
        raise InputError(msg)
    absolute = float(np.abs(psf).sum())
    if total < MIN_SUM_FRACTION * absolute:
        msg = (
            f"{where}: PSF sums to {total:.3g} against {absolute:.3g} for its absolute values, so negative pixels cancel "
            f"most of its light (a mean-subtracted image?); expected a PSF whose sum is at least {MIN_SUM_FRACTION} of its absolute sum"
        )
        raise InputError(msg)
    return psf


def _header_scale(header, path: Path) -> float | None:
    if _SCALE_KEY not in header:
        return None
    value = header[_SCALE_KEY]
    try:
        scale = float(value)
    except (TypeError, ValueError):
        scale = float("nan")
    if not (np.isfinite(scale) and scale > 0):
        msg = f"{path}: {_SCALE_KEY} = {value!r}; expected a positive pixel scale in arcsec"
        raise InputError(msg)
    return scale


def _load(path, ext=None) -> tuple[np.ndarray, float | None, Path]:
    """The validated, normalised PSF of a file and its header pixel scale (or None)."""
    path = Path(path)
    if not path.is_file():
        msg = f"{path}: no such PSF file; expected a FITS image with the PSF"
        raise InputError(msg)
    try:
        with fits.open(path, memmap=False) as hdul:
            hdu = _psf_hdu(hdul, path, ext)
            data = None if hdu.data is None else np.array(hdu.data)
            header = hdu.header.copy()
            primary = hdul[0].header.copy()
    except InputError:
        raise
    except (OSError, ValueError, TypeError) as err:
        msg = f"{path}: cannot be read as FITS ({err}); expected a FITS image with the PSF"
        raise InputError(msg) from None
    if data is None:
        msg = f"{path}: extension {ext!r} has no data; expected a 2-D PSF"
        raise InputError(msg)
    psf = _check_array(data, str(path))
    scale = _header_scale(header, path)
    if scale is None:
        scale = _header_scale(primary, path)
    return psf / psf.sum(), scale, path


def _resample_matrix(n_in: int, scale_in: float, n_out: int, scale_out: float) -> np.ndarray:
    """``(n_out, n_in)`` real matrix taking pixel fluxes at ``scale_in`` to ``scale_out``.

    Row ``m`` integrates the sinc-interpolated density over output pixel ``m``; both grids are
    centred on their middle pixels (``n_in`` odd, so the DFT has no Nyquist term).
    """
    k = np.arange(n_in) - (n_in - 1) // 2
    ratio = scale_out / scale_in
    # pixel response: out of the input pixel box, into the output pixel box
    response = ratio * np.sinc(k * ratio / n_in) / np.sinc(k / n_in)
    m = np.arange(n_out) - (n_out - 1) / 2
    at_out = np.exp(2j * np.pi * np.outer(m * ratio, k) / n_in) * response
    # the sum over k against exp(-2 pi i k j / n) is a centred DFT along axis 1
    shifted = scipy.fft.ifftshift(at_out, axes=1)
    matrix = scipy.fft.fftshift(scipy.fft.fft(shifted, axis=1), axes=1)
    return matrix.real / n_in


@algorithm("psf")
def resample_psf(psf, *, scale_in: float, scale_out: float) -> np.ndarray:
    """A PSF given at ``scale_in`` arcsec/px, resampled to ``scale_out`` and normalised.

    Parameters
    ----------
    psf : numpy.ndarray
        Square PSF with odd sides, centred on its middle pixel, pixel-integrated.
    scale_in, scale_out : float
        Pixel scales (any one unit, e.g. arcsec) of the input and the output.

    Returns
    -------
    numpy.ndarray
        float64, odd square, centred, summing to 1; its side is the largest odd number of
        ``scale_out`` pixels inside the input field (at least 1).
    """
    psf = _check_array(psf, "resample_psf")
    for name, value in (("scale_in", scale_in), ("scale_out", scale_out)):
        if not (np.isfinite(value) and value > 0):
            msg = f"{name} must be a positive pixel scale; got {value!r}"
            raise InputError(msg)
    n_in = psf.shape[0]
    fits_in = int(np.floor(n_in * scale_in / scale_out * (1 + 1e-12)))
    n_out = max(1, fits_in - (1 - fits_in % 2))
    matrix = _resample_matrix(n_in, scale_in, n_out, scale_out)
    out = matrix @ psf @ matrix.T
    total = out.sum()
    if not total > 0:
        msg = f"resampled PSF sums to {total!r}; expected a positive sum (is the input field too small?)"
        raise InputError(msg)
    return out / total


def read_psf(path, *, pixel_scale_arcsec: float | None = None, ext=None) -> tuple[np.ndarray, float | None]:
    """Read a PSF file: validated, normalised to sum 1, on the requested sampling.

    Parameters
    ----------
    path : path-like
        FITS file with the PSF image and its ``PIXELSCL`` (arcsec/px).
    pixel_scale_arcsec : float, optional
        Pixel scale of the output grid. A PSF sampled differently is resampled onto it
        (see the module notes), and that is logged.
    ext : int or str, optional
        HDU to read (e.g. ``"DET_SAMP"`` of a WebbPSF file); by default the primary HDU, or
        the first image extension with data.

    Returns
    -------
    psf : numpy.ndarray
        float64, odd square, summing to 1.
    scale_arcsec : float or None
        Its pixel scale: ``pixel_scale_arcsec`` where given, else ``PIXELSCL`` (None if absent).

    Raises
    ------
    mosaic.exceptions.InputError
        Naming the file: missing or unreadable, no image, not 2-D, not square, even size,
        NaN or infinite pixels, a total that is zero or negative, a bad ``PIXELSCL``, or no
        ``PIXELSCL`` when a pixel scale is requested.
    """
    psf, scale, path = _load(path, ext)
    if pixel_scale_arcsec is None:
        return psf, scale
    target = float(pixel_scale_arcsec)
    if not (np.isfinite(target) and target > 0):
        msg = f"pixel_scale_arcsec must be positive; got {pixel_scale_arcsec!r}"
        raise InputError(msg)
    if scale is None:
        msg = f"{path}: no {_SCALE_KEY} keyword; expected the PSF's pixel scale in arcsec to compare with {target!r}"
        raise InputError(msg)
    if abs(scale - target) <= SCALE_RTOL * target:
        return psf, target
    out = resample_psf(psf, scale_in=scale, scale_out=target)
    log.info(
        "%s: PSF resampled from %.6g to %.6g arcsec/px (%d -> %d px)",
        path, scale, target, psf.shape[0], out.shape[0],
    )
    return out, target


def check_psf(path, *, ext=None) -> tuple[int, float | None]:
    """Validate a PSF file as :func:`read_psf` does, without resampling: its side and ``PIXELSCL``.

    Raises
    ------
    mosaic.exceptions.InputError
        As :func:`read_psf`, naming the file.
    """
    psf, scale, _ = _load(path, ext)
    return psf.shape[0], scale


def exposure_stem(path) -> str:
    """The stem that names an exposure's PSF: the file name less ``.fits`` and its product suffixes.

    ``jw..._nrcb1_cal.fits``, ``..._cal_1fc.fits`` and ``..._cal_1fc_crf.fits`` (preprocessed
    copies keep the PSF of their exposure) all give ``jw..._nrcb1``.
    """
    stem = Path(path).name.removesuffix(".fits")
    while stem.endswith(_PRODUCT_SUFFIXES):
        stem = stem[:-4]
    return stem


def psf_files_for(exposure_paths: Sequence, band: str, *, psf=None, psf_dir=None) -> list[Path]:
    """The PSF file of every exposure: ``psf`` for all, or one per exposure from ``psf_dir``.

    In ``psf_dir``, exposure ``<stem>_cal.fits`` (see :func:`exposure_stem`) takes
    ``<stem>_psf.fits`` if present, else the band's ``psf_<band>.fits`` (as ``mosaic simulate``
    writes them).

    Parameters
    ----------
    exposure_paths : sequence of path-like
        The exposures.
    band : str
        Their filter, e.g. ``"F200W"``.
    psf : path-like, optional
        One PSF file for all exposures.
    psf_dir : path-like, optional
        A folder of PSF files. Give exactly one of ``psf`` and ``psf_dir``.

    Returns
    -------
    list of pathlib.Path
        In exposure order.

    Raises
    ------
    InputError
        When neither or both of ``psf`` and ``psf_dir`` are given, the file or folder does not
        exist, or an exposure has no PSF in the folder (the message names it and the files tried).
    """
    if (psf is None) == (psf_dir is None):
        msg = f"give exactly one of psf= (one PSF for all exposures) or psf_dir= (one per exposure); got psf={psf!r}, psf_dir={psf_dir!r}"
        raise InputError(msg)
    if psf is not None:
        path = Path(psf)
        if not path.is_file():
            msg = f"{path}: no such PSF file; expected a FITS image of the PSF with PIXELSCL"
            raise InputError(msg)
        return [path] * len(exposure_paths)
    folder = Path(psf_dir)
    if not folder.is_dir():
        msg = f"{folder}: not a directory; expected a folder of PSF files (<stem>_psf.fits or psf_<band>.fits)"
        raise InputError(msg)
    out = []
    for p in exposure_paths:
        stem = exposure_stem(p)
        tried = [folder / f"{stem}_psf.fits", folder / f"psf_{band.lower()}.fits"]
        found = next((t for t in tried if t.is_file()), None)
        if found is None:
            msg = f"{p}: no PSF in {folder}; expected one of {[t.name for t in tried]}"
            raise InputError(msg)
        out.append(found)
    return out


def psf_groups(psf_paths_per_exposure: Sequence) -> dict[Path, list[int]]:
    """Group exposures that share a PSF, so that they can share one convolution.

    Two exposures share a PSF when they name the same file, or files whose normalised PSFs
    have the same shape and ``PIXELSCL`` and agree to ``SAME_PSF_TOLERANCE`` of the peak (a
    copy renormalised or written at another precision is the same PSF; bit-for-bit equality
    would depend on the order of the normalising sum).

    Parameters
    ----------
    psf_paths_per_exposure : sequence of path-like
        The PSF file of each exposure, in exposure order.

    Returns
    -------
    dict
        ``{path: [exposure indices]}``, keyed by the first path of each group (as given),
        in order of first appearance; every exposure is in exactly one group.
    """
    groups: dict[Path, list[int]] = {}
    representatives: list[tuple[Path, np.ndarray, float | None]] = []
    key_of_file: dict[str, Path] = {}
    for k, given in enumerate(psf_paths_per_exposure):
        if given is None:
            msg = f"exposure {k} has no PSF file (got None); expected a path for every exposure"
            raise InputError(msg)
        path = Path(given)
        real = os.path.realpath(path)
        key = key_of_file.get(real)
        if key is None:
            psf, scale, _ = _load(path)
            key = next((first for first, rep, s in representatives if _same_psf(psf, scale, rep, s)), None)
            if key is None:
                representatives.append((path, psf, scale))
                key = path
            key_of_file[real] = key
        groups.setdefault(key, []).append(k)
    log.debug("%d exposures share %d PSFs", sum(len(v) for v in groups.values()), len(groups))
    return groups


def _same_psf(a: np.ndarray, scale_a, b: np.ndarray, scale_b) -> bool:
    """Whether two normalised PSFs are one: same shape and pixel scale, values within the tolerance of the peak."""
    if a.shape != b.shape or scale_a != scale_b:
        return False
    return bool(np.max(np.abs(a - b)) <= SAME_PSF_TOLERANCE * max(np.max(np.abs(a)), np.max(np.abs(b))))


def write_psf(path, psf, *, pixel_scale_arcsec: float, band: str | None = None) -> Path:
    """Write a PSF to a FITS file, whole or not at all.

    Parameters
    ----------
    path : path-like
        Destination; replaced if it exists.
    psf : numpy.ndarray
        Odd square PSF (validated; written as float64, as given).
    pixel_scale_arcsec : float
        Its pixel scale, stored as ``PIXELSCL``.
    band : str, optional
        Filter name, stored as ``FILTER``.

    Returns
    -------
    pathlib.Path
    """
    path = Path(path)
    psf = _check_array(psf, str(path))
    scale = float(pixel_scale_arcsec)
    if not (np.isfinite(scale) and scale > 0):
        msg = f"{path}: pixel_scale_arcsec must be positive; got {pixel_scale_arcsec!r}"
        raise InputError(msg)
    header = fits.Header()
    header[_SCALE_KEY] = (scale, "arcsec / pixel")
    if band is not None:
        header["FILTER"] = str(band).upper()
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        # exclusive: never through a planted file or link
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), "wb") as fh:
            fits.PrimaryHDU(psf, header=header).writeto(fh)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
