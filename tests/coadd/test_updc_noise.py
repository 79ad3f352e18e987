"""UPDC and its baselines at real noise levels: faint and bright skies, background-subtracted input.

Fields: a noiseless simulated field (4 dithered, distorted F200W exposures of 64², PSF 25² on
the psr-0.5 grid) whose sources are scaled so the brightest peaks at 300 read-noise sigmas, on a
sky of 0.1, 1 or 20 read-noise sigmas, with seeded Gaussian read noise (12 electrons) and photon
noise (variance ``c x signal``, ``c`` MJy/sr per electron); VAR_POISSON is ``c max(SCI, 0)`` as
the ramp fit writes it. Truth is the simulator's image on the grid, scaled alike.
"""

from __future__ import annotations

import functools

import dask
import numpy as np
import pytest
from astropy.io import fits

from mosaic.coadd.forward import PairOverlaps, damping_factor, pair_correction, pair_mock
from mosaic.coadd.updc import updc
from mosaic.io.cal import read_exposures
from mosaic.psf.files import read_psf
from mosaic.simulate import SimConfig, simulate_field

N_ITER = 10
C = 1e-4  # MJy/sr per electron
READ_NOISE = 12.0 * C  # MJy/sr
PEAK = 300.0  # brightest source peak in read-noise sigmas
RATIOS = (0.1, 1.0, 20.0)  # sky / read noise


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    cfg = SimConfig(size=64, psf_size=25, n_exposures=4, seed=3, n_galaxies=4, n_stars=4, n_pairs=0, noiseless=True, icl=False, background=0.0)
    return simulate_field(tmp_path_factory.mktemp("noise"), cfg)


@pytest.fixture(scope="module")
def base(sim):
    """The noiseless exposures scaled to PEAK, the PSF, and the scaled truth."""
    exposures = read_exposures(sim.exposures).load()
    scale = PEAK * READ_NOISE / float(np.nanmax(exposures["sci"].values))
    exposures["sci"] = exposures["sci"] * scale
    truth = fits.getdata(sim.truth_image).astype(np.float64) * scale
    return exposures, read_psf(sim.psf)[0], truth


def observe(exposures, sky: float, *, seed: int = 1, noise: bool = True, subtract: bool = False):
    """The exposures on ``sky`` with read and photon noise; ``subtract``: the sky taken out again."""
    e = exposures.copy()
    signal = exposures["sci"].values.astype(np.float64) + sky
    sci = signal
    if noise:
        sci = signal + np.random.default_rng(seed).normal(size=signal.shape) * np.sqrt(np.clip(signal, 0, None) * C + READ_NOISE**2)
    dims = e["sci"].dims
    e["var_poisson"] = (dims, (np.clip(sci, 0, None) * C).astype(np.float32))
    e["var_rnoise"] = (dims, np.full(sci.shape, READ_NOISE**2, dtype=np.float32))
    e["var_flat"] = (dims, np.zeros(sci.shape, dtype=np.float32))
    e["sci"] = (dims, (sci - (sky if subtract else 0.0)).astype(np.float32))
    return e.chunk({"exposure": 1})


@pytest.fixture(scope="module")
def run(sim, base):
    """``run(ratio, method, **options)``: the computed iterations of one run (cached)."""
    exposures, psf, _ = base

    @functools.cache
    def go(ratio, method="updc", noise=True, subtract=False, **options):
        sky = ratio * READ_NOISE
        e = observe(exposures, sky, noise=noise, subtract=subtract)
        options = {"errors": False, "background": 0.0 if subtract else sky, **options}
        result = updc(e, sim.grid, psf, n_iterations=N_ITER, method=method, **options)
        result.iterations = [ds.compute() for ds in result.iterations]
        return result

    return go


def covered_flux(result, n):
    covered = result.iterations[0]["con"].values[0] > 0
    return float(np.nansum(result.product(n)["sci"].values.astype(np.float64)[covered]))


@pytest.mark.parametrize("ratio", RATIOS)
@pytest.mark.parametrize("method", ["updc", "rl"])
def test_multiplicative_updates_keep_the_iterate_positive(run, ratio, method):
    # the update multiplies f + s: if that stays positive no pixel changes sign or is frozen by eq. 2
    result = run(ratio, method)
    assert result.pedestal > 0
    for ds in result.iterations:
        h = ds["sci"].values.astype(np.float64) + result.pedestal
        assert np.all(h[np.isfinite(h)] > 0)


def test_the_plain_ratio_fails_on_a_faint_sky(run, base):
    # what the pedestal removes: without it the drizzle's negative pixels stay negative (frozen,
    # or flipped by negative ratios) and the flux in the coverage runs away
    result = run(0.1, pedestal=None)
    last = result.iterations[N_ITER]["sci"].values
    assert np.sum(last[np.isfinite(last)] <= 0) > 1000
    truth = base[2][result.iterations[0]["con"].values[0] > 0].sum()
    assert abs(covered_flux(result, N_ITER) - covered_flux(result, 0)) > 0.1 * truth


@pytest.mark.parametrize("ratio", RATIOS)
@pytest.mark.parametrize("method", ["updc", "landweber", "rl"])
def test_flux_in_the_coverage_is_kept(run, base, ratio, method):
    # against the truth's flux: iteration 0 carries the noise realisation's own sum, the
    # iterations must not add to it (before: 3.7x at iteration 1 on a faint sky, +18 % Landweber)
    result = run(ratio, method)
    truth = base[2][result.iterations[0]["con"].values[0] > 0].sum()
    flux = np.array([covered_flux(result, n) for n in range(N_ITER + 1)])
    assert np.all(np.abs(flux - flux[0]) < 0.01 * truth)


@pytest.mark.parametrize("method", ["updc", "landweber", "rl"])
def test_noiseless_faint_sky(run, base, method):
    # residual monotone and flux within 1 % of the truth at every iteration
    result = run(0.1, method, noise=False)
    r = np.asarray(result.residuals, dtype=float)
    assert np.all(np.diff(r) < 0)
    truth = base[2][result.iterations[0]["con"].values[0] > 0].sum()
    for n in range(N_ITER + 1):
        assert covered_flux(result, n) == pytest.approx(truth, rel=0.01)


@pytest.mark.parametrize("ratio", [1.0, 20.0])
def test_background_subtracted_input_iterates_the_same(run, ratio):
    # the pedestal takes back the sky the data lost (VAR_POISSON still holds it), so the update
    # acts on the same f + s and the products agree; only the margin's start differs
    whole, subtracted = run(ratio), run(ratio, subtract=True)
    assert subtracted.pedestal == pytest.approx(whole.pedestal + ratio * READ_NOISE, rel=0.02)
    covered = whole.iterations[0]["con"].values[0] > 0
    for n in (1, 5, N_ITER):
        a, b = (r.product(n)["sci"].values.astype(np.float64)[covered] for r in (whole, subtracted))
        np.testing.assert_allclose(b, a, atol=0.05 * READ_NOISE)


def test_the_pedestal_is_snyder_hammoud_white(run):
    # s = VAR_RNOISE / c: the read-noise variance in electrons, in the data's units
    assert run(20.0).pedestal == pytest.approx(READ_NOISE**2 / C, rel=0.01)


# -- one pair: the ratio and its fixed point ---------------------------------------------------------


@pytest.fixture(scope="module")
def pair():
    """A 12x14 cut-out mapped onto a 30² window at psr 0.5, its mock of a smooth positive window."""
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[0:12, 0:14].astype(float)
    pixmap = np.stack([2.0 * xx + 3.3 + 0.05 * yy, 2.0 * yy + 2.7 - 0.03 * xx], axis=-1)
    window = 1.0 + np.exp(-((np.arange(30)[:, None] - 14.0) ** 2 + (np.arange(30)[None, :] - 16.0) ** 2) / 20.0)
    window = window + 0.01 * rng.random((30, 30))
    mock = pair_mock(window, pixmap)
    cut = {"good": np.ones((12, 14), bool), "var_rnoise": np.full((12, 14), 0.04), "var_poisson": np.full((12, 14), 0.01)}
    core = (slice(0, 30), slice(0, 30))
    return window, pixmap, mock, cut, core


@pytest.mark.parametrize("pedestal", [0.0, 0.3, 50.0])
@pytest.mark.parametrize("damping", [0.0, 3.0])
def test_data_equal_to_the_mock_is_a_fixed_point_for_any_pedestal(pair, pedestal, damping):
    window, pixmap, mock, cut, core = pair
    kw = {"core": core, "reach": 1.5, "pedestal": pedestal, "damping": damping}
    fitted = pair_correction(window, {**cut, "sci": mock}, pixmap, **kw)
    weights = PairOverlaps(pixmap, window.shape).drizzle(np.full(mock.shape, 1 / 0.04))[0]
    np.testing.assert_allclose(fitted["num"], weights, rtol=1e-12, atol=1e-12 * weights.max())
    assert fitted["chi2"] == pytest.approx(0.0, abs=1e-20)


def test_ratio_and_chi2_of_one_pair(pair):
    window, pixmap, mock, cut, core = pair
    g = mock * (1.0 + 0.3 * np.sin(np.arange(mock.size).reshape(mock.shape)))
    got = pair_correction(window, {**cut, "sci": g}, pixmap, core=core, reach=1.5, pedestal=0.7)
    expected = PairOverlaps(pixmap, window.shape).drizzle(((g + 0.7) / (mock + 0.7)) / 0.04)[0]
    np.testing.assert_allclose(got["num"], expected, rtol=1e-12)
    # each pixel counts once, on the tile its centre falls on (here: the 30² window)
    own = np.all((np.floor(pixmap + 0.5) >= 0) & (np.floor(pixmap + 0.5) < 30), axis=-1)
    assert 0 < own.sum() < g.size
    assert got["chi2"] == pytest.approx(np.sum((g - mock)[own] ** 2 / 0.05), rel=1e-12)
    assert got["nchi"] == own.sum()


def test_damping_factor():
    g = np.array([0.0, 0.5, 1.0, 3.0, 2.0])
    u = damping_factor(g, np.zeros(5), np.array([1.0, 1.0, 1.0, 1.0, 0.0]), 1.0)
    # zero where fitted, 1 from one threshold out, rising between; no variance: not damped
    assert u[0] == 0.0 and u[2] == 1.0 and u[3] == 1.0 and u[4] == 1.0
    assert u[1] == pytest.approx(0.25**9 * (10 - 9 * 0.25))
    np.testing.assert_array_equal(damping_factor(g, np.zeros(5), np.ones(5), 0.0), np.ones(5))


# -- edges -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", RATIOS)
def test_no_pile_up_at_the_coverage_edge_or_in_the_margin(run, sim, base, ratio):
    from scipy.ndimage import binary_erosion
    from scipy.signal import fftconvolve

    result = run(ratio)
    _, psf, truth = base
    covered = result.iterations[0]["con"].values[0] > 0
    sky = fftconvolve(truth, psf, mode="same") < 0.3 * READ_NOISE  # pixels without sources
    edge = covered & ~binary_erosion(covered, iterations=6) & sky
    interior = binary_erosion(covered, iterations=15) & sky
    assert edge.sum() > 1000 and interior.sum() > 1000
    for n in range(N_ITER + 1):
        product = result.product(n)["sci"].values.astype(np.float64)
        # margin pixels never reach the products
        assert np.isnan(product[~covered]).all() and np.isfinite(product[covered]).all()
        # the band's mean against the interior's, in standard errors of the band's mean (its
        # pixels taken as independent per 4 x 4 grid pixels: an exposure pixel and the kernel)
        sigma = product[interior].std() / np.sqrt(edge.sum() / 16)
        assert abs(product[edge].mean() - product[interior].mean()) < 3 * sigma
        # and the margin beyond the coverage does not hoard light (once 48x the covered flux;
        # 7 % at iteration 10 here before its updates were pulled to neutral)
        if n == 0:
            continue  # the margin is iterated from iteration 1 on
        raw = result.iterations[n]["sci"].values.astype(np.float64)
        margin = np.isfinite(raw) & ~covered
        assert margin.sum() > 1000
        assert abs(np.sum(raw[margin] - result.background)) < 0.02 * truth[covered].sum()


# -- damping and chi-squared ---------------------------------------------------------------------------


def test_chi2_of_the_sky_model_on_sky_only_data_is_one(sim, base):
    # an exact model of pure-sky data: chi2 per degree of freedom is 1 within its noise
    from mosaic.coadd.forward import data_residual, plan_forward
    from mosaic.coadd.updc import ExposureSource, prepare_psfs

    exposures, psf, _ = base
    sky = 5.0 * READ_NOISE
    blank = exposures.copy()
    blank["sci"] = blank["sci"] * 0.0
    blank = observe(blank, sky, seed=9)
    plan = plan_forward(blank, sim.grid, prepare_psfs(psf, blank.sizes["exposure"]))
    r = data_residual(np.full(sim.grid.shape, sky), plan, ExposureSource(blank), chi2=True).compute()
    assert r[3] > 10000
    assert r[2] / r[3] == pytest.approx(1.0, abs=4 * np.sqrt(2 / r[3]))


def test_chi2_per_iteration_is_in_the_store_and_falls(tmp_path, sim, base):
    from mosaic.io.store import Store

    exposures, psf, _ = base
    store = Store(tmp_path / "s.zarr")
    result = updc(observe(exposures, READ_NOISE), sim.grid, psf, n_iterations=3, store=store, errors=False)
    manifest = store.manifest("field", exposures.attrs["band"])
    chi2 = [manifest[f"updc/iter_{n:02d}"]["chi2_dof"] for n in range(4)]
    assert chi2 == result.chi2
    assert all(manifest[f"updc/iter_{n:02d}"]["chi2_pixels"] > 10000 for n in range(4))
    assert np.all(np.diff(chi2) < 0) and chi2[-1] > 0.5
    assert manifest["updc/iter_00"]["pedestal"] == pytest.approx(result.pedestal)


def test_damping_stops_fitting_the_noise(run):
    # the damped run stops where the data are fitted to 2 sigma: its chi2 stays higher and its
    # sky amplifies less noise than the undamped run's, while the sources still sharpen
    plain, damped = run(1.0), run(1.0, damping=2.0)
    covered = plain.iterations[0]["con"].values[0] > 0
    assert damped.chi2[N_ITER] > plain.chi2[N_ITER]
    assert damped.chi2[N_ITER] < damped.chi2[0]

    def sky_scatter(result):
        p = result.product(N_ITER)["sci"].values.astype(np.float64)[covered]
        return 1.4826 * np.median(np.abs(p - np.median(p)))

    assert sky_scatter(damped) < 0.9 * sky_scatter(plain)
    peak = [np.nanmax(r.product(N_ITER)["sci"].values) for r in (plain, damped)]
    assert peak[1] > np.nanmax(plain.product(0)["sci"].values)


def test_bad_damping_and_pedestal_are_refused(sim, base):
    from mosaic.exceptions import InputError

    exposures, psf, _ = base
    with pytest.raises(InputError, match=r"damping -1\.0 is not allowed; expected a number of sigmas >= 0"):
        updc(exposures, sim.grid, psf, damping=-1.0)
    with pytest.raises(InputError, match="pedestal 'big' is not supported; expected 'auto', a number >= 0"):
        updc(exposures, sim.grid, psf, pedestal="big")


def test_cli_and_config_take_damping_and_pedestal(tmp_path):
    import argparse

    from mosaic.cli import updc as cli
    from mosaic.config import ConfigError, field_from_mapping

    parser = argparse.ArgumentParser(prog="mosaic")
    cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["updc", "a_cal.fits", "--out", "o", "--damping", "2.5", "--pedestal", "none"])
    assert args.damping == 2.5 and args.pedestal is None
    args = parser.parse_args(["updc", "a_cal.fits", "--out", "o", "--pedestal", "0.02"])
    assert args.pedestal == 0.02 and args.damping == 0.0
    with pytest.raises(SystemExit):
        parser.parse_args(["updc", "a_cal.fits", "--out", "o", "--damping", "-1"])
    bands = {"F200W": {"inputs": ["x_cal.fits"], "psf": "psf.fits"}}
    config = field_from_mapping({"bands": bands, "updc": {"damping": 2.0, "pedestal": None}}, base=tmp_path, default_name="f")
    assert config.updc.damping == 2.0 and config.updc.pedestal is None
    with pytest.raises(ConfigError, match="updc.pedestal"):
        field_from_mapping({"bands": bands, "updc": {"pedestal": -1}}, base=tmp_path, default_name="f")



# -- errors --------------------------------------------------------------------------------------------


def test_err_scale_is_the_robust_scatter_of_normalised_sky():
    from mosaic.coadd.updc import _err_scale

    z = np.random.default_rng(2).normal(0.0, 0.7, size=20000)
    z[:500] = 50.0  # sources the mask missed do not move it
    assert _err_scale(z) == pytest.approx(0.7, rel=0.03)
    assert _err_scale(np.full(50, np.nan)) == 1.0  # too little sky: the propagated ERR is kept


def test_products_carry_calibrated_errors_with_a_floor(run):
    result = run(1.0, errors=True)
    assert result.err_scales[0] == 1.0 and all(0.3 < s < 1.5 for s in result.err_scales[1:])
    covered = result.iterations[0]["con"].values[0] > 0
    err0 = result.iterations[0]["err"].values.astype(np.float64)[covered]
    for n in (1, 5, N_ITER):
        product, stored = result.product(n), result.iterations[n]
        err = product["err"].values.astype(np.float64)[covered]
        expected = np.maximum(result.err_scales[n] * stored["err"].values.astype(np.float64)[covered], err0)
        np.testing.assert_allclose(err, expected, rtol=1e-5)
        # never below iteration 0's noise; VAR_* and WHT follow the calibrated ERR
        assert np.all(err >= err0 * (1 - 1e-6))
        total = sum(product[v].values.astype(np.float64)[covered] for v in ("var_poisson", "var_rnoise", "var_flat"))
        np.testing.assert_allclose(np.sqrt(total), err, rtol=1e-4)
        wht = product["wht"].values[covered]
        assert np.all(np.isfinite(wht)) and np.all(wht > 0)


N_REALISATIONS = 30


@pytest.mark.slow
@pytest.mark.parametrize("ratio", RATIOS)
def test_errors_match_the_scatter_of_realisations(sim, base, ratio):
    # 30 noise realisations of one field: the products' ERR against the measured scatter of SCI,
    # on blank sky and on sources, at iterations 1, 5 and 10 (the criterion: 20 %)
    from scipy.ndimage import binary_erosion
    from scipy.signal import fftconvolve

    exposures, psf, truth = base
    keep = (1, 5, N_ITER)
    sci, err = [], []
    with dask.config.set(scheduler="synchronous"):  # tiny runs: no thread pool, ~18 % less CPU, the same numbers
        for j in range(N_REALISATIONS):
            result = updc(observe(exposures, ratio * READ_NOISE, seed=100 + j), sim.grid, psf, n_iterations=N_ITER,
                          background=ratio * READ_NOISE, final_residual=False)
            products = [result.product(n).compute() for n in keep]
            sci.append([p["sci"].values for p in products])
            err.append([p["err"].values for p in products])
            assert all(np.isfinite(p["wht"].values).all() for p in products)
    sci, err = np.asarray(sci, dtype=np.float64), np.asarray(err, dtype=np.float64)
    blurred = fftconvolve(truth, psf, mode="same")
    inside = binary_erosion(result.iterations[0]["con"].values[0] == 0b1111, iterations=6)
    where = {"sky": inside & (blurred < 0.1 * READ_NOISE), "source": inside & (blurred > 10 * READ_NOISE)}
    for i, n in enumerate(keep):
        for name, pixels in where.items():
            assert pixels.sum() > 100
            ratio_n = np.sqrt(np.median(sci[:, i].var(axis=0, ddof=1)[pixels] / (err[:, i] ** 2).mean(axis=0)[pixels]))
            assert ratio_n == pytest.approx(1.0, abs=0.2), (n, name)
