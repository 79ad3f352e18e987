"""1/f stripe operator: amplifier layout, recovery of a known pattern, clipped medians vs astropy."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.stats import sigma_clipped_stats

from mosaic.ops.destripe import _clipped_median, amplifier_slices, stripe_model


def test_amplifier_layout():
    assert amplifier_slices(2048) == [slice(0, 512), slice(512, 1024), slice(1024, 1536), slice(1536, 2048)]
    assert amplifier_slices(640) == [slice(0, 640)]
    assert amplifier_slices(256, 4)[1] == slice(64, 128)
    with pytest.raises(ValueError, match="n_amps 3 does not split 256"):
        amplifier_slices(256, 3)


def test_clipped_median_matches_astropy_per_row():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(12, 40))
    a[rng.random(a.shape) < 0.1] = np.nan
    a[3, 5] = 50.0
    got = _clipped_median(a, axis=1, sigma=3.0, min_pixels=1)
    want = [sigma_clipped_stats(row[np.isfinite(row)], sigma=3.0, maxiters=5)[1] for row in a]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_noiseless_pattern_is_recovered_exactly():
    rng = np.random.default_rng(8)
    ny, nx = 96, 128
    rows = rng.normal(0, 1.0, (ny, 4))
    cols = rng.normal(0, 0.5, nx)
    stripes = np.repeat(rows, nx // 4, axis=1) + cols[None, :]
    data = 10.0 + stripes
    data[40:44, 70:74] += 100.0  # a "source", masked
    mask = np.zeros(data.shape, bool)
    mask[38:46, 68:76] = True
    model = stripe_model(data, mask=mask, n_amps=4, box_size=128, sigma=10.0)
    # the pattern is found up to a constant (which goes with the background)
    resid = model - stripes
    assert np.std(resid) < 1e-5 * np.std(stripes)


def test_masked_rows_are_interpolated():
    ny, nx = 64, 32
    rows = np.sin(np.arange(ny) / 6.0)
    data = 5.0 + rows[:, None] * np.ones((1, nx))
    mask = np.zeros(data.shape, bool)
    mask[30:33] = True
    model = stripe_model(data, mask=mask, n_amps=1, columns=False, box_size=64)
    got = model[:, 0] - model[0, 0]
    want = rows - rows[0]
    np.testing.assert_allclose(got[:30], want[:30], atol=1e-5)
    np.testing.assert_allclose(got[31], np.interp(31, [29, 33], [want[29], want[33]]), atol=1e-5)


def test_no_good_pixel_is_an_error():
    with pytest.raises(ValueError, match="no finite, good pixel"):
        stripe_model(np.full((16, 16), np.nan))
