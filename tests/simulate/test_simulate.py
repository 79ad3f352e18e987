"""The simulator against independent references: whole-image convolution, WCS, truth fluxes."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from scipy.signal import fftconvolve

from mosaic.io.cal import DQ, read_wcs
from mosaic.io.grid import MosaicGrid
from mosaic.psf.model import jwst_psf
from mosaic.simulate import SimConfig, simulate_field
from mosaic.simulate.detector import DetectorModel
from mosaic.simulate.field import fine_grid_wcs, render_exposure
from mosaic.simulate.sky import make_sources, render


def _north_up(scale_arcsec, size, crpix=None):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [34.46, -5.237]
    w.wcs.crpix = [crpix or (size + 1) / 2] * 2
    w.wcs.cd = np.diag([-scale_arcsec / 3600, scale_arcsec / 3600])
    w.pixel_shape = (size, size)
    return w


def test_noiseless_exposure_is_truth_convolved_with_psf_and_integrated_over_pixels():
    size, up, n_sub = 48, 2, 4
    cfg = SimConfig(size=size, psf_size=21, upsample=up, n_sub=n_sub, block=20, psr=0.5, distortion=False)
    grid = MosaicGrid.from_exposures([_north_up(0.031, size)], [(size, size)], psr=0.5)
    fine = fine_grid_wcs(grid, up)
    scale_fine = grid.pixel_scale_arcsec / up
    # a detector whose pixels are exactly 4 x 4 fine pixels: fine = 4 * det + 1.5 + o
    o = 37
    det = fine.deepcopy()
    det.wcs.cd = fine.wcs.cd * 4
    det.wcs.crpix = [(c - 1 - 1.5 - o) / 4 + 1 for c in fine.wcs.crpix]
    det.pixel_shape = (size, size)
    psf = jwst_psf("F200W", pixel_scale_arcsec=scale_fine, size=43, n_wavelengths=3, n_pupil=128)
    rng = np.random.default_rng(3)
    poly = np.array([[o, o], [o + 4 * size, o], [o + 4 * size, o + 4 * size], [o, o + 4 * size]], float)
    sources = make_sources(poly, rng=rng, fine_scale_arcsec=scale_fine, fwhm_arcsec=0.066, n_galaxies=8, n_stars=2, n_pairs=1)
    area = float(np.deg2rad(scale_fine / 3600) ** 2)
    icl = {"amplitude": 0.01, "r_eff": 80.0, "x": o + 90.0, "y": o + 100.0, "ellip": 0.2, "theta": 0.3, "shape": (0, 0)}

    got = render_exposure(det, sources, fine, psf, cfg, icl, area)

    h = psf.shape[0] // 2
    region = (slice(o - h, o + 4 * size + h), slice(o - h, o + 4 * size + h))
    conv = fftconvolve(render(sources, region, pixel_area_sr=area, icl=icl), psf, mode="same")[h:-h, h:-h]
    expected = conv.reshape(size, 4, size, 4).mean(axis=(1, 3))
    # equal to float64 round-off of the FFTs and of the WCS round trip (1e-8 of the peak)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-8 * np.abs(expected).max())
    assert np.abs(expected).max() > 0.1


@pytest.fixture(scope="module")
def star_field(tmp_path_factory):
    """Distorted, rolled exposures of isolated stars only, noiseless and without sky."""
    cfg = SimConfig(size=128, psf_size=51, n_exposures=3, seed=21, n_galaxies=0, n_stars=5, n_pairs=0, noiseless=True, background=0.0, icl=False)
    return simulate_field(tmp_path_factory.mktemp("stars"), cfg)


def _pixel_area_sr(wcs, x, y):
    """Solid angle of the detector pixel at (x, y), from the full (SIP) WCS."""
    d = 0.5
    ra, dec = wcs.all_pix2world([x - d, x + d, x], [y, y, y - d], 0)
    # small-angle: tangent vectors in arcsec on the sky
    cosd = np.cos(np.deg2rad(dec[2]))
    ex = np.array([(ra[1] - ra[0]) * cosd, dec[1] - dec[0]])
    ra2, dec2 = wcs.all_pix2world([x, x], [y - d, y + d], 0)
    ey = np.array([(ra2[1] - ra2[0]) * cosd, dec2[1] - dec2[0]])
    return abs(ex[0] * ey[1] - ex[1] * ey[0]) * np.deg2rad(1.0) ** 2


def test_truth_stars_land_where_the_wcs_says_and_keep_their_flux(star_field):
    table = star_field.truth_table
    stars = table[table["kind"] == "star"]
    assert len(stars) == 5
    checked = 0
    for path in star_field.exposures:
        wcs = read_wcs(path)
        sci = fits.getdata(path, "SCI").astype(float)
        for s in stars:
            x, y = wcs.all_world2pix([[s["ra"], s["dec"]]], 0)[0]
            h = 15
            if not (h + 4 <= x <= sci.shape[1] - h - 5 and h + 4 <= y <= sci.shape[0] - h - 5):
                continue
            cx, cy = round(x), round(y)
            for _ in range(3):  # centre of light in a box re-centred on it
                box = sci[cy - h : cy + h + 1, cx - h : cx + h + 1]
                yy, xx = np.mgrid[cy - h : cy + h + 1, cx - h : cx + h + 1]
                mx, my = (box * xx).sum() / box.sum(), (box * yy).sum() / box.sum()
                cx, cy = round(mx), round(my)
            assert np.hypot(mx - x, my - y) < 0.05, f"star {s['id']} in {path.name}: centroid off by {np.hypot(mx - x, my - y):.3f} px"
            flux_ujy = box.sum() * _pixel_area_sr(wcs, x, y) * 1e12
            assert flux_ujy == pytest.approx(s["flux"], rel=5e-3)
            checked += 1
    assert checked >= 5


def test_written_products_follow_the_jwst_layout(small_field):
    p = small_field.exposures[0]
    with fits.open(p) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "SCI", "ERR", "DQ", "VAR_POISSON", "VAR_RNOISE", "VAR_FLAT"]
        prim, sci = hdul[0].header, hdul["SCI"].header
        assert prim["TELESCOP"] == "JWST" and prim["INSTRUME"] == "NIRCAM" and prim["FILTER"] == "F200W"
        assert prim["DETECTOR"] == "NRCB1" and prim["EXPTIME"] > 0
        assert sci["BUNIT"] == "MJy/sr" and sci["CTYPE1"] == "RA---TAN-SIP" and sci["A_ORDER"] == 5
        assert sci["PIXAR_SR"] == pytest.approx(np.deg2rad(0.031 / 3600) ** 2)
        dq = hdul["DQ"].data
        assert dq.dtype == np.uint32
        # reference pixels around the edge, NaN where DO_NOT_USE as the pipeline writes them
        assert np.all(dq[:4] & DQ["REFERENCE_PIXEL"]) and np.all(dq[:, -4:] & DQ["DO_NOT_USE"])
        bad = (dq & DQ["DO_NOT_USE"]) != 0
        assert np.all(np.isnan(hdul["SCI"].data[bad])) and np.all(np.isfinite(hdul["SCI"].data[~bad]))
        err2 = hdul["VAR_POISSON"].data + hdul["VAR_RNOISE"].data + hdul["VAR_FLAT"].data
        np.testing.assert_allclose(hdul["ERR"].data[~bad] ** 2, err2[~bad], rtol=1e-5)
    psf = fits.getdata(small_field.psf)
    assert psf.shape == (51, 51) and psf.sum() == pytest.approx(1.0, abs=1e-6)
    assert np.unravel_index(psf.argmax(), psf.shape) == (25, 25)
    truth = fits.getdata(small_field.truth_image)
    assert truth.shape == small_field.grid.shape
    hdr = fits.getheader(small_field.truth_image)
    assert WCS(hdr).pixel_to_world(3, 4).separation(small_field.grid.wcs.pixel_to_world(3, 4)).arcsec < 1e-9


def test_deterministic_for_a_seed(tmp_path):
    cfg = SimConfig(size=64, psf_size=21, n_exposures=2, seed=9, n_galaxies=5, n_stars=2, n_pairs=1, n_wavelengths=3)
    a = simulate_field(tmp_path / "a", cfg)
    b = simulate_field(tmp_path / "b", cfg, n_workers=2)  # parallel exposures, same result
    c = simulate_field(tmp_path / "c", SimConfig(**{**cfg.__dict__, "seed": 10}))
    for pa, pb, pc in zip(a.exposures, b.exposures, c.exposures, strict=True):
        np.testing.assert_array_equal(fits.getdata(pa, "SCI"), fits.getdata(pb, "SCI"))
        assert not np.array_equal(fits.getdata(pa, "SCI"), fits.getdata(pc, "SCI"), equal_nan=True)
    np.testing.assert_array_equal(a.truth_table["ra"], b.truth_table["ra"])


@pytest.fixture(scope="module")
def noisy_and_clean(tmp_path_factory):
    base = {"size": 128, "psf_size": 31, "n_exposures": 1, "seed": 4, "n_galaxies": 4, "n_stars": 2, "n_pairs": 0, "n_wavelengths": 3}
    det = DetectorModel(one_over_f=40.0)
    noisy = simulate_field(tmp_path_factory.mktemp("noisy"), SimConfig(**base, detector=det))
    clean = simulate_field(tmp_path_factory.mktemp("clean"), SimConfig(**base, detector=det, noiseless=True))
    return noisy, clean


def test_noise_matches_err_and_striping_follows_the_amplifiers(noisy_and_clean):
    noisy, clean = noisy_and_clean
    with fits.open(noisy.exposures[0]) as n, fits.open(clean.exposures[0]) as c:
        diff = n["SCI"].data.astype(float) - c["SCI"].data
        err, dq = n["ERR"].data, n["DQ"].data
        photmjsr = n["SCI"].header["PHOTMJSR"]
        exptime = n[0].header["EXPTIME"]
    art = noisy.artifacts
    hit = np.zeros(diff.shape, bool)
    hit[art["y"], art["x"]] = True
    ok = np.isfinite(diff) & ~hit & (dq == 0)
    ok[:4], ok[-4:] = False, False  # reference-pixel rows
    # remove the per-row amplifier pattern, then the rest is white noise described by ERR
    e_per_mjysr = 2.0 * exptime / photmjsr
    rows = np.zeros_like(diff)
    for a in range(4):
        cols = slice(32 * a, 32 * (a + 1))
        med = np.nanmedian(np.where(ok[4:-4, cols], diff[4:-4, cols], np.nan), axis=1)
        rows[4:-4, cols] = med[:, None]
    pull = ((diff - rows) / err)[ok]
    assert np.std(pull) == pytest.approx(1.0, abs=0.1)
    # striping: row offsets agree within an amplifier (its two halves), not across amplifiers
    pattern = [np.nanmean(np.where(ok[4:-4, s], diff[4:-4, s], np.nan), axis=1) * e_per_mjysr for s in (slice(4, 18), slice(18, 32), slice(36, 50))]
    same = np.corrcoef(pattern[0], pattern[1])[0, 1]
    other = np.corrcoef(pattern[0], pattern[2])[0, 1]
    assert same > 0.6 and abs(other) < 0.4
    # the sky pedestal is under everything (sources and ICL only add), and noise is unbiased
    clean_sci = fits.getdata(clean.exposures[0], "SCI")
    assert np.nanmin(clean_sci) >= 0.15 - 1e-6
    assert abs(np.median(diff[ok])) < 3 * np.median(err[ok]) / np.sqrt(ok.sum()) * 1.253 + np.std(rows[ok])


def test_artifacts_are_injected_some_flagged_some_not(small_field):
    art = small_field.artifacts
    assert {"cr", "hot"} <= set(art["kind"])
    assert art["flagged"].any() and (~art["flagged"]).any()
    for k, p in enumerate(small_field.exposures):
        sci, dq = fits.getdata(p, "SCI"), fits.getdata(p, "DQ")
        mine = art[art["exposure"] == k]
        inner = (mine["x"] >= 4) & (mine["x"] < 124) & (mine["y"] >= 4) & (mine["y"] < 124)
        for r in mine[inner]:
            if r["flagged"]:
                bits = DQ["JUMP_DET"] if r["kind"] == "cr" else DQ["HOT"]
                assert dq[r["y"], r["x"]] & bits and np.isnan(sci[r["y"], r["x"]])
            elif dq[r["y"], r["x"]] == 0:
                assert np.isfinite(sci[r["y"], r["x"]]) and r["snr"] >= 5.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"psf_size": 50}, "psf_size must be odd and >= 3; got 50"), ({"band": "F999Q"}, "band 'F999Q' unknown"), ({"psr": 0}, "psr must be positive")],
)
def test_bad_configuration(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SimConfig(**kwargs)


def test_existing_exposures_are_not_overwritten(small_field):
    before = {p: p.stat().st_mtime_ns for p in small_field.outdir.iterdir()}
    with pytest.raises(FileExistsError, match="already holds _cal.fits files"):
        simulate_field(small_field.outdir, small_field.config)
    assert {p: p.stat().st_mtime_ns for p in small_field.outdir.iterdir()} == before


def test_bands_of_one_seed_observe_the_same_sky_in_colour(tmp_path):
    from mosaic.psf.model import BANDS
    from mosaic.simulate.sky import REFERENCE_WAVELENGTH_UM

    common = {"size": 64, "psf_size": 21, "n_exposures": 1, "n_galaxies": 6, "n_stars": 2, "n_pairs": 0, "seed": 3, "layout_band": "F200W"}
    blue = simulate_field(tmp_path / "f150w", SimConfig(band="F150W", **common)).truth_table
    ref = simulate_field(tmp_path / "f200w", SimConfig(band="F200W", **common)).truth_table
    np.testing.assert_array_equal(blue["x"], ref["x"])
    np.testing.assert_array_equal(blue["beta"], ref["beta"])
    stretch = np.mean(BANDS["F150W"]) / REFERENCE_WAVELENGTH_UM
    np.testing.assert_allclose(blue["flux"] / ref["flux"], stretch ** ref["beta"], rtol=1e-12)
    # stars are bluer than galaxies: brighter at the shorter wavelength
    assert np.all(blue["flux"][ref["kind"] == "star"] > ref["flux"][ref["kind"] == "star"])
    assert np.all(ref["beta"][ref["kind"] == "galaxy"] >= -0.5)
