"""UPDC on simulated fields with known truth: convergence, resolution, close pairs, flux, and errors.

The field is noiseless and carries its sky pedestal (0.15 MJy/sr), as multiplicative updates
need; 4 dithered, distorted F200W exposures of 128², PSF 51² on a psr-0.5 grid.
"""

from __future__ import annotations

import dask
import numpy as np
import pytest
from astropy.io import fits
from photutils.aperture import ApertureStats, CircularAnnulus, CircularAperture, aperture_photometry
from scipy.ndimage import binary_erosion, map_coordinates, zoom

from mosaic.catalog.detect import detect_segmentation, smooth
from mosaic.catalog.photometry import source_catalog
from mosaic.coadd.updc import updc
from mosaic.io.cal import read_exposures
from mosaic.psf.files import read_psf
from mosaic.psf.model import fwhm_arcsec
from mosaic.simulate import SimConfig, simulate_field

N_ITER = 10


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    cfg = SimConfig(size=128, psf_size=51, n_exposures=4, seed=3, n_galaxies=8, n_stars=5, n_pairs=1, noiseless=True, icl=False)
    return simulate_field(tmp_path_factory.mktemp("science"), cfg)


@pytest.fixture(scope="module")
def run(field):
    exposures = read_exposures(field.exposures)
    return updc(exposures, field.grid.with_tiling(200), read_psf(field.psf)[0], n_iterations=N_ITER, errors=False)


@pytest.fixture(scope="module")
def images(run):
    """Sky-subtracted iterations 0, 5 and 10."""
    return {n: np.nan_to_num(run.product(n)["sci"].values.astype(np.float64)) for n in (0, 5, N_ITER)}


def half_max_fwhm(image, x, y, *, r=8, up=8):
    """FWHM from the area above half the peak (bilinear, ``up``-fold upsampled stamp)."""
    x0, y0 = int(round(x)), int(round(y))
    stamp = zoom(image[y0 - r : y0 + r + 1, x0 - r : x0 + r + 1], up, order=1)
    area = np.count_nonzero(stamp > stamp.max() / 2) / up**2
    return 2.0 * np.sqrt(area / np.pi)


def pair_dip(image, pair):
    """Depth of the valley between the two stars along their axis, relative to the lower peak (0: none)."""
    (x1, y1), (x2, y2) = [(float(p["x"]), float(p["y"])) for p in pair]
    t = np.linspace(-0.5, 1.5, 401)
    profile = map_coordinates(image, [y1 + t * (y2 - y1), x1 + t * (x2 - x1)], order=1)
    peak1 = profile[(t >= -0.25) & (t <= 0.25)].max()
    peak2 = profile[(t >= 0.75) & (t <= 1.25)].max()
    valley = profile[(t >= 0.25) & (t <= 0.75)].min()
    return max(0.0, 1.0 - valley / min(peak1, peak2))


def isolated_stars(field):
    t = field.truth_table
    return t[(t["kind"] == "star") & t["isolated"]]


def test_sky_is_the_pedestal(field, run):
    assert run.background == pytest.approx(field.config.background, rel=1e-3)


def test_data_residual_falls_monotonically(run):
    r = np.asarray(run.residuals, dtype=float)
    assert r.shape == (N_ITER + 1,)
    assert np.all(np.diff(r) < 0)
    assert r[-1] < 0.2 * r[0]


def test_stars_get_sharper(field, images):
    stars = isolated_stars(field)
    fwhm = {n: np.median([half_max_fwhm(images[n], s["x"], s["y"]) for s in stars]) for n in images}
    psf_fwhm = half_max_fwhm(read_psf(field.psf)[0], 25, 25)
    # the drizzle mosaic adds the detector pixel and the drizzle kernel to the PSF
    assert fwhm[0] > psf_fwhm
    assert fwhm[N_ITER] <= 0.6 * fwhm[0]
    assert fwhm[N_ITER] < fwhm[5] < fwhm[0]


def test_close_pair_starts_to_separate(field, images):
    pair = field.truth_table[field.truth_table["pair_id"] == 0]
    separation = np.hypot(pair["x"][1] - pair["x"][0], pair["y"][1] - pair["y"][0])
    assert separation == pytest.approx(0.7 * fwhm_arcsec("F200W") / field.grid.pixel_scale_arcsec, rel=1e-6)
    dips = [pair_dip(images[n], pair) for n in (0, 5, N_ITER)]
    assert dips[0] == 0.0
    assert 0.0 < dips[1] < dips[2]


def ideal_richardson_lucy(field, n_iterations):
    """Single-image Richardson-Lucy with the exact PSF on the truth blurred by it: no pixels, no
    noise, no drizzle -- as well as any multiplicative update can do in ``n_iterations``."""
    from scipy.signal import fftconvolve

    psf = read_psf(field.psf)[0].astype(np.float64)
    blurred = np.clip(fftconvolve(fits.getdata(field.truth_image).astype(np.float64), psf, mode="same"), 1e-12, None)
    f = blurred.copy()
    for _ in range(n_iterations):
        f = f * fftconvolve(blurred / np.clip(fftconvolve(f, psf, mode="same"), 1e-12, None), psf[::-1, ::-1], mode="same")
    return f


def test_close_pair_separates_at_least_as_fast_as_ideal_richardson_lucy(field, images):
    pair = field.truth_table[field.truth_table["pair_id"] == 0]
    reference = pair_dip(ideal_richardson_lucy(field, N_ITER), pair)
    # measured: UPDC 2.4 %, ideal RL 1.1 % at iteration 10
    assert pair_dip(images[N_ITER], pair) >= reference > 0.0


@pytest.mark.xfail(
    strict=True,
    reason="a 0.7-FWHM pair is below the Sparrow limit: neither plain nor accelerated Richardson-Lucy reaches a 20 % dip in 10 "
    "iterations (UPDC 2.4 %; ideal single-image RL 1.1 %, Biggs-Andrews-accelerated RL 7 %; UPDC reaches 19 % at 80)",
)
def test_close_pair_is_resolved_at_iteration_10(field, images):
    pair = field.truth_table[field.truth_table["pair_id"] == 0]
    assert pair_dip(images[N_ITER], pair) >= 0.2


@pytest.mark.parametrize("n", [0, 5, N_ITER])
def test_aperture_fluxes_of_isolated_stars(field, run, images, n):
    stars = isolated_stars(field)
    pos = list(zip(stars["x"], stars["y"], strict=True))
    radius = 0.5 / field.grid.pixel_scale_arcsec  # 1 arcsec across
    aperture = CircularAperture(pos, r=radius)
    sky = ApertureStats(images[n], CircularAnnulus(pos, r_in=radius + 2, r_out=radius + 10)).median
    flux = (aperture_photometry(images[n], aperture)["aperture_sum"] - sky * aperture.area) * field.grid.pixel_area_sr * 1e12
    np.testing.assert_allclose(np.asarray(flux), np.asarray(stars["flux"]), rtol=0.02)


def test_kron_and_aperture_magnitudes_at_iteration_5(field, images):
    # issue 16.6: Kron and 0.35"-radius magnitudes of isolated stars at iteration 5 within 0.03 mag
    # of the true (whole-PSF) magnitude, no aperture correction; the drizzle's Kron apertures miss
    # 0.06-0.09 mag
    stars = isolated_stars(field)
    fwhm = fwhm_arcsec("F200W") / field.grid.pixel_scale_arcsec
    r = 0.35 / field.grid.pixel_scale_arcsec
    area = field.grid.pixel_area_sr * 1e12
    aperture = f"circ_flux_r{r:g}".replace(".", "p")
    delta = {}
    for n in (0, 5):
        det = smooth(images[n], fwhm=fwhm, tile=200).compute()
        peaks = [det[int(round(y)), int(round(x))] for x, y in zip(stars["x"], stars["y"], strict=True)]
        seg = detect_segmentation(det, 0.02 * min(peaks), n_pixels=10, tile=200)
        cat = source_catalog(images[n], seg, convolved=det, wcs=field.grid.wcs, radii=(r,), flux_scale=area, flux_unit="uJy")
        xy = np.column_stack([cat["x_centroid"].value, cat["y_centroid"].value])
        idx = [int(np.argmin(np.hypot(*(xy - (x, y)).T))) for x, y in zip(stars["x"], stars["y"], strict=True)]
        assert np.all(np.hypot(*(xy[idx] - np.column_stack([stars["x"], stars["y"]])).T) < 1.0)
        true = np.asarray(stars["flux"])
        delta[n] = {col: -2.5 * np.log10(np.asarray(cat[col].value)[idx] / true) for col in ("kron_flux", aperture)}
    for d in delta[5].values():
        assert np.all(np.abs(d) < 0.03)
    # the 0.35" aperture holds the dark ring: no overshoot; the Kron aperture (its minimum, 3.5
    # semi-major axes, ~0.12") ends inside the ring, so the core's excess shows there (measured
    # -0.001 to -0.020 mag, the faintest stars most)
    assert np.all(delta[5][aperture] > -0.005)
    assert np.all(delta[0]["kron_flux"] > delta[5]["kron_flux"])


@pytest.mark.parametrize("n", [0, 5, N_ITER])
def test_total_flux_is_kept(field, run, images, n):
    # over everything the exposures cover: the iterate's margin beyond the coverage takes the
    # light of sources beyond the edges (measured: 1.00015 at iteration 10; 1.018 without it)
    covered = run.iterations[0]["con"].values[0] > 0
    truth = fits.getdata(field.truth_image).astype(np.float64)
    np.testing.assert_allclose(images[n][covered].sum(), truth[covered].sum(), rtol=0.002)


def test_products_are_blank_beyond_the_coverage(run):
    covered = run.iterations[0]["con"].values[0] > 0
    product = run.product(N_ITER)
    assert np.isfinite(run.iterations[N_ITER]["sci"].values[~covered]).any()  # the margin is iterated
    assert np.isnan(product["sci"].values[~covered]).all() and np.isfinite(product["sci"].values[covered]).all()


# -- errors against noise realisations -------------------------------------------------------------


@pytest.fixture(scope="module")
def realisations(tmp_path_factory):
    """A Poisson-only field observed 30 times (the same noiseless exposures, new photon noise each
    time), each run through 5 UPDC iterations with equal weights; every iterate's SCI and ERR."""
    cfg = SimConfig(size=96, psf_size=31, n_exposures=4, seed=5, n_galaxies=5, n_stars=3, n_pairs=1, noiseless=True, icl=False)
    field = simulate_field(tmp_path_factory.mktemp("noise"), cfg)
    exposures = read_exposures(field.exposures).load()
    psf = read_psf(field.psf)[0]
    signal = exposures["sci"].values
    # MJy/sr per electron
    conv = exposures["photmjsr"].values[:, None, None] / (cfg.detector.gain * exposures["exptime"].values[:, None, None])
    var_poisson = np.clip(signal, 0, None) * conv
    rng = np.random.default_rng(1)
    sci, err = [], []
    with dask.config.set(scheduler="synchronous"):  # tiny runs: no thread pool, ~18 % less CPU, the same numbers
        for _ in range(N_REALISATIONS):
            e = exposures.copy()
            e["sci"] = (e["sci"].dims, (signal + rng.normal(size=signal.shape) * np.sqrt(var_poisson)).astype(np.float32))
            e["var_poisson"] = (e["sci"].dims, var_poisson.astype(np.float32))
            e["var_rnoise"] = (e["sci"].dims, np.zeros_like(var_poisson, dtype=np.float32))
            e["var_flat"] = (e["sci"].dims, np.zeros_like(var_poisson, dtype=np.float32))
            result = updc(e.chunk({"exposure": 1}), field.grid, psf, n_iterations=5, background=cfg.background, weight="uniform", final_residual=False)
            iterations = [ds.compute() for ds in result.iterations]
            sci.append([ds["sci"].values for ds in iterations])
            err.append([ds["err"].values for ds in iterations])
    from scipy.signal import fftconvolve

    blurred = fftconvolve(fits.getdata(field.truth_image), psf, mode="same")
    inside = binary_erosion(iterations[0]["con"].values[0] == 0b1111, iterations=10)
    return np.asarray(sci, dtype=np.float64), np.asarray(err, dtype=np.float64), inside & (blurred > 2e-3), inside & (blurred < 2e-4)


N_REALISATIONS = 30


def scatter_over_propagated(realisations, n, where):
    """Median over pixels of (variance of SCI across realisations) / (mean propagated ERR²)."""
    sci, err, source, sky = realisations
    pixels = {"source": source, "sky": sky}[where]
    assert pixels.sum() > 1000
    empirical = sci[:, n].var(axis=0, ddof=1)[pixels]
    predicted = (err[:, n] ** 2).mean(axis=0)[pixels]
    return float(np.median(empirical / predicted))


@pytest.mark.parametrize("n", [0, 1, 3, 5])
def test_propagated_errors_match_the_scatter_of_realisations_on_sources(realisations, n):
    # the criterion is iteration 5 within 20 %; measured 0.98-1.04 at 0-5
    assert scatter_over_propagated(realisations, n, "source") == pytest.approx(1.0, rel=0.2 if n else 0.05)


@pytest.mark.parametrize("n", [0, 1, 3, 5])
def test_propagated_errors_on_sky_are_not_under_estimated(realisations, n):
    # adding the iterations' noise coherently is an upper bound where the feedback damps it
    # (measured 0.98 at 0, 0.96 at 1, 0.79 at 5)
    ratio = scatter_over_propagated(realisations, n, "sky")
    assert 0.7 < ratio < 1.05
