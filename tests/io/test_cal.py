"""Reading cal files lazily, and every bad input with its one clear error."""

from __future__ import annotations

import shutil
import warnings

import dask
import numpy as np
import pytest
from astropy.io import fits

from mosaic.exceptions import ExposureExcludedWarning, InputError, UnknownVarianceWarning
from mosaic.io.cal import DQ, EXTENSIONS, bad_bits_from, read_exposures, read_wcs


def test_read_matches_the_files(small_field):
    paths = small_field.exposures
    ds = read_exposures(paths)
    assert ds.sizes == {"exposure": 4, "y": 128, "x": 128}
    # lazy: one dask chunk per exposure, nothing read yet
    assert ds["sci"].data.chunks[0] == (1, 1, 1, 1)
    for k, p in enumerate(paths):
        with fits.open(p) as hdul:
            for ext in EXTENSIONS:
                np.testing.assert_array_equal(ds[ext.lower()][k].values, hdul[ext].data)
            good = np.isfinite(hdul["SCI"].data) & ((hdul["DQ"].data & (DQ["DO_NOT_USE"] | DQ["NON_SCIENCE"])) == 0)
            np.testing.assert_array_equal(ds["good"][k].values, good)
            hdr = hdul["SCI"].header
            assert ds["photmjsr"][k] == hdr["PHOTMJSR"]
            assert ds["exptime"][k] == hdul[0].header["EFFEXPTM"]
    assert set(ds["band"].values) == {"F200W"}
    assert ds.attrs["band"] == "F200W"


def test_wcs_is_the_sip_wcs_of_the_file(small_field):
    p = small_field.exposures[1]
    w = read_wcs(p)
    assert w.sip is not None
    hdr = fits.getheader(p, "SCI")
    xy = np.array([[0.0, 0.0], [127.0, 5.0], [64.3, 99.1]])
    ref = np.array([[hdr["CRVAL1"], hdr["CRVAL2"]]])
    sky = w.all_pix2world(xy, 0)
    # independent check: SIP-free TAN of the same header differs (distortion is there) ...
    from astropy.wcs import WCS  # noqa: PLC0415

    w_full = WCS(hdr)
    np.testing.assert_allclose(sky, w_full.all_pix2world(xy, 0), rtol=0, atol=1e-12)
    assert np.all(np.abs(w.all_pix2world([[hdr["CRPIX1"] - 1, hdr["CRPIX2"] - 1]], 0) - ref) < 1e-10)


def test_bad_bits_are_configurable(small_field):
    ds_all = read_exposures(small_field.exposures, bad_bits=0)
    # with no bad bits, only NaN (DO_NOT_USE pixels are NaN in cal files) is bad
    np.testing.assert_array_equal(ds_all["good"].values, np.isfinite(ds_all["sci"].values))
    assert bad_bits_from("DO_NOT_USE+JUMP_DET") == 5
    assert bad_bits_from(["HOT", "8"]) == DQ["HOT"] | 8
    with pytest.raises(ValueError, match="unknown DQ flag 'BOGUS'"):
        bad_bits_from("BOGUS")


def _copy(src, dst):
    shutil.copy(src, dst)
    return dst


def _edit(path, fn):
    with fits.open(path, mode="update") as hdul:
        fn(hdul)


def _snapshot(folder):
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def _missing(p):
    p.unlink()
    return p


def _not_fits(p):
    p.write_text("not a fits file")
    return p


def _no_sci(p):
    fits.PrimaryHDU().writeto(p, overwrite=True)
    return p


def _no_wcs(p):
    _edit(p, lambda h: h.__setitem__("SCI", fits.ImageHDU(h["SCI"].data, name="SCI")))
    return p


def _err_shape(p):
    _edit(p, lambda h: h.__setitem__("ERR", fits.ImageHDU(np.zeros((5, 5), np.float32), name="ERR")))
    return p


@pytest.mark.parametrize(
    ("spoil", "match"),
    [
        (_missing, "no such file"),
        (_not_fits, "not a readable FITS file"),
        (_no_sci, "no SCI extension"),
        (_no_wcs, "no celestial WCS"),
        (_err_shape, r"ERR has shape \(5, 5\); expected \(128, 128\)"),
    ],
)
def test_bad_files_name_the_file(small_field, tmp_path, spoil, match):
    good = [_copy(p, tmp_path / p.name) for p in small_field.exposures[:2]]
    bad = spoil(_copy(small_field.exposures[2], tmp_path / "jw_bad_cal.fits"))
    before = _snapshot(tmp_path)
    with pytest.raises(InputError, match=match) as info:
        read_exposures([*good, bad])
    assert str(bad) in str(info.value)
    assert _snapshot(tmp_path) == before, "reading must write nothing"


def test_all_nan_or_all_flagged_exposures_are_excluded_with_a_warning(small_field, tmp_path):
    paths = [_copy(p, tmp_path / p.name) for p in small_field.exposures]
    _edit(paths[1], lambda h: h["SCI"].data.__setitem__(..., np.nan))
    _edit(paths[2], lambda h: h["DQ"].data.__setitem__(..., DQ["DO_NOT_USE"]))
    with pytest.warns(ExposureExcludedWarning) as rec:
        ds = read_exposures(paths)
    msgs = " ".join(str(r.message) for r in rec)
    assert str(paths[1]) in msgs and str(paths[2]) in msgs
    assert list(ds["path"].values) == [str(paths[0]), str(paths[3])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExposureExcludedWarning)
        with pytest.raises(InputError, match="nothing to combine"):
            read_exposures(paths[1:3])


def test_a_nan_variance_on_a_good_pixel_leaves_it_out_as_if_it_were_flagged(small_field, tmp_path):
    """A pixel whose VAR_POISSON is NaN has an unknown error: counted as 0, it shrank the mosaic's
    ERR (4x where such pixels dominate). It is left out, with a warning naming the file, and the
    mosaic equals the one where DQ flags the same pixels; a variance NaN everywhere is refused."""
    from mosaic.cli import main
    from mosaic.io.cal import CalCutouts

    nan_var = [_copy(p, tmp_path / f"v{k}_{p.name}") for k, p in enumerate(small_field.exposures)]
    flagged = [_copy(p, tmp_path / f"f{k}_{p.name}") for k, p in enumerate(small_field.exposures)]
    rng = np.random.default_rng(3)
    holes = rng.random((128, 128)) < 0.3
    _edit(nan_var[0], lambda h: h["VAR_POISSON"].data.__setitem__(holes, np.nan))
    _edit(flagged[0], lambda h: h["DQ"].data.__setitem__(holes, h["DQ"].data[holes] | DQ["DO_NOT_USE"]))
    was_good = read_exposures(small_field.exposures[:1])["good"][0].values
    n = int((holes & was_good).sum())
    with pytest.warns(UnknownVarianceWarning, match=rf"{nan_var[0]}: {n} finite, unflagged pixels have a NaN or infinite VAR_POISSON"):
        ds = read_exposures(nan_var)
    ref = read_exposures(flagged)
    np.testing.assert_array_equal(ds["good"].values, ref["good"].values)
    np.testing.assert_array_equal(ds["good"][0].values, was_good & ~holes)
    np.testing.assert_array_equal(CalCutouts([nan_var[0]], ds.attrs["bad_bits"])(0, (slice(0, 128), slice(0, 128)))["good"], ref["good"][0].values)
    outs = {}
    for name, files in (("nan", nan_var), ("flagged", flagged)):
        outs[name] = tmp_path / f"{name}_i2d.fits"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnknownVarianceWarning)
            assert main(["drizzle", *map(str, files), "--out", str(outs[name])]) == 0
    for ext in ("SCI", "ERR", "WHT", "VAR_POISSON"):
        np.testing.assert_array_equal(fits.getdata(outs["nan"], ext), fits.getdata(outs["flagged"], ext))
    del_flat = _copy(small_field.exposures[2], tmp_path / "noflat_cal.fits")
    _edit(del_flat, lambda h: h.__delitem__("VAR_FLAT"))
    with pytest.warns(UnknownVarianceWarning, match=rf"1 of 3 exposures have no VAR_FLAT extension \({del_flat}\): where they land, the mosaic's VAR_FLAT and ERR miss"):
        read_exposures([*small_field.exposures[:2], del_flat])
    # a preprocessing step keeps the extension missing (not NaN everywhere): its output counts
    from mosaic.prep.skymatch import match_skies

    with pytest.warns(UnknownVarianceWarning, match="no VAR_FLAT extension"):
        matched = match_skies([*small_field.exposures[:2], del_flat], tmp_path / "skm", box_size=16)
    with fits.open(matched[2]) as lacking, fits.open(matched[0]) as having:
        assert "VAR_FLAT" not in lacking and "VAR_FLAT" in having
    with pytest.warns(UnknownVarianceWarning, match="no VAR_FLAT extension"):
        assert len(read_exposures(matched)["path"]) == 3
    _edit(nan_var[1], lambda h: h["VAR_FLAT"].data.__setitem__(..., np.nan))
    with pytest.warns(ExposureExcludedWarning, match=rf"{nan_var[1]}.*VAR_FLAT is NaN or infinite on every finite, unflagged pixel"):
        ds = read_exposures(nan_var[1:])
    assert str(nan_var[1]) not in list(ds["path"].values)


def test_mixed_bands_are_an_error(small_field, tmp_path):
    paths = [_copy(p, tmp_path / p.name) for p in small_field.exposures[:2]]
    _edit(paths[1], lambda h: h[0].header.__setitem__("FILTER", "F150W"))
    with pytest.raises(InputError, match=r"mix filters \['F150W', 'F200W'\]"):
        read_exposures(paths)
    with pytest.raises(InputError, match=f"{paths[1]}: filter 'F150W'; expected 'F200W'"):
        read_exposures(paths, band="F200W")
    ds = read_exposures(paths, single_band=False)
    assert ds.attrs["band"] == "MIXED"


def test_reading_is_lazy(small_field, tmp_path):
    paths = [_copy(p, tmp_path / p.name) for p in small_field.exposures]
    ds = read_exposures(paths, check_data=False)
    # the graph reads a file only when computed: remove one and see the failure at compute
    paths[3].unlink()
    np.testing.assert_array_equal(ds["sci"][0].values, fits.getdata(small_field.exposures[0], "SCI"))
    with pytest.raises(FileNotFoundError):
        dask.compute(ds["sci"][3].data, scheduler="sync")


def test_cutouts_of_scaled_compressed_and_missing_extensions(tmp_path):
    """Cut-outs read at file offsets equal astropy's own reading, whatever the storage."""
    from mosaic.io.cal import CalCutouts

    rng = np.random.default_rng(5)
    shape = (37, 53)
    sci = rng.normal(1.0, 0.3, shape)  # float64 on disk (BITPIX -64)
    sci[3, 4] = np.nan
    dq = rng.integers(0, 2**32, shape, dtype=np.uint64).astype(np.uint32)  # int32 + BZERO on disk
    var = rng.uniform(0.1, 1.0, shape).astype(np.float32)
    hdus = [
        fits.PrimaryHDU(),
        fits.ImageHDU(sci, name="SCI"),
        fits.ImageHDU(dq, name="DQ"),
        fits.CompImageHDU(var, name="VAR_POISSON", compression_type="GZIP_2", quantize_level=0.0),
    ]
    path = tmp_path / "odd_cal.fits"
    fits.HDUList(hdus).writeto(path)
    assert fits.getheader(path, "DQ")["BZERO"] == 2**31
    bad = 1 | 4
    region = (slice(5, 30), slice(11, 52))
    got = CalCutouts([path], bad)(0, region)
    np.testing.assert_array_equal(got["sci"], sci[region].astype(np.float32))
    np.testing.assert_array_equal(got["good"], np.isfinite(sci[region]) & ((dq[region] & bad) == 0))
    np.testing.assert_array_equal(got["var_poisson"], var[region])
    assert np.isnan(got["var_rnoise"]).all() and got["var_rnoise"].shape == (25, 41)


def test_cutout_of_a_truncated_file_names_it(tmp_path):
    """A file cut short after its headers were read: one OSError naming it, not a short array."""
    from mosaic.io.cal import CalCutouts

    path = tmp_path / "short_cal.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.ones((64, 64), np.float32), name="SCI")]).writeto(path)
    reader = CalCutouts([path], 1).prepare()  # layouts cached, as on a worker
    np.testing.assert_array_equal(reader(0, (slice(60, 64), slice(0, 64)))["sci"], np.ones((4, 64), np.float32))
    size = path.stat().st_size
    for cut in (2880, 100):  # a whole block of the data, or a part of one
        with open(path, "r+b") as fh:
            fh.truncate(size - cut)
        with pytest.raises(OSError, match=r"short_cal\.fits: (cannot read its FITS headers|data end early)"):
            reader(0, (slice(60, 64), slice(0, 64)))


def test_threaded_scans_are_the_serial_ones_and_name_the_first_damaged_file(small_field, tmp_path):
    """The exposures' data scans run several at a time (:func:`mosaic.io.cal._scans`): the same
    counts as one after the other, in order, on exposures with NaN, flagged and extreme pixels;
    with two files whose data end early, the error names the first of them in the given order."""
    from mosaic.io.cal import _scan, _scans, exposure_header_info

    paths = [_copy(p, tmp_path / p.name) for p in small_field.exposures]
    _edit(paths[0], lambda h: h["SCI"].data.__setitem__((slice(0, 10), slice(None)), np.nan))
    _edit(paths[1], lambda h: h["DQ"].data.__setitem__((slice(5, 40), slice(3, 9)), DQ["DO_NOT_USE"]))
    _edit(paths[2], lambda h: h["SCI"].data.__setitem__((slice(0, 3), slice(0, 3)), 1e38))
    infos = [exposure_header_info(p) for p in paths]
    bits = bad_bits_from(None)
    serial = [_scan(i, bits) for i in infos]
    assert _scans(infos, bits) == serial
    assert len({c["usable"] for c in serial}) > 1  # the edits show in the counts
    for k in (1, 3):
        size = paths[k].stat().st_size
        with open(paths[k], "r+b") as fh:
            fh.truncate(size - 2880)
    with pytest.raises(InputError, match="pixel data cannot be read") as info:
        _scans(infos, bits)
    assert str(paths[1]) in str(info.value)
    assert str(paths[3]) not in str(info.value)


@pytest.mark.parametrize("bunit", ["DN/s", "MJy", "e-/s"])
def test_an_exposure_not_in_mjy_per_sr_is_refused_by_name(small_field, tmp_path, bunit):
    """An uncalibrated exposure (count rate) among calibrated ones would be combined as MJy/sr
    (5 x the others in DN/s for F200W): one error naming it and its unit. MJy/sr in any case or
    spacing, or no BUNIT, passes."""
    paths = [_copy(p, tmp_path / p.name) for p in small_field.exposures[:2]]
    with fits.open(paths[1], mode="update") as hdul:
        hdul["SCI"].header["BUNIT"] = bunit
    with pytest.raises(InputError, match=rf"{paths[1].name}: SCI is in BUNIT '{bunit}'; expected 'MJy/sr'"):
        read_exposures(paths)
    for ok in ("MJY/SR", "MJy / sr", None):
        with fits.open(paths[1], mode="update") as hdul:
            if ok is None:
                del hdul["SCI"].header["BUNIT"]
            else:
                hdul["SCI"].header["BUNIT"] = ok
        assert read_exposures(paths).sizes["exposure"] == 2
