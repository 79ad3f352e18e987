"""The minimiser of objective (9) of seed 003: exactly, per Fourier block, or by conjugate gradients.

*Why it is exact.* Every operator in (9) is a periodic convolution on the fine grid, except the
IFU sampling ``S``, which keeps every ``d``-th fine pixel. In Fourier, convolutions are products
per fine frequency ``nu``, and sampling folds the ``d^2`` fine frequencies
``nu_a = kappa + a * (ny/d, nx/d)`` that alias onto one coarse frequency ``kappa``::

    FFT(S g)(kappa) = d^-2 sum_a exp(2 pi i nu_a . o / N) FFT(g)(nu_a)        (o the sampling offset)

So the normal equations of (9) couple only the ``d^2`` aliased frequencies of each coarse
frequency, times the ``k`` subspace coefficients: one dense Hermitian ``(d^2 k) x (d^2 k)``
system per coarse frequency (Parseval weights ``1``, ``gamma d^2`` and ``mu |D(nu)|^2`` for the
NIRCam, NIRSpec and Sobolev terms)::

    [blockdiag_a(B_m(nu_a)^H B_m(nu_a) + mu |D(nu_a)|^2) + gamma d^2 B_h^H B_h] z = B_m^H r_m + gamma d^2 B_h^H r_h

with ``B_m(nu) = L_m diag(OTF_m(nu)) V`` (``n_filter x k``) and
``B_h[l, (a, c)] = d^-2 exp(..) L_h[l] OTF_h[l](nu_a) V[l, c]`` (``n_wave x d^2 k``). All the
systems are solved at once by a batched :func:`numpy.linalg.solve`: no iteration, no tolerance.
Wavelengths are summed in chunks, so memory is set by the grid and ``d^2 k``, not by the number
of wavelengths.

:func:`solve_cg` minimises the same objective by conjugate gradients on the normal equations,
with the operators of :class:`~mosaic.fusion.operators.FusionOperators` (real space, FFT
convolutions, explicit sampling): the independent peer of :func:`solve_exact`.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.fft
import scipy.sparse.linalg

from mosaic.fusion.objective import Subspace, finite_differences, finite_differences_adjoint
from mosaic.fusion.operators import FusionOperators

__all__ = ["solve_exact", "solve_cg", "mean_residuals", "sobolev_symbol"]

log = logging.getLogger(__name__)

#: bytes of temporaries one batch of Fourier blocks may take (systems, factors, alias products)
_BATCH_BYTES = 8 * 2**20


def sobolev_symbol(shape) -> np.ndarray:
    """``|D(nu)|^2`` of the periodic forward differences on a grid ``shape``: ``4 sin^2(pi nu_y/ny) + 4 sin^2(pi nu_x/nx)``."""
    sy = 4 * np.sin(np.pi * np.arange(shape[0]) / shape[0]) ** 2
    sx = 4 * np.sin(np.pi * np.arange(shape[1]) / shape[1]) ** 2
    return sy[:, None] + sx[None, :]


def _mean_constants(ops: FusionOperators, subspace: Subspace):
    """The constant NIRCam images ``(n_filter,)`` and IFU planes ``(n_wave,)`` of the mean cube."""
    mean = subspace.mean
    const_m = ops.throughput @ (mean * ops.psf_m.sum(axis=(1, 2)))
    const_h = ops.ifu_throughput * mean * ops.psf_h.sum(axis=(1, 2))
    return const_m, const_h


def mean_residuals(images, cube, ops: FusionOperators, subspace: Subspace):
    """``Y_m - NIRCam(mean)`` and ``Y_h - NIRSpec(mean)``: the data left for ``V Z`` to explain.

    The mean cube is constant in space, so its images are constants (PSF sums times throughputs).
    """
    const_m, const_h = _mean_constants(ops, subspace)
    return images - const_m[:, None, None], cube - const_h[:, None, None]


def _dft_rows(freqs, n, size):
    """``exp(-2 pi i f (m - c) / n)`` ``(len(freqs), size)``: the DFT at ``freqs`` of a PSF axis centred on ``c``."""
    m = np.arange(size) - size // 2
    return np.exp(-2j * np.pi * np.outer(freqs, m) / n)


def _transfer_at(psfs, ey_m, ex_m):
    """Transfer functions of ``psfs`` ``(L, py, px)`` at the fine rows and columns of ``ey_m`` ``(R, py)``, ``ex_m`` ``(px, C)``: ``(L, R, C)``.

    The same values as :func:`~mosaic.fusion.operators.transfer_functions` there, by a separable
    DFT of the small PSF, so no transfer function of the whole grid is formed.
    """
    n_l, py, px = psfs.shape
    flat = np.ascontiguousarray(psfs.transpose(1, 0, 2)).reshape(py, n_l * px)
    # real PSFs: two real BLAS products, not a mixed-type (non-BLAS) one
    rows = (ey_m.real @ flat + 1j * (ey_m.imag @ flat)).reshape(len(ey_m) * n_l, px)
    return (rows @ ex_m).reshape(len(ey_m), n_l, -1).transpose(1, 0, 2)


def _wave_chunk(n_bytes_per_wave, budget, n_wave):
    return int(min(n_wave, max(1, budget // max(n_bytes_per_wave, 1))))


def _solve_batch(rows, cols, data, ops, subspace, gamma, mu):
    """The solutions ``(R, C, d^2, k)`` of the Fourier blocks of coarse rows ``rows`` and columns ``cols``.

    Block ``(r, c)`` couples the fine frequencies ``(ay h + r, ax w + c)``, alias ``a = ay d + ax``;
    its unknowns are ordered ``(a, component)``.
    """
    spec_m, spec_h, budget = data
    d, (h, w), k = ops.factor, ops.coarse_shape, subspace.n_components
    ny, nx = ops.shape
    n_alias, basis = d * d, subspace.basis
    n_r, n_c = len(rows), len(cols)
    n_blocks, n = n_r * n_c, n_alias * k
    fy = (np.arange(d)[:, None] * h + rows[None, :]).ravel()  # (ay, r)
    fx = (np.arange(d)[:, None] * w + cols[None, :]).ravel()  # (ax, c)
    ey = {p: _dft_rows(fy, ny, getattr(ops, p).shape[1]) for p in ("psf_m", "psf_h")}
    ex = {p: _dft_rows(fx, nx, getattr(ops, p).shape[2]).T.copy() for p in ("psf_m", "psf_h")}
    phase = np.exp(2j * np.pi * fy * ops.offset[0] / ny)[:, None] * np.exp(2j * np.pi * fx * ops.offset[1] / nx)[None, :]
    phase /= n_alias  # the d^-2 of the sampling
    ia, ib = np.triu_indices(n_alias)
    n_fine = n_alias * n_blocks
    b_m = np.zeros((ops.n_filter * k, n_fine), dtype=np.complex128)
    upper = np.zeros((n_blocks * len(ia), k * k), dtype=np.complex128)
    rhs = np.zeros((n_blocks * n_alias, k), dtype=np.complex128)
    outer_v = (basis[:, :, None] * basis[:, None, :]).reshape(ops.n_wave, k * k)
    # per wavelength: two transfer functions, g and its conjugate, the alias products (and their real view)
    step = _wave_chunk(16 * (4 * n_fine + 3 * n_blocks * len(ia)), budget, ops.n_wave)
    for start in range(0, ops.n_wave, step):
        sl = slice(start, start + step)
        t_m = _transfer_at(ops.psf_m[sl], ey["psf_m"], ex["psf_m"]).reshape(-1, n_fine)
        weights = (ops.throughput[:, sl, None] * basis[None, sl, :]).transpose(0, 2, 1).reshape(-1, t_m.shape[0])
        b_m += weights @ t_m.real + 1j * (weights @ t_m.imag)
        del t_m
        g = _transfer_at(ops.psf_h[sl], ey["psf_h"], ex["psf_h"]) * phase * ops.ifu_throughput[sl, None, None]
        n_l = g.shape[0]
        # (l, ay, r, ax, c) -> (r, c, a, l)
        g = np.ascontiguousarray(g.reshape(n_l, d, n_r, d, n_c).transpose(2, 4, 1, 3, 0)).reshape(n_blocks, n_alias, n_l)
        pairs = g.conj()[:, ia, :] * g[:, ib, :]
        upper += _real_matmul(pairs.reshape(-1, n_l), outer_v[sl])
        del pairs
        spec = spec_h[sl][:, rows][:, :, cols].reshape(n_l, n_blocks).T  # (blocks, l)
        rhs += _real_matmul((g.conj() * spec[:, None, :]).reshape(-1, n_l), basis[sl])
        del g, spec
    # NIRSpec blocks, weighted gamma d^2 (Parseval on the coarse grid): (a, b) and (b, a) are
    # complex conjugates (V is real)
    upper = upper.reshape(n_blocks, len(ia), k, k) * (gamma * d * d)
    rhs *= gamma * d * d
    system = np.empty((n_blocks, n, n), dtype=np.complex128)
    for p, (a, b) in enumerate(zip(ia, ib, strict=True)):
        system[:, a * k : (a + 1) * k, b * k : (b + 1) * k] = upper[:, p]
        system[:, b * k : (b + 1) * k, a * k : (a + 1) * k] = upper[:, p].conj()
    del upper
    # NIRCam and Sobolev terms are diagonal in fine frequency: one k x k block per alias
    b_m = b_m.reshape(ops.n_filter, k, n_fine)
    gram_m = np.einsum("fan,fbn->nab", b_m.conj(), b_m)
    sob = sobolev_symbol((ny, nx))[np.ix_(fy, fx)].ravel()
    gram_m += (mu * sob)[:, None, None] * np.eye(k)
    rhs_m = np.einsum("fcn,fn->nc", b_m.conj(), spec_m[:, fy][:, :, fx].reshape(ops.n_filter, n_fine))
    del b_m
    # fine (ay, r, ax, c) -> (r, c, a)
    gram_m = gram_m.reshape(d, n_r, d, n_c, k, k).transpose(1, 3, 0, 2, 4, 5).reshape(n_blocks, n_alias, k, k)
    rhs += rhs_m.reshape(d, n_r, d, n_c, k).transpose(1, 3, 0, 2, 4).reshape(n_blocks * n_alias, k)
    for a in range(n_alias):
        system[:, a * k : (a + 1) * k, a * k : (a + 1) * k] += gram_m[:, a]
    del gram_m
    # Hermitian positive definite unless some direction is constrained by no term: Cholesky
    # fails, or a pivot vanishes against the largest diagonal element
    chol = np.linalg.cholesky(system)
    pivots = np.abs(np.diagonal(chol, axis1=1, axis2=2)) ** 2
    if pivots.min() <= 1e-12 * np.abs(np.diagonal(system, axis1=1, axis2=2)).max():
        raise np.linalg.LinAlgError
    del system
    # x = L^-H L^-1 b: two triangular solves on the factor (batched)
    y = np.linalg.solve(chol, rhs.reshape(n_blocks, n, 1))
    x = np.linalg.solve(np.conj(chol.transpose(0, 2, 1)), y)[..., 0]
    return x.reshape(n_r, n_c, d, d, k)


def _real_matmul(z, m):
    """``z @ m`` for complex ``z`` ``(n, l)`` and real ``m`` ``(l, p)`` as one real BLAS product (no copies of ``z``)."""
    l, p = m.shape
    m2 = np.zeros((l, 2, 2, p))
    m2[:, 0, 0], m2[:, 1, 1] = m, m
    out = z.view(np.float64).reshape(len(z), 2 * l) @ m2.reshape(2 * l, 2 * p)
    return out.view(np.complex128) if p == 1 else out[:, :p] + 1j * out[:, p:]


def solve_exact(
    images, cube, ops: FusionOperators, subspace: Subspace, *, gamma: float, mu: float, batch_bytes: int = _BATCH_BYTES
) -> np.ndarray:
    """The exact minimiser ``Z`` ``(k, ny, nx)`` of objective (9), block by block in Fourier.

    The blocks are formed and solved in batches of coarse frequencies whose temporaries take
    about ``batch_bytes``; the transfer functions are evaluated at each batch's frequencies only.
    Beyond the batches, memory is the data's spectra and ``Z``'s (each the size of the inputs).

    Parameters
    ----------
    images : ndarray
        NIRCam images ``(n_filter, ny, nx)`` on the fine grid.
    cube : ndarray
        IFU cube ``(n_wave, ny / d, nx / d)``.
    ops : FusionOperators
        The forward models.
    subspace : Subspace
        ``V`` and the mean spectrum.
    gamma, mu : float
        Weight of the IFU term and of the Sobolev regulariser.
    batch_bytes : int, optional
        Bytes of temporaries one batch of blocks may take.

    Returns
    -------
    ndarray
        ``Z``; the fused cube is ``subspace.expand(Z)``.
    """
    _check_weights(gamma, mu)
    _check_data(images, cube, ops, subspace)
    d, (h, w), k = ops.factor, ops.coarse_shape, subspace.n_components
    ny, nx = ops.shape
    n = d * d * k
    const_m, const_h = _mean_constants(ops, subspace)
    # spectra of the mean residuals: the constants only change the zero frequency
    spec_m = scipy.fft.fft2(np.asarray(images, dtype=np.float64), axes=(1, 2))
    spec_m[:, 0, 0] -= const_m * (ny * nx)
    # Z is real: the block of -kappa is the conjugate of that of kappa, so the columns <= w // 2 suffice
    spec_h = scipy.fft.rfft2(np.asarray(cube, dtype=np.float64), axes=(1, 2))
    spec_h[:, 0, 0] -= const_h * (h * w)
    n_cols = w // 2 + 1
    # per block: the system, its factor and the solves' copies, plus the fine-frequency terms
    per_block = 16 * (4 * n * n + 4 * d * d * k * (k + ops.n_filter))
    cols_per = int(min(n_cols, max(1, batch_bytes // per_block)))
    rows_per = int(min(h, max(1, batch_bytes // (per_block * cols_per))))
    z_hat = np.zeros((k, ny, nx), dtype=np.complex128)
    data = (spec_m, spec_h, batch_bytes)
    log.debug("solving %d Fourier blocks of %d unknowns in batches of %d x %d", h * n_cols, n, rows_per, cols_per)
    for r0 in range(0, h, rows_per):
        rows = np.arange(r0, min(h, r0 + rows_per))
        for c0 in range(0, n_cols, cols_per):
            cols = np.arange(c0, min(n_cols, c0 + cols_per))
            try:
                x = _solve_batch(rows, cols, data, ops, subspace, gamma, mu)
            except np.linalg.LinAlgError:
                msg = (
                    f"the fusion normal equations are singular (mu={mu}, gamma={gamma}, {ops.n_filter} filters, "
                    f"k={k}): some frequencies are constrained by no term; use mu > 0"
                )
                raise ValueError(msg) from None
            fy = (np.arange(d)[:, None] * h + rows[None, :]).T  # (r, ay)
            fx = (np.arange(d)[:, None] * w + cols[None, :]).T  # (c, ax)
            # x (r, c, ay, ax, k) -> z_hat[k, fy[r, ay], fx[c, ax]]
            z_hat[:, fy[:, None, :, None], fx[None, :, None, :]] = x.transpose(4, 0, 1, 2, 3)
    del spec_m, spec_h
    # the other columns by conjugate symmetry: Z_hat(-nu) = conj(Z_hat(nu))
    missing = np.flatnonzero((np.arange(nx) % w) > w // 2)
    if missing.size:
        iy = (-np.arange(ny)) % ny
        z_hat[:, :, missing] = z_hat[:, iy[:, None], ((-missing) % nx)[None, :]].conj()
    return scipy.fft.ifft2(z_hat, axes=(1, 2), overwrite_x=True).real


def _check_data(images, cube, ops, subspace):
    expected = {"images": (ops.n_filter, *ops.shape), "IFU cube": (ops.n_wave, *ops.coarse_shape)}
    for (name, shape), value in zip(expected.items(), (images, cube), strict=True):
        if tuple(np.shape(value)) != shape:
            msg = f"{name}: got shape {tuple(np.shape(value))!r}; expected {shape!r} for these operators"
            raise ValueError(msg)
    if subspace.basis.shape[0] != ops.n_wave:
        msg = f"subspace: {subspace.basis.shape[0]} wavelengths; expected {ops.n_wave}"
        raise ValueError(msg)


def _check_weights(gamma, mu):
    if not (np.isfinite(gamma) and gamma >= 0 and np.isfinite(mu) and mu >= 0):
        msg = f"gamma and mu must be finite and >= 0; got gamma={gamma!r}, mu={mu!r}"
        raise ValueError(msg)


def solve_cg(
    images,
    cube,
    ops: FusionOperators,
    subspace: Subspace,
    *,
    gamma: float,
    mu: float,
    rtol: float = 1e-10,
    maxiter: int = 1000,
    z0=None,
) -> tuple[np.ndarray, int]:
    """Objective (9) minimised by conjugate gradients on its normal equations (the peer of :func:`solve_exact`).

    Returns ``Z`` and the number of iterations run; stops at ``maxiter`` or when the residual
    norm falls to ``rtol`` of the right-hand side's.
    """
    _check_weights(gamma, mu)
    _check_data(images, cube, ops, subspace)
    basis, k = subspace.basis, subspace.n_components
    shape = (k, *ops.shape)
    r_m, r_h = mean_residuals(images, cube, ops, subspace)
    back = ops.nircam_adjoint(r_m) + gamma * ops.nirspec_adjoint(r_h)
    b = np.tensordot(basis.T, back, axes=1).ravel()

    def normal(v):
        z = v.reshape(shape)
        x = np.tensordot(basis, z, axes=1)
        back = ops.nircam_adjoint(ops.nircam(x)) + gamma * ops.nirspec_adjoint(ops.nirspec(x))
        out = np.tensordot(basis.T, back, axes=1) + mu * finite_differences_adjoint(finite_differences(z))
        return out.ravel()

    operator = scipy.sparse.linalg.LinearOperator((b.size, b.size), matvec=normal, dtype=np.float64)
    count = [0]

    def _count(_):
        count[0] += 1

    x0 = None if z0 is None else np.asarray(z0, dtype=np.float64).ravel()
    z, _ = scipy.sparse.linalg.cg(operator, b, x0=x0, rtol=rtol, atol=0.0, maxiter=maxiter, callback=_count)
    return z.reshape(shape), count[0]
