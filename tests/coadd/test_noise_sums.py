"""The per-exposure noise sums of iteration 0 (gain and subtracted sky) against plain NumPy sums."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from mosaic.coadd.updc import noise_sums


def _exposures(rng, n, shape, *, flat=True, chunks=None):
    sci = rng.normal(1.0, 0.5, (n, *shape)).astype(np.float32)
    vp = (0.02 * np.clip(sci, -0.2, None) + rng.normal(0, 1e-3, sci.shape)).astype(np.float32)
    vr = rng.uniform(0.0, 0.01, sci.shape).astype(np.float32)
    vf = rng.uniform(0.0, 1e-3, sci.shape).astype(np.float32)
    good = rng.uniform(size=sci.shape) > 0.1
    sci[rng.uniform(size=sci.shape) < 0.02] = np.nan
    vp[rng.uniform(size=sci.shape) < 0.02] = np.inf
    vr[rng.uniform(size=sci.shape) < 0.02] = np.nan
    planes = {"sci": sci, "good": good, "var_poisson": vp, "var_rnoise": vr, **({"var_flat": vf} if flat else {})}
    chunks = chunks or (1, *shape)
    ds = xr.Dataset({k: (("exposure", "y", "x"), da.from_array(v, chunks=chunks)) for k, v in planes.items()})
    return ds, planes


def _reference(planes):
    """The sums as the formulas read, one exposure at a time, in NumPy."""
    out = []
    for e in range(planes["sci"].shape[0]):
        s = planes["sci"][e].astype(np.float64)
        ok = planes["good"][e] & np.isfinite(s)
        vp, vr = (np.nan_to_num(planes[v][e].astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0) for v in ("var_poisson", "var_rnoise"))
        vf = np.nan_to_num(planes["var_flat"][e].astype(np.float64), nan=0.0, posinf=0.0) if "var_flat" in planes else 0.0
        fit = ok & (vp > 0)
        x, y = s[fit], vp[fit]
        rn = ok & (vr > 0)
        out.append([fit.sum(), x.sum(), y.sum(), (x * x).sum(), (x * y).sum(), rn.sum(), vr[rn].sum(), (vp + vr + vf)[rn].sum()])
    return np.array(out)


@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(1, 4), ny=st.integers(3, 40), nx=st.integers(3, 40), cy=st.integers(1, 40), cx=st.integers(1, 40),
    flat=st.booleans(), seed=st.integers(0, 2**16),
)
def test_noise_sums_equal_numpy_on_any_chunking(n, ny, nx, cy, cx, flat, seed):
    """Whole exposures or awkward blocks, with NaN, infinities and a missing VAR_FLAT: the same sums."""
    ds, planes = _exposures(np.random.default_rng(seed), n, (ny, nx), flat=flat, chunks=(1, cy, cx))
    got = noise_sums(ds).compute()
    assert got.shape == (n, 8)
    np.testing.assert_allclose(got, _reference(planes), rtol=1e-12, atol=1e-12)


def test_noise_sums_are_one_task_per_exposure():
    """Each exposure's planes are reduced in one task (no graph of float64 planes to hold)."""
    ds, planes = _exposures(np.random.default_rng(1), 3, (16, 12))
    sums = noise_sums(ds)
    layer = sums.dask.layers[sums.name]
    assert len(dict(layer)) == 3
    np.testing.assert_allclose(sums.compute(), _reference(planes), rtol=1e-12)
    vp = planes["var_poisson"]
    fit = planes["good"] & np.isfinite(planes["sci"]) & np.isfinite(vp) & (vp > 0)
    assert sums.compute()[:, 0] == pytest.approx(fit.sum(axis=(1, 2)))
