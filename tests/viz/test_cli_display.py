"""The ``mosaic psf``, ``mosaic preview`` and ``mosaic rgb`` commands end to end."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from matplotlib import image as mimage

from mosaic.cli import main
from mosaic.psf.files import read_psf
from mosaic.psf.model import jwst_psf

SCALE = 0.031
FAST = {"n_wavelengths": 3, "n_pupil": 128, "oversample": 4}


def _header(band="F200W"):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [110.8, -73.45]
    w.wcs.crpix = [80.0, 80.0]
    w.wcs.cd = [[-SCALE / 3600, 0.0], [0.0, SCALE / 3600]]
    h = w.to_header()
    h["FILTER"] = band
    return h


def _star_image(path, n_side):
    rng = np.random.default_rng(5)
    img = np.full((40 * n_side, 40 * n_side), 5.0)
    for y in range(20, 40 * n_side, 40):
        for x in range(20, 40 * n_side, 40):
            dy, dx = rng.uniform(-0.5, 0.5, 2)
            img[y - 10:y + 11, x - 10:x + 11] += 1e5 * jwst_psf("F200W", pixel_scale_arcsec=SCALE, size=21, offset=(dy, dx), **FAST)
    img += rng.normal(0.0, 1.0, img.shape)
    dq = np.zeros(img.shape, np.uint32)
    err = np.sqrt(1.0 + np.clip(img - 5.0, 0, None))
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(img, _header(), name="SCI"), fits.ImageHDU(err, name="ERR"),
                  fits.ImageHDU(dq, name="DQ")]).writeto(path)
    return path


@pytest.fixture(scope="module")
def star_image(tmp_path_factory):
    return _star_image(tmp_path_factory.mktemp("psfcli") / "stars_cal.fits", 3)


@pytest.mark.parametrize("method", ["hybrid", "empirical"])
def test_psf_command(star_image, tmp_path, method):
    out = tmp_path / f"{method}.fits"
    assert main(["psf", str(star_image), "--out", str(out), "--method", method, "--size", "31", "--oversample", "2",
                 "--n-iterations", "3"]) == 0
    psf, scale = read_psf(out)
    assert psf.shape == (31, 31) and scale == pytest.approx(SCALE / 2, rel=1e-6)
    assert fits.getheader(out)["FILTER"] == "F200W"
    optical = jwst_psf("F200W", pixel_scale_arcsec=SCALE / 2, size=31, **FAST)
    optical /= optical.sum()
    c = 15
    assert np.unravel_index(np.argmax(psf), psf.shape) == (c, c)
    if method == "hybrid":  # the optical PSF of the stars, to a few per cent of its peak
        assert np.abs(psf - optical).max() <= 0.05 * optical.max()
    else:  # the effective PSF: broader than the optical one by the detector pixel
        assert psf[c, c] < optical[c, c]
        assert np.abs(psf - optical).max() <= 0.15 * optical.max()


def test_psf_command_too_few_stars(tmp_path, capsys):
    path = _star_image(tmp_path / "few_cal.fits", 1)
    assert main(["psf", str(path), "--out", str(tmp_path / "p.fits"), "--size", "31"]) == 1
    err = capsys.readouterr().err
    assert "1 usable PSF stars found; the hybrid PSF needs at least 3" in err
    assert not (tmp_path / "p.fits").exists()


def test_preview_command(tmp_path, capsys):
    img = np.random.default_rng(0).normal(size=(300, 120)).astype(np.float32)
    path = tmp_path / "m_i2d.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(img, name="SCI")]).writeto(path)
    out = tmp_path / "m.png"
    assert main(["preview", str(path), "--out", str(out), "--max-size", "100", "--stretch", "zscale"]) == 0
    assert mimage.imread(out).shape[:2] == (100, 40)
    assert main(["preview", str(path), "--out", str(out)]) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["preview", str(path), "--out", str(out), "--stretch", "gamma"])
    assert "invalid choice: 'gamma' (choose from asinh, linear, log" in capsys.readouterr().err.replace("'asinh'", "asinh").replace(
        "'linear'", "linear").replace("'log'", "log")


def test_rgb_command(tmp_path, capsys):
    paths = []
    for band in ("F150W", "F444W"):
        p = tmp_path / f"{band}.fits"
        fits.HDUList([fits.PrimaryHDU(np.random.default_rng(1).normal(size=(50, 60)), header=_header(band))]).writeto(p)
        paths.append(str(p))
    out = tmp_path / "rgb.png"
    assert main(["rgb", *paths, "--out", str(out), "--max-size", "30"]) == 0
    assert mimage.imread(out).shape[:2] == (25, 30)
    assert main(["rgb", *paths, "--out", str(tmp_path / "x.png"), "--mapping", "{}"]) == 1
    assert "mapping is empty" in capsys.readouterr().err
