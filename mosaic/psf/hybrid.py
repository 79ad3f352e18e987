"""Hybrid PSF (HybPSF, Nie et al. 2024; seed 000 sec. 2.3): a model PSF corrected by the stars.

A model PSF (the WebbPSF-like :func:`mosaic.psf.model.jwst_psf`) carries the diffraction spikes
and far wings that noise hides in real stars; the stars correct its core. Steps:

1. *Fit.* Each star's stamp ``d_i`` (detector pixels) is fitted by ``F_i A_i(P) + b_i``: flux
   ``F_i``, local sky ``b_i`` and sub-pixel centre ``delta_i`` (variable projection: the centre
   by least squares, flux and sky linearly for each centre). ``A_i`` renders a PSF ``P`` given
   on a grid ``oversample`` times finer than the detector at the star's centre and integrates
   it over detector pixels: the PSF is treated as band-limited, its DFT is divided by the fine
   pixel's response, multiplied by the detector pixel's, shifted and evaluated at the detector
   pixel centres (one real ``n_det x n_fine`` matrix per axis, as in
   :func:`mosaic.psf.files.resample_psf`). ``A_i`` is linear in ``P``.
2. *Stack.* The residuals ``r_i = (d_i - b_i) / F_i - A_i(P_model)`` of all stars are stacked
   into one mean correction ``D0`` on the fine grid by damped least squares
   ``min sum_i |W_i^(1/2) (r_i - A_i D0)|^2 + lambda^2 |D0|^2`` (LSQR): the stars' different
   sub-pixel phases fill the fine grid, as in an effective-PSF builder, but the pixel response is
   modelled, so ``D0`` corrects the optical PSF and not a pixel-convolved one. Steps 1-2 are
   repeated with the corrected PSF so that centres and fluxes improve.
3. *Principal components.* Each star's own deviation from the mean, ``r_i - A_i D0``, is brought
   to the fine grid the same way (strongly damped, star by star); the leading ``k`` principal
   components ``V_k`` of these maps (SVD) describe how the PSF varies between stars; ``k`` is
   given, or the fewest components explaining ``explained_variance`` of the variance. Each
   star's coefficients are fitted with a polynomial of degree ``degree`` in its position, which
   is evaluated at ``position`` (default the image centre).
4. *Result.* ``P_model + D0 + sum_k c_k(position) V_k``, negative pixels set to 0, normalised
   to 1. The correction lives only where the stamps have data (a disc of the stamp's radius);
   beyond it the PSF is the model's.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import scipy.optimize
from astropy.stats import sigma_clipped_stats
from astropy.table import Table
from scipy.sparse.linalg import LinearOperator, lsqr

from mosaic.exceptions import InputError
from mosaic.psf.stars import require_stars
from mosaic.registry import algorithm

__all__ = ["render_matrix", "render_star", "fit_star", "hybrid_psf"]

log = logging.getLogger(__name__)


def render_matrix(n_out: int, n_in: int, oversample: int, shift: float) -> np.ndarray:
    """``(n_out, n_in)`` matrix rendering a fine-grid PSF on detector pixels along one axis.

    Parameters
    ----------
    n_out : int
        Detector pixels (odd); the star is centred at pixel ``n_out // 2`` plus ``shift``.
    n_in : int
        Fine-grid pixels of the PSF (odd, centred on its middle pixel), each ``1 / oversample``
        of a detector pixel.
    oversample : int
        Fine pixels per detector pixel.
    shift : float
        Star centre relative to the stamp's middle pixel, in detector pixels.

    Returns
    -------
    numpy.ndarray
        Row ``j`` integrates the band-limited (sinc-interpolated) PSF density over detector
        pixel ``j``; rows sum to the flux in that pixel when the PSF sums to 1.
    """
    k = np.arange(n_in) - (n_in - 1) // 2
    # pixel response: out of the fine pixel box, into the detector pixel box
    response = oversample * np.sinc(k * oversample / n_in) / np.sinc(k / n_in)
    u = oversample * ((np.arange(n_out) - n_out // 2) - shift)  # detector pixel centres, fine units
    i = np.arange(n_in) - n_in // 2
    phase = np.exp(2j * np.pi * np.outer(u, k) / n_in) * response
    basis = np.exp(-2j * np.pi * np.outer(k, i) / n_in)
    return (phase @ basis).real / n_in


def render_star(psf: np.ndarray, n_out: int, oversample: int, shift) -> np.ndarray:
    """A fine-grid PSF rendered on an ``n_out x n_out`` detector stamp centred at ``shift``.

    Parameters
    ----------
    psf : numpy.ndarray
        Odd square PSF at ``1 / oversample`` of the detector's pixel scale.
    n_out : int
        Stamp side in detector pixels (odd).
    oversample : int
        Fine pixels per detector pixel.
    shift : pair of float
        ``(dy, dx)`` star centre relative to the stamp's middle pixel, in detector pixels.

    Returns
    -------
    numpy.ndarray
        ``(n_out, n_out)`` flux per detector pixel for a star of flux 1.
    """
    my = render_matrix(n_out, psf.shape[0], oversample, shift[0])
    mx = render_matrix(n_out, psf.shape[1], oversample, shift[1])
    return my @ psf @ mx.T


def _flux_sky(model: np.ndarray, stamp: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Weighted least-squares flux and sky of ``stamp = F model + b``."""
    a = np.stack([model.ravel(), np.ones(model.size)], axis=1) * np.sqrt(w.ravel())[:, None]
    sol, *_ = np.linalg.lstsq(a, stamp.ravel() * np.sqrt(w.ravel()), rcond=None)
    return float(sol[0]), float(sol[1])


def fit_star(psf: np.ndarray, stamp: np.ndarray, weight: np.ndarray, oversample: int, start=(0.0, 0.0)):
    """Flux, sky and sub-pixel centre of one star stamp against a fine-grid PSF.

    Parameters
    ----------
    psf : numpy.ndarray
        Odd square PSF at ``1 / oversample`` of the stamp's pixel scale.
    stamp : numpy.ndarray
        Odd square detector stamp, the star near its middle pixel.
    weight : numpy.ndarray
        Inverse variance per pixel (0 for bad pixels).
    oversample : int
        Fine pixels per detector pixel.
    start : pair of float, optional
        First guess of ``(dy, dx)`` relative to the middle pixel.

    Returns
    -------
    flux, sky : float
    shift : tuple of float
        ``(dy, dx)``.
    """
    n = stamp.shape[0]
    sw = np.sqrt(weight)

    def residual(p):
        model = render_star(psf, n, oversample, p)
        f, b = _flux_sky(model, stamp, weight)
        return ((stamp - f * model - b) * sw).ravel()

    res = scipy.optimize.least_squares(residual, np.asarray(start, float), bounds=([-1.5, -1.5], [1.5, 1.5]),
                                       x_scale=0.1, diff_step=1e-3)
    shift = (float(res.x[0]), float(res.x[1]))
    flux, sky = _flux_sky(render_star(psf, n, oversample, shift), stamp, weight)
    return flux, sky, shift


class _Stars:
    """Stamps, weights and the current fits of the PSF stars."""

    def __init__(self, data, bad, error, stars: Table, n: int):
        half = n // 2
        ny, nx = data.shape
        if error is None:
            _, _, noise = sigma_clipped_stats(data, mask=bad, sigma=3.0, maxiters=10)
            noise = float(noise) if noise > 0 else 1.0
        stamps, weights, starts, pixels = [], [], [], []
        for x, y in zip(stars["x"], stars["y"], strict=True):
            ix, iy = int(round(x)), int(round(y))
            if ix - half < 0 or iy - half < 0 or ix + half >= nx or iy + half >= ny:
                continue  # stamp off the image
            sl = (slice(iy - half, iy + half + 1), slice(ix - half, ix + half + 1))
            good = ~bad[sl]
            sigma = np.full((n, n), noise) if error is None else np.asarray(error[sl], float)
            good &= np.isfinite(sigma) & (sigma > 0)
            stamps.append(np.where(good, data[sl], 0.0))
            weights.append(np.where(good, 1.0 / np.where(good, sigma, 1.0) ** 2, 0.0))
            starts.append((y - iy, x - ix))
            pixels.append((iy, ix))
        self.stamps, self.weights = np.array(stamps), np.array(weights)
        self.shifts = [tuple(s) for s in starts]
        self.pixels = np.array(pixels, dtype=float).reshape(-1, 2)
        self.flux = np.ones(len(stamps))
        self.sky = np.zeros(len(stamps))
        self.n = n

    def __len__(self):
        return len(self.stamps)

    def fit(self, psf, oversample):
        for i in range(len(self)):
            self.flux[i], self.sky[i], self.shifts[i] = fit_star(psf, self.stamps[i], self.weights[i], oversample,
                                                                 start=self.shifts[i])

    @property
    def centres(self) -> np.ndarray:
        """``(y, x)`` of each star on the image."""
        return self.pixels + np.array(self.shifts, dtype=float).reshape(-1, 2)

    def matrices(self, n_fine, oversample, region):
        return [(render_matrix(self.n, n_fine, oversample, s[0])[:, region],
                 render_matrix(self.n, n_fine, oversample, s[1])[:, region]) for s in self.shifts]


def _correction_lsqr(residuals, weights, mats, n_c, damp_rel, iter_lim):
    """Damped least-squares fine-grid map ``D`` with ``residual_i ~ My_i D Mx_i^T`` for all stars."""
    sw = [np.sqrt(w) for w in weights]
    n_pix = residuals[0].size
    n_rows = n_pix * len(residuals)

    def matvec(v):
        d = v.reshape(n_c, n_c)
        return np.concatenate([(s * (my @ d @ mx.T)).ravel() for s, (my, mx) in zip(sw, mats, strict=True)])

    def rmatvec(r):
        out = np.zeros((n_c, n_c))
        for i, (s, (my, mx)) in enumerate(zip(sw, mats, strict=True)):
            out += my.T @ (s * r[i * n_pix:(i + 1) * n_pix].reshape(s.shape)) @ mx
        return out.ravel()

    op = LinearOperator((n_rows, n_c * n_c), matvec=matvec, rmatvec=rmatvec, dtype=np.float64)
    # the damping is relative to the typical diagonal of the normal matrix
    diag = sum(np.outer((my**2).T @ np.ones(my.shape[0]), (mx**2).T @ np.ones(mx.shape[0])) * np.mean(w)
               for w, (my, mx) in zip(weights, mats, strict=True))
    damp = damp_rel * math.sqrt(float(np.median(diag)))
    rhs = np.concatenate([(s * r).ravel() for s, r in zip(sw, residuals, strict=True)])
    sol = lsqr(op, rhs, damp=damp, iter_lim=iter_lim, atol=1e-10, btol=1e-10)[0]
    return sol.reshape(n_c, n_c)


def _poly_terms(yx: np.ndarray, degree: int, centre, scale) -> np.ndarray:
    u = (yx - np.asarray(centre, float)) / scale
    cols = [u[:, 1] ** a * u[:, 0] ** b for a in range(degree + 1) for b in range(degree + 1 - a)]
    return np.stack(cols, axis=1)


def _choose_k(singular: np.ndarray, n_components, explained_variance: float) -> tuple[int, np.ndarray]:
    var = singular**2
    frac = var / var.sum() if var.sum() > 0 else np.zeros_like(var)
    if n_components is not None:
        k = min(int(n_components), len(singular))
    else:
        k = int(np.searchsorted(np.cumsum(frac), explained_variance) + 1)
        k = min(k, len(singular))
    return k, frac


@algorithm("psf")
def hybrid_psf(
    image,
    stars: Table,
    *,
    model,
    oversample: int = 2,
    stamp_size: int | None = None,
    error=None,
    mask=None,
    n_components: int | None = None,
    explained_variance: float = 0.8,
    degree: int = 1,
    position=None,
    n_iterations: int = 2,
    damping: float = 0.03,
    max_lsqr_iterations: int = 200,
) -> np.ndarray:
    """A hybrid PSF: the model PSF plus the stars' mean residual and its leading principal components.

    Parameters
    ----------
    image : numpy.ndarray
        2-D image with the stars (sky included; each star's sky is fitted).
    stars : astropy.table.Table
        Star positions ``x``, ``y`` (0-based pixels), e.g. from
        :func:`mosaic.psf.stars.select_stars`; at least ``MIN_STARS["hybrid"]``.
    model : numpy.ndarray
        Model PSF (odd square) at ``1 / oversample`` of the image's pixel scale, e.g.
        ``jwst_psf(band, pixel_scale_arcsec=scale / oversample, size=51)``; the result has its
        shape and sampling.
    oversample : int, optional
        Fine (PSF) pixels per image pixel.
    stamp_size : int, optional
        Side of each star's stamp in image pixels (odd); default the largest odd number that
        keeps the stamp inside the model's field with a margin of 2 image pixels.
    error : numpy.ndarray, optional
        1-sigma error per pixel; default the image's clipped sky noise everywhere.
    mask : numpy.ndarray, optional
        True where a pixel is bad (given no weight); NaN pixels are always bad.
    n_components : int, optional
        Principal components of the star-to-star variation to add; default the fewest that
        explain ``explained_variance``. 0 keeps only the mean residual.
    explained_variance : float, optional
        Fraction of the variance the components must explain when ``n_components`` is None.
    degree : int, optional
        Degree of the polynomial in position fitted to each component's coefficients (reduced
        while there are fewer stars than terms).
    position : pair of float, optional
        ``(y, x)`` pixel at which the PSF is evaluated; default the image centre.
    n_iterations : int, optional
        Rounds of star fitting and stacking.
    damping : float, optional
        Damping of the stacks relative to the typical data weight (regularises the fine-grid
        frequencies the detector pixels barely see).
    max_lsqr_iterations : int, optional
        LSQR iterations per stack.

    Returns
    -------
    numpy.ndarray
        float64 with the shape of ``model``, non-negative, summing to 1.

    Raises
    ------
    mosaic.exceptions.InputError
        Too few stars (naming how many and the minimum), a model that is not odd and square or
        too small for a stamp, or arrays of mismatched shapes.
    """
    data = np.asarray(image, dtype=np.float64)
    if data.ndim != 2:
        msg = f"image has shape {data.shape!r}; expected a 2-D image"
        raise InputError(msg)
    model = np.asarray(model, dtype=np.float64)
    if model.ndim != 2 or model.shape[0] != model.shape[1] or model.shape[0] % 2 == 0:
        msg = f"model has shape {model.shape!r}; expected an odd square PSF"
        raise InputError(msg)
    if isinstance(oversample, bool) or not isinstance(oversample, int | np.integer) or oversample < 1:
        msg = f"oversample must be a positive integer; got {oversample!r}"
        raise InputError(msg)
    if not 0 < explained_variance <= 1:
        msg = f"explained_variance must be in (0, 1]; got {explained_variance!r}"
        raise InputError(msg)
    require_stars(stars, "hybrid")
    model = model / model.sum()
    n_fine = model.shape[0]
    widest = (n_fine // oversample) - 4
    n = widest if widest % 2 else widest - 1
    if stamp_size is not None:
        if stamp_size % 2 == 0 or stamp_size < 3 or stamp_size > n:
            msg = f"stamp_size must be odd, >= 3 and <= {n} for a model of {n_fine} fine pixels; got {stamp_size!r}"
            raise InputError(msg)
        n = int(stamp_size)
    if n < 3:
        msg = f"model of {n_fine} pixels is too small for stamps at oversampling {oversample}; expected >= {7 * oversample + 1}"
        raise InputError(msg)
    bad = ~np.isfinite(data)
    for name, arr in (("mask", mask), ("error", error)):
        if arr is not None and np.shape(arr) != data.shape:
            msg = f"{name} has shape {np.shape(arr)!r}; expected the image's {data.shape!r}"
            raise InputError(msg)
    if mask is not None:
        bad |= np.asarray(mask, dtype=bool)
    sample = _Stars(data, bad, error, stars, n)
    require_stars(Table({"x": np.zeros(len(sample))}, meta=stars.meta), "hybrid")

    # the correction lives where the stamps have data: a disc of the stamp's radius
    half_c = oversample * (n // 2) + oversample // 2
    n_c = 2 * half_c + 1
    lo = n_fine // 2 - half_c
    region = slice(lo, lo + n_c)
    cy, cx = np.indices((n_c, n_c)) - half_c
    disc = np.hypot(cy, cx) <= half_c

    correction = np.zeros((n_c, n_c))
    for it in range(max(1, int(n_iterations))):
        current = model.copy()
        current[region, region] += correction
        sample.fit(current, oversample)
        mats = sample.matrices(n_fine, oversample, region)
        residuals = [(d - b) / f - my_full for d, b, f, my_full in
                     zip(sample.stamps, sample.sky, sample.flux,
                         [render_star(model, n, oversample, s) for s in sample.shifts], strict=True)]
        weights = [w * f**2 for w, f in zip(sample.weights, sample.flux, strict=True)]
        correction = _correction_lsqr(residuals, weights, mats, n_c, damping, max_lsqr_iterations) * disc
        log.debug("hybrid_psf: round %d, mean correction |D0|_1 = %.3g", it + 1, np.abs(correction).sum())

    # star-to-star variation: each star's deviation from the mean, on the fine grid
    deviations = []
    for r, w, m in zip(residuals, weights, mats, strict=True):
        dev = r - m[0] @ correction @ m[1].T
        deviations.append((_correction_lsqr([dev], [w], [m], n_c, 10 * damping, 30) * disc).ravel())
    dev = np.array(deviations)
    mean_dev = dev.mean(axis=0)
    _, singular, vt = np.linalg.svd(dev - mean_dev, full_matrices=False)
    k, frac = _choose_k(singular, n_components, explained_variance)
    extra = np.zeros(n_c * n_c)
    if k > 0:
        coeffs = (dev - mean_dev) @ vt[:k].T
        pos = np.array([(data.shape[0] - 1) / 2, (data.shape[1] - 1) / 2] if position is None else position, float)
        deg = max(0, int(degree))
        while deg > 0 and (deg + 1) * (deg + 2) // 2 > len(sample):
            deg -= 1
        scale = max(data.shape) / 2.0
        terms = _poly_terms(sample.centres, deg, pos, scale)
        beta, *_ = np.linalg.lstsq(terms, coeffs, rcond=None)
        at_pos = _poly_terms(pos[None, :], deg, pos, scale) @ beta  # (1, k)
        extra = (at_pos @ vt[:k]).ravel() + mean_dev
    log.info(
        "hybrid_psf: %d stars, stamps %d px, mean residual + %d components (explaining %.0f%% of the star-to-star variance)",
        len(sample), n, k, 100 * frac[:k].sum() if k else 0.0,
    )
    hybrid = model.copy()
    hybrid[region, region] += correction + extra.reshape(n_c, n_c) * disc
    hybrid = np.clip(hybrid, 0.0, None)
    return hybrid / hybrid.sum()
