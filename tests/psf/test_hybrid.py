"""Hybrid PSF: the model corrected by the stars is closer to the true PSF than the model is."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table
from scipy import ndimage

from mosaic.exceptions import InputError
from mosaic.psf.hybrid import hybrid_psf, render_star
from mosaic.psf.model import jwst_psf
from mosaic.psf.stars import select_stars

SCALE = 0.031  # SW detector pixels, arcsec
OS = 2
SIZE = 41  # hybrid PSF side, fine pixels
STAMP = 23
#: the sky's PSF is the model blurred by pointing jitter: 7 positions, 0.35 detector pixel apart
JITTER = [(0.0, 0.0)] + [(0.35 * np.cos(a), 0.35 * np.sin(a)) for a in np.arange(6) * np.pi / 3]
FAST = {"n_wavelengths": 3, "n_pupil": 128}


def _psf(scale, size, offset=(0.0, 0.0), oversample=4):
    return jwst_psf("F200W", pixel_scale_arcsec=scale, size=size, offset=offset, oversample=oversample, **FAST)


def _jittered(scale, size, per_pixel):
    """The true PSF: the model averaged over the jitter offsets (given in detector pixels)."""
    out = sum(_psf(scale, size, (per_pixel * dy, per_pixel * dx), oversample=2) for dy, dx in JITTER)
    return out / out.sum()


def _render(fine4, n, shift):
    """A star on an n x n detector stamp from a PSF sampled 4x finer: spline shift, then 4x4 sums.

    Independent of the hybrid's DFT renderer: the fine PSF (4x the detector sampling) is
    shifted with a cubic spline and integrated over detector pixels by summing 4x4 blocks.
    """
    c = fine4.shape[0] // 2
    j0 = n // 2
    moved = ndimage.shift(fine4, (4 * j0 + 1.5 + 4 * shift[0] - c, 4 * j0 + 1.5 + 4 * shift[1] - c), order=3, mode="constant")
    return moved[: 4 * n, : 4 * n].reshape(n, 4, n, 4).sum(axis=(1, 3))


@pytest.fixture(scope="module")
def jitter_field():
    """25 stars of the jittered PSF at random sub-pixel positions, with sky, read and Poisson noise."""
    rng = np.random.default_rng(7)
    fine4 = _jittered(SCALE / 4, 4 * STAMP + 9, 4)
    n_stars, sky = 25, 10.0
    grid = np.stack(np.meshgrid(np.arange(5), np.arange(5), indexing="ij"), -1).reshape(-1, 2)
    centres = 20 + grid * 34 + rng.uniform(0, 1, (n_stars, 2))
    fluxes = 10 ** rng.uniform(5.0, 5.5, n_stars)
    truth = np.zeros((190, 190))
    for (y, x), f in zip(centres, fluxes, strict=True):
        iy, ix = int(round(y)), int(round(x))
        h = STAMP // 2
        truth[iy - h: iy + h + 1, ix - h: ix + h + 1] += f * _render(fine4, STAMP, (y - iy, x - ix))
    image = sky + truth + rng.normal(0.0, 1.0, truth.shape) + rng.normal(0.0, 1.0, truth.shape) * np.sqrt(truth)
    error = np.sqrt(1.0 + truth)
    return image, error, centres


def test_render_star_matches_the_direct_pixel_integration():
    # the DFT renderer against jwst_psf computed on the detector grid at the same sub-pixel offset,
    # both normalised on the stamp; 1 % of the peak is the reference's own pixel integration
    # (4 x 4 point samples per detector pixel), measured 0.4 %
    fine = _psf(SCALE / OS, 61)
    for shift in [(0.0, 0.0), (0.3, -0.45), (-0.5, 0.2)]:
        got = render_star(fine, 11, OS, shift)
        want = _psf(SCALE, 11, shift)
        got, want = got / got.sum(), want / want.sum()
        assert np.abs(got - want).max() <= 1e-2 * want.max()
    # the light lands where it should: centroids agree to 0.005 pixel
    yy, xx = np.indices(got.shape)
    for axis in (yy, xx):
        assert (got * axis).sum() == pytest.approx((want * axis).sum(), abs=5e-3)


def test_hybrid_halves_the_model_error(jitter_field):
    image, error, _ = jitter_field
    ref = _psf(SCALE, STAMP)
    stars = select_stars(image, psf=ref, error=error, stamp_size=STAMP, snr_min=100)
    assert len(stars) >= 20
    model = _psf(SCALE / OS, SIZE)
    true = _jittered(SCALE / OS, SIZE, OS)
    hybrid = hybrid_psf(image, stars, model=model, oversample=OS, error=error)
    assert hybrid.shape == model.shape
    assert hybrid.sum() == pytest.approx(1.0, abs=1e-12)
    assert hybrid.min() >= 0

    def rms(p):
        return np.sqrt(np.mean((p - true) ** 2))

    model_err, hybrid_err = rms(model / model.sum()), rms(hybrid)
    assert hybrid_err <= 0.5 * model_err, (hybrid_err, model_err)
    # the peak, which the jitter lowers, is recovered: its error is at most half the model's
    c = SIZE // 2
    assert abs(hybrid[c, c] - true[c, c]) <= 0.5 * abs(model[c, c] / model.sum() - true[c, c])


def test_hybrid_with_given_components_and_the_model_as_truth(jitter_field):
    # stars of the model itself: the correction stays small (no invented structure)
    rng = np.random.default_rng(3)
    fine4 = _psf(SCALE / 4, 4 * 15 + 9, oversample=2)
    fine4 /= fine4.sum()
    image = np.full((120, 120), 5.0)
    centres = []
    for y in (15, 45, 75, 105):
        for x in (15, 45, 75, 105):
            dy, dx = rng.uniform(-0.5, 0.5, 2)
            image[y - 7: y + 8, x - 7: x + 8] += 2e5 * _render(fine4, 15, (dy, dx))
            centres.append((y + dy, x + dx))
    image += rng.normal(0.0, 1.0, image.shape)
    stars = Table({"x": [c[1] for c in centres], "y": [c[0] for c in centres]})
    model = _psf(SCALE / OS, 35)
    model /= model.sum()
    hybrid = hybrid_psf(image, stars, model=model, oversample=OS, n_components=2, degree=1)
    assert np.sqrt(np.mean((hybrid - model) ** 2)) <= 0.01 * model.max()


def test_too_few_stars_is_a_clear_error():
    stars = Table({"x": [10.0, 30.0], "y": [10.0, 30.0]}, meta={"rejected": {"neighbour": 4}, "n_candidates": 6})
    with pytest.raises(InputError, match=r"2 usable PSF stars found; the hybrid PSF needs at least 3"):
        hybrid_psf(np.zeros((50, 50)), stars, model=_psf(SCALE / OS, 35))


def test_bad_model_is_refused():
    stars = Table({"x": [10.0] * 5, "y": [10.0] * 5})
    with pytest.raises(InputError, match="odd square"):
        hybrid_psf(np.zeros((50, 50)), stars, model=np.ones((10, 10)))
