"""χ²/N against ERR: 1 for pure noise; the in-memory forward model gives UPDC's own data residual."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.wcs import WCS

from mosaic.coadd.updc import updc
from mosaic.io.cal import read_exposures
from mosaic.ops.pixmap import calc_pixmap
from mosaic.psf.files import read_psf
from mosaic.simulate import SimConfig, simulate_field
from mosaic.viz.convergence import chi2_per_pixel, convergence_table, exposure_mock, on_grid


@pytest.mark.parametrize("seed", [0, 1])
def test_chi2_of_pure_noise_is_one(seed):
    rng = np.random.default_rng(seed)
    mock = rng.uniform(0.5, 20.0, (300, 400))
    err = rng.uniform(0.05, 3.0, mock.shape)
    data = mock + err * rng.standard_normal(mock.shape)
    good = rng.random(mock.shape) > 0.1
    data[~good] = 1e6  # bad pixels are left out
    chi2, n = chi2_per_pixel(data, mock, err, good=good)
    assert n == good.sum()
    # the mean of n chi-squared(1) variables: 1 +- sqrt(2 / n) (= 0.003)
    assert chi2 == pytest.approx(1.0, abs=5 * np.sqrt(2.0 / n))
    # a model off by one sigma everywhere: 1 + 1
    assert chi2_per_pixel(data, mock + err, err, good=good)[0] == pytest.approx(2.0, abs=0.03)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cfg = SimConfig(size=64, psf_size=31, n_exposures=3, seed=5, n_galaxies=6, n_stars=2, n_pairs=1, icl=False)
    field = simulate_field(tmp_path_factory.mktemp("convergence"), cfg)
    exposures = read_exposures(field.exposures)
    result = updc(exposures, field.grid.with_tiling(64), read_psf(field.psf)[0], n_iterations=2, errors=False)
    return field, exposures, result


def test_mock_of_a_constant_sky_is_the_sky(run):
    field, exposures, _ = run
    psf = read_psf(field.psf)[0]
    pixmap = calc_pixmap(exposures.attrs["wcs"][0], field.grid.wcs, shape=exposures["sci"].shape[1:])
    mock = exposure_mock(np.full(field.grid.shape, 0.37), psf, pixmap)
    # pixels whose whole footprint, grown by the PSF's radius, lies on the grid
    x, y = pixmap[..., 0], pixmap[..., 1]
    r = psf.shape[0] // 2 + 2
    inside = (x > r) & (y > r) & (x < field.grid.shape[1] - r) & (y < field.grid.shape[0] - r)
    assert inside.sum() > 1000
    np.testing.assert_allclose(mock[inside], 0.37, rtol=1e-9)
    assert on_grid(pixmap, field.grid.shape)[inside].all()


def test_forward_model_gives_the_residual_updc_records(run):
    field, exposures, result = run
    iterates = {n: ds["sci"].values for n, ds in enumerate(result.iterations)}
    table = convergence_table(iterates, exposures, WCS(field.grid.to_header()), read_psf(field.psf)[0], fill=result.fill, weight="ivm",
                              mocks_of=1)
    # UPDC's tiled graph sums w (g - m)^2 with 1/VAR_RNOISE weights: the same mock, the same number
    np.testing.assert_allclose(table["residual"], result.residuals, rtol=1e-6)
    # and UPDC's own chi2/dof against ERR, where it keeps one, is the report's chi2/N
    np.testing.assert_allclose(table["chi2_per_pixel"], result.chi2, rtol=1e-6)
    # the iteration fits the data better and better, in units of their errors too
    chi2 = np.asarray(table["chi2_per_pixel"])
    assert np.all(np.diff(chi2) < 0) and np.all(chi2 > 0)
    assert set(table.meta["mocks"]) == {0, 1, 2} and table.meta["mocks"][2].shape == exposures["sci"].shape[1:]
    assert np.all(table["n_pixels"] > 0.9 * exposures["good"].values.sum())
