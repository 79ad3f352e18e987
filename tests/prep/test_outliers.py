"""Outlier detection on a simulated field: cosmic rays found, star cores kept, mosaic cleaner."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
from astropy.io import fits

from mosaic.coadd.drizzle import drizzle_mosaic
from mosaic.exceptions import InputError
from mosaic.io.cal import DQ, read_exposures, read_wcs
from mosaic.io.grid import MosaicGrid
from mosaic.prep.outliers import FewExposuresWarning, clean_exposures, outlier_graph


def _outlier_masks(paths):
    return [(fits.getdata(p, "DQ") & DQ["OUTLIER"]) != 0 for p in paths]


def _injected(field, kind="cr"):
    """Unflagged injected artifacts that are in the data (SCI finite), per exposure, snr > 5,
    two pixels or more inside the exposure's 4-pixel reference border and where another exposure
    sees the same sky (one pixel inside its border): elsewhere the output pixels are only partly
    covered (below maskpt) and there is nothing to compare with."""
    a = field.artifacts
    wcs = [read_wcs(p, prefer_gwcs=False) for p in field.exposures]
    n = field.config.size
    out = []
    for k, path in enumerate(field.exposures):
        sci = fits.getdata(path, "SCI")
        s = a[(a["exposure"] == k) & (a["kind"] == kind) & ~a["flagged"] & (a["snr"] > 5)]
        s = s[np.isfinite(sci[s["y"], s["x"]])]
        s = s[(s["x"] >= 6) & (s["x"] <= n - 7) & (s["y"] >= 6) & (s["y"] <= n - 7)]
        sky = wcs[k].pixel_to_world(np.asarray(s["x"], float), np.asarray(s["y"], float))
        seen = np.zeros(len(s), bool)
        for j, w in enumerate(wcs):
            if j != k:
                x, y = w.world_to_pixel(sky)
                seen |= (x >= 5) & (x <= n - 6) & (y >= 5) & (y <= n - 6)
        out.append(s[seen])
    return out


def test_cosmic_rays_and_hot_pixels_are_flagged(cr_field, cleaned):
    masks = _outlier_masks(cleaned)
    for kind, need in (("cr", 0.95), ("hot", 0.95)):
        hits = [m[s["y"], s["x"]] for m, s in zip(masks, _injected(cr_field, kind), strict=True)]
        n = sum(h.size for h in hits)
        assert n >= 10 if kind == "cr" else n >= 3
        assert sum(h.sum() for h in hits) / n >= need, kind


def test_bright_star_cores_are_not_flagged(cr_field, cleaned):
    stars = cr_field.truth_table[cr_field.truth_table["kind"] == "star"]
    n_core = n_flag = 0
    for path, mask in zip(cr_field.exposures, _outlier_masks(cleaned), strict=True):
        x, y = read_wcs(path, prefer_gwcs=False).world_to_pixel_values(stars["ra"], stars["dec"])
        yy, xx = np.mgrid[: mask.shape[0], : mask.shape[1]]
        sci = fits.getdata(path, "SCI")
        for xs, ys in zip(x, y, strict=True):
            core = ((xx - xs) ** 2 + (yy - ys) ** 2 <= 2.0**2) & np.isfinite(sci)
            n_core += core.sum()
            n_flag += (mask & core).sum()
    assert n_core > 200
    assert n_flag / n_core < 1e-3


def test_flagged_fraction_is_small(cleaned):
    # the injected artifacts cover ~0.2% of the pixels; the rest of the sky must stay unflagged
    frac = np.mean([m.mean() for m in _outlier_masks(cleaned)])
    assert 0 < frac < 0.01


def _mosaic(paths, grid):
    ds = read_exposures(paths)
    return drizzle_mosaic(ds, grid, variance=False).sci.values


def test_cleaned_mosaic_is_closer_to_the_truth(cr_field, cr_noiseless, cleaned):
    ds = read_exposures(cr_field.exposures)
    grid = MosaicGrid.from_exposures(ds.attrs["wcs"], [(160, 160)] * 6, psr=1.0, tile=512)
    truth = _mosaic(cr_noiseless.exposures, grid)
    raw = _mosaic(cr_field.exposures, grid) - truth
    clean = _mosaic(cleaned, grid) - truth
    # output pixels that the injected (unflagged) artifacts land on
    near = np.zeros(grid.shape, bool)
    for k, s in enumerate(_injected(cr_field, "cr")):
        gx, gy = grid.wcs.world_to_pixel(ds.attrs["wcs"][k].pixel_to_world(s["x"], s["y"]))
        near[np.round(gy).astype(int), np.round(gx).astype(int)] = True
    near &= np.isfinite(raw) & np.isfinite(clean)
    assert near.sum() > 20
    assert np.abs(clean[near]).max() < 0.3 * np.abs(raw[near]).max()
    assert np.sqrt(np.mean(clean[near] ** 2)) < 0.3 * np.sqrt(np.mean(raw[near] ** 2))
    # and nowhere worse overall
    ok = np.isfinite(raw) & np.isfinite(clean)
    assert np.sqrt(np.mean(clean[ok] ** 2)) < np.sqrt(np.mean(raw[ok] ** 2))


def test_crf_files_keep_the_cal_layout(cr_field, cleaned):
    for src, dst in zip(cr_field.exposures, cleaned, strict=True):
        assert dst.name == src.name.replace("_cal.fits", "_crf.fits")
        h_src, h_dst = fits.getheader(src), fits.getheader(dst)
        assert h_dst["FILTER"] == h_src["FILTER"] and h_dst["S_OUTLIR"] == "COMPLETE"
        w_src, w_dst = read_wcs(src, prefer_gwcs=False), read_wcs(dst, prefer_gwcs=False)
        pts = np.array([[0, 0], [159, 0], [80, 80], [159, 159]], float)
        np.testing.assert_allclose(w_dst.all_pix2world(pts, 0), w_src.all_pix2world(pts, 0), rtol=0, atol=1e-10)
        # untouched pixels are unchanged, replaced ones carry OUTLIER and sane errors
        s0, s1 = fits.getdata(src, "SCI"), fits.getdata(dst, "SCI")
        flagged = (fits.getdata(dst, "DQ") & DQ["OUTLIER"]) != 0
        np.testing.assert_array_equal(s1[~flagged], s0[~flagged])
        assert np.isfinite(s1[flagged]).all()
        err = fits.getdata(dst, "ERR")
        assert np.all(err[flagged] < fits.getdata(src, "ERR")[flagged])
    assert read_exposures(cleaned).sizes["exposure"] == 6


def test_flag_mode_gives_zero_weight(cr_field, cleaned, tmp_path):
    flagged = clean_exposures(cr_field.exposures, tmp_path, replace="flag", tile=96)
    for f, r in zip(flagged, cleaned, strict=True):
        dq_f = fits.getdata(f, "DQ")
        out_f = (dq_f & DQ["OUTLIER"]) != 0
        np.testing.assert_array_equal(out_f, (fits.getdata(r, "DQ") & DQ["OUTLIER"]) != 0)
        assert out_f.any()
        assert np.all(dq_f[out_f] & DQ["DO_NOT_USE"])
        assert np.isnan(fits.getdata(f, "SCI")[out_f]).all()


# -- bad input -------------------------------------------------------------------------------


def test_one_exposure_is_an_error(cr_field, tmp_path):
    with pytest.raises(InputError, match="at least 2 exposures"):
        clean_exposures(cr_field.exposures[:1], tmp_path)


def test_two_exposures_warn(cr_field):
    ds = read_exposures(cr_field.exposures[:2])
    grid = MosaicGrid.from_exposures(ds.attrs["wcs"], [(160, 160)] * 2, psr=1.0, tile=128)
    with pytest.warns(FewExposuresWarning, match="lower of the two"):
        outlier_graph(ds, grid)


def test_mismatched_bands_are_an_error(cr_field, tmp_path):
    other = tmp_path / "other_cal.fits"
    shutil.copy(cr_field.exposures[1], other)
    with fits.open(other, mode="update") as hdul:
        hdul[0].header["FILTER"] = "F150W"
    with pytest.raises(InputError, match="mix filters"):
        clean_exposures([cr_field.exposures[0], other, cr_field.exposures[2]], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_all_nan_exposure_is_an_error(cr_field, tmp_path):
    empty = tmp_path / "empty_cal.fits"
    shutil.copy(cr_field.exposures[1], empty)
    with fits.open(empty, mode="update") as hdul:
        hdul["SCI"].data[:] = np.nan
    with pytest.raises(InputError, match="empty_cal.fits: every pixel is NaN"):
        clean_exposures([cr_field.exposures[0], empty, cr_field.exposures[2]], tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"snr": (0.0, 4.0)}, "snr .* <= 0"),
        ({"snr": -5.0}, "snr .* <= 0"),
        ({"scale": (1.2, -0.7)}, "scale .* negative"),
        ({"snr": (5.0,)}, "not a pair"),
        ({"replace": "zero"}, "expected one of \\('interpolate', 'flag'\\)"),
    ],
)
def test_bad_options_are_errors(cr_field, tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        clean_exposures(cr_field.exposures[:3], tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_existing_output_is_not_overwritten(cr_field, cleaned):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputError, match="exists; pass overwrite=True"):
            clean_exposures(cr_field.exposures, cleaned[0].parent)


def test_an_exposure_with_another_sky_is_not_flagged_for_it(cr_field, cleaned, tmp_path):
    """Exposures of other visits hold other skies. Exposure 0's sky raised by 17 % (40 x its
    ERR; it flagged 64 % of its pixels when the median mixed the skies): each exposure's sky
    (sources masked) is taken off before the median and given back to its blot, so it flags what
    it flagged at its own sky (cosmic rays, hot pixels), and a replaced pixel keeps its sky."""
    from pathlib import Path

    paths = []
    for k, p in enumerate(cr_field.exposures):
        q = tmp_path / "in" / Path(p).name
        q.parent.mkdir(exist_ok=True)
        shutil.copy(p, q)
        if k == 0:
            with fits.open(q, mode="update") as hdul:
                sky = float(np.nanmedian(hdul["SCI"].data))
                hdul["SCI"].data += np.float32(0.17 * sky)
        paths.append(q)
    raised = clean_exposures(paths, tmp_path / "out", replace="interpolate")
    before, after = _outlier_masks(cleaned)[0], _outlier_masks(raised)[0]
    assert abs(int(after.sum()) - int(before.sum())) <= 0.1 * before.sum() + 3
    assert (after & before).sum() >= 0.9 * before.sum()
    # replaced pixels sit at the raised exposure's level: the other exposures' sky plus its offset
    sci0 = fits.getdata(raised[0], "SCI").astype(float)
    ref0 = fits.getdata(cleaned[0], "SCI").astype(float)
    np.testing.assert_allclose(np.median(sci0[after & before] - ref0[after & before]), 0.17 * sky, rtol=0.05)
