"""The data against the forward model of a mosaic: mock exposures, residual maps and χ² per pixel.

An iterate ``f`` of UPDC predicts every exposure ``k`` through the forward model of
:mod:`mosaic.coadd.forward`: ``m_k = D_k^h(B_k f)``, the mosaic convolved with the PSF on the
output grid and integrated over each detector pixel (the exact-area blot, the transpose of
the pixfrac-1 drizzle). :func:`exposure_mock` computes it for one whole exposure in memory
with the same operators (:func:`mosaic.ops.convolve.fft_convolve`,
:func:`mosaic.ops.pixmap.calc_pixmap`, :func:`mosaic.ops.drizzle.blot_exact`), which is
enough for a report on a small field; the tiled graphs do the same at scale.

:func:`chi2_per_pixel` compares data and mock over the data's ERR: ``χ²/N = (1/N) sum ((g -
m) / ERR)^2`` over the ``N`` good pixels that map onto the grid. The mosaic's own pixels are
free parameters of the fit and are not subtracted from ``N``, so a value well below 1 means the
model has begun to fit the noise; a value well above 1, structure the model misses. A few
pixels far off (star cores, unflagged cosmic rays) can dominate the mean, so
:func:`convergence_table` also gives a median-based value, ``median(((g - m) / ERR)^2) /
0.4549`` (the median of a χ² with one degree of freedom), which is 1 for pure noise too and
says how the bulk of the pixels (the sky) is fitted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
from astropy.table import QTable

from mosaic.ops.convolve import fft_convolve
from mosaic.ops.drizzle import blot_exact, weight_map
from mosaic.ops.pixmap import calc_pixmap

__all__ = ["CHI2_MEDIAN_1DOF", "chi2_per_pixel", "convergence_table", "exposure_mock", "on_grid"]

log = logging.getLogger(__name__)

#: median of a χ² variable with one degree of freedom
CHI2_MEDIAN_1DOF = 0.454936423119572


def exposure_mock(mosaic, psf, pixmap) -> np.ndarray:
    """The mock ``D^h(B f)`` of an exposure's pixels (float64).

    Parameters
    ----------
    mosaic : array
        The model on the output grid (MJy/sr), finite (fill pixels without data first).
    psf : array
        PSF sampled on the output grid, odd sides, normalised to 1.
    pixmap : array
        ``(ny, nx, 2)`` positions of the exposure's pixels on the grid (:func:`calc_pixmap`).
    """
    f = np.asarray(mosaic, dtype=np.float64)
    if not np.all(np.isfinite(f)):
        msg = "mosaic has non-finite pixels; expected a finite model (fill the pixels without data)"
        raise ValueError(msg)
    return blot_exact(fft_convolve(f, psf), pixmap, normalize=False)


def on_grid(pixmap, grid_shape) -> np.ndarray:
    """Pixels whose centre falls on the grid (True), as the forward model's tiles own them."""
    with np.errstate(invalid="ignore"):
        ix = np.floor(pixmap[..., 0] + 0.5)
        iy = np.floor(pixmap[..., 1] + 0.5)
        return (ix >= 0) & (iy >= 0) & (ix < grid_shape[1]) & (iy < grid_shape[0])


def chi2_per_pixel(data, mock, err, *, good=None) -> tuple[float, int]:
    """``(χ²/N, N)``: the mean of ``((data - mock) / err)^2`` over good pixels with a positive, finite ERR."""
    g, m, e = (np.asarray(a, dtype=np.float64) for a in (data, mock, err))
    ok = np.isfinite(g) & np.isfinite(m) & np.isfinite(e) & (e > 0)
    if good is not None:
        ok &= np.asarray(good, dtype=bool)
    n = int(ok.sum())
    if n == 0:
        return float("nan"), 0
    return float(np.mean(((g[ok] - m[ok]) / e[ok]) ** 2)), n


def convergence_table(
    iterates: Mapping, exposures, grid_wcs, psf, *, fill: float = 0.0, weight: str | None = None, mocks_of: int | None = None
) -> QTable:
    """χ²/N of each iterate against every exposure, over the exposures' ERR.

    Parameters
    ----------
    iterates : mapping
        ``{iteration: 2-D array}``: the iterates on the grid with their sky (as UPDC keeps
        them in the store), NaN where they have no value.
    exposures : xarray.Dataset
        The exposure set the iterates were fitted to (:func:`mosaic.io.cal.read_exposures`):
        ``sci``, ``err``, ``good`` and a WCS per exposure.
    grid_wcs : astropy.wcs.WCS
        The grid's WCS.
    psf : array or sequence of arrays
        PSF on the grid for all exposures, or one per exposure.
    fill : float
        Value of the iterates' NaN pixels (UPDC's start value off the coverage: the sky).
    weight : {"ivm", "exptime", "uniform"}, optional
        Also give ``residual``, UPDC's own data residual ``sum w (g - m)^2`` with these input
        weights (:func:`mosaic.ops.drizzle.weight_map`).
    mocks_of : int, optional
        Keep the mocks of this exposure, ``{iteration: mock}`` in ``meta["mocks"]``.

    Returns
    -------
    astropy.table.QTable
        ``iteration, chi2_per_pixel`` (the mean), ``robust_chi2`` (median-based), ``n_pixels``
        (and ``residual``), one row per iterate.
    """
    from mosaic.coadd.drizzle import exposure_wcs  # noqa: PLC0415

    n_exp = exposures.sizes["exposure"]
    psfs = list(psf) if isinstance(psf, Sequence) and not isinstance(psf, np.ndarray) else [psf] * n_exp
    if len(psfs) != n_exp:
        msg = f"{len(psfs)} PSFs given for {n_exp} exposures; expected one, or one per exposure"
        raise ValueError(msg)
    wcs = exposure_wcs(exposures)
    data = exposures["sci"].values.astype(np.float64)
    err = exposures["err"].values.astype(np.float64)
    good = exposures["good"].values if "good" in exposures else np.isfinite(data)
    shape = next(iter(iterates.values())).shape
    pixmaps = [calc_pixmap(w, grid_wcs, shape=data.shape[1:]) for w in wcs]
    owned = [good[k] & on_grid(pixmaps[k], shape) & np.isfinite(data[k]) & np.isfinite(err[k]) & (err[k] > 0) for k in range(n_exp)]
    weights = None
    if weight is not None:
        rn = exposures["var_rnoise"].values if "var_rnoise" in exposures else None
        exptime = exposures["exptime"].values if "exptime" in exposures.coords else [None] * n_exp
        weights = [weight_map(good[k], None if rn is None else rn[k], weight=weight, exptime=exptime[k]).astype(np.float64) for k in range(n_exp)]
    rows, mocks = [], {}
    for n in sorted(iterates):
        f = np.asarray(iterates[n], dtype=np.float64)
        f = np.where(np.isfinite(f), f, fill)
        convolved = {}
        squares, resid = [], 0.0
        for k in range(n_exp):
            # exposures that share a PSF share its convolution
            key = id(psfs[k])
            if key not in convolved:
                convolved[key] = fft_convolve(f, psfs[k])
            m = blot_exact(convolved[key], pixmaps[k], normalize=False)
            if k == mocks_of:
                mocks[n] = m
            ok = owned[k] & np.isfinite(m)
            squares.append(((data[k][ok] - m[ok]) / err[k][ok]) ** 2)
            if weights is not None:
                own = owned[k] & (weights[k] > 0)
                resid += float(np.sum(weights[k][own] * (data[k][own] - m[own]) ** 2))
        r2 = np.concatenate(squares)
        count = int(r2.size)
        row = {
            "iteration": int(n),
            "chi2_per_pixel": float(r2.mean()) if count else float("nan"),
            "robust_chi2": float(np.median(r2) / CHI2_MEDIAN_1DOF) if count else float("nan"),
            "n_pixels": count,
        }
        if weights is not None:
            row["residual"] = resid
        rows.append(row)
        log.info("iteration %d: chi2/N %.4g (median-based %.4g) over %d exposure pixels", n, row["chi2_per_pixel"], row["robust_chi2"], count)
    table = QTable(rows=rows)
    if mocks_of is not None:
        table.meta["mocks"] = mocks
    return table
