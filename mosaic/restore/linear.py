"""The linear bases of the restoration model: a least-squares kernel and a Wiener filter.

*Faint base* (:func:`wiener_kernel`): the Wiener filter from the known drizzle PSF ``P`` to the
reference PSF ``R``, ``W = R P* / (|P|^2 + lambda)`` with one regularisation ``lambda`` (white
noise against a flat signal spectrum), summing to 1. With ``lambda`` = 0.01 its white-noise gain
is 0.96 (the noise is not amplified) and it moves the light of a faint galaxy back inside its
isophote: on simulated fields it removes the drizzle mosaic's -23 % isophotal-flux bias. Its
support must be wide (61 px): cut to 25 px it loses the PSF's wings and keeps a -10 to -19 % bias.
:func:`separable_factors` writes it as a sum of a few separable kernels, so that a network runs
it as 1-D convolutions (ONNX Runtime's direct convolution of a 61² kernel would need a 61² x
pixels buffer).

*Bright base* (:func:`fit_linear_kernel`): the least-squares kernel from input to target.

``K`` minimises ``sum_p (K * d - t)^2`` over the pixels of the training pairs, with ``d`` the
input less its sky (0 where uncovered) and ``t`` the target (0 there): a Wiener filter measured on
the data, noise included (the noise in ``d`` is what keeps it from inverting the PSF outright). The
normal equations only need the auto-correlation of ``d`` and the cross-correlation of ``t`` with
``d`` at offsets up to the kernel's side, summed over fields (FFTs; edges of fields are treated as
sky); the sum of ``K`` is held to 1 (a Lagrange multiplier). Linear and summing to 1, it conserves flux and treats a source 10^4 sigma bright as it
treats a faint one, which is what the network on top of it cannot be trusted to do (see
:mod:`mosaic.restore.model`). NumPy only.
"""

from __future__ import annotations

import logging

import numpy as np
from numpy.fft import irfft2, rfft2

__all__ = ["fit_linear_kernel", "wiener_kernel", "separable_factors"]

log = logging.getLogger(__name__)


def fit_linear_kernel(inputs, targets, skies, *, size: int = 25, ridge: float = 1e-6) -> np.ndarray:
    """The ``size`` x ``size`` kernel ``K`` with ``K * (input - sky)`` closest to the target (least squares).

    Parameters
    ----------
    inputs, targets : sequence of ndarray
        Pairs on one grid each (input NaN where uncovered; target without sky).
    skies : sequence of float
        The sky of each input.
    size : int
        Odd side of the kernel.
    ridge : float
        Tikhonov term, relative to the mean of the normal matrix's diagonal.

    Returns
    -------
    ndarray
        ``(size, size)`` float64, summing to 1, to be applied as a convolution (``scipy.signal.fftconvolve(d, K, 'same')``).
    """
    if size < 1 or size % 2 == 0:
        msg = f"kernel size must be odd and positive; got {size!r}"
        raise ValueError(msg)
    r, w = size // 2, 2 * (size // 2)
    auto = np.zeros((2 * w + 1, 2 * w + 1))
    cross = np.zeros((size, size))
    lags_a, lags_c = np.arange(-w, w + 1), np.arange(-r, r + 1)
    for x, t, sky in zip(inputs, targets, skies, strict=True):
        covered = np.isfinite(x)
        d = np.where(covered, x - sky, 0.0)
        t = np.where(covered & np.isfinite(t), t, 0.0)
        shape = (d.shape[0] + 2 * w + 1, d.shape[1] + 2 * w + 1)
        fd, ft = rfft2(d, shape), rfft2(t, shape)
        # ac[a] = sum_p d(p + a) d(p); xc[a] = sum_p t(p + a) d(p) (lags wrap around the padded grid)
        ac, xc = irfft2(fd * np.conj(fd), shape), irfft2(ft * np.conj(fd), shape)
        auto += ac[np.ix_(lags_a % shape[0], lags_a % shape[1])]
        cross += xc[np.ix_(lags_c % shape[0], lags_c % shape[1])]
    # t(p) = sum_o K(o) d(p - o): sum_o K(o) ac(o' - o) = xc(o') for every offset o'
    off = np.stack(np.meshgrid(lags_c, lags_c, indexing="ij"), -1).reshape(-1, 2)
    normal = auto[off[:, None, 0] - off[None, :, 0] + w, off[:, None, 1] - off[None, :, 1] + w]
    normal += ridge * np.trace(normal) / len(normal) * np.eye(len(normal))
    # constrained to sum to 1 (a Lagrange multiplier): the base conserves flux exactly
    sol = np.linalg.solve(normal, np.stack([cross[off[:, 0] + r, off[:, 1] + r], np.ones(len(off))], 1))
    kernel = (sol[:, 0] - (sol[:, 0].sum() - 1.0) / sol[:, 1].sum() * sol[:, 1]).reshape(size, size)
    log.info("linear kernel %dx%d: sum %.4f, centre %.3f, white-noise gain %.2f", size, size, kernel.sum(), kernel[r, r],
             np.sqrt((kernel**2).sum()))
    return kernel


def wiener_kernel(psf, reference, lam: float, *, size: int = 61) -> np.ndarray:
    """The ``size`` x ``size`` Wiener filter from ``psf`` to ``reference`` (both odd, centred), summing to 1.

    Parameters
    ----------
    psf, reference : ndarray
        The blur of the data and the one wanted, on the same pixel grid, odd sides.
    lam : float
        Regularisation (noise-to-signal power, relative to the PSF's unit sum), > 0.
    size : int
        Odd side of the kernel.

    Returns
    -------
    ndarray
        ``(size, size)`` float64, applied as a convolution.
    """
    if size < 1 or size % 2 == 0 or not lam > 0:
        msg = f"size must be odd and positive and lam > 0; got size {size!r}, lam {lam!r}"
        raise ValueError(msg)
    psf, reference = np.asarray(psf, np.float64), np.asarray(reference, np.float64)
    if any(k.ndim != 2 or k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0 for k in (psf, reference)):
        msg = f"psf {psf.shape} and reference {reference.shape}: expected 2-D kernels with odd sides"
        raise ValueError(msg)
    n = 2 * max(size, *psf.shape, *reference.shape)

    def centred(k):  # k's centre at pixel (0, 0) of an n x n periodic grid
        g = np.zeros((n, n))
        hy, hx = k.shape[0] // 2, k.shape[1] // 2
        g[np.ix_(np.arange(-hy, hy + 1) % n, np.arange(-hx, hx + 1) % n)] = k / k.sum()
        return g

    fp, fr = np.fft.fft2(centred(psf)), np.fft.fft2(centred(reference))
    w = np.real(np.fft.ifft2(fr * np.conj(fp) / (np.abs(fp) ** 2 + lam)))
    r = size // 2
    kernel = w[np.ix_(np.arange(-r, r + 1) % n, np.arange(-r, r + 1) % n)]
    kernel /= kernel.sum()
    log.info("Wiener kernel %dx%d, lambda %g: white-noise gain %.2f", size, size, lam, np.sqrt((kernel**2).sum()))
    return kernel


def separable_factors(kernel, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """``(columns, rows)``, each ``(rank, side)``, with ``kernel ~= sum_i outer(columns[i], rows[i])`` (SVD)."""
    u, s, vt = np.linalg.svd(np.asarray(kernel, np.float64))
    if not 1 <= rank <= len(s):
        msg = f"rank {rank!r}; expected 1 to {len(s)}"
        raise ValueError(msg)
    root = np.sqrt(s[:rank])
    return (u[:, :rank] * root).T, vt[:rank] * root[:, None]
