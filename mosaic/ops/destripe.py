"""1/f striping of one NIRCam exposure: per-amplifier row pattern and column pattern.

NIRCam reads a full-frame detector through four outputs (amplifiers), each 512 columns wide
along x, along rows at the same time; low-frequency (1/f) noise in the readout adds a level to
each row of each amplifier. The pattern is measured as in C. Willott's ``remstriping`` script
(the one the UPDC paper used, seed 000 sec. 2.1): subtract a smooth background (sigma-clipped
meshes, :class:`photutils.background.Background2D`), mask sources (a smoothed threshold above
the background noise, dilated), then take per row and per amplifier the sigma-clipped median
of what is left, and after removing that, per column the sigma-clipped median over the whole
height. Only the pattern is removed; the sky background stays in the data.

The operator runs on NumPy arrays (photutils and scipy have no CuPy path); CuPy input is
moved to the host and the result moved back.
"""

from __future__ import annotations

import warnings

import numpy as np
from astropy.stats import sigma_clip
from photutils.background import Background2D, MedianBackground
from scipy import ndimage

from mosaic.ops.convolve import array_module
from mosaic.registry import algorithm

__all__ = ["FULL_FRAME_WIDTH", "N_FULL_FRAME_AMPS", "amplifier_slices", "source_mask", "stripe_model"]

#: width of a NIRCam full-frame detector, and its number of amplifiers along x
FULL_FRAME_WIDTH = 2048
N_FULL_FRAME_AMPS = 4


def amplifier_slices(nx: int, n_amps: int | None = None) -> list[slice]:
    """Column ranges of the amplifiers of a detector ``nx`` pixels wide.

    Parameters
    ----------
    nx : int
        Width of the image (columns).
    n_amps : int, optional
        Number of amplifiers (equal widths; ``nx`` must divide by it). By default four when
        ``nx`` is 2048 (a full frame: four 512-column outputs) and one otherwise, since
        subarrays are read through one output (JWST's NOUTPUTS keyword says which).

    Returns
    -------
    list of slice
    """
    if n_amps is None:
        n_amps = N_FULL_FRAME_AMPS if nx == FULL_FRAME_WIDTH else 1
    if int(n_amps) != n_amps or n_amps < 1 or nx % int(n_amps):
        msg = f"n_amps {n_amps!r} does not split {nx} columns into equal amplifiers; expected a divisor of {nx} (4 for a full frame, 1 for a subarray)"
        raise ValueError(msg)
    width = nx // int(n_amps)
    return [slice(a * width, (a + 1) * width) for a in range(int(n_amps))]


def _clipped_median(values, *, axis: int, sigma: float, min_pixels: int):
    """Sigma-clipped median along ``axis`` over finite values, interpolated where fewer than ``min_pixels``."""
    clipped = sigma_clip(np.ma.masked_invalid(values), sigma=sigma, maxiters=5, axis=axis, masked=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # rows with every pixel masked
        med = np.ma.median(clipped, axis=axis)
    n = np.ma.count(clipped, axis=axis)
    out = np.ma.filled(med.astype(np.float64), np.nan)
    ok = (n >= min_pixels) & np.isfinite(out)
    if not ok.any():
        return np.zeros(out.shape)
    # rows (columns) hidden behind a source: 1/f noise is dominated by low frequencies, so the
    # pattern there is interpolated from the nearest measured rows
    idx = np.arange(out.size)
    return np.interp(idx, idx[ok], out[ok])


def _background(data, good, box_size: int):
    """Smooth background and its rms: sigma-clipped median meshes, 3 x 3 median filter."""
    ny, nx = data.shape
    box = (min(box_size, ny), min(box_size, nx))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # photutils warns on meshes it has to exclude
        bkg = Background2D(
            np.where(good, data, 0.0), box, mask=~good, filter_size=(3, 3),
            bkg_estimator=MedianBackground(), exclude_percentile=50.0,
        )
    return bkg.background, float(np.nanmedian(bkg.background_rms))


def source_mask(data, *, good=None, box_size: int = 256, nsigma: float = 3.0, smooth: float = 1.5, dilate: int = 2):
    """Sources of an exposure: a smoothed threshold above the background noise, dilated.

    Parameters
    ----------
    data : 2-D array
        The exposure; NaN pixels are bad.
    good : 2-D array of bool, optional
        Pixels to use (default: finite ones).
    box_size : int
        Mesh size (pixels) of the background.
    nsigma : float
        Threshold above the background in units of the smoothed image's noise.
    smooth : float
        Gaussian sigma (pixels) of the smoothing that brings out faint extended wings.
    dilate : int
        Pixels the mask grows by (covers the wings below the threshold).

    Returns
    -------
    2-D array of bool
        True on sources.
    """
    data = np.asarray(data, dtype=np.float64)
    good = np.isfinite(data) if good is None else (np.asarray(good, bool) & np.isfinite(data))
    background, _ = _background(data, good, box_size)
    resid = np.where(good, data - background, 0.0)
    smoothed = ndimage.gaussian_filter(resid, smooth) if smooth > 0 else resid
    norm = ndimage.gaussian_filter(good.astype(float), smooth) if smooth > 0 else good.astype(float)
    smoothed = np.where(norm > 0.2, smoothed / np.maximum(norm, 1e-12), 0.0)
    s = sigma_clip(np.ma.masked_array(smoothed, ~good), sigma=3.0, maxiters=10)
    noise = float(np.ma.std(s))
    mask = good & (smoothed > nsigma * noise)
    if dilate > 0:
        mask = ndimage.binary_dilation(mask, iterations=int(dilate))
    return mask


@algorithm("preprocessing")
def stripe_model(
    data,
    *,
    good=None,
    mask=None,
    n_amps: int | None = None,
    columns: bool = True,
    box_size: int = 256,
    sigma: float = 3.0,
    min_pixels: int = 10,
):
    """The 1/f stripe pattern of an exposure: per-amplifier rows plus whole-height columns.

    Parameters
    ----------
    data : 2-D array
        The exposure (SCI); NaN pixels are bad.
    good : 2-D array of bool, optional
        Pixels to use (default: finite ones).
    mask : 2-D array of bool, optional
        Sources to leave out (default: :func:`source_mask`).
    n_amps : int, optional
        Amplifiers along x (see :func:`amplifier_slices`: four for a 2048-wide full frame,
        one otherwise).
    columns : bool
        Also remove a column pattern (sigma-clipped median over the whole height).
    box_size : int
        Mesh size (pixels) of the smooth background taken out before measuring. Stripe
        components on scales longer than this along y are taken for background and stay.
    sigma : float
        Clipping threshold of the row and column medians.
    min_pixels : int
        Rows (or columns) of an amplifier with fewer usable pixels (behind a large source)
        take the pattern interpolated from the nearest measured ones.

    Returns
    -------
    2-D array
        The pattern (same shape and array module as ``data``, float32); subtract it.
    """
    xp = array_module(data)
    host = np.asarray(data.get() if xp is not np else data, dtype=np.float64)
    if host.ndim != 2:
        msg = f"data has shape {host.shape}; expected a 2-D exposure"
        raise ValueError(msg)
    ok = np.isfinite(host)
    if good is not None:
        ok &= np.asarray(good.get() if hasattr(good, "get") else good, bool)
    if not ok.any():
        msg = "data has no finite, good pixel; expected an exposure with data"
        raise ValueError(msg)
    amps = amplifier_slices(host.shape[1], n_amps)
    background, _ = _background(host, ok, box_size)
    if mask is None:
        mask = source_mask(host, good=ok, box_size=box_size)
    elif np.shape(mask) != host.shape:
        msg = f"mask has shape {np.shape(mask)}; expected the data's {host.shape}"
        raise ValueError(msg)
    use = ok & ~np.asarray(mask.get() if hasattr(mask, "get") else mask, bool)
    resid = np.where(use, host - background, np.nan)
    row_model = np.zeros(host.shape, dtype=np.float64)
    col_model = np.zeros(host.shape, dtype=np.float64)
    # a column pattern shifts the row medians of rows whose sources hide some columns: a
    # second pass measures the rows again with the columns taken out (exact for a noiseless pattern)
    for _ in range(2 if columns else 1):
        for cols in amps:
            rows = _clipped_median((resid - col_model)[:, cols], axis=1, sigma=sigma, min_pixels=min_pixels)
            row_model[:, cols] = rows[:, None]
        if columns:
            col_model[:] = _clipped_median(resid - row_model, axis=0, sigma=sigma, min_pixels=min_pixels)[None, :]
    model = row_model + col_model
    model = model.astype(np.float32)
    return model if xp is np else xp.asarray(model)
