"""Empirical PSF: photutils' ePSF builder on selected stars recovers the known effective PSF."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table
from scipy import ndimage

from mosaic.exceptions import InputError
from mosaic.psf.empirical import empirical_psf, local_sky
from mosaic.psf.model import jwst_psf
from mosaic.psf.stars import select_stars

SCALE = 0.031
OS = 2
STAMP = 11
SIZE = OS * STAMP + 1
FAST = {"n_wavelengths": 3, "n_pupil": 128}


def _render(fine4, n, shift):
    """A star on an n x n detector stamp from a PSF sampled 4x finer: spline shift, then 4x4 sums."""
    c = fine4.shape[0] // 2
    j0 = n // 2
    moved = ndimage.shift(fine4, (4 * j0 + 1.5 + 4 * shift[0] - c, 4 * j0 + 1.5 + 4 * shift[1] - c), order=3, mode="constant")
    return moved[: 4 * n, : 4 * n].reshape(n, 4, n, 4).sum(axis=(1, 3))


@pytest.fixture(scope="module")
def fine4():
    psf = jwst_psf("F200W", pixel_scale_arcsec=SCALE / 4, size=4 * (STAMP + 6) + 9, oversample=2, **FAST)
    return psf / psf.sum()


@pytest.fixture(scope="module")
def true_epsf(fine4):
    """The effective PSF: flux in a detector pixel centred at offset r, for r every 1/OS pixel."""
    n = STAMP + 4
    phases = {(p, q): _render(fine4, n, (-p / OS, -q / OS)) for p in range(OS) for q in range(OS)}
    c, cd = SIZE // 2, n // 2
    out = np.zeros((SIZE, SIZE))
    for k in range(SIZE):
        a, p = divmod(k - c, OS)
        for m in range(SIZE):
            b, q = divmod(m - c, OS)
            out[k, m] = phases[p, q][cd + a, cd + b]
    return out / out.sum()


@pytest.fixture(scope="module")
def star_field(fine4):
    rng = np.random.default_rng(2)
    image = np.full((150, 150), 20.0)
    for y in range(15, 150, 30):
        for x in range(15, 150, 30):
            dy, dx = rng.uniform(-0.5, 0.5, 2)
            h = (STAMP + 6) // 2
            image[y - h: y + h + 1, x - h: x + h + 1] += 3e5 * _render(fine4, STAMP + 6, (dy, dx))
    return image + rng.normal(0.0, 1.0, image.shape)


def test_epsf_recovers_the_effective_psf(star_field, true_epsf, fine4):
    ref = jwst_psf("F200W", pixel_scale_arcsec=SCALE, size=STAMP, oversample=4, **FAST)
    stars = select_stars(star_field, psf=ref, stamp_size=STAMP, snr_min=100)
    assert len(stars) == 25
    epsf = empirical_psf(star_field, stars, size=SIZE, oversample=OS, n_iterations=4)
    assert epsf.shape == (SIZE, SIZE)
    assert epsf.sum() == pytest.approx(1.0, abs=1e-12)
    err = np.abs(epsf - true_epsf).max() / true_epsf.max()
    # ePSF building at 2x oversampling from 25 stars, with the builder's smoothing, leaves
    # errors of a few per cent of the peak (measured 3.4 %; Anderson & King 2000 reach ~1 % at
    # 4x with hundreds of stars); 5 % allows for that and is below the 7.3 % by which the
    # optical PSF (no detector pixel response) misses the ePSF, so a builder that lost the pixel
    # response would fail
    assert err <= 0.05, err
    optical = jwst_psf("F200W", pixel_scale_arcsec=SCALE / OS, size=SIZE, oversample=4, **FAST)
    optical /= optical.sum()
    assert np.abs(epsf - true_epsf).sum() < np.abs(epsf - optical).sum()
    # centred on the middle pixel to 0.02 detector pixel
    yy, xx = np.indices(epsf.shape) - SIZE // 2
    assert abs((epsf * yy).sum()) / OS < 0.02 and abs((epsf * xx).sum()) / OS < 0.02


def test_local_sky_uses_the_border():
    stamp = np.full((9, 9), 3.0)
    stamp[2:7, 2:7] = 100.0
    assert local_sky(stamp) == pytest.approx(3.0)
    mask = np.zeros((9, 9), bool)
    mask[0] = True
    stamp[0] = 1e6
    assert local_sky(stamp, mask) == pytest.approx(3.0)


def test_too_few_stars_names_the_count_and_minimum():
    stars = Table({"x": [20.0, 40.0, 60.0], "y": [20.0, 40.0, 60.0]}, meta={"n_candidates": 9, "rejected": {"low_snr": 6}})
    with pytest.raises(InputError, match=r"3 usable PSF stars found; the empirical PSF needs at least 5 .*low_snr 6"):
        empirical_psf(np.zeros((80, 80)), stars, size=SIZE, oversample=OS)


def test_even_size_is_refused():
    stars = Table({"x": [20.0] * 5, "y": [20.0] * 5})
    with pytest.raises(InputError, match="size must be an odd integer"):
        empirical_psf(np.zeros((80, 80)), stars, size=24)
