"""Seeded synthetic scenes for the catalogue tests: Gaussian sources of many sizes on noise."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.wcs import WCS


def make_scene(seed: int, shape=(150, 170), n_sources: int = 25, sigma=(1.0, 8.0), flux=(50.0, 3000.0), noise: float = 1.0):
    """An image of Gaussian sources on unit noise; returns ``(image, truth (x, y, flux, sigma))``."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    yy, xx = np.mgrid[:ny, :nx]
    img = rng.normal(0.0, noise, shape)
    truth = []
    for _ in range(n_sources):
        x0, y0 = rng.uniform(0, nx), rng.uniform(0, ny)
        s, f = rng.uniform(*sigma), rng.uniform(*flux)
        img += f / (2 * np.pi * s * s) * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * s * s))
        truth.append((x0, y0, f, s))
    return img, np.array(truth)


def tan_wcs(shape, scale_arcsec=0.031):
    """A north-up TAN WCS centred on the image."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [34.46, -5.24]
    w.wcs.crpix = [shape[1] / 2, shape[0] / 2]
    w.wcs.cdelt = [-scale_arcsec / 3600, scale_arcsec / 3600]
    w.pixel_shape = (shape[1], shape[0])
    return w


@pytest.fixture(scope="session")
def scene():
    """150 x 170 pixels, 25 sources of sigma 1-8 px (some larger than the small tiles), a masked box."""
    img, truth = make_scene(1)
    mask = np.zeros(img.shape, bool)
    mask[40:45, 60:80] = True
    return img, truth, mask


@pytest.fixture(scope="session")
def scene_factory():
    """:func:`make_scene`."""
    return make_scene


@pytest.fixture(scope="session")
def wcs_factory():
    """:func:`tan_wcs`."""
    return tan_wcs
