"""PSF files: validation errors name the file, resampling matches the model, groups."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from astropy.io import fits

from mosaic.exceptions import InputError
from mosaic.psf.files import psf_groups, read_psf, resample_psf, write_psf
from mosaic.psf.model import jwst_psf


def _gaussian(n, sigma=2.0):
    y, x = np.mgrid[:n, :n] - (n - 1) / 2
    g = np.exp(-(x**2 + y**2) / (2 * sigma**2))
    return g / g.sum()


def _write_raw(path, data, **header):
    hdr = fits.Header()
    for key, value in header.items():
        hdr[key] = value
    fits.PrimaryHDU(data, header=hdr).writeto(path)
    return path


def test_write_read_roundtrip(tmp_path):
    psf = _gaussian(21) * 3.0
    path = write_psf(tmp_path / "psf.fits", psf, pixel_scale_arcsec=0.031, band="f200w")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["psf.fits"]  # no temporary left
    assert fits.getheader(path)["FILTER"] == "F200W"
    out, scale = read_psf(path)
    assert scale == 0.031
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, psf / psf.sum(), rtol=1e-15, atol=0)
    out2, scale2 = read_psf(path, pixel_scale_arcsec=0.031)
    assert scale2 == 0.031
    np.testing.assert_array_equal(out2, out)


def test_write_replaces_whole_or_not_at_all(tmp_path):
    path = write_psf(tmp_path / "psf.fits", _gaussian(11), pixel_scale_arcsec=0.03)
    with pytest.raises(InputError, match="even"):
        write_psf(path, np.ones((10, 10)), pixel_scale_arcsec=0.03)
    np.testing.assert_allclose(read_psf(path)[0], _gaussian(11), rtol=1e-15)
    write_psf(path, _gaussian(15), pixel_scale_arcsec=0.03)
    assert read_psf(path)[0].shape == (15, 15)
    assert [p.name for p in tmp_path.iterdir()] == ["psf.fits"]


def test_reads_first_image_extension(tmp_path):
    path = tmp_path / "webbpsf.fits"
    hdr = fits.Header()
    hdr["PIXELSCL"] = 0.0155
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(_gaussian(9), header=hdr, name="DET_SAMP")]).writeto(path)
    out, scale = read_psf(path)
    assert scale == 0.0155
    np.testing.assert_allclose(out, _gaussian(9), rtol=1e-14)
    assert read_psf(path, ext="DET_SAMP")[0].shape == (9, 9)
    with pytest.raises(InputError, match=r"webbpsf\.fits: no extension 'OVERSAMP'"):
        read_psf(path, ext="OVERSAMP")


@pytest.mark.parametrize(
    "data, header, match",
    [
        (np.ones((3, 11, 11)), {}, r"shape \(3, 11, 11\); expected a 2-D"),
        (np.ones((10, 10)), {}, "even size 10"),
        (np.ones((11, 13)), {}, r"shape \(11, 13\); expected a square"),
        (np.where(np.eye(11) > 0, np.nan, 1.0), {}, "11 NaN or infinite"),
        (np.where(np.eye(11) > 0, np.inf, 1.0), {}, "NaN or infinite"),
        (np.zeros((11, 11)), {}, "cannot be normalised"),
        (_gaussian(11) - 2 * _gaussian(11, 4.0), {}, "negative total"),
        (_gaussian(11), {"PIXELSCL": -0.03}, "PIXELSCL = -0.03"),
        (_gaussian(11), {"PIXELSCL": "fine"}, "PIXELSCL = 'fine'"),
    ],
)
def test_bad_psf_file_raises_naming_it(tmp_path, data, header, match):
    path = _write_raw(tmp_path / "bad_psf.fits", data, **header)
    with pytest.raises(InputError, match=match) as info:
        read_psf(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.fits"
    with pytest.raises(InputError, match="no such PSF file") as info:
        read_psf(path)
    assert str(path) in str(info.value)


def test_not_fits(tmp_path):
    path = tmp_path / "psf.fits"
    path.write_text("not a FITS file")
    with pytest.raises(InputError, match="cannot be read as FITS") as info:
        read_psf(path)
    assert str(path) in str(info.value)


def test_no_image_data(tmp_path):
    path = tmp_path / "empty.fits"
    fits.PrimaryHDU().writeto(path)
    with pytest.raises(InputError, match="no image data") as info:
        read_psf(path)
    assert str(path) in str(info.value)


def test_requested_scale_needs_pixelscl(tmp_path):
    path = _write_raw(tmp_path / "noscale.fits", _gaussian(11))
    assert read_psf(path)[1] is None
    with pytest.raises(InputError, match="no PIXELSCL") as info:
        read_psf(path, pixel_scale_arcsec=0.03)
    assert str(path) in str(info.value)


def test_resampled_from_finer_sampling_matches_model(tmp_path, caplog):
    # F200W: model at 0.0155"/px resampled to 0.031"/px against the model computed at 0.031"/px
    scale, n = 0.031, 51
    fine = jwst_psf("F200W", pixel_scale_arcsec=scale / 2, size=2 * n + 1, oversample=8)
    direct = jwst_psf("F200W", pixel_scale_arcsec=scale, size=n, oversample=16)
    path = write_psf(tmp_path / "fine.fits", fine, pixel_scale_arcsec=scale / 2, band="F200W")
    with caplog.at_level(logging.INFO, logger="mosaic.psf.files"):
        out, out_scale = read_psf(path, pixel_scale_arcsec=scale)
    assert "resampled" in caplog.text
    assert out_scale == scale
    assert out.shape == (n, n)
    assert out.sum() == pytest.approx(1.0, abs=1e-12)
    # measured ~1e-6 of the peak; 1e-4 leaves room for changes in the model's pixel integration
    np.testing.assert_allclose(out, direct, rtol=0, atol=1e-4 * direct.max())
    yy, xx = np.mgrid[:n, :n]
    assert (out * yy).sum() == pytest.approx((n - 1) / 2, abs=1e-9)
    assert (out * xx).sum() == pytest.approx((n - 1) / 2, abs=1e-9)


@pytest.mark.parametrize("scale_out", [0.0155, 0.0217])
def test_resample_to_other_ratios_matches_model(scale_out):
    # coarse-to-fine and a non-integer ratio; the 2e-4 of the reference's own integration
    scale_in, n = 0.031, 51
    coarse = jwst_psf("F444W", pixel_scale_arcsec=2 * scale_in, size=n, oversample=16)
    out = resample_psf(coarse, scale_in=2 * scale_in, scale_out=2 * scale_out)
    assert out.shape[0] % 2 == 1 and out.shape[0] * scale_out <= n * scale_in
    direct = jwst_psf("F444W", pixel_scale_arcsec=2 * scale_out, size=out.shape[0], oversample=16)
    np.testing.assert_allclose(out, direct, rtol=0, atol=1e-3 * direct.max())


def test_resample_psf_rejects_bad_scale():
    with pytest.raises(InputError, match="scale_out"):
        resample_psf(_gaussian(11), scale_in=0.03, scale_out=0.0)


def test_groups(tmp_path):
    a = write_psf(tmp_path / "a.fits", _gaussian(11), pixel_scale_arcsec=0.03)
    # same content, another file and another normalisation and header: the same PSF
    hdr = {"PIXELSCL": 0.03, "DATE": "2024-01-01"}
    a_copy = _write_raw(tmp_path / "a_copy.fits", 5.0 * _gaussian(11), **hdr)
    b = write_psf(tmp_path / "b.fits", _gaussian(11, 3.0), pixel_scale_arcsec=0.03)
    a_coarse = write_psf(tmp_path / "a_coarse.fits", _gaussian(11), pixel_scale_arcsec=0.06)
    groups = psf_groups([a, b, str(a), a_copy, a_coarse, b])
    assert groups == {a: [0, 2, 3], b: [1, 5], a_coarse: [4]}


def test_groups_tell_psfs_apart_above_the_tolerance(tmp_path):
    g = _gaussian(11)
    a = write_psf(tmp_path / "a.fits", g, pixel_scale_arcsec=0.03)
    # a change of 1e-5 of the peak in one pixel is another PSF; 1e-7 (float32 round-off) is not
    bumped, rounded = g.copy(), g.copy()
    bumped[0, 0] += 1e-5 * g.max()
    rounded[5, 5] += 1e-7 * g.max()
    far = _write_raw(tmp_path / "far.fits", bumped, PIXELSCL=0.03)
    near = _write_raw(tmp_path / "near.fits", rounded.astype(np.float32), PIXELSCL=0.03)
    assert psf_groups([a, far, near, far]) == {a: [0, 2], far: [1, 3]}


def test_groups_reject_bad_entries(tmp_path):
    a = write_psf(tmp_path / "a.fits", _gaussian(11), pixel_scale_arcsec=0.03)
    with pytest.raises(InputError, match="exposure 1 has no PSF"):
        psf_groups([a, None])
    with pytest.raises(InputError, match="missing.fits"):
        psf_groups([a, tmp_path / "missing.fits"])
