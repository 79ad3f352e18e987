"""Flux errors scaled for a drizzle mosaic's correlated noise: which images, which columns, by how much."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import QTable
from photutils.aperture import CircularAperture, aperture_photometry

from mosaic.catalog.flux_errors import NoiseModel, drizzle_noise_model, scale_flux_errors
from mosaic.cli import main
from mosaic.io.catalogs import read_catalog
from mosaic.ops.drizzle_noise import aperture_noise_factor


def _primary(**cards):
    return fits.Header([(k, v) for k, v in cards.items()])


@pytest.mark.parametrize(
    ("cards", "drop", "reason"),
    [
        ({"RESKERN": "square", "PIXFRAC": 1.0, "PXSCLRT": 0.5}, 2.0, ""),
        ({"RESKERN": "turbo", "PIXFRAC": 0.6, "PXSCLRT": 0.5, "UPDCITER": 0}, 1.2, ""),
        ({"RESKERN": "square", "PIXFRAC": 1.0, "PXSCLRT": 0.5, "UPDCITER": 3}, None, "UPDC iteration 3"),
        ({"RESKERN": "lanczos3", "PIXFRAC": 1.0, "PXSCLRT": 0.5}, None, "lanczos3 kernel"),
        ({"RESKERN": "square", "PIXFRAC": 1.0}, None, "no PXSCLRT"),
        ({"RESKERN": "square", "PIXFRAC": -1.0, "PXSCLRT": 0.5}, None, "unusable"),
        ({"FILTER": "F200W"}, None, "no RESKERN, PIXFRAC, PXSCLRT"),
    ],
)
def test_noise_model_from_the_primary_header(cards, drop, reason):
    model, why = drizzle_noise_model(_primary(**cards), source="m_i2d.fits")
    if drop is None:
        assert model is None
        assert reason in why
        assert "m_i2d.fits" in why
    else:
        assert model.drop == pytest.approx(drop)
        assert why == ""
    assert drizzle_noise_model(None)[0] is None


def test_each_error_column_takes_its_apertures_factor():
    t = QTable()
    t["semimajor_axis"] = [3.0, 2.0, 1.0] * u.pix
    t["semiminor_axis"] = [1.5, 2.0, 0.5] * u.pix
    t["kron_radius"] = [2.0, np.nan, 0.5] * u.pix
    t["area"] = [50.0, 12.0, 9.0] * u.pix**2
    for name in ("segment_flux_err", "kron_flux_err", "circ_flux_err_r3", "circ_flux_err_r2p5"):
        t[name] = [1.0, 2.0, 4.0] * u.uJy
    before = t.copy()
    model = NoiseModel(2.0, "square", 1.0, 0.5)
    applied = scale_flux_errors(t, model, kron_params=(2.5, 1.4, 0.0))
    # circular apertures by their radius; Kron ellipses and segments by the radius of their area
    # (photutils' Kron ellipse: 2.5 max(kron_radius, 1.4) times a and b; a NaN radius takes 1.4)
    r_kron = 2.5 * np.array([2.0, 1.4, 1.4]) * np.sqrt([3.0 * 1.5, 2.0 * 2.0, 1.0 * 0.5])
    r_seg = np.sqrt(np.array([50.0, 12.0, 9.0]) / np.pi)
    np.testing.assert_allclose(t["circ_flux_err_r3"] / before["circ_flux_err_r3"], aperture_noise_factor(3.0, 2.0), rtol=1e-12)
    np.testing.assert_allclose(t["circ_flux_err_r2p5"] / before["circ_flux_err_r2p5"], aperture_noise_factor(2.5, 2.0), rtol=1e-12)
    np.testing.assert_allclose(t["kron_flux_err"] / before["kron_flux_err"], aperture_noise_factor(r_kron, 2.0), rtol=1e-12)
    np.testing.assert_allclose(t["segment_flux_err"] / before["segment_flux_err"], aperture_noise_factor(r_seg, 2.0), rtol=1e-12)
    assert t["kron_flux_err"].unit == u.uJy
    assert applied["flux_err_factor_r3"] == pytest.approx(float(aperture_noise_factor(3.0, 2.0)), abs=1e-4)
    assert "drop 2 px" in applied["flux_err_model"]


def _drizzle_like_i2d(path, wcs, *, updc_iteration=None, seed=0):
    """An i2d-like file of white noise drizzled with a drop of 2 output pixels: each output pixel
    the mean of the 2 x 2 (+ overlap) input pixels a square drop covers, by convolving white noise
    with g = box_2 * box_1 sampled at a random sub-pixel phase per exposure, ERR its per-pixel
    scatter, and a few point sources."""
    rng = np.random.default_rng(seed)
    n = 240
    from scipy.ndimage import convolve  # noqa: PLC0415

    stack = []
    for _ in range(8):
        # g at a random phase: overlaps of a 2-pixel drop with the 3 output pixels it reaches per axis
        p = rng.uniform(0, 1)
        g1 = np.array([max(0.0, min(1.0, 1.0 - p)), 1.0, max(0.0, min(1.0, p))])
        g1 /= g1.sum()
        stack.append(convolve(rng.normal(size=(n, n)), np.outer(g1, g1), mode="wrap"))
    noise = np.mean(stack, axis=0)
    sigma = float(np.std(noise))
    sci = noise.copy()
    yy, xx = np.mgrid[:n, :n]
    for x0, y0 in [(60.3, 70.1), (150.7, 60.4), (100.2, 180.9), (190.5, 150.5)]:
        sci += 40 * sigma * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * 1.5**2))
    cards = {"FILTER": "F200W", "RESKERN": "square", "PIXFRAC": 1.0, "PXSCLRT": 0.5}
    if updc_iteration is not None:
        cards["UPDCITER"] = updc_iteration
    hdr = wcs.to_header()
    hdr["BUNIT"] = "MJy/sr"
    hdus = [fits.PrimaryHDU(header=_primary(**cards)), fits.ImageHDU(sci.astype(np.float32), hdr, name="SCI"),
            fits.ImageHDU(np.full((n, n), sigma, np.float32), hdr, name="ERR"), fits.ImageHDU(np.ones((n, n), np.float32), hdr, name="WHT")]
    fits.HDUList(hdus).writeto(path)
    return path, sci - noise


@pytest.mark.parametrize("engine", ["photutils", "sep"])
def test_detect_scales_a_drizzle_mosaics_errors_and_not_a_updc_iterates(tmp_path, engine, wcs_factory):
    if engine == "sep":
        pytest.importorskip("sep", reason="the SEP engine needs the optional 'sep' package (pip install 'mosaic[sep]')")
    wcs = wcs_factory((240, 240))
    image, _ = _drizzle_like_i2d(tmp_path / "d_i2d.fits", wcs)
    iterate, _ = _drizzle_like_i2d(tmp_path / "u_i2d.fits", wcs, updc_iteration=2)
    common = ["--radii", "3", "6", "--fwhm", "0", "--threshold", "5", "--engine", engine]
    cats = {}
    for name, path, mode in [("scaled", image, "correlated"), ("plain", image, "independent"), ("updc", iterate, "correlated")]:
        out = tmp_path / f"{name}.ecsv"
        assert main(["--log-level", "WARNING", "detect", str(path), "--out", str(out), "--flux-errors", mode, *common]) == 0
        cats[name] = read_catalog(out)
    scaled, plain, updc = cats["scaled"], cats["plain"], cats["updc"]
    assert len(scaled) == len(plain) == len(updc) >= 4
    for r in (3, 6):
        ratio = (scaled[f"circ_flux_err_r{r}"] / plain[f"circ_flux_err_r{r}"]).value
        np.testing.assert_allclose(ratio, aperture_noise_factor(float(r), 2.0), rtol=1e-6)
        assert scaled.meta[f"flux_err_factor_r{r}"] == pytest.approx(float(aperture_noise_factor(float(r), 2.0)), abs=1e-4)
        np.testing.assert_array_equal(updc[f"circ_flux_err_r{r}"].value, plain[f"circ_flux_err_r{r}"].value)
    # Kron: by the circle of the Kron ellipse's area, with the engine's own least Kron radius
    # (SEP's catalogue keeps the radius it measured, photutils' the one it used)
    k0, k1 = (2.5, 3.5) if engine == "sep" else (2.5, 1.4)
    a, b, kr = (np.asarray(scaled[c].value) for c in ("semimajor_axis", "semiminor_axis", "kron_radius"))
    ratio = (scaled["kron_flux_err"] / plain["kron_flux_err"]).value
    np.testing.assert_allclose(ratio, aperture_noise_factor(k0 * np.fmax(kr, k1) * np.sqrt(a * b), 2.0), rtol=1e-9)
    assert np.all(ratio > 1.5)
    assert "drop 2 px" in scaled.meta["flux_err_model"]
    assert "as asked" in plain.meta["flux_err_model"]
    assert "UPDC iteration 2" in updc.meta["flux_err_model"]


def test_scaled_errors_describe_the_scatter_of_empty_apertures(tmp_path, wcs_factory):
    """The simulated truth on the same kind of noise: apertures on the noise of the i2d (sources
    subtracted) scatter by the scaled error, not by sqrt(sum ERR²)."""
    image, sources = _drizzle_like_i2d(tmp_path / "d_i2d.fits", wcs_factory((240, 240)), seed=5)
    with fits.open(image) as h:
        noise = h["SCI"].data.astype(np.float64) - sources
        err = h["ERR"].data.astype(np.float64)
    rng = np.random.default_rng(1)
    for r in (2.0, 4.0):
        xy = np.column_stack([rng.uniform(10, 230, 600), rng.uniform(10, 230, 600)])
        t = aperture_photometry(noise, CircularAperture(xy, r), error=err)
        pulls = np.asarray(t["aperture_sum"]) / np.asarray(t["aperture_sum_err"])
        assert np.std(pulls) == pytest.approx(float(aperture_noise_factor(r, 2.0)), rel=0.1)


def test_cli_refuses_an_unknown_flux_error_mode(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["detect", str(tmp_path / "x_i2d.fits"), "--out", str(tmp_path / "c.ecsv"), "--flux-errors", "guess"])
    assert exc.value.code == 2
    assert "--flux-errors" in capsys.readouterr().err


def test_dual_image_catalogue_scales_by_its_own_kron_apertures(tmp_path, wcs_factory):
    # measured on a drizzle mosaic (found on itself): the Kron errors by the radius of the dual
    # catalogue's Kron ellipse (least Kron radius 3), not photutils' default one (1.4)
    from mosaic.catalog.dual import DUAL_KRON_PARAMS  # noqa: PLC0415

    image, _ = _drizzle_like_i2d(tmp_path / "d_i2d.fits", wcs_factory((240, 240)))
    cats = {}
    for mode in ("correlated", "independent"):
        out = tmp_path / f"{mode}.ecsv"
        assert main(["--log-level", "WARNING", "detect", str(image), "--detection-image", str(image), "--out", str(out),
                     "--fwhm", "2", "--threshold", "5", "--radii", "4", "--flux-errors", mode]) == 0
        cats[mode] = read_catalog(out)
    scaled, plain = cats["correlated"], cats["independent"]
    assert len(scaled) == len(plain) >= 4
    a, b, kr = (np.asarray(scaled[c].value) for c in ("semimajor_axis", "semiminor_axis", "kron_radius"))
    r_kron = DUAL_KRON_PARAMS[0] * np.fmax(kr, DUAL_KRON_PARAMS[1]) * np.sqrt(a * b)
    np.testing.assert_allclose((scaled["kron_flux_err"] / plain["kron_flux_err"]).value, aperture_noise_factor(r_kron, 2.0), rtol=1e-9)
    np.testing.assert_allclose((scaled["circ_flux_err_r4"] / plain["circ_flux_err_r4"]).value, aperture_noise_factor(4.0, 2.0), rtol=1e-9)
