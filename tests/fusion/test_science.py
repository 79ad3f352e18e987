"""Fusion of a simulated scene recovers its truth better than either instrument alone (issue 19's figures)."""

from __future__ import annotations

import numpy as np
import pytest

from mosaic.fusion import metrics
from mosaic.fusion.objective import pca_subspace
from mosaic.fusion.simulate import simulate_scene
from mosaic.fusion.solve import solve_exact


@pytest.fixture(scope="module")
def fused():
    scene = simulate_scene(coarse_shape=(24, 24), n_wave=40, seed=3)
    sub = pca_subspace(scene.cube, 4)
    cube = sub.expand(solve_exact(scene.images, scene.cube, scene.ops, sub, gamma=1.0, mu=1e-3))
    return scene, cube


@pytest.mark.parametrize("channel", [8, 20, 32])
def test_fused_planes_against_truth(fused, channel):
    scene, cube = fused
    truth, fused_plane = scene.truth[channel], cube[channel]
    up = metrics.upsampled_ifu(scene.cube, scene.ops.factor)[channel]
    # the seed's bar (PSNR >= 30 dB, SSIM > 0.9) and better than the IFU alone
    assert metrics.psnr(truth, fused_plane) >= 30.0
    assert metrics.ssim(truth, fused_plane) > 0.9
    assert metrics.psnr(truth, fused_plane) > metrics.psnr(truth, up) + 2.0
    assert metrics.ssim(truth, fused_plane) > metrics.ssim(truth, up) + 0.03


def test_fused_spectra(fused):
    scene, cube = fused
    truth = scene.truth
    mean_ifu = scene.cube.mean(axis=(1, 2))
    # the seed's consistency check (averaged spectrum within 2 % of the IFU's) with the IFU's mean as it is
    sub = pca_subspace(scene.cube, 4, mean="data")
    as_seed = sub.expand(solve_exact(scene.images, scene.cube, scene.ops, sub, gamma=1.0, mu=1e-3))
    assert np.max(np.abs(metrics.spectral_relative_error(scene.cube, as_seed))) < 0.02
    # with the projected mean, the fused mean departs from the IFU's by less than the IFU mean's own noise
    n_spaxels = scene.cube[0].size
    chi2 = np.mean((cube.mean(axis=(1, 2)) - mean_ifu) ** 2) / (scene.sigma_cube**2 / n_spaxels)
    assert chi2 < 1.0
    # against truth the typical channel is within 2 % too (the worst ones carry the IFU's own noise)
    assert np.median(np.abs(metrics.spectral_relative_error(truth, cube))) < 0.02
    on_source = truth.mean(axis=0) > 0.05 * truth.mean(axis=0).max()
    sam = {
        "fused": np.mean(metrics.spectral_angle(truth, cube)[on_source]),
        "ifu": np.mean(metrics.spectral_angle(truth, metrics.upsampled_ifu(scene.cube, scene.ops.factor))[on_source]),
        "nircam": np.mean(metrics.spectral_angle(truth, metrics.nircam_only(scene.images, scene.ops.throughput, mean_ifu))[on_source]),
    }
    assert sam["fused"] < 0.9 * sam["ifu"]
    assert sam["fused"] < 0.5 * sam["nircam"]


def test_fused_images_reproduce_nircam(fused):
    """Appendix D.1: the fused cube seen through NIRCam matches the images to their noise."""
    scene, cube = fused
    model = scene.ops.nircam(cube)
    for f in range(len(scene.filters)):
        assert metrics.psnr(scene.images[f], model[f]) > 34.0
    chi2 = np.mean((model - scene.images) ** 2) / scene.sigma_images**2
    assert 0.3 < chi2 < 1.5
