"""The baselines (multi-frame Landweber, single-image Richardson-Lucy) against references, and ringing vs UPDC."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import fftconvolve

from mosaic.coadd.updc import updc
from mosaic.io.cal import read_exposures
from mosaic.psf.files import read_psf
from mosaic.simulate import SimConfig, simulate_field

N_ITER = 10


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    """Noiseless, with its sky: 4 exposures of 112², PSF 41² on the psr-0.5 grid."""
    cfg = SimConfig(size=112, psf_size=41, n_exposures=4, seed=3, n_galaxies=6, n_stars=5, n_pairs=1, noiseless=True, icl=False)
    return simulate_field(tmp_path_factory.mktemp("baselines"), cfg)


@pytest.fixture(scope="module")
def exposures(field):
    return read_exposures(field.exposures)


@pytest.fixture(scope="module")
def psf(field):
    return read_psf(field.psf)[0]


@pytest.fixture(scope="module")
def runs(field, exposures, psf):
    grid = field.grid.with_tiling((90, 130))
    return {m: updc(exposures, grid, psf, n_iterations=N_ITER, method=m, errors=False) for m in ("updc", "landweber", "rl")}


def test_single_image_rl_step_equals_whole_image(field, exposures, psf):
    result = updc(exposures, field.grid.with_tiling((70, 95)), psf, n_iterations=1, method="rl", background=None)
    it0, it1 = (ds.compute() for ds in result.iterations)
    covered = np.isfinite(it0["sci"].values)
    d = np.where(covered, it0["sci"].values, 0.0).astype(np.float64)
    mask = covered.astype(np.float64)
    den = fftconvolve(mask, psf[::-1, ::-1], mode="same")
    ok = den > 1e-6 * den.max()
    s = result.pedestal
    assert s > 0
    # the margin the data reach through the PSF starts at the fill value; the update acts on f + s
    f0 = np.where(covered, d, np.where(ok, result.fill, 0.0))
    c = fftconvolve(f0, psf, mode="same")
    ratio = np.where(covered, (d + s) / np.where(covered, c + s, 1.0), 0.0)
    # margin pixels' updates are pulled to neutral by a prior weight of 0.1 x max(den)
    lam = np.where(covered, 0.0, 0.1 * den.max())
    num = fftconvolve(ratio, psf[::-1, ::-1], mode="same")
    h1 = np.where(ok, (f0 + s) * (num + lam) / np.where(ok, den + lam, 1.0), f0 + s)
    f1 = np.where(h1 < 0, f0, h1 - s)
    np.testing.assert_allclose(it1["sci"].values[ok], f1[ok], rtol=1e-5, atol=1e-5 * np.abs(d).max())
    # variance: B*^2(M V / (B f + s)^2) / den^2, adding coherently to q^2 V
    q = np.where(ok, h1 / (f0 + s), 1.0)
    for name in ("var_poisson", "var_rnoise"):
        v0 = np.nan_to_num(it0[name].values.astype(np.float64))
        scaled = np.divide(v0, (c + s) ** 2, out=np.zeros_like(v0), where=covered)
        var_n = fftconvolve(scaled, psf[::-1, ::-1] ** 2, mode="same")
        v1 = (q * np.sqrt(v0) + (f0 + s) * np.sqrt(np.maximum(var_n, 0)) / np.where(ok, den, 1.0)) ** 2
        np.testing.assert_allclose(it1[name].values[covered], v1[covered], rtol=1e-4, atol=1e-4 * v1[covered].max())
    np.testing.assert_allclose(result.residuals[0], np.sum((d - c)[covered] ** 2), rtol=1e-6)
    # chi-squared per degree of freedom against the drizzle mosaic's own variance
    var = sum(np.nan_to_num(it0[v].values.astype(np.float64)) for v in ("var_poisson", "var_rnoise", "var_flat"))
    has = covered & (var > 0)
    np.testing.assert_allclose(result.chi2[0], np.sum((d - c)[has] ** 2 / var[has]) / has.sum(), rtol=1e-6)


@pytest.mark.parametrize("method", ["updc", "landweber", "rl"])
def test_residuals_fall(runs, method):
    r = np.asarray(runs[method].residuals, dtype=float)
    assert np.all(np.diff(r) < 0)


def ring_depth(image, x, y):
    """Deepest undershoot below the sky of the azimuthal mean profile (1.5-15 px), over the star's peak."""
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
    r = np.hypot(xx - x, yy - y)
    peak = image[r < 1.5].max()
    profile = [np.nanmean(image[(r >= a) & (r < a + 0.5)]) for a in np.arange(1.5, 15.0, 0.5)]
    return max(0.0, -float(np.nanmin(profile))) / peak


@pytest.mark.parametrize("n", [5, N_ITER])
def test_updc_rings_less_than_landweber(field, runs, n):
    t = field.truth_table
    stars = t[(t["kind"] == "star") & t["isolated"]]
    depth = {}
    for m in ("updc", "landweber"):
        img = np.nan_to_num(runs[m].product(n)["sci"].values.astype(np.float64))
        depth[m] = np.median([ring_depth(img, s["x"], s["y"]) for s in stars])
    # the drizzle mosaic has no undershoot; both deconvolutions ring, the additive one more
    img0 = np.nan_to_num(runs["updc"].product(0)["sci"].values.astype(np.float64))
    assert np.median([ring_depth(img0, s["x"], s["y"]) for s in stars]) == 0.0
    assert 0 < depth["updc"] < 0.5 * depth["landweber"]


def test_single_image_rl_sharpens_less_than_updc(field, runs):
    # same iterations, same PSF: deconvolving the finished mosaic cannot undo the detector
    # pixel and drizzle kernel that the multi-frame forward model knows about
    from scipy.ndimage import zoom

    t = field.truth_table
    stars = t[(t["kind"] == "star") & t["isolated"]]

    def fwhm(img, x, y, r=8, up=8):
        stamp = zoom(img[int(round(y)) - r : int(round(y)) + r + 1, int(round(x)) - r : int(round(x)) + r + 1], up, order=1)
        return 2 * np.sqrt(np.count_nonzero(stamp > stamp.max() / 2) / up**2 / np.pi)

    width = {}
    for m in ("updc", "rl"):
        img = np.nan_to_num(runs[m].product(N_ITER)["sci"].values.astype(np.float64))
        width[m] = np.median([fwhm(img, s["x"], s["y"]) for s in stars])
    img0 = np.nan_to_num(runs["updc"].product(0)["sci"].values.astype(np.float64))
    width[0] = np.median([fwhm(img0, s["x"], s["y"]) for s in stars])
    assert width["updc"] < width["rl"] < width[0]
