"""``mosaic background``, ``mosaic filter`` and ``mosaic stats`` on FITS files."""

from __future__ import annotations

import json
import warnings

import numpy as np
import photutils.background as pb
import pytest
import scipy.ndimage as ndi
from astropy import stats as astats
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning
from astropy.wcs import WCS

from mosaic.cli import main


@pytest.fixture(scope="module")
def i2d(tmp_path_factory):
    rng = np.random.default_rng(3)
    data = (5 + rng.normal(size=(130, 110))).astype(np.float32)
    data[60:66, 40:46] += 50
    data[:8, :9] = np.nan
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval, w.wcs.crpix, w.wcs.cdelt = [10, 20], [50, 60], [-1e-5, 1e-5]
    path = tmp_path_factory.mktemp("cli") / "field_i2d.fits"
    hdus = [fits.PrimaryHDU(), fits.ImageHDU(data, w.to_header(), name="SCI"), fits.ImageHDU(np.ones_like(data), name="ERR")]
    fits.HDUList(hdus).writeto(path)
    return path, data


def test_background_command_writes_photutils_background(i2d, tmp_path):
    path, data = i2d
    out = tmp_path / "bkg.fits"
    assert main(["background", str(path), "--out", str(out), "--box", "20", "--filter", "3", "--tile", "40"]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyUserWarning)
        ref = pb.Background2D(data, 20, filter_size=3, mask=~np.isfinite(data), bkg_estimator=pb.MedianBackground())
    with fits.open(out) as h:
        assert [x.name for x in h] == ["PRIMARY", "SCI", "BKG", "BKG_RMS"]
        np.testing.assert_allclose(h["BKG"].data, ref.background, rtol=1e-6)
        np.testing.assert_allclose(h["BKG_RMS"].data, ref.background_rms, rtol=1e-6)
        np.testing.assert_allclose(h["SCI"].data, data - ref.background, rtol=1e-6, equal_nan=True)
        assert WCS(h["BKG"].header).wcs.compare(WCS(fits.getheader(path, "SCI")).wcs)
    assert not list(tmp_path.glob(".*part*")), "no temporary file is left behind"
    assert main(["background", str(path), "--out", str(out), "--box", "20"]) == 1  # exists, no --overwrite
    assert main(["background", str(path), "--out", str(tmp_path / "b.fits"), "--box", "500"]) == 1


def test_filter_command_equals_scipy(i2d, tmp_path):
    path, data = i2d
    out = tmp_path / "med.fits"
    assert main(["filter", str(path), "--out", str(out), "--kind", "median", "--size", "5", "--tile", "32"]) == 0
    np.testing.assert_array_equal(fits.getdata(out, "SCI"), ndi.median_filter(data, size=5))
    assert main(["filter", str(path), "--out", str(tmp_path / "g.fits"), "--kind", "gaussian"]) == 1  # no --sigma


def test_stats_command_json_equals_astropy(i2d, capsys):
    path, data = i2d
    capsys.readouterr()
    assert main(["stats", str(path), "--json", "--tile", "50"]) == 0
    got = json.loads(capsys.readouterr().out)
    kept = data[np.isfinite(data)]
    assert got["n_nan"] == 72 and got["n_valid"] == kept.size
    np.testing.assert_allclose([got["mean"], got["median"], got["std"]], astats.sigma_clipped_stats(kept), rtol=1e-5)
    assert got["median"] == pytest.approx(float(np.median(astats.sigma_clip(kept, masked=False))), rel=1e-7)


def test_stats_command_text_says_which_median_is_clipped_and_the_unit(i2d, capsys):
    path, data = i2d
    capsys.readouterr()
    assert main(["stats", str(path), "--tile", "50"]) == 0
    rows = {line[:18].strip(): line[18:].split() for line in capsys.readouterr().out.splitlines()}
    kept = data[np.isfinite(data)]
    assert rows["unit"][0] == fits.getheader(path, "SCI").get("BUNIT", "(no")
    assert float(rows["clipped median"][0]) == pytest.approx(float(astats.sigma_clipped_stats(kept)[1]), rel=1e-6)
    assert "sigma-clipped" in " ".join(rows["clipped median"])
    assert float(rows["p50"][0]) == pytest.approx(float(np.median(kept)), rel=1e-6)
    assert "not clipped" in " ".join(rows["p50"])
