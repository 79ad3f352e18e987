"""Baselines for UPDC in the same tiled framework: multi-frame Landweber and single-image Richardson-Lucy.

Both are run by :func:`mosaic.coadd.updc.updc` (``method="landweber"`` or ``"rl"``), start from
the same drizzle mosaic ``f_0``, use the same positivity projection (eq. 2 of seed 000) and the
same checkpoints, so iterations compare one to one.

*Multi-frame Landweber* (the additive, "Starck-Pantin"-like scheme the paper compares
against): the back-projection of UPDC with differences instead of ratios,

    f_{n+1} = P+( f_n + tau * sum_G B_G^*(sum_k D_k(w_k (g_k - m_k))) / sum_G B_G^*(sum_k D_k(w_k)) ),

the steepest descent of the weighted data residual, preconditioned by the coverage; the
normalised operator has norm 1 (a constant image is mocked exactly), so ``0 < tau < 2``
converges and ``tau = 1`` moves as far per iteration as Richardson-Lucy does on smooth images.

*Single-image Richardson-Lucy* of the drizzle mosaic ``d`` with one PSF ``B`` on the output
grid, over the covered pixels ``M``:

    f_{n+1} = P+( f_n * B^*(M (d + s) / (B f_n + s)) / B^*(M) ),

``s`` the pedestal of :mod:`mosaic.coadd.updc` (the update acts on ``f + s``, as UPDC's does).

It ignores the exposures' sampling and dithers (the drizzle mosaic's own pixel and kernel blur
are not in ``B``); it is what deconvolving a finished mosaic gives. Its data residual is the
mosaic's ``sum M (d - B f)^2``. Its variances are carried as in :mod:`mosaic.coadd.errors`,
the drizzle mosaic's pixels treated as independent data.
"""

from __future__ import annotations

import dask.array as da
import numpy as np

from mosaic.coadd.convolve import convolve_tiled
from mosaic.coadd.forward import BackProjection, damping_factor

__all__ = [
    "landweber_update",
    "single_image_backproject",
    "single_image_normalisation",
    "single_image_residual",
]


def landweber_update(f, num, den, *, tau: float, ok):
    """``f + tau * num / den`` where ``ok`` (the normalisation is above its floor), else ``f``.

    NumPy, CuPy and dask arrays alike (through NumPy's array-function protocol).
    """
    return f + np.where(ok, tau * num / np.where(ok, den, 1.0), 0.0)


def single_image_normalisation(mask, psf) -> da.Array:
    """``B^*(M)``: the coverage normalisation of single-image Richardson-Lucy (float64)."""
    return convolve_tiled(da.asarray(mask).astype(np.float64), psf, adjoint=True)


def single_image_backproject(
    f, d, mask, psf, *, variances=(), mock_floor: float = 0.0, pedestal: float = 0.0, damping: float = 0.0, variance=None,
) -> BackProjection:
    """``B^*(M r)`` with ``r = (d + s) / (B f + s)`` (1 where ``B f + s <= mock_floor``), its variances and residual.

    Parameters
    ----------
    f : dask.array.Array
        Current iterate (float64, zero outside the data).
    d : dask.array.Array
        The drizzle mosaic (zero outside the data).
    mask : dask.array.Array of bool
        Covered pixels ``M``.
    psf : PreparedPSF or array
        PSF on the output grid.
    variances : sequence of dask.array.Array
        Variance components of ``d``; for each, ``B^{*2}(M u^2 V / (B f + s)^2)`` is returned.
    mock_floor : float
        Guard of the ratio.
    pedestal : float
        ``s``, as in :func:`mosaic.coadd.forward.pair_correction`.
    damping : float
        Damping threshold in units of ``sqrt(variance)`` (:func:`mosaic.coadd.forward.damping_factor`).
    variance : dask.array.Array, optional
        Total variance of ``d``: for damping and the chi-squared (neither without it).

    Returns
    -------
    mosaic.coadd.forward.BackProjection
        ``resid`` is ``[sum M (d - B f)^2, covered pixels]``, ``chi2`` ``[sum M (d - B f)^2 /
        variance, pixels with a variance]``.
    """
    from mosaic.ops.convolve import PreparedPSF  # noqa: PLC0415

    psf = psf if isinstance(psf, PreparedPSF) else PreparedPSF(psf)
    mask = da.asarray(mask)
    c = convolve_tiled(f, psf)
    ok = mask & (c + pedestal > mock_floor)
    safe = da.where(ok, c + pedestal, 1.0)
    ratio = da.where(ok, da.maximum(d + pedestal, 0.0) / safe, da.where(mask, 1.0, 0.0))
    u = 1.0
    if damping > 0 and variance is not None:
        u = da.map_blocks(damping_factor, d, c, da.where(mask, variance, 0.0), damping=float(damping), dtype=np.float64)
        ratio = da.where(mask, 1.0 + u * (ratio - 1.0), 0.0)
    num = convolve_tiled(ratio, psf, adjoint=True)
    var = ()
    if variances:
        squared = PreparedPSF(psf.psf**2)
        var = tuple(convolve_tiled(da.where(ok, u * u * v / (safe * safe), 0.0), squared, adjoint=True) for v in variances)
    total = _residual(c, d, mask, variance)
    return BackProjection(num=num, resid=total[:2], var=var, chi2=total[2:])


def single_image_residual(f, d, mask, psf, *, variance=None):
    """``[sum M (d - B f)^2, covered pixels, sum M (d - B f)^2 / variance, pixels with a variance]`` (lazy, float64)."""
    return _residual(convolve_tiled(f, psf), d, mask, variance)


def _residual(c, d, mask, variance=None):
    r2 = da.where(mask, (d - c) ** 2, 0.0)
    if variance is None:
        chi2, nchi = da.zeros((), dtype=np.float64), da.zeros((), dtype=np.float64)
    else:
        has = mask & (variance > 0)
        chi2 = da.where(has, r2 / da.where(has, variance, 1.0), 0.0).sum()
        nchi = has.sum().astype(np.float64)
    return da.stack([r2.sum(), mask.sum().astype(np.float64), chi2, nchi])
