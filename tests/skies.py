"""Fields of known sky and noise with galaxies and stars, for tests of sky and noise estimates.

The light of the sources fills a share of the pixels that grows with their numbers (250 galaxies
and 30 stars on 512²: light above 0.1 sigma in 29 % of the pixels; 600 and 60: 56 %), so an
estimate that takes their wings for sky or noise shows it.
"""

from __future__ import annotations

import numpy as np


def deep_field(n: int = 512, *, n_galaxies: int = 250, n_stars: int = 30, sky: float = 10.0, seed: int = 2):
    """``(image, truth)``: ``sky + truth + N(0, 1)`` and the noiseless sources.

    Exponential discs (scale lengths 1.5-6 px, axis ratios 0.4-1, total fluxes 20-3000) and Moffat
    stars (FWHM 3 px, beta 2.5, fluxes 100-1e5) at uniform positions.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n, :n]
    truth = np.zeros((n, n))
    for _ in range(n_galaxies):
        x, y = rng.uniform(0, n, 2)
        re, flux, q, th = rng.uniform(1.5, 6), 10 ** rng.uniform(1.3, 3.5), rng.uniform(0.4, 1), rng.uniform(0, np.pi)
        u = (xx - x) * np.cos(th) + (yy - y) * np.sin(th)
        v = (-(xx - x) * np.sin(th) + (yy - y) * np.cos(th)) / q
        truth += flux * np.exp(-1.678 * np.hypot(u, v) / re) / (2 * np.pi * (re / 1.678) ** 2 * q)
    a = 3.0 / (2 * np.sqrt(2 ** (1 / 2.5) - 1))
    for _ in range(n_stars):
        x, y = rng.uniform(0, n, 2)
        truth += 10 ** rng.uniform(2, 5) * 1.5 / (np.pi * a**2) * (1 + ((xx - x) ** 2 + (yy - y) ** 2) / a**2) ** -2.5
    return sky + truth + rng.normal(0.0, 1.0, (n, n)), truth
