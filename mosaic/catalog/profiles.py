"""A star's radial profile and curve of growth (seed 000 fig. 16), with ``photutils.profiles``.

The profile is measured on a cut-out just larger than the largest radius (aperture sums are
local), so a star in a lazy mosaic reads only its neighbourhood; the values equal the
whole-image ``RadialProfile`` / ``CurveOfGrowth``. As in fig. 16 the profile is normalised by
the flux within ``norm_radius`` and the curve of growth (encircled energy) by the flux within
``ee_radius`` (or of a reference image's star, e.g. the drizzle mosaic's).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mosaic.registry import algorithm

__all__ = ["StarProfile", "star_profile"]


@dataclass
class StarProfile:
    """Radial profile and curve of growth of one star.

    Attributes
    ----------
    radius : ndarray
        Bin centres of the radial profile (pixels).
    profile, profile_error : ndarray
        Mean surface brightness in each annulus and its error (NaN without an error map).
    cog_radius : ndarray
        Aperture radii of the curve of growth.
    cog, cog_error : ndarray
        Flux within each radius and its error.
    norm_flux : float
        Flux within ``norm_radius`` (the profile's normalisation).
    """

    radius: np.ndarray
    profile: np.ndarray
    profile_error: np.ndarray
    cog_radius: np.ndarray
    cog: np.ndarray
    cog_error: np.ndarray
    norm_flux: float

    @property
    def normalized_profile(self) -> np.ndarray:
        """Profile over the flux within ``norm_radius`` (fig. 16, left)."""
        return self.profile / self.norm_flux

    def encircled_energy(self, total: float | None = None) -> np.ndarray:
        """Curve of growth over ``total`` (default: its own last value) (fig. 16, right)."""
        return self.cog / (self.cog[-1] if total is None else total)


def _cut(a, region):
    return None if a is None else np.asarray(a[region], dtype=np.float64 if a.dtype != bool else bool)


@algorithm("catalog")
def star_profile(image, x: float, y: float, *, edge_radii, cog_radii=None, norm_radius: float | None = None, error=None, mask=None) -> StarProfile:
    """Radial profile and curve of growth of a star at ``(x, y)``.

    Parameters
    ----------
    image : array
        Background-subtracted image (NumPy or dask).
    x, y : float
        Star centre in pixels.
    edge_radii : sequence of float
        Radial bin edges of the profile (pixels, increasing, from 0 or more).
    cog_radii : sequence of float, optional
        Aperture radii of the curve of growth (default: the positive bin edges).
    norm_radius : float, optional
        Radius whose enclosed flux normalises the profile (default: the last CoG radius).
    error : array, optional
        1-sigma errors.
    mask : bool array, optional
        True where pixels are bad.
    """
    from photutils.profiles import CurveOfGrowth, RadialProfile  # noqa: PLC0415

    edge_radii = np.asarray(edge_radii, dtype=float)
    if edge_radii.ndim != 1 or edge_radii.size < 2 or np.any(np.diff(edge_radii) <= 0) or edge_radii[0] < 0:
        msg = f"edge_radii must be at least two increasing non-negative radii; got {edge_radii.tolist()!r}"
        raise ValueError(msg)
    cog_radii = edge_radii[edge_radii > 0] if cog_radii is None else np.asarray(cog_radii, dtype=float)
    norm_radius = float(cog_radii[-1] if norm_radius is None else norm_radius)
    r_max = max(edge_radii[-1], cog_radii.max(), norm_radius) + 2
    ny, nx = np.shape(image)
    if not (-0.5 <= x < nx - 0.5 and -0.5 <= y < ny - 0.5):
        msg = f"star position ({x!r}, {y!r}) lies outside the {ny} x {nx} image"
        raise ValueError(msg)
    y0, y1 = max(int(np.floor(y - r_max)), 0), min(int(np.ceil(y + r_max)) + 1, ny)
    x0, x1 = max(int(np.floor(x - r_max)), 0), min(int(np.ceil(x + r_max)) + 1, nx)
    region = (slice(y0, y1), slice(x0, x1))
    data = np.asarray(image[region], dtype=np.float64)
    err, msk = _cut(error, region), _cut(mask, region)
    xy = (x - x0, y - y0)
    rp = RadialProfile(data, xy, edge_radii, error=err, mask=msk)
    cog = CurveOfGrowth(data, xy, cog_radii, error=err, mask=msk)
    # CurveOfGrowth needs two radii; the flux within the outer one is the normalisation
    norm = CurveOfGrowth(data, xy, [0.5 * norm_radius, norm_radius], error=err, mask=msk).profile[-1]
    nan = np.full(len(rp.radius), np.nan)
    return StarProfile(
        radius=np.asarray(rp.radius),
        profile=np.asarray(rp.profile),
        profile_error=nan if err is None else np.asarray(rp.profile_error),
        cog_radius=np.asarray(cog.radius),
        cog=np.asarray(cog.profile),
        cog_error=np.full(len(cog_radii), np.nan) if err is None else np.asarray(cog.profile_error),
        norm_flux=float(norm),
    )
