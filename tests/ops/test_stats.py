"""Order-preserving float keys and the per-block sums of the exact statistics."""

from __future__ import annotations

import numpy as np
from astropy import stats as astats
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mosaic.ops.stats import DIGIT_BITS, biweight_sums, key_histogram, key_select, keys_to_values, sortable_keys

finite = {"allow_nan": False, "allow_infinity": False}


@settings(max_examples=30)
@given(st.sampled_from([np.float32, np.float64]).flatmap(lambda t: hnp.arrays(t, st.integers(1, 200), elements=st.floats(width=32 if t == np.float32 else 64, **finite))))
def test_keys_sort_as_the_values_and_round_trip(values):
    keys = sortable_keys(values)
    order = np.argsort(keys, kind="stable")
    assert np.all(np.diff(values[order].astype(np.float64)) >= 0)
    back = keys_to_values(keys, values.dtype)
    assert np.array_equal(back.view(keys.dtype), values.view(keys.dtype))  # bit for bit, -0.0 included


def test_histogram_digits_partition_the_values():
    values = np.random.default_rng(0).normal(size=1000).astype(np.float32)
    top = key_histogram(values, prefix=0, shift=32)
    assert top.sum() == values.size and top.size == 1 << DIGIT_BITS
    digit = int(np.argmax(top))
    assert key_select(values, prefix=digit, shift=16).size == top[digit]
    assert key_histogram(values, prefix=digit, shift=16).sum() == top[digit]


def test_biweight_sums_give_astropy_biweight():
    x = np.random.default_rng(1).standard_t(3, size=500)
    m = np.median(x)
    mad = np.median(np.abs(x - m))
    s6 = biweight_sums(x, location=m, mad=mad, c=6.0)
    s9 = biweight_sums(x, location=m, mad=mad, c=9.0)
    assert np.isclose(m + s6[0] / s6[1], astats.biweight_location(x), rtol=1e-12)
    assert np.isclose(np.sqrt(s9[4] * s9[2] / s9[3] ** 2), astats.biweight_scale(x), rtol=1e-12)
