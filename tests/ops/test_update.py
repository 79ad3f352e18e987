"""The compiled update of a tile against the same update in array operations (the CuPy path), to the bit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mosaic.coadd.updc import MARGIN_PRIOR, NORM_FLOOR, PEDESTAL_FLOOR, _update_arrays, _update_block
from mosaic.ops.update import update_tile


def _tile(rng, shape, dtype):
    """Faint sky with negative pixels, NaN off the data, a normalisation around its floor, and
    back-projections and variances with NaN, zeros and negatives in them."""
    sci = rng.normal(0.02, 0.05, shape).astype(dtype)
    sci[rng.uniform(size=shape) < 0.1] = np.nan
    sci0 = rng.normal(0.02, 0.05, shape).astype(np.float32)
    sci0[rng.uniform(size=shape) < 0.15] = np.nan
    den = rng.choice([0.0, 1e-7, 1e-5, 0.3, 1.0, np.nan], size=shape) * rng.uniform(0.5, 1.5, shape)
    num = den * rng.uniform(-0.5, 2.5, shape)
    rest = [rng.uniform(-1e-4, 1e-3, shape).astype(np.float32) for _ in range(3)]
    rest += [rng.uniform(-1e-5, 1e-3, shape) for _ in range(3)]
    rest += [rng.uniform(0.0, 50.0, shape).astype(np.float32), rng.uniform(-1e-4, 1e-3, shape).astype(np.float32)]
    for a in rest:
        a[rng.uniform(size=shape) < 0.05] = np.nan
    return sci, sci0, den, num, rest


@settings(max_examples=40, deadline=None)
@given(
    ny=st.integers(1, 25), nx=st.integers(1, 25), multiplicative=st.booleans(), errors=st.booleans(), noise_aware=st.booleans(),
    pedestal=st.sampled_from([0.0, 0.01, 0.2]), dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16),
)
def test_compiled_update_equals_the_array_update(ny, nx, multiplicative, errors, noise_aware, pedestal, dtype, seed):
    sci, sci0, den, num, rest = _tile(np.random.default_rng(seed), (ny, nx), dtype)
    rest = rest if errors else []
    options = {
        "multiplicative": multiplicative, "tau": 1.7, "den_floor": 1e-6, "fill": 0.003, "errors": errors, "pedestal": pedestal,
        "noise_aware": noise_aware,
    }
    got = _update_block(sci, sci0, den, num, *rest, **options)
    want = _update_arrays(sci, sci0, den, num, *rest, **options)
    assert got.dtype == want.dtype == np.float32
    assert got.shape == want.shape == (6 if errors else 1, ny, nx)
    np.testing.assert_array_equal(got, want)  # NaN where NaN, and every other value to the bit


def test_update_tile_refuses_planes_of_another_shape():
    a = np.zeros((4, 5))
    with pytest.raises(ValueError, match="expected 12 2-D planes of one shape"):
        update_tile(
            a, a, a, a, *[a] * 7, np.zeros((5, 4)), multiplicative=True, tau=1.0, den_floor=1e-6, fill=0.0, errors=True,
            pedestal=0.0, noise_aware=False, floor=(PEDESTAL_FLOOR - 1.0) * 0.0, lam_margin=MARGIN_PRIOR * 1e-6 / NORM_FLOOR,
        )
