"""Outlier operators against direct (loop) NumPy references on small arrays."""

from __future__ import annotations

import numpy as np
import pytest

from mosaic.io.cal import DQ
from mosaic.ops.outliers import abs_derivative, flag_outliers, grow_mask, replace_outliers, robust_combine


def _ref_derivative(a):
    ny, nx = a.shape
    out = np.full(a.shape, np.nan)
    for y in range(ny):
        for x in range(nx):
            d = [abs(a[y, x] - a[y + dy, x + dx]) for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1))
                 if 0 <= y + dy < ny and 0 <= x + dx < nx and np.isfinite(a[y + dy, x + dx])]
            if np.isfinite(a[y, x]) and d:
                out[y, x] = max(d)
    return out


def _ref_flags(sci, err, blot, snr, scale):
    deriv = np.nan_to_num(_ref_derivative(blot), nan=0.0)
    ny, nx = sci.shape
    diff = np.abs(sci - blot)
    first = np.zeros(sci.shape, bool)
    for y in range(ny):
        for x in range(nx):
            first[y, x] = diff[y, x] > scale[0] * deriv[y, x] + snr[0] * err[y, x]
    out = np.zeros(sci.shape, bool)
    for y in range(ny):
        for x in range(nx):
            near = first[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2].any()
            out[y, x] = near and diff[y, x] > scale[1] * deriv[y, x] + snr[1] * err[y, x]
    return out


@pytest.fixture
def scene():
    rng = np.random.default_rng(3)
    ny, nx = 23, 31
    yy, xx = np.mgrid[:ny, :nx]
    blot = (1.0 + 50 * np.exp(-((xx - 12.3) ** 2 + (yy - 9.7) ** 2) / 1.2)).astype(np.float32)
    err = np.full((ny, nx), 0.1, np.float32)
    sci = (blot * rng.uniform(0.7, 1.3, (ny, nx)) + rng.normal(0, 0.1, (ny, nx))).astype(np.float32)
    sci[3, 4] += 5.0
    sci[15, 20:23] += [0.45, 3.0, 0.45]
    sci[0, 30] += 4.0
    blot[5, 5] = np.nan
    sci[7, 8] = np.nan
    return sci, err, blot


def test_abs_derivative_matches_loop(scene):
    _, _, blot = scene
    np.testing.assert_allclose(abs_derivative(blot), _ref_derivative(blot), rtol=1e-6, equal_nan=True)


@pytest.mark.parametrize(("snr", "scale"), [((5.0, 4.0), (1.2, 0.7)), ((3.0, 2.5), (0.0, 0.0)), ((4.0, 5.0), (0.5, 1.0))])
def test_flag_outliers_matches_loop(scene, snr, scale):
    sci, err, blot = scene
    got = flag_outliers(sci, err, blot, snr=snr, scale=scale)
    np.testing.assert_array_equal(got, _ref_flags(sci, err, blot, snr, scale))


def test_flag_outliers_finds_the_injected_and_spares_the_peak(scene):
    _, err, blot = scene
    rng = np.random.default_rng(9)
    # the data's peak 30% above the blotted one (an undersampled core), small noise elsewhere
    sci = (blot + 0.3 * (blot - 1.0) + rng.normal(0, 0.02, blot.shape)).astype(np.float32)
    sci[3, 4] += 5.0
    sci[15, 20:23] += [0.45, 3.0, 0.45]
    sci[0, 30] += 4.0
    sci[7, 8] = np.nan
    got = flag_outliers(sci, err, blot)
    assert got[3, 4] and got[15, 21] and got[0, 30]
    assert got[15, 20] and got[15, 22]  # neighbours at the lower threshold (0.45 > 4 * 0.1)
    assert not got[10, 12]  # the peak's 30% scatter is covered by the derivative term
    assert not got[7, 8] and not got[5, 5]


def test_grow_mask_matches_scipy():
    from scipy.ndimage import binary_dilation

    m = np.random.default_rng(1).random((17, 13)) > 0.93
    np.testing.assert_array_equal(grow_mask(m), binary_dilation(m, np.ones((3, 3), bool)))


def test_robust_combine_matches_loop():
    rng = np.random.default_rng(5)
    n, ny, nx = 5, 9, 11
    stack = rng.normal(size=(n, ny, nx)).astype(np.float32)
    weights = rng.uniform(0.0, 2.0, size=(n, ny, nx)).astype(np.float32)
    stack[rng.random(stack.shape) < 0.2] = np.nan
    thr = np.array([0.5, 0.2, 0.9, 0.1, 0.7], np.float32)
    got, n_used = robust_combine(stack, weights, weight_threshold=thr)
    for y in range(ny):
        for x in range(nx):
            v = [stack[k, y, x] for k in range(n) if np.isfinite(stack[k, y, x]) and weights[k, y, x] >= thr[k]]
            assert n_used[y, x] == len(v)
            want = np.nan if len(v) < 2 else (min(v) if len(v) == 2 else np.median(v))
            np.testing.assert_allclose(got[y, x], want, rtol=1e-6, equal_nan=True)


def test_replace_outliers_interpolate_and_flag():
    rng = np.random.default_rng(2)
    sci = rng.uniform(1.0, 2.0, (8, 9)).astype(np.float32)
    var_poisson, var_rnoise, var_flat = 0.01 * sci, np.full_like(sci, 0.004), (0.002 * sci) ** 2
    err = np.sqrt(var_poisson + var_rnoise + var_flat)
    dq = np.zeros(sci.shape, np.uint32)
    mask = np.zeros(sci.shape, bool)
    mask[2, 3] = mask[5, 5] = True
    blot = np.full(sci.shape, 1.5, np.float32)
    out = replace_outliers(sci, err, dq, var_poisson, var_rnoise, var_flat, mask, blot)
    assert np.all(out["sci"][mask] == 1.5) and np.array_equal(out["sci"][~mask], sci[~mask])
    np.testing.assert_allclose(out["var_poisson"][mask], 0.015, rtol=1e-5)
    np.testing.assert_allclose(out["var_flat"][mask], (0.002 * 1.5) ** 2, rtol=1e-4)
    np.testing.assert_allclose(out["err"][mask], np.sqrt(0.015 + 0.004 + (0.003) ** 2), rtol=1e-5)
    assert np.all(out["dq"][mask] == DQ["OUTLIER"]) and not out["dq"][~mask].any()
    assert sci[2, 3] != 1.5  # inputs untouched
    out = replace_outliers(sci, err, dq, var_poisson, var_rnoise, var_flat, mask, blot, replace="flag")
    assert np.all(out["dq"][mask] == DQ["OUTLIER"] | DQ["DO_NOT_USE"]) and np.isnan(out["sci"][mask]).all()
    with pytest.raises(ValueError, match="expected one of"):
        replace_outliers(sci, err, dq, var_poisson, var_rnoise, var_flat, mask, blot, replace="zero")


@pytest.mark.parametrize("snr", [0.0, (5.0, -1.0), (5.0, float("nan"))])
def test_bad_thresholds(snr):
    a = np.ones((4, 4), np.float32)
    with pytest.raises(ValueError, match="snr"):
        flag_outliers(a, a, a, snr=snr)
