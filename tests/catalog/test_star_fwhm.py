"""A star's FWHM from its half-maximum isophote: Gaussian and Moffat profiles give their analytic FWHM."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mosaic.catalog.profiles import star_fwhm, star_profile


def _gaussian(shape, x0, y0, fwhm, amplitude=1.0):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    s = fwhm / (2 * np.sqrt(2 * np.log(2)))
    return amplitude * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * s * s))


@settings(max_examples=30, deadline=None)
@given(fwhm=st.floats(3.0, 9.0), dx=st.floats(-0.5, 0.5), dy=st.floats(-0.5, 0.5), amplitude=st.floats(1e-3, 1e3))
def test_gaussian_fwhm(fwhm, dx, dy, amplitude):
    x0, y0 = 40.0 + dx, 37.0 + dy
    img = _gaussian((80, 90), x0, y0, fwhm, amplitude)
    # a spline through pixel samples: a few per cent at 3 px, better as the star is better sampled
    assert star_fwhm(img, x0, y0, radius=2.5 * fwhm) == pytest.approx(fwhm, rel=0.04)


@pytest.mark.parametrize(("alpha", "beta"), [(3.0, 2.5), (4.0, 4.0), (4.0, 1.8)])
def test_moffat_fwhm(alpha, beta):
    yy, xx = np.mgrid[:101, :101]
    x0, y0 = 50.3, 49.8
    img = (1 + ((xx - x0) ** 2 + (yy - y0) ** 2) / alpha**2) ** -beta
    expected = 2 * alpha * np.sqrt(2 ** (1 / beta) - 1)
    assert star_fwhm(img, x0, y0, radius=20) == pytest.approx(expected, rel=0.03)


def test_fwhm_is_nan_when_the_isophote_leaves_the_cutout_or_nothing_is_there():
    img = _gaussian((80, 80), 40.0, 40.0, 12.0)
    assert np.isnan(star_fwhm(img, 40.0, 40.0, radius=5))
    assert np.isnan(star_fwhm(np.zeros((50, 50)), 25.0, 25.0))
    with pytest.raises(ValueError, match="outside"):
        star_fwhm(img, 90.0, 10.0)


def test_encircled_energy_is_over_the_given_total_not_forced_to_one():
    img = _gaussian((120, 120), 60.2, 59.7, 8.0)
    total = img.sum()
    p = star_profile(img, 60.2, 59.7, edge_radii=np.arange(0.0, 8.5, 1.0))
    s = 8.0 / (2 * np.sqrt(2 * np.log(2)))
    # within 8 px a Gaussian of sigma 3.4 px holds 1 - exp(-r^2 / 2 s^2) of its flux, not all of it
    ee = p.encircled_energy(total)
    assert ee[-1] == pytest.approx(1 - np.exp(-(8.0**2) / (2 * s * s)), abs=3e-3)
    assert ee[-1] < 0.95
