"""The exact Fourier block solve against conjugate gradients on the same objective, and its optimality."""

from __future__ import annotations

import numpy as np
import pytest

from mosaic.fusion.objective import objective, objective_gradient
from mosaic.fusion.solve import solve_cg, solve_exact


@pytest.mark.parametrize(
    ("factor", "coarse", "offset", "mu"),
    [(3, (6, 8), None, 0.3), (2, (5, 7), (0, 1), 0.05), (3, (4, 5), (2, 0), 1.0)],
)
def test_exact_equals_cg_to_convergence(make_problem, factor, coarse, offset, mu):
    ops, images, cube, sub = make_problem(7, factor=factor, coarse=coarse, offset=offset)
    gamma = 0.7
    z_exact = solve_exact(images, cube, ops, sub, gamma=gamma, mu=mu)
    z_cg, n_iter = solve_cg(images, cube, ops, sub, gamma=gamma, mu=mu, rtol=1e-13, maxiter=20000)
    assert n_iter < 20000
    assert np.linalg.norm(z_exact - z_cg) / np.linalg.norm(z_cg) < 1e-6


def test_gradient_vanishes_at_the_exact_solution(make_problem):
    ops, images, cube, sub = make_problem(11, coarse=(7, 6), k=4)
    kw = {"gamma": 2.0, "mu": 0.1}
    z = solve_exact(images, cube, ops, sub, **kw)
    g0 = np.linalg.norm(objective_gradient(np.zeros_like(z), images, cube, ops, sub, **kw))
    assert np.linalg.norm(objective_gradient(z, images, cube, ops, sub, **kw)) < 1e-8 * g0
    # and it is a minimum: any step raises the objective
    rng = np.random.default_rng(0)
    j = objective(z, images, cube, ops, sub, **kw)
    for _ in range(3):
        assert objective(z + 1e-3 * rng.normal(size=z.shape), images, cube, ops, sub, **kw) > j


def test_zero_regularisation_is_still_solvable(make_problem):
    """mu = 0 with as many filters as components: the IFU and NIRCam terms alone fix every frequency."""
    ops, images, cube, sub = make_problem(3, n_filter=4, k=3, coarse=(4, 4))
    z = solve_exact(images, cube, ops, sub, gamma=1.0, mu=0.0)
    g0 = np.linalg.norm(objective_gradient(np.zeros_like(z), images, cube, ops, sub, gamma=1.0, mu=0.0))
    assert np.linalg.norm(objective_gradient(z, images, cube, ops, sub, gamma=1.0, mu=0.0)) < 1e-8 * g0


def test_bad_weights(make_problem):
    ops, images, cube, sub = make_problem(0)
    with pytest.raises(ValueError, match="gamma and mu must be finite and >= 0"):
        solve_exact(images, cube, ops, sub, gamma=-1.0, mu=0.1)


def test_bad_shapes_and_singular_systems(make_problem):
    ops, images, cube, sub = make_problem(0)
    with pytest.raises(ValueError, match=r"IFU cube: got shape \(10, 6, 7\); expected \(10, 6, 8\)"):
        solve_exact(images, cube[:, :, :7], ops, sub, gamma=1.0, mu=0.1)
    # one filter, three components, no regulariser: high frequencies of Z are undetermined
    ops1, images1, cube1, sub1 = make_problem(0, n_filter=1, k=3)
    with pytest.raises(ValueError, match="normal equations are singular"):
        solve_exact(images1, cube1, ops1, sub1, gamma=1.0, mu=0.0)


def test_batched_blocks_equal_one_batch_and_bound_memory(make_problem):
    """Blocks solved a few at a time give the same Z, and the peak stays near the data's size, not the systems'."""
    import tracemalloc

    ops, images, cube, sub = make_problem(9, coarse=(20, 19), k=5, n_wave=12, offset=(0, 2))
    kw = {"gamma": 0.8, "mu": 0.1}
    whole = solve_exact(images, cube, ops, sub, batch_bytes=2**30, **kw)
    budget = 2**20
    tracemalloc.start()
    batched = solve_exact(images, cube, ops, sub, batch_bytes=budget, **kw)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_allclose(batched, whole, rtol=0, atol=1e-10 * np.abs(whole).max())
    n = 9 * sub.n_components
    systems = 16 * (20 * 10) * n * n  # the Hermitian systems of half the coarse frequencies, held at once
    data = 16 * (images.size + cube.size + whole.size)  # the spectra of the inputs and of Z
    assert peak < budget + 2 * data < systems / 3
