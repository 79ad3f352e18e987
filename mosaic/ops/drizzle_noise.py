"""The correlated noise of a drizzle mosaic: how far an aperture's noise exceeds ``sqrt(sum ERR²)``.

Drizzle spreads each input pixel's value (and noise) over every output pixel its *drop* overlaps,
so neighbouring output pixels share noise. ERR, propagated per output pixel, is right pixel by
pixel, but the error of a sum over an aperture, ``sqrt(sum ERR²)`` as photutils and SEP report it,
leaves out the covariances: the true error is larger by a factor ``F(r)`` that grows with the
aperture from 1 towards Casertano et al. (2000)'s large-area ratio (2.4 for a drop of 2 output
pixels: ``pixfrac`` 1 at a pixel-scale ratio of 0.5).

The model. A drop is a square of side ``s = pixfrac / pixel_scale_ratio`` output pixels (the
square and turbo kernels). The share of an input pixel that lands in an output pixel is the
overlap of the drop and the pixel, ``g = box_s * box_1`` of their offset along each axis; over
the many dithered exposures and pixel phases of a mosaic, the covariance of two output pixels is
the autocorrelation of ``g``, ``(tri_s * tri_1)(Δ)`` per axis (``tri_a`` the autocorrelation of a
box of side ``a``). So the correlation at a lag ``(Δx, Δy)`` is ``ρ(Δx) ρ(Δy)``, and for an
aperture whose pixels have the weights ``w`` (photutils' exact share of each pixel in a circle)::

    F² = Σ_pq w_p w_q ρ(p - q) / Σ_p w_p

(photutils' error is ``sqrt(Σ_p w_p ERR²)``), averaged over the circle's sub-pixel centre. For a
circle of radius ``r`` larger than 32 pixels the pixels are taken as continuous:
``F(r)² = Σ_Δ ρ(Δ) L(|Δ|, r) / (π r²)``, with ``L`` the area two such circles share at a distance
``|Δ|``. Measured on drizzled pure noise (the ``drizzle`` package, random dithers and rolls; ``tests/ops/test_drizzle_noise.py``) the
scatter of aperture sums is this factor times photutils' error to a few per cent.

What it does not model: kernels other than square, turbo and point (their drops are not boxes);
the holes and uneven weights of a small ``pixfrac`` with few exposures (there the per-pixel
weights vary and the factor is approximate); and noise correlated by anything other than the
drizzle, such as a deconvolution (UPDC iterations) or resampling done before.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["MODELLED_KERNELS", "aperture_noise_factor", "drop_size", "lag_correlation"]

#: drizzle kernels whose drop is a box (``point``: a drop of size 0, no correlation)
MODELLED_KERNELS = ("square", "turbo", "point")


def drop_size(kernel: str, pixfrac: float, pixel_scale_ratio: float) -> float | None:
    """The side of a drizzle drop in output pixels, or None for a kernel this model leaves out.

    Parameters
    ----------
    kernel : str
        The drizzle kernel (``RESKERN``).
    pixfrac : float
        The drop's side in input pixels (``PIXFRAC``).
    pixel_scale_ratio : float
        Output pixel scale over input pixel scale (``PXSCLRT``; 0.5 for output pixels of half the
        input's side).
    """
    kernel = str(kernel).strip().lower()
    if kernel not in MODELLED_KERNELS:
        return None
    pixfrac, psr = float(pixfrac), float(pixel_scale_ratio)
    if not (np.isfinite(pixfrac) and pixfrac > 0 and np.isfinite(psr) and psr > 0):
        msg = f"pixfrac {pixfrac!r} and pixel_scale_ratio {psr!r} must be positive and finite"
        raise ValueError(msg)
    return 0.0 if kernel == "point" else pixfrac / psr


def _tri(x, a):
    """The autocorrelation of a box of side ``a`` (area 1 each): a triangle of half-width ``a``."""
    return np.maximum(a - np.abs(x), 0.0)


@functools.lru_cache(maxsize=64)
def _lag_correlation(drop: float) -> tuple[float, ...]:
    if drop == 0.0:
        return (1.0,)
    lags = np.arange(int(np.ceil(drop)) + 2)
    # (tri_drop * tri_1)(k) = integral of tri_1(t) tri_drop(k - t) over |t| < 1: piecewise
    # linear products, summed on a fine grid that holds every kink to well under 1e-6
    t = np.linspace(-1.0, 1.0, 8001)
    h = np.array([np.trapezoid(_tri(t, 1.0) * _tri(k - t, drop), t) for k in lags])
    rho = h / h[0]
    return tuple(float(v) for v in rho[rho > 1e-12])


def lag_correlation(drop: float) -> np.ndarray:
    """The correlation of the drizzled noise along one axis at lags ``0, 1, 2, ...`` output pixels
    (to the last non-zero one), for drops of side ``drop`` output pixels (0: none, ``[1.0]``)."""
    drop = float(drop)
    if not (np.isfinite(drop) and drop >= 0):
        msg = f"drop {drop!r} must be finite and not negative"
        raise ValueError(msg)
    return np.array(_lag_correlation(drop))


def _shared_area(d, r):
    """The area two discs of radius ``r`` share at a distance ``d`` between their centres."""
    d = np.minimum(d, 2.0 * r)
    return 2.0 * r * r * np.arccos(d / (2.0 * r)) - 0.5 * d * np.sqrt(np.maximum(4.0 * r * r - d * d, 0.0))


def _correlation_2d(drop):
    rho1 = lag_correlation(drop)
    k = np.abs(np.arange(-(len(rho1) - 1), len(rho1)))
    return np.outer(rho1[k], rho1[k])


#: radii (output pixels) where the factor is computed with the pixels' exact overlap weights;
#: beyond the last, apertures are taken as continuous (the two agree to 0.3 % at 8 pixels)
_EXACT_RADII = np.geomspace(0.5, 32.0, 19)
#: sub-pixel centres the exact factor is averaged over (a 3 x 3 lattice)
_PHASES = (np.arange(3) + 0.5) / 3


@functools.lru_cache(maxsize=64)
def _exact_table(drop: float) -> tuple[float, ...]:
    from photutils.aperture import CircularAperture  # noqa: PLC0415
    from scipy.ndimage import correlate  # noqa: PLC0415

    rho = _correlation_2d(drop)
    out = []
    for r in _EXACT_RADII:
        num = den = 0.0
        for py in _PHASES:
            for px in _PHASES:
                # photutils' "exact" weights: the share of each pixel inside the circle, the
                # weights its aperture sums and their errors (sqrt(sum w ERR²)) use
                w = CircularAperture((r + 2.0 + px, r + 2.0 + py), r).to_mask(method="exact").data
                num += float(np.sum(w * correlate(w, rho, mode="constant")))
                den += float(np.sum(w))
        out.append(np.sqrt(num / den))
    return tuple(out)


def _continuous(r, drop):
    rho = _correlation_2d(drop)
    n = rho.shape[0] // 2
    dy, dx = np.mgrid[-n : n + 1, -n : n + 1]
    dist, rho = np.hypot(dy, dx).ravel(), rho.ravel()
    return np.sqrt(np.sum(rho * _shared_area(dist, r[:, None]), axis=1) / (np.pi * r**2))


def aperture_noise_factor(radius, drop: float) -> np.ndarray:
    """The error of an aperture sum on a drizzle mosaic over ``sqrt(sum ERR²)``.

    Parameters
    ----------
    radius : float or array
        Aperture radius in output pixels (for another shape, the radius of a circle of its area).
    drop : float
        Drop side in output pixels (:func:`drop_size`).

    Returns
    -------
    numpy.ndarray
        ``F(radius)``: for radii up to 32 pixels from the pixels' exact weights in a circle
        (what photutils sums), averaged over sub-pixel centres and interpolated in ``log r``
        (below half a pixel, the factor at half a pixel); beyond, for a continuous circle. 1 for
        a radius of 0, NaN where ``radius`` is NaN. It can be below 1 for small apertures and
        small drops: ``sqrt(sum w ERR²)`` overstates the noise of a fraction ``w`` of a pixel
        (``sqrt(sum w² ERR²)`` for independent noise), so the point kernel (a drop of 0) gives
        0.95 at a radius of 3 pixels and 1 for large ones.
    """
    drop = float(drop)
    r = np.asarray(radius, dtype=np.float64)
    flat = r.reshape(-1)
    out = np.ones_like(flat)
    table = np.array(_exact_table(drop))
    near = np.isfinite(flat) & (flat > 0) & (flat <= _EXACT_RADII[-1])
    # below the smallest radius: its factor (np.interp holds the end values)
    out[near] = np.interp(np.log(flat[near]), np.log(_EXACT_RADII), table)
    far = np.isfinite(flat) & (flat > _EXACT_RADII[-1])
    if far.any():
        out[far] = _continuous(flat[far], drop)
    out[np.isnan(flat)] = np.nan
    return out.reshape(r.shape)
