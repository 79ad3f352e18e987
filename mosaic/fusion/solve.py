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
from mosaic.fusion.operators import FusionOperators, sampling_phase

__all__ = ["solve_exact", "solve_cg", "mean_residuals", "sobolev_symbol"]

log = logging.getLogger(__name__)

#: bytes one wavelength chunk of the NIRSpec block assembly may take
_CHUNK_BYTES = 32 * 2**20


def sobolev_symbol(shape) -> np.ndarray:
    """``|D(nu)|^2`` of the periodic forward differences on a grid ``shape``: ``4 sin^2(pi nu_y/ny) + 4 sin^2(pi nu_x/nx)``."""
    sy = 4 * np.sin(np.pi * np.arange(shape[0]) / shape[0]) ** 2
    sx = 4 * np.sin(np.pi * np.arange(shape[1]) / shape[1]) ** 2
    return sy[:, None] + sx[None, :]


def mean_residuals(images, cube, ops: FusionOperators, subspace: Subspace):
    """``Y_m - NIRCam(mean)`` and ``Y_h - NIRSpec(mean)``: the data left for ``V Z`` to explain.

    The mean cube is constant in space, so its images are constants (PSF sums times throughputs).
    """
    mean = subspace.mean
    const_m = ops.throughput @ (mean * ops.psf_m.sum(axis=(1, 2)))
    const_h = ops.ifu_throughput * mean * ops.psf_h.sum(axis=(1, 2))
    return images - const_m[:, None, None], cube - const_h[:, None, None]


def _to_blocks(a, d, coarse):
    """Fine-frequency array ``(..., ny, nx)`` -> ``(h*w, ..., d*d)`` with aliases last."""
    h, w = coarse
    lead = a.shape[:-2]
    a = a.reshape(*lead, d, h, d, w)
    n = len(lead)
    order = (n + 1, n + 3, *range(n), n, n + 2)
    return a.transpose(order).reshape(h * w, *lead, d * d)


def _from_blocks(b, d, coarse):
    """Inverse of :func:`_to_blocks` for ``(h*w, k, d*d)`` -> ``(k, ny, nx)``."""
    h, w = coarse
    k = b.shape[1]
    return b.reshape(h, w, k, d, d).transpose(2, 3, 0, 4, 1).reshape(k, d * h, d * w)


def _nircam_blocks(r_m, ops, basis):
    """``B_m^H B_m`` ``(k, k, ny, nx)`` and ``B_m^H r_m`` ``(k, ny, nx)`` per fine frequency."""
    k, n_pix = basis.shape[1], ops.shape[0] * ops.shape[1]
    b_m = np.zeros((ops.n_filter * k, n_pix), dtype=np.complex128)
    step = max(1, _CHUNK_BYTES // (16 * n_pix))
    for start in range(0, ops.n_wave, step):
        sl = slice(start, start + step)
        otf = ops.otf("m", sl).reshape(-1, n_pix)
        # sum_l L_m[f, l] V[l, c] OTF_l(nu)
        b_m += (ops.throughput[:, None, sl] * basis.T[None, :, sl]).reshape(-1, len(otf)) @ otf
    b_m = b_m.reshape(ops.n_filter, k, *ops.shape)
    gram = np.einsum("fayx,fbyx->abyx", b_m.conj(), b_m)
    rhs = np.einsum("fcyx,fyx->cyx", b_m.conj(), scipy.fft.fft2(r_m, axes=(1, 2)))
    return gram, rhs


def _real_matmul(z, m):
    """``z @ m`` for complex ``z`` ``(n, l)`` and real ``m`` ``(l, p)`` as one real BLAS product (no copies of ``z``)."""
    l, p = m.shape
    m2 = np.zeros((l, 2, 2, p))
    m2[:, 0, 0], m2[:, 1, 1] = m, m
    out = z.view(np.float64).reshape(len(z), 2 * l) @ m2.reshape(2 * l, 2 * p)
    return out.view(np.complex128) if p == 1 else out[:, :p] + 1j * out[:, p:]


def _nirspec_blocks(r_h, ops, basis, keep):
    """``B_h^H B_h`` ``(h*w, d^2 k, d^2 k)`` and ``B_h^H r_h`` ``(h*w, d^2 k)`` per coarse frequency.

    Only the coarse frequencies ``keep`` (indices into ``h*w``).
    ``B_h^H B_h[(a, c), (b, e)] = sum_l conj(g_l(a)) g_l(b) V[l, c] V[l, e]``: the alias products
    ``conj(g_l(a)) g_l(b)`` of a chunk of wavelengths times ``V[l, c] V[l, e]`` is one real
    matrix product (BLAS) over the wavelengths.
    """
    d, coarse, k = ops.factor, ops.coarse_shape, basis.shape[1]
    n_blocks, n_alias = len(keep), d * d
    # (a, b) and (b, a) are complex conjugates (V is real): products for a <= b only
    ia, ib = np.triu_indices(n_alias)
    upper = np.zeros((n_blocks * len(ia), k * k), dtype=np.complex128)
    rhs = np.zeros((n_blocks * n_alias, k), dtype=np.complex128)
    phase = sampling_phase(ops.shape, ops.offset) / n_alias
    spec_h = scipy.fft.fft2(r_h, axes=(1, 2)).reshape(ops.n_wave, -1)[:, keep]
    outer_v = (basis[:, :, None] * basis[:, None, :]).reshape(ops.n_wave, k * k)
    step = max(1, _CHUNK_BYTES // (16 * n_blocks * len(ia)))
    for start in range(0, ops.n_wave, step):
        sl = slice(start, start + step)
        g = ops.otf("h", sl) * phase * ops.ifu_throughput[sl, None, None]
        g = np.ascontiguousarray(_to_blocks(g, d, coarse)[keep].transpose(0, 2, 1))  # (blocks, a, l)
        n_l = g.shape[2]
        pairs = g.conj()[:, ia, :] * g[:, ib, :]  # (blocks, a <= b, l)
        upper += _real_matmul(pairs.reshape(-1, n_l), outer_v[sl])
        rhs += _real_matmul((g.conj() * spec_h[sl].T[:, None, :]).reshape(-1, n_l), basis[sl])
    upper = upper.reshape(n_blocks, len(ia), k, k)
    gram = np.empty((n_blocks, n_alias * k, n_alias * k), dtype=np.complex128)
    for p, (a, b) in enumerate(zip(ia, ib, strict=True)):
        gram[:, a * k : (a + 1) * k, b * k : (b + 1) * k] = upper[:, p]
        gram[:, b * k : (b + 1) * k, a * k : (a + 1) * k] = upper[:, p].conj()
    return gram, rhs.reshape(n_blocks, n_alias * k)


def solve_exact(images, cube, ops: FusionOperators, subspace: Subspace, *, gamma: float, mu: float) -> np.ndarray:
    """The exact minimiser ``Z`` ``(k, ny, nx)`` of objective (9), block by block in Fourier.

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

    Returns
    -------
    ndarray
        ``Z``; the fused cube is ``subspace.expand(Z)``.
    """
    _check_weights(gamma, mu)
    _check_data(images, cube, ops, subspace)
    d, coarse, k = ops.factor, ops.coarse_shape, subspace.n_components
    r_m, r_h = mean_residuals(images, cube, ops, subspace)
    gram_m, rhs_m = _nircam_blocks(r_m, ops, subspace.basis)
    # Z is real: the block of -kappa is the conjugate of that of kappa, so half the blocks suffice
    keep = np.flatnonzero((np.arange(coarse[0] * coarse[1]) % coarse[1]) <= coarse[1] // 2)
    system, rhs_h = _nirspec_blocks(r_h, ops, subspace.basis, keep)
    system *= gamma * d * d
    rhs = (gamma * d * d) * rhs_h + _to_blocks(rhs_m, d, coarse)[keep].transpose(0, 2, 1).reshape(len(keep), -1)
    del rhs_h, rhs_m
    # NIRCam and Sobolev terms are diagonal in fine frequency: one k x k block per alias
    diag = gram_m + mu * np.eye(k)[:, :, None, None] * sobolev_symbol(ops.shape)
    diag = _to_blocks(diag, d, coarse)[keep]  # (blocks, k, k, a)
    del gram_m
    for a in range(d * d):
        system[:, a * k : (a + 1) * k, a * k : (a + 1) * k] += diag[..., a]
    log.debug("solving %d Fourier blocks of %d unknowns", len(system), d * d * k)
    try:
        # Hermitian positive definite unless some direction is constrained by no term: Cholesky
        # fails, or a pivot vanishes against the largest diagonal element
        pivots = np.abs(np.diagonal(np.linalg.cholesky(system), axis1=1, axis2=2)) ** 2
        if pivots.min() <= 1e-12 * np.abs(np.diagonal(system, axis1=1, axis2=2)).max():
            raise np.linalg.LinAlgError
        z_hat = np.linalg.solve(system, rhs[..., None])[..., 0]
    except np.linalg.LinAlgError:
        msg = (
            f"the fusion normal equations are singular (mu={mu}, gamma={gamma}, {ops.n_filter} filters, "
            f"k={k}): some frequencies are constrained by no term; use mu > 0"
        )
        raise ValueError(msg) from None
    full = np.zeros((coarse[0] * coarse[1], k, d * d), dtype=np.complex128)
    full[keep] = z_hat.reshape(-1, d * d, k).transpose(0, 2, 1)
    z_hat = _from_blocks(full, d, coarse)
    ny, nx = ops.shape
    mirror = z_hat[:, (-np.arange(ny)) % ny][:, :, (-np.arange(nx)) % nx].conj()
    missing = (np.arange(nx) % coarse[1]) > coarse[1] // 2
    z_hat[:, :, missing] = mirror[:, :, missing]
    return scipy.fft.ifft2(z_hat, axes=(1, 2)).real


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
