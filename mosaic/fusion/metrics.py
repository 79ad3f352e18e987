"""Quality of a fused cube against a reference, and the single-instrument cubes it must beat.

- :func:`psnr` (seed 003, eq. 10) and :func:`ssim` (eq. 11, scikit-image, 7 x 7 windows) per plane;
- :func:`spectral_angle` (SAM, degrees) per pixel, :func:`spectral_relative_error` of the
  spatially averaged spectra (appendix D.2);
- :func:`upsampled_ifu`: the IFU cube alone, cubic-spline interpolated onto the fine grid;
- :func:`nircam_only`: the NIRCam images alone, each channel the image of the narrowest filter
  that covers it (else the nearest), scaled to the IFU mean spectrum.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage
from skimage.metrics import structural_similarity

__all__ = ["psnr", "ssim", "spectral_angle", "spectral_relative_error", "upsampled_ifu", "nircam_only"]


def psnr(reference, image) -> float:
    """``10 log10(max(reference)^2 / MSE)`` in dB (eq. 10)."""
    reference, image = np.asarray(reference, float), np.asarray(image, float)
    return float(10 * np.log10(reference.max() ** 2 / np.mean((reference - image) ** 2)))


def ssim(reference, image) -> float:
    """Mean structural similarity on 7 x 7 windows (eq. 11), data range that of ``reference``."""
    reference, image = np.asarray(reference, float), np.asarray(image, float)
    return float(structural_similarity(reference, image, win_size=7, data_range=float(np.ptp(reference))))


def spectral_angle(reference, cube) -> np.ndarray:
    """Angle in degrees between the spectra of two cubes ``(n_wave, ny, nx)``, per pixel."""
    num = np.sum(reference * cube, axis=0)
    den = np.linalg.norm(reference, axis=0) * np.linalg.norm(cube, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.degrees(np.arccos(np.clip(num / den, -1.0, 1.0)))


def spectral_relative_error(reference, cube) -> np.ndarray:
    """``(mean(X) - mean(ref)) / mean(ref)`` of the spatially averaged spectra, per channel.

    ``reference`` may be on another grid (e.g. the IFU cube, as in the seed's appendix D.2).
    """
    ref = np.nanmean(reference, axis=(1, 2))
    return (np.nanmean(cube, axis=(1, 2)) - ref) / ref


def upsampled_ifu(cube, factor: int, offset=None) -> np.ndarray:
    """The IFU cube on the fine grid by periodic cubic-spline interpolation, spaxel centres at ``offset``."""
    d = int(factor)
    oy, ox = (d // 2, d // 2) if offset is None else offset
    ny, nx = cube.shape[1] * d, cube.shape[2] * d
    yy, xx = np.mgrid[:ny, :nx].astype(np.float64)
    coords = [(yy - oy) / d, (xx - ox) / d]
    return np.array([scipy.ndimage.map_coordinates(p, coords, order=3, mode="grid-wrap") for p in cube])


def nircam_only(images, throughput, mean_spectrum) -> np.ndarray:
    """A cube from the images alone: channel ``l`` = ``mean_spectrum[l] * image_f / mean(image_f)``.

    ``f`` is the narrowest filter whose throughput covers channel ``l``, or the filter whose
    throughput-weighted mean channel is nearest.
    """
    throughput = np.asarray(throughput, float)
    n_wave = throughput.shape[1]
    width = (throughput > 0).sum(axis=1)
    centre = throughput @ np.arange(n_wave) / throughput.sum(axis=1)
    scaled = images / np.mean(images, axis=(1, 2), keepdims=True)
    out = np.empty((n_wave, *images.shape[1:]))
    for lam in range(n_wave):
        covering = np.flatnonzero(throughput[:, lam] > 0)
        f = covering[np.argmin(width[covering])] if covering.size else int(np.argmin(abs(centre - lam)))
        out[lam] = mean_spectrum[lam] * scaled[f]
    return out
