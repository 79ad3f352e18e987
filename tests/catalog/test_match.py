"""Cross-matching against brute-force nearest neighbours on a synthetic sky."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.table import QTable

from mosaic.catalog.match import cross_match, matches_within
from mosaic.exceptions import InputError


@pytest.fixture(scope="module")
def catalogues():
    rng = np.random.default_rng(4)
    n = 200
    ra = 34.46 + rng.uniform(-0.01, 0.01, n)
    dec = -5.24 + rng.uniform(-0.01, 0.01, n)
    t1 = QTable({"ra": ra * u.deg, "dec": dec * u.deg})
    # the second catalogue: the first shifted by < 0.03", 30 sources lost, 20 spurious added
    keep = np.sort(rng.choice(n, n - 30, replace=False))
    jitter = rng.normal(0, 0.01 / 3600, (2, keep.size))
    extra_ra, extra_dec = 34.46 + rng.uniform(-0.01, 0.01, 20), -5.24 + rng.uniform(-0.01, 0.01, 20)
    t2 = QTable({"ra": np.concatenate([ra[keep] + jitter[0], extra_ra]) * u.deg, "dec": np.concatenate([dec[keep] + jitter[1], extra_dec]) * u.deg})
    return t1, t2, keep


def brute_force(t1, t2, max_sep):
    c1, c2 = SkyCoord(t1["ra"], t1["dec"]), SkyCoord(t2["ra"], t2["dec"])
    d = c1[:, None].separation(c2[None, :]).arcsec
    j = d.argmin(axis=1)
    i_back = d.argmin(axis=0)
    ok = (d[np.arange(len(c1)), j] <= max_sep) & (i_back[j] == np.arange(len(c1)))
    return np.flatnonzero(ok), j[ok], d


def test_cross_match_equals_brute_force(catalogues):
    t1, t2, keep = catalogues
    m = cross_match(t1, t2, max_sep=0.1)
    i1, i2, d = brute_force(t1, t2, 0.1)
    np.testing.assert_array_equal(m["index1"], i1)
    np.testing.assert_array_equal(m["index2"], i2)
    np.testing.assert_allclose(m["separation"].to_value(u.arcsec), d[i1, i2], rtol=1e-9)
    # the planted pairs are found (the spurious ones may steal a few)
    assert np.mean(np.isin(keep, m["index1"])) > 0.95


def test_matches_within_lists_every_pair(catalogues):
    t1, t2, _ = catalogues
    m = matches_within(t1, t2, max_sep=2.0)
    _, _, d = brute_force(t1, t2, 2.0)
    assert len(m) == int(np.count_nonzero(d <= 2.0))


def test_bad_input(catalogues):
    t1, _, _ = catalogues
    with pytest.raises(InputError, match="table2 has no"):
        cross_match(t1, QTable({"x": [1.0]}))
    with pytest.raises(ValueError, match="max_sep must be positive"):
        cross_match(t1, t1, max_sep=0)
    assert len(cross_match(t1, t1[:0])) == 0
    nan = QTable({"ra": [np.nan] * u.deg, "dec": [0.0] * u.deg})
    with pytest.raises(InputError, match="NaN"):
        cross_match(t1, nan)
