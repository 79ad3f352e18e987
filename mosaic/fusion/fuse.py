"""One call from co-registered data to a fused cube: subspace, solve (exact, tiled or CG), expansion."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from mosaic.fusion.objective import MEANS, Subspace, pca_subspace
from mosaic.fusion.operators import FusionOperators
from mosaic.fusion.solve import solve_cg, solve_exact
from mosaic.fusion.tiled import BOUNDARIES, expand, fuse_tiled

__all__ = ["FusionResult", "fuse", "SOLVERS"]

log = logging.getLogger(__name__)

SOLVERS = ("exact", "cg")


@dataclass
class FusionResult:
    """``cube`` = ``subspace.expand(z)`` (a dask array when tiled); ``n_iterations`` 0 for the exact solve."""

    cube: object
    z: object
    subspace: Subspace
    n_iterations: int = 0


def fuse(
    images,
    cube,
    ops: FusionOperators,
    *,
    n_components: int = 5,
    gamma: float = 1.0,
    mu: float = 1e-3,
    solver: str = "exact",
    tile: int | None = None,
    halo: int | None = None,
    boundary: str = "periodic",
    cg_iterations: int = 1000,
    subspace: Subspace | None = None,
    mean: str = "projected",
) -> FusionResult:
    """Fuse co-registered NIRCam images and an IFU cube by minimising objective (9) of seed 003.

    Parameters
    ----------
    images : ndarray
        ``(n_filter, ny, nx)`` on the fine grid of ``ops``.
    cube : ndarray
        ``(n_wave, ny / d, nx / d)``.
    ops : FusionOperators
        Forward models (PSFs, cross-calibrated throughputs, ``d``).
    n_components : int
        ``k``, principal spectra of the IFU cube kept (ignored when ``subspace`` is given).
    gamma, mu : float
        Weight of the IFU term and of the Sobolev regulariser.
    solver : {"exact", "cg"}
        Fourier blocks (no iteration) or conjugate gradients (``cg_iterations`` at most).
    tile : int, optional
        Solve in tiles of this many spaxels (exact solver only); the result is then lazy.
    halo, boundary
        See :func:`mosaic.fusion.tiled.fuse_tiled`.
    mean : {"projected", "data"}
        The mean spectrum: the IFU's projected on its signal subspace, or as it is (seed 003);
        see :func:`mosaic.fusion.objective.pca_subspace` (ignored when ``subspace`` is given).
    """
    if solver not in SOLVERS:
        msg = f"solver must be one of {SOLVERS}; got {solver!r}"
        raise ValueError(msg)
    if boundary not in BOUNDARIES:
        msg = f"boundary must be one of {BOUNDARIES}; got {boundary!r}"
        raise ValueError(msg)
    if mean not in MEANS:
        msg = f"mean must be one of {MEANS}; got {mean!r}"
        raise ValueError(msg)
    if subspace is None:
        subspace = pca_subspace(cube, n_components, mean=mean)
    log.info("subspace: %d components keep %.2f %% of the IFU variance", subspace.n_components, 100 * subspace.explained)
    if subspace.mean_rank:
        log.info("mean spectrum projected on the %d-dimensional signal subspace of the IFU cube", subspace.mean_rank)
    kw = {"gamma": gamma, "mu": mu}
    if tile is not None:
        if solver != "exact":
            msg = "tiled fusion uses the exact solver; drop the tile size or use solver='exact'"
            raise ValueError(msg)
        z = fuse_tiled(images, cube, ops, subspace, tile=tile, halo=halo, boundary=boundary, **kw)
        return FusionResult(expand(z, subspace), z, subspace)
    if solver == "cg":
        z, n_it = solve_cg(images, cube, ops, subspace, maxiter=cg_iterations, **kw)
        log.info("CG: %d iterations", n_it)
        return FusionResult(subspace.expand(z), z, subspace, n_it)
    z = solve_exact(np.asarray(images), np.asarray(cube), ops, subspace, **kw)
    return FusionResult(subspace.expand(z), z, subspace)
