"""RGB composites: the paper's mapping, reprojection onto a common grid, bad input."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from astropy.io import fits
from astropy.visualization import make_lupton_rgb
from astropy.wcs import WCS
from matplotlib import image as mimage

from mosaic.exceptions import InputError
from mosaic.viz.rgb import PAPER_MAPPING, combine_bands, common_grid, parse_mapping, rgb_pixels, write_rgb

BANDS = ["F090W", "F150W", "F200W", "F277W", "F356W", "F444W"]


def _wcs(crpix=(50.0, 40.0), scale_deg=1e-5):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [110.8, -73.45]
    w.wcs.crpix = list(crpix)
    w.wcs.cd = [[-scale_deg, 0.0], [0.0, scale_deg]]
    return w


def test_paper_mapping_is_fig5():
    # one band at a time: value 2**i in band i
    images = {b: np.full((4, 5), 2.0**i) for i, b in enumerate(BANDS)}
    r, g, b = combine_bands(images, "paper")
    v = {band: 2.0**i for i, band in enumerate(BANDS)}
    np.testing.assert_allclose(b, v["F150W"] + v["F090W"])
    np.testing.assert_allclose(g, v["F200W"] + v["F277W"] + 165.0 / 255.0 * v["F356W"])
    np.testing.assert_allclose(r, v["F356W"] + v["F444W"])
    assert parse_mapping("paper") == PAPER_MAPPING


def test_missing_bands_are_skipped_and_logged(caplog):
    with caplog.at_level(logging.INFO, logger="mosaic.viz.rgb"):
        r, g, b = combine_bands({"f444w": np.ones((3, 3)), "F150W": 2 * np.ones((3, 3))}, "paper")
    assert "skipped: F090W, F200W, F277W, F356W" in caplog.text
    assert "no band feeds the g channel" in caplog.text
    np.testing.assert_allclose((r, g, b), [np.ones((3, 3)), np.zeros((3, 3)), 2 * np.ones((3, 3))])


def test_user_mapping_json_and_file(tmp_path):
    m = parse_mapping('{"f200w": [0.5, 1, 0]}')
    assert m == {"F200W": (0.5, 1.0, 0.0)}
    (tmp_path / "m.json").write_text('{"F115W": [0, 0, 1]}')
    assert parse_mapping(tmp_path / "m.json") == {"F115W": (0.0, 0.0, 1.0)}


def test_reprojection_onto_the_reference_grid():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(60, 70))
    # the same sky on a grid shifted by (5, 3) pixels: b[y, x] = a[y + 3, x + 5]
    b = a[3:, 5:]
    arrays, wcs = common_grid({"F200W": (a, _wcs()), "F444W": (b, _wcs(crpix=(45.0, 37.0)))}, reference="F200W")
    np.testing.assert_allclose(arrays["F444W"][3:, 5:], a[3:, 5:], atol=1e-6)  # WCS round trips
    assert np.isnan(arrays["F444W"][:3]).all()
    np.testing.assert_array_equal(arrays["F200W"], a)


def test_reduced_grid_matches_block_means():
    a = np.arange(60.0 * 80).reshape(60, 80)
    arrays, wcs = common_grid({"F200W": (a, _wcs()), "F444W": (a[:, :79], _wcs())}, reference="F200W", max_size=20)
    want = a.reshape(15, 4, 20, 4).mean(axis=(1, 3))
    np.testing.assert_allclose(arrays["F200W"], want)
    # block centres: block (0, 0) is the centre of pixels 0..3
    np.testing.assert_allclose(wcs.pixel_to_world_values(0, 0), _wcs().pixel_to_world_values(1.5, 1.5))
    np.testing.assert_allclose(arrays["F444W"][:, :-1], want[:, :-1], rtol=1e-8)


def test_rgb_pixels_linear_and_lupton():
    rng = np.random.default_rng(1)
    ch = rng.uniform(0, 10, (3, 8, 9))
    px = rgb_pixels(ch, stretch="linear", interval="minmax")
    for c in range(3):
        lo, hi = ch[c].min(), ch[c].max()
        np.testing.assert_array_equal(px[..., c], np.round((ch[c] - lo) / (hi - lo) * 255).astype(np.uint8))
    lup = rgb_pixels(ch, method="lupton", q=8)
    lo, hi = np.percentile(ch, 0.5), np.percentile(ch, 99.5)
    np.testing.assert_array_equal(lup, make_lupton_rgb(ch[0], ch[1], ch[2], minimum=lo, stretch=hi - lo, Q=8))


def test_write_rgb_from_fits_files(tmp_path):
    paths = []
    for i, band in enumerate(["F150W", "F200W", "F444W"]):
        img = np.zeros((40, 50))
        img[10 + 5 * i, 20] = 100.0
        header = _wcs().to_header()
        header["FILTER"] = band
        paths.append(tmp_path / f"{band}.fits")
        fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(img, header=header, name="SCI")]).writeto(paths[-1])
    out = write_rgb(tmp_path / "rgb.png", paths, stretch="linear", interval="minmax")
    png = (mimage.imread(out)[..., :3] * 255).round()
    assert png.shape == (40, 50, 3)
    # PNG rows run top-down: image row y is PNG row 39 - y
    np.testing.assert_array_equal(png[39 - 10, 20], [0, 0, 255])  # F150W: blue
    np.testing.assert_array_equal(png[39 - 15, 20], [0, 255, 0])  # F200W: green
    np.testing.assert_array_equal(png[39 - 20, 20], [255, 0, 0])  # F444W: red


def test_bad_input(tmp_path):
    with pytest.raises(InputError, match="mapping is empty"):
        parse_mapping({})
    with pytest.raises(InputError, match=r"mapping\['F200W'\] = \[1, 2\]; expected three non-negative weights"):
        parse_mapping({"F200W": [1, 2]})
    with pytest.raises(InputError, match="'F444W' has no celestial WCS, and the images are not on one grid"):
        common_grid({"F200W": (np.zeros((10, 10)), _wcs()), "F444W": (np.zeros((8, 8)), None)})
    with pytest.raises(InputError, match="no image has a band of the mapping"):
        write_rgb(tmp_path / "x.png", {"F115W": np.ones((4, 4))})
    with pytest.raises(InputError, match=r"method 'hsv' is unknown; expected one of \['stretch', 'lupton'\]"):
        rgb_pixels(np.ones((3, 2, 2)), method="hsv")
    # images without WCS on one grid are combined as they are
    arrays, wcs = common_grid({"F200W": (np.ones((5, 5)), None), "F444W": (np.zeros((5, 5)), None)})
    assert wcs is None and arrays["F444W"].shape == (5, 5)
