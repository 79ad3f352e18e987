"""Filter halos: the reach of each kernel, checked against the filters' own impulse responses."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi

from mosaic.ops.filters import filter_halo, gaussian_block, median_block


@pytest.mark.parametrize("sigma,truncate", [(0.7, 4.0), (2.0, 4.0), (3.3, 2.5), ((1.0, 4.0), 4.0)])
def test_gaussian_halo_is_the_impulse_response_radius(sigma, truncate):
    impulse = np.zeros((61, 61))
    impulse[30, 30] = 1.0
    response = gaussian_block(impulse, sigma=sigma, mode="constant", truncate=truncate)
    ys, xs = np.nonzero(response)
    assert filter_halo("gaussian", sigma=sigma, truncate=truncate) == (30 - ys.min(), 30 - xs.min())


@pytest.mark.parametrize("size", [1, 4, 5, (3, 8)])
def test_median_halo_covers_the_window(size):
    # a window reaching further than the halo would see the spike from a pixel outside it
    h = filter_halo("median", size=size)
    spike = np.zeros((41, 41))
    spike[20, 20] = 1.0
    sy, sx = (size, size) if np.isscalar(size) else size
    fp = np.ones((sy, sx), bool)
    plateau = np.zeros((41, 41))
    plateau[20 - h[0] : 21 + h[0], 20 - h[1] : 21 + h[1]] = 1.0
    out = median_block(plateau, size=size, mode="constant")
    assert np.array_equal(out, ndi.median_filter(plateau, footprint=fp, mode="constant"))
    assert not out[: 20 - 2 * h[0] - 1].any() and not out[:, : 20 - 2 * h[1] - 1].any()


def test_convolve_halo_is_half_the_kernel():
    assert filter_halo("convolve", kernel_shape=(7, 3)) == (3, 1)
    with pytest.raises(ValueError, match="filter kind 'box' is not known"):
        filter_halo("box")
