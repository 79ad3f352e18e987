"""1/f destriping against the simulator's truth: the same exposure simulated without stripes."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from astropy.io import fits
from photutils.aperture import CircularAperture, aperture_photometry

from mosaic.exceptions import InputError
from mosaic.io.cal import read_wcs
from mosaic.ops.destripe import stripe_model
from mosaic.prep.destripe import destripe_exposures, n_amplifiers


def _sci(field):
    return fits.getdata(field.exposures[0], "SCI").astype(np.float64)


@pytest.fixture(scope="module")
def destriped(striped, tmp_path_factory):
    # the simulator splits any width into 4 amplifiers; real subarrays would say NOUTPUTS = 1
    return destripe_exposures(striped.exposures, tmp_path_factory.mktemp("1fc"), n_amps=4)


def test_stripes_are_removed(striped, unstriped, destriped):
    s, n = _sci(striped), _sci(unstriped)
    injected = s - n  # exactly the stripes: the noise is drawn before them, same seed
    out = fits.getdata(destriped[0], "SCI").astype(np.float64)
    ok = np.isfinite(injected)
    rms_in = np.sqrt(np.mean(injected[ok] ** 2))
    # what destriping does to the stripe-free exposure (it also takes out the noise's own row
    # medians): the striped exposure must come out as that one does, bar a tenth of the stripes
    clean_n = n - stripe_model(n, n_amps=4)
    left = out - clean_n
    assert np.sqrt(np.mean(left[ok] ** 2)) < rms_in / 10
    # and as close to the stripe-free truth as destriping can get: the floor is the noise of
    # the row medians (64 pixels per amplifier row here)
    floor = np.sqrt(np.mean((clean_n - n)[ok] ** 2))
    err = fits.getdata(striped.exposures[0], "ERR")
    assert floor < 2.0 * 1.2533 * np.nanmedian(err) / np.sqrt(64)
    assert np.sqrt(np.mean((out - n)[ok] ** 2)) < 1.15 * floor


def test_star_fluxes_are_kept(striped, unstriped, destriped):
    n = _sci(unstriped)
    out = fits.getdata(destriped[0], "SCI").astype(np.float64)
    stars = striped.truth_table[striped.truth_table["kind"] == "star"]
    x, y = read_wcs(striped.exposures[0], prefer_gwcs=False).world_to_pixel_values(stars["ra"], stars["dec"])
    inside = (x > 10) & (x < 245) & (y > 10) & (y < 245)
    assert inside.sum() >= 3
    aper = CircularAperture(np.column_stack([x[inside], y[inside]]), r=4.0)
    sky = np.nanmedian(n)
    f_true = aperture_photometry(n - sky, aper)["aperture_sum"]
    f_out = aperture_photometry(out - sky, aper)["aperture_sum"]
    np.testing.assert_allclose(f_out, f_true, rtol=5e-3)


def test_1fc_file(striped, destriped):
    src, dst = striped.exposures[0], destriped[0]
    assert dst.name.endswith("_1fc.fits") and fits.getheader(dst)["S_DESTRP"] == "COMPLETE"
    for ext in ("ERR", "DQ", "VAR_RNOISE"):
        np.testing.assert_array_equal(fits.getdata(dst, ext), fits.getdata(src, ext))


def test_noutputs_keyword(striped, tmp_path):
    p = tmp_path / "sub_cal.fits"
    shutil.copy(striped.exposures[0], p)
    assert n_amplifiers(p, 256) == 4  # the simulator writes it
    with fits.open(p, mode="update") as hdul:
        del hdul[0].header["NOUTPUTS"]
    assert n_amplifiers(p, 256) is None
    with fits.open(p, mode="update") as hdul:
        hdul[0].header["NOUTPUTS"] = 2
    assert n_amplifiers(p, 256) == 2


def test_bad_input(striped, tmp_path):
    with pytest.raises(ValueError, match="n_amps 3 does not split 256"):
        destripe_exposures(striped.exposures, tmp_path / "a", n_amps=3)
    empty = tmp_path / "empty_cal.fits"
    shutil.copy(striped.exposures[0], empty)
    with fits.open(empty, mode="update") as hdul:
        hdul["SCI"].data[:] = np.nan
    with pytest.raises(InputError, match="empty_cal.fits: every pixel is NaN"):
        destripe_exposures([empty], tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
