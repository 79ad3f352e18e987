"""Star profiles equal the whole-image photutils profiles; a Gaussian's encircled energy is analytic."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from photutils.profiles import CurveOfGrowth, RadialProfile

from mosaic.catalog.profiles import star_profile


def test_profile_equals_whole_image_and_gaussian():
    yy, xx = np.mgrid[:200, :220]
    x0, y0, s = 101.3, 97.6, 2.5
    img = np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * s * s)) / (2 * np.pi * s * s)
    edges = np.arange(0, 31, 1.0)
    p = star_profile(da.from_array(img, chunks=50), x0, y0, edge_radii=edges, norm_radius=30)
    rp = RadialProfile(img, (x0, y0), edges)
    cog = CurveOfGrowth(img, (x0, y0), edges[1:])
    np.testing.assert_allclose(p.profile, rp.profile, rtol=1e-10)
    np.testing.assert_allclose(p.cog, cog.profile, rtol=1e-10)
    # encircled energy of a Gaussian: 1 - exp(-r^2 / 2 s^2) (pixel-integrated: loose at small r)
    r = p.cog_radius
    np.testing.assert_allclose(p.encircled_energy(1.0)[r >= 3], 1 - np.exp(-(r[r >= 3] ** 2) / (2 * s * s)), atol=5e-3)
    assert p.norm_flux == pytest.approx(1.0, rel=1e-6)


def test_star_outside_image_is_refused():
    with pytest.raises(ValueError, match="outside"):
        star_profile(np.zeros((10, 10)), 20.0, 3.0, edge_radii=[0, 1, 2])
