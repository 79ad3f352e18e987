"""Smooth sources injected into training patches, so that the network learns that they are real.

The simulated fields hold bright stars, whose PSF wings (smooth, bright, no core of their own)
must vanish in the target; galaxies there are mostly faint. A network trained on them alone
learned to erase every bright smooth pattern, bright galaxies included. :class:`BlobBank` renders
elliptical Gaussian and exponential profiles (half-light-like widths 0.7-4 px) twice: through the
drizzle mosaic's PSF (the input) and through the reference PSF (the target); training adds them,
in linear units, at random positions and brightnesses to a share of its patches.

The drizzle PSF is the band's optical PSF on the output grid (:func:`mosaic.psf.model.jwst_psf`,
integrated over the output pixel) spread by the detector pixel and by the drizzle kernel (square,
pixfrac 1), each a box ``1 / psr`` output pixels wide. NumPy/SciPy only.
"""

from __future__ import annotations

import functools
import logging

import numpy as np
from scipy.signal import fftconvolve

from mosaic.restore.data import reference_psf

__all__ = ["drizzle_psf", "BlobBank"]

log = logging.getLogger(__name__)


def _box(width: float) -> np.ndarray:
    """A centred 1-D box of ``width`` pixels, pixel-integrated, summing to 1."""
    h = width / 2
    n = int(np.ceil(h - 0.5))
    x = np.arange(-n, n + 1)
    w = np.clip(np.minimum(x + 0.5, h) - np.maximum(x - 0.5, -h), 0, None)
    return w / w.sum()


@functools.lru_cache(maxsize=4)
def drizzle_psf(band: str, pixel_scale_arcsec: float, psr: float, *, size: int = 51) -> np.ndarray:
    """The PSF of a drizzle mosaic (see the module docstring), ``size`` square, summing to 1."""
    from mosaic.psf.model import jwst_psf  # noqa: PLC0415

    psf = jwst_psf(band, pixel_scale_arcsec=pixel_scale_arcsec, size=size, oversample=4, n_wavelengths=3)
    b = _box(1.0 / psr)
    box = np.outer(b, b)
    psf = fftconvolve(fftconvolve(psf, box, mode="same"), box, mode="same")
    return psf / psf.sum()


class BlobBank:
    """Unit-flux smooth sources as (input, target) stamps, drawn once from a seeded generator.

    Parameters
    ----------
    psf : ndarray
        The drizzle PSF on the output grid.
    reference_fwhm_px : float
        FWHM of the targets' Gaussian reference PSF.
    n : int
        Number of shapes.
    stamp : int
        Odd side of the stamps.
    seed : int
    """

    def __init__(self, psf, reference_fwhm_px: float, *, n: int = 96, stamp: int = 41, seed: int = 0):
        rng = np.random.default_rng([seed, 7])
        h = stamp // 2
        yy, xx = np.mgrid[-h : h + 1, -h : h + 1].astype(float)
        ref = reference_psf(reference_fwhm_px)
        self.inputs, self.targets = [], []
        for k in range(n):
            width = np.exp(rng.uniform(np.log(0.7), np.log(4.0)))
            q, theta = rng.uniform(0.4, 1.0), rng.uniform(0, np.pi)
            dy, dx = rng.uniform(-0.5, 0.5, 2)
            c, s = np.cos(theta), np.sin(theta)
            a = (xx - dx) * c + (yy - dy) * s
            b = (-(xx - dx) * s + (yy - dy) * c) / q
            r = np.hypot(a, b) / width
            shape = np.exp(-0.5 * r**2) if k % 2 == 0 else np.exp(-1.68 * r)  # Gaussian or exponential (r: ~half-light)
            shape /= shape.sum()
            self.inputs.append(fftconvolve(shape, psf, mode="same").astype(np.float32))
            self.targets.append(fftconvolve(shape, ref, mode="same").astype(np.float32))
        self.stamp = stamp

    def add(self, x_lin, y_lin, rng: np.random.Generator, *, peak_range=(0.3, 1000.0), count=(1, 3)) -> None:
        """Add ``count`` random sources to a patch pair in place (linear units of the field's scale).

        Each source's target peak is log-uniform in ``peak_range`` (1 is ``softening`` sigma), its
        centre anywhere in the patch.
        """
        ny, nx = x_lin.shape
        h = self.stamp // 2
        for _ in range(rng.integers(count[0], count[1] + 1)):
            k = rng.integers(len(self.inputs))
            flux = np.exp(rng.uniform(*np.log(peak_range))) / self.targets[k].max()
            cy, cx = rng.integers(0, ny), rng.integers(0, nx)
            y0, y1, x0, x1 = max(cy - h, 0), min(cy + h + 1, ny), max(cx - h, 0), min(cx + h + 1, nx)
            s = (slice(y0 - cy + h, y1 - cy + h), slice(x0 - cx + h, x1 - cx + h))
            x_lin[y0:y1, x0:x1] += flux * self.inputs[k][s]
            y_lin[y0:y1, x0:x1] += flux * self.targets[k][s]
