"""Fig. 13 on a simulated field: UPDC iteration 5 detects more true sources than the drizzle mosaic.

A noisy simulated F200W field (4 dithered exposures of 128², 40 galaxies, 3 stars, a close pair;
truth in truth.ecsv) is run through 5 UPDC iterations. Iterations 0 and 5 are segmented at the
same threshold (3 sigma of each image's clipped background, after a 2-px FWHM smoothing, where
all four exposures overlap) and matched to the truth within 0.1 arcsec: iteration 5 finds more
true sources. False detections (unmatched) are counted too and reported in the table.
"""

from __future__ import annotations

import warnings

import matplotlib.pyplot as plt
import numpy as np
import pytest
from astropy.stats import sigma_clipped_stats
from scipy.ndimage import binary_erosion

from mosaic.catalog.analysis import detections_vs_iteration, magnitude_comparison, plot_detections, plot_magnitudes
from mosaic.catalog.detect import detect_segmentation, smooth
from mosaic.catalog.photometry import source_catalog
from mosaic.coadd.updc import updc
from mosaic.io.cal import read_exposures
from mosaic.psf.files import read_psf
from mosaic.simulate import SimConfig, simulate_field


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    cfg = SimConfig(size=128, psf_size=51, n_exposures=4, seed=3, n_galaxies=40, n_stars=3, n_pairs=1, icl=False)
    return simulate_field(tmp_path_factory.mktemp("detections"), cfg)


@pytest.fixture(scope="module")
def catalogs(field):
    run = updc(read_exposures(field.exposures), field.grid.with_tiling(200), read_psf(field.psf)[0], n_iterations=5, errors=False)
    good = binary_erosion(run.iterations[0]["con"].values[0] == 0b1111, iterations=5)
    out = {}
    for n in (0, 5):
        img = np.nan_to_num(run.product(n)["sci"].values.astype(np.float64))
        det = smooth(img, fwhm=2.0, tile=100).compute()
        _, _, sigma = sigma_clipped_stats(det[good])
        seg = detect_segmentation(det, 3.0 * sigma, n_pixels=5, mask=~good, tile=100)
        area = field.grid.pixel_area_sr * 1e12  # MJy/sr summed over pixels -> uJy
        out[n] = source_catalog(img, seg, mask=~good, convolved=det, wcs=field.grid.wcs, flux_scale=area, flux_unit="uJy")
    x, y = np.round(field.truth_table["x"]).astype(int), np.round(field.truth_table["y"]).astype(int)
    inside = (x >= 0) & (y >= 0) & (x < good.shape[1]) & (y < good.shape[0])
    inside[inside] = good[y[inside], x[inside]]
    return out, field.truth_table[inside]


def test_more_true_detections_at_iteration_5(catalogs):
    cats, truth = catalogs
    table = detections_vs_iteration(cats, truth, max_sep=0.1)
    assert list(table["iteration"]) == [0, 5]
    n_true = list(table["n_true"])
    assert n_true[1] > n_true[0]
    assert np.all(table["n_true"] + table["n_false"] == table["n_detected"])
    # no "growth" of all detections (it would count false ones as gains): purity instead
    assert "growth" not in table.colnames
    np.testing.assert_allclose(table["purity"], table["n_true"] / table["n_detected"])
    # every true detection is a distinct truth source
    assert max(n_true) <= len(truth)
    fig = plot_detections(table)
    assert len(fig.axes) == 2
    plt.close(fig)


def test_magnitudes_iteration_0_versus_5(catalogs):
    cats, _ = catalogs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mags = magnitude_comparison(cats[0], cats[5], max_sep=0.1)
    assert len(mags) >= 10
    finite = np.isfinite(mags["mag_a"]) & np.isfinite(mags["mag_b"])
    # the same sources: magnitudes agree to a few tenths (fig. 14's scatter), bright ones closely
    assert np.median(np.abs(mags["delta_mag"][finite])) < 0.3
    fig = plot_magnitudes(mags)
    assert len(fig.axes) == 1
    plt.close(fig)
