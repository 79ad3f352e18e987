"""Star selection: each kind of contaminant is rejected for its own reason, stars are kept."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from astropy.table import Table

from mosaic.exceptions import InputError
from mosaic.psf.model import jwst_psf
from mosaic.psf.stars import REJECTIONS, psf_fwhm_pixels, require_stars, select_stars

SCALE = 0.031
STAMP = 15
FAST = {"n_wavelengths": 3, "n_pupil": 128, "oversample": 4}
SKY, NOISE, SATURATION = 10.0, 1.0, 5000.0


def _add(image, psf_fn, y, x, flux):
    iy, ix = int(round(y)), int(round(x))
    stamp = psf_fn((y - iy, x - ix))
    h = stamp.shape[0] // 2
    y0, x0 = max(iy - h, 0), max(ix - h, 0)
    image[y0: iy + h + 1, x0: ix + h + 1] += flux * stamp[y0 - (iy - h):, x0 - (ix - h):]


@pytest.fixture(scope="module")
def field():
    """A 200² field: 6 good stars and one contaminant of each kind, at known places."""
    rng = np.random.default_rng(4)
    image = np.full((200, 200), SKY)

    def star(off):
        return jwst_psf("F200W", pixel_scale_arcsec=SCALE, size=21, offset=off, **FAST)

    good = [(20.3, 20.6), (20.1, 100.4), (60.7, 60.2), (100.5, 20.9), (140.2, 60.5), (180.6, 20.3)]
    for y, x in good:
        _add(image, star, y, x, 2e4)
    places = {
        "saturated": (60.4, 140.3),
        "neighbour": (100.2, 100.6),  # with a companion 4 pixels away
        "low_snr": (140.6, 140.2),
        "not_compact_galaxy": (180.4, 100.5),
        "not_compact_cosmic_ray": (180.0, 180.0),
        "flagged": (20.5, 180.5),
        "edge": (2.4, 60.3),
    }
    _add(image, star, *places["saturated"], 2e6)
    _add(image, star, *places["neighbour"], 2e4)
    _add(image, star, 100.2, 104.6, 8e3)
    _add(image, star, *places["low_snr"], 150.0)
    yy, xx = np.indices((21, 21)) - 10
    galaxy = np.exp(-0.5 * (yy**2 / 3.0**2 + xx**2 / 4.5**2))
    _add(image, lambda off: galaxy / galaxy.sum(), *places["not_compact_galaxy"], 3e4)
    image[180, 180] += 3000.0
    _add(image, star, *places["flagged"], 2e4)
    _add(image, star, 3.0, 60.3, 2e4)
    image += rng.normal(0.0, NOISE, image.shape)
    image = np.minimum(image, SATURATION)  # the detector's full well
    mask = np.zeros(image.shape, bool)
    mask[22, 181] = True  # a flagged pixel in the flagged star's core
    ref = jwst_psf("F200W", pixel_scale_arcsec=SCALE, size=STAMP, **FAST)
    return image, mask, ref, good, places


def _reason_at(candidates, y, x, tol=1.5):
    d = np.hypot(candidates["x"] - x, candidates["y"] - y)
    return candidates["reason"][np.argmin(d)] if d.min() < tol else None


def test_each_contaminant_is_rejected_for_its_reason(field, caplog):
    image, mask, ref, good, places = field
    with caplog.at_level(logging.INFO, logger="mosaic.psf.stars"):
        stars = select_stars(image, psf=ref, mask=mask, saturation=0.95 * SATURATION, stamp_size=STAMP, snr_min=30)
    cands = stars.meta["candidates"]
    for name, (y, x) in places.items():
        want = name.removeprefix("not_compact_galaxy").removeprefix("not_compact_cosmic_ray") or "not_compact"
        # a saturated core is a plateau: its candidate sits somewhere on it
        assert _reason_at(cands, y, x, tol=5.0 if name == "saturated" else 1.5) == want, name
    # every good star kept, at its true centre to 0.15 pixel, and nothing else
    assert len(stars) == len(good)
    for y, x in good:
        d = np.hypot(stars["x"] - x, stars["y"] - y)
        assert d.min() < 0.15
    counts = stars.meta["rejected"]
    assert set(counts) == set(REJECTIONS)
    assert counts["saturated"] == 1 and counts["flagged"] == 1 and counts["low_snr"] >= 1
    assert "rejected: edge" in caplog.text
    # sorted by S/N, which is flux over the noise in a 2 FWHM aperture
    assert np.all(np.diff(stars["snr"]) <= 0)
    assert stars["snr"][0] == pytest.approx(stars["flux"][0] / (NOISE * np.sqrt(np.pi * (2 * stars.meta["fwhm"]) ** 2)), rel=0.1)


def test_catalogue_positions_and_n_max(field):
    image, mask, ref, good, places = field
    catalog = Table({"x": [good[0][1], places["not_compact_galaxy"][1], good[2][1]],
                     "y": [good[0][0], places["not_compact_galaxy"][0], good[2][0]]})
    stars = select_stars(image, psf=ref, mask=mask, catalog=catalog, stamp_size=STAMP, snr_min=30)
    assert stars.meta["n_candidates"] == 3
    assert len(stars) == 2 and stars.meta["rejected"]["not_compact"] == 1
    top = select_stars(image, psf=ref, mask=mask, stamp_size=STAMP, snr_min=30, n_max=2)
    assert len(top) == 2


def test_gaussian_reference_without_psf(field):
    image, mask, ref, good, _ = field
    stars = select_stars(image, fwhm=psf_fwhm_pixels(ref), mask=mask, saturation=0.95 * SATURATION, stamp_size=STAMP,
                         snr_min=30, concentration_tol=0.5)
    assert len(stars) >= len(good) - 1


def test_psf_fwhm_pixels_of_a_gaussian():
    yy, xx = np.indices((41, 41)) - 20
    sigma = 4.0
    g = np.exp(-(yy**2 + xx**2) / (2 * sigma**2))
    assert psf_fwhm_pixels(g) == pytest.approx(2.3548 * sigma, rel=0.05)


def test_bad_input():
    with pytest.raises(InputError, match="psf= .* or fwhm="):
        select_stars(np.zeros((30, 30)))
    with pytest.raises(InputError, match="mask has shape"):
        select_stars(np.zeros((30, 30)), fwhm=2.0, mask=np.zeros((3, 3), bool))
    with pytest.raises(InputError, match="catalog has columns"):
        select_stars(np.ones((30, 30)), fwhm=2.0, catalog=Table({"a": [1.0]}))
    stars = Table({"x": [1.0]}, meta={"n_candidates": 4, "rejected": {"edge": 3}})
    with pytest.raises(InputError, match=r"img.fits: 1 usable PSF stars found; the empirical PSF needs at least 5"):
        require_stars(stars, "empirical", source="img.fits")


def test_the_sky_and_noise_are_those_of_the_sky_not_of_the_sources():
    """A field of known sky (5, noise 1) whose galaxies and stars put light in 29 % of the
    pixels: the sky removed is within 0.05 of the truth and the stars' S/N (noise from the image)
    within 3 % of their S/N with the true error map, where a clipped median and scatter of every
    pixel gave +0.15 of sky and S/N 7 % low."""
    from astropy.stats import sigma_clipped_stats

    from tests.skies import deep_field

    image, _ = deep_field(n_galaxies=250, n_stars=30, sky=5.0)
    got = select_stars(image, fwhm=3.0, snr_min=20.0)
    assert got.meta["sky"] == pytest.approx(5.0, abs=0.05)
    assert len(got) >= 3
    known = select_stars(image, fwhm=3.0, snr_min=20.0, error=np.ones(image.shape))
    ratios = []
    for star in got:  # the same star in both (its position)
        d = np.hypot(known["x"] - star["x"], known["y"] - star["y"])
        if d.min() < 0.5:
            ratios.append(star["snr"] / known["snr"][np.argmin(d)])
    assert len(ratios) >= 3
    assert np.all(np.abs(np.array(ratios) - 1) < 0.03)
    _, med, std = sigma_clipped_stats(image, sigma=3.0, maxiters=10)
    assert med > 5.14 and std > 1.05  # what the old estimate was
