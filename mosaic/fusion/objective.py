"""The spectral subspace (PCA of the IFU cube), the Sobolev regulariser and objective (3)/(9) of seed 003.

With ``X = V Z + mean`` (eq. 8), ``V`` the ``k`` leading principal spectra of the IFU cube and
``mean`` its spatially averaged spectrum, objective (9) in the subspace coefficients ``Z``
(``(k, ny, nx)`` on the fine grid) is::

    J(Z) = ||Y_m - NIRCam(V Z + mean)||^2 + gamma ||Y_h - NIRSpec(V Z + mean)||^2 + mu ||Z D||^2

``D`` the first-order periodic finite differences along both axes (a Sobolev semi-norm).

*The mean spectrum.* The seed takes ``mean`` as the IFU cube's averaged spectrum; its noise then
passes into the fused cube unchanged (the NIRSpec term only corrects it along ``V``). By default
(``mean="projected"``) it is instead projected onto the cube's *signal subspace*: the leading
right singular vectors of the uncentred spaxel x wavelength matrix whose singular values stand
above the noise, by the optimal hard threshold of Gavish & Donoho (2014, IEEE Trans. Inf. Theory
60, 5040) for white noise of unknown level (:func:`signal_rank`). Components the data do not
resolve above the noise are dropped, so the projection removes noise without biasing what the
data can show; a noiseless low-rank cube keeps its mean exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Subspace",
    "pca_subspace",
    "signal_rank",
    "MEANS",
    "finite_differences",
    "finite_differences_adjoint",
    "objective",
    "objective_gradient",
]


#: how the mean spectrum is taken from the IFU cube (see the module's docstring)
MEANS = ("projected", "data")


@dataclass(frozen=True)
class Subspace:
    """``X = V Z + mean``: ``basis`` ``(n_wave, k)`` with orthonormal columns, ``mean`` ``(n_wave,)``.

    ``explained`` is the fraction of the IFU cube's centred variance that the basis keeps;
    ``mean_rank`` the rank of the signal subspace the mean was projected onto (0: the data's mean).
    """

    basis: np.ndarray
    mean: np.ndarray
    explained: float = 1.0
    mean_rank: int = 0

    @property
    def n_components(self) -> int:
        return self.basis.shape[1]

    def expand(self, z) -> np.ndarray:
        """The cube ``V Z + mean`` of coefficients ``z`` ``(k, ny, nx)``."""
        return np.tensordot(self.basis, z, axes=1) + self.mean[:, None, None]

    def project(self, cube) -> np.ndarray:
        """The coefficients ``V^T (X - mean)`` of a cube."""
        return np.tensordot(self.basis.T, cube - self.mean[:, None, None], axes=1)


def signal_rank(singular_values, shape) -> int:
    """How many singular values of a ``shape`` matrix stand above white noise of unknown level.

    The optimal hard threshold of Gavish & Donoho (2014): ``omega(beta) * median(s)``, with
    ``beta`` the aspect ratio (short side over long side) and
    ``omega(beta) ~ 0.56 beta^3 - 0.95 beta^2 + 1.82 beta + 1.43``. ``singular_values`` are all
    ``min(shape)`` of them (the median is the noise's, as long as the signal's rank is well below
    ``min(shape) / 2``).
    """
    s = np.asarray(singular_values, dtype=np.float64)
    beta = min(shape) / max(shape)
    omega = 0.56 * beta**3 - 0.95 * beta**2 + 1.82 * beta + 1.43
    return int(np.sum(s > omega * np.median(s)))


def pca_subspace(cube, n_components: int, *, mean: str = "projected") -> Subspace:
    """The ``n_components`` principal spectra and the mean spectrum of an IFU cube ``(n_wave, ny, nx)``.

    NaN spaxels (any NaN in their spectrum) are left out. ``mean``: ``"projected"`` (the averaged
    spectrum projected onto the cube's signal subspace, see the module's docstring) or ``"data"``
    (the averaged spectrum as it is, as in seed 003).
    """
    if mean not in MEANS:
        msg = f"mean must be one of {MEANS}; got {mean!r}"
        raise ValueError(msg)
    cube = np.asarray(cube, dtype=np.float64)
    if cube.ndim != 3:
        msg = f"IFU cube: got {cube.ndim} axes; expected 3 (wavelength, y, x)"
        raise ValueError(msg)
    n_wave = cube.shape[0]
    spectra = cube.reshape(n_wave, -1)
    spectra = spectra[:, np.all(np.isfinite(spectra), axis=0)]
    k = int(n_components)
    if not 1 <= k <= min(n_wave, spectra.shape[1]):
        msg = (
            f"n_components must be between 1 and min(wavelengths, good spaxels) = "
            f"{min(n_wave, spectra.shape[1])}; got {n_components!r}"
        )
        raise ValueError(msg)
    average = spectra.mean(axis=1)
    u, s, _ = np.linalg.svd(spectra - average[:, None], full_matrices=False)
    total = float(np.sum(s**2))
    explained = float(np.sum(s[:k] ** 2) / total) if total > 0 else 1.0
    # a sign convention, so that the same cube gives the same basis everywhere
    basis = u[:, :k] * np.where(u[np.abs(u[:, :k]).argmax(axis=0), np.arange(k)] < 0, -1.0, 1.0)
    rank = 0
    if mean == "projected":
        # the signal subspace of the uncentred spectra (it holds the mean direction)
        u0, s0, _ = np.linalg.svd(spectra, full_matrices=False)
        rank = max(1, signal_rank(s0, spectra.shape))
        average = u0[:, :rank] @ (u0[:, :rank].T @ average)
    return Subspace(basis=basis, mean=average, explained=explained, mean_rank=rank)


def finite_differences(z) -> np.ndarray:
    """``Z D``: periodic forward differences of ``(k, ny, nx)`` along y and x, ``(2, k, ny, nx)``."""
    return np.stack([np.roll(z, -1, axis=-2) - z, np.roll(z, -1, axis=-1) - z])


def finite_differences_adjoint(g) -> np.ndarray:
    """The adjoint of :func:`finite_differences`: ``(2, k, ny, nx)`` -> ``(k, ny, nx)``."""
    return (np.roll(g[0], 1, axis=-2) - g[0]) + (np.roll(g[1], 1, axis=-1) - g[1])


def _residuals(z, images, cube, ops, subspace):
    x = subspace.expand(z)
    return ops.nircam(x) - images, ops.nirspec(x) - cube


def objective(z, images, cube, ops, subspace, *, gamma: float, mu: float) -> float:
    """``J(Z)`` of eq. (9) for the operators ``ops`` (:class:`~mosaic.fusion.operators.FusionOperators`)."""
    rm, rh = _residuals(z, images, cube, ops, subspace)
    return float(np.sum(rm**2) + gamma * np.sum(rh**2) + mu * np.sum(finite_differences(z) ** 2))


def objective_gradient(z, images, cube, ops, subspace, *, gamma: float, mu: float) -> np.ndarray:
    """The gradient of :func:`objective` with respect to ``Z``, ``(k, ny, nx)``."""
    rm, rh = _residuals(z, images, cube, ops, subspace)
    back = ops.nircam_adjoint(rm) + gamma * ops.nirspec_adjoint(rh)
    grad = np.tensordot(subspace.basis.T, back, axes=1)
    return 2.0 * (grad + mu * finite_differences_adjoint(finite_differences(z)))
