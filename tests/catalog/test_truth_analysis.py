"""Detections, fluxes and magnitudes against a truth table: counts, purity and ratios of a known catalogue."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from mosaic.catalog.analysis import ab_magnitude, detections_vs_iteration, flux_vs_truth, magnitudes_vs_truth


@pytest.fixture
def truth():
    rng = np.random.default_rng(2)
    n = 40
    # a 60" field: sources at least ~2" apart on a jittered lattice
    gx, gy = np.meshgrid(np.arange(8), np.arange(5))
    ra = 150.0 + (gx.ravel() * 7.0 + rng.uniform(-1, 1, n)) / 3600.0
    dec = 2.0 + (gy.ravel() * 7.0 + rng.uniform(-1, 1, n)) / 3600.0
    return Table({"ra": ra, "dec": dec, "flux": rng.uniform(0.5, 50.0, n), "kind": np.where(np.arange(n) % 4 == 0, "star", "galaxy")})


def _catalogue(truth, found, n_false, ratio, rng):
    """``found`` true sources (offset < 0.05") with flux x ``ratio``, plus ``n_false`` far from any."""
    t = truth[found]
    ra = np.concatenate([t["ra"] + rng.uniform(-0.03, 0.03, len(t)) / 3600.0, 150.0 + (3.5 + 7.0 * np.arange(n_false) % 56) / 3600.0])
    dec = np.concatenate([t["dec"] + rng.uniform(-0.03, 0.03, len(t)) / 3600.0, np.full(n_false, 2.0 + 45.0 / 3600.0)])
    flux = np.concatenate([t["flux"] * ratio, np.full(n_false, 1.0)])
    return Table({"ra": ra, "dec": dec, "kron_flux": flux})


def test_true_false_purity_and_no_growth(truth):
    rng = np.random.default_rng(3)
    cats = {0: _catalogue(truth, np.arange(10), 2, 1.0, rng), 5: _catalogue(truth, np.arange(0, 40, 2), 30, 1.0, rng)}
    t = detections_vs_iteration(cats, truth, max_sep=0.1)
    assert list(t["iteration"]) == [0, 5]
    assert list(t["n_detected"]) == [12, 50]
    assert list(t["n_true"]) == [10, 20]
    assert list(t["n_false"]) == [2, 30]
    np.testing.assert_allclose(t["purity"], [10 / 12, 20 / 50])
    np.testing.assert_allclose(t["completeness"], [10 / 40, 20 / 40])
    assert "growth" not in t.colnames
    assert detections_vs_iteration(cats).colnames == ["iteration", "n_detected"]


def test_flux_ratios_and_magnitudes_against_truth(truth):
    rng = np.random.default_rng(4)
    cats = {0: _catalogue(truth, np.arange(40), 5, 0.8, rng), 10: _catalogue(truth, np.arange(20), 0, 1.1, rng)}
    f = flux_vs_truth(cats, truth)
    assert list(f["n_matched"]) == [40, 20]
    np.testing.assert_allclose(f["median_ratio"], [0.8, 1.1])
    np.testing.assert_allclose(f["p16_ratio"], [0.8, 1.1])
    m = magnitudes_vs_truth(cats[0], truth)
    assert len(m) == 40 and np.all(np.diff(m["true_mag"]) >= 0)
    np.testing.assert_allclose(m["true_mag"], np.sort(ab_magnitude(truth["flux"])))
    # 0.8 of the flux: 2.5 log10(1 / 0.8) = 0.242 mag fainter
    np.testing.assert_allclose(m["delta_mag"], -2.5 * np.log10(0.8))
    assert set(m["kind"]) == {"star", "galaxy"}
    with pytest.raises(ValueError, match="no column 'aper_flux'"):
        flux_vs_truth(cats, truth, flux="aper_flux")
