"""One global, robust intensity transform shared by training and (tiled) inference.

The network sees ``u = asinh((x - sky) / (softening * sigma))``: ``sky`` and ``sigma`` are the
sigma-clipped median and standard deviation of the whole image (one pair per image, never per
tile, so tiles agree and no seam is made), ``softening`` is in units of the noise. The transform
is linear within a few sigma of the sky and logarithmic for bright sources, so a field with
stars five decades above the noise stays in a range a small network handles. Uncovered (NaN)
pixels are set to the sky (``u = 0``). Pure NumPy/dask: no PyTorch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

__all__ = ["Normalisation", "estimate_normalisation", "SOFTENING", "MAX_SAMPLES"]

log = logging.getLogger(__name__)

#: width of the linear part of the transform, in units of the sky noise sigma
SOFTENING = 3.0
#: at most this many pixels (a regular sub-grid) enter the global statistics
MAX_SAMPLES = 4_000_000


@dataclass(frozen=True)
class Normalisation:
    """The global transform of one image: ``u = asinh((x - sky) / scale)``."""

    sky: float
    sigma: float
    softening: float = SOFTENING

    @property
    def scale(self) -> float:
        return self.softening * self.sigma

    def forward(self, x):
        """Image (NaN where uncovered) to network space (float32, 0 where uncovered)."""
        u = np.arcsinh((np.asarray(x, dtype=np.float64) - self.sky) / self.scale)
        return np.where(np.isfinite(u), u, 0.0).astype(np.float32)

    def inverse(self, u):
        """Network space back to the image's units and sky level."""
        return (self.sky + self.scale * np.sinh(np.asarray(u, dtype=np.float64))).astype(np.float32)


def estimate_normalisation(image, *, softening: float = SOFTENING) -> Normalisation:
    """The sky and noise of a whole image (NumPy or dask), from a regular sub-grid of its pixels.

    Parameters
    ----------
    image : array_like or dask.array.Array
        The image; NaN pixels are left out.
    softening : float
        Linear width of the transform in units of sigma.

    Returns
    -------
    Normalisation

    Raises
    ------
    ValueError
        When the image has no finite pixel or no noise (sigma 0).
    """
    from mosaic.image.stats import sigma_clipped_stats  # noqa: PLC0415

    ny, nx = image.shape
    step = max(1, int(np.ceil(np.sqrt(ny * nx / MAX_SAMPLES))))
    # a FITS-backed array reads a strided slice in bands of whole rows (mosaic.io.images)
    _, sky, sigma = sigma_clipped_stats(image[::step, ::step], sigma=3.0, maxiters=10)
    if not (np.isfinite(sky) and np.isfinite(sigma) and sigma > 0):
        msg = f"image of shape {image.shape}: sky {sky!r} and noise {sigma!r} not measurable; expected finite pixels with noise"
        raise ValueError(msg)
    log.info("global normalisation: sky %.6g, sigma %.6g (every %d-th pixel)", sky, sigma, step)
    return Normalisation(float(sky), float(sigma), float(softening))

