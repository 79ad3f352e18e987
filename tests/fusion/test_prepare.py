"""Pre-fusion: throughputs, cross-calibration (eqs. 6-7), the fine grid, phase alignment, the common field."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage

from mosaic.exceptions import InputError
from mosaic.fusion.calibrate import FILTERS, band_images, cross_calibrate, throughput_matrix
from mosaic.fusion.prepare import common_field, fine_wcs, phase_align, psf_cubes
from mosaic.fusion.simulate import scene_wcs


def test_throughputs_are_top_hats_on_the_channels():
    w = np.linspace(1.70, 2.25, 221)  # 0.0025 um channels
    lm = throughput_matrix(list(FILTERS), w)
    np.testing.assert_allclose(lm.sum(axis=1), 1.0, rtol=1e-12)
    for row, (lo, hi) in zip(lm, FILTERS.values(), strict=True):
        inside = (w > lo + 0.0025) & (w < hi - 0.0025)
        assert np.all(row[(w < lo - 0.0025) | (w > hi + 0.0025)] == 0)
        np.testing.assert_allclose(row[inside], 0.0025 / (hi - lo), rtol=1e-9)  # flat inside
    # the band-averaged flux density of a linear spectrum is its value at the band centre, up to the
    # partial edge channels, which count at their centre wavelength (a few 1e-6 here)
    spec = 3.0 + 2.0 * w
    np.testing.assert_allclose(lm @ spec, [3.0 + (lo + hi) for lo, hi in FILTERS.values()], rtol=1e-5)


def test_throughput_errors():
    w = np.linspace(1.9, 2.3, 50)
    with pytest.raises(InputError, match=r"F182M \(1.722-1.968 um\) is not inside the IFU cube's range 1.900-2.300"):
        throughput_matrix(["F182M"], w)
    with pytest.raises(InputError, match="no throughput; expected one of"):
        throughput_matrix(["F444W"], w)


def test_cross_calibration_recovers_the_mismatch():
    rng = np.random.default_rng(0)
    w = np.linspace(1.70, 2.25, 60)
    fine = rng.random((60, 12, 15)) + 0.5
    cube = fine.reshape(60, 4, 3, 5, 3).mean(axis=(2, 4))  # spaxels = mean of their 3 x 3 pixels
    lm = throughput_matrix(["F182M", "F210M", "F212N"], w)
    mismatch = np.array([1.14, 1.07, 0.93])
    lm_cal, factors = cross_calibrate(band_images(fine, lm) * mismatch[:, None, None], cube, lm)
    np.testing.assert_allclose(factors, mismatch, rtol=1e-12)
    # eq. (6) holds after calibration
    np.testing.assert_allclose(lm_cal @ cube.mean(axis=(1, 2)), (band_images(fine, lm) * mismatch[:, None, None]).mean(axis=(1, 2)), rtol=1e-12)


@pytest.mark.parametrize("d", [2, 3, 4])
def test_fine_grid_puts_spaxel_centres_on_sampled_pixels(d):
    """Spaxel (i, j) is where the IFU model samples: fine pixel (d i + d // 2, d j + d // 2)."""
    coarse = scene_wcs((10, 12), np.linspace(1.7, 2.2, 5)).celestial
    fine = fine_wcs(coarse, d)
    i, j = np.array([0, 3, 9]), np.array([0, 7, 11])
    sep = coarse.pixel_to_world(j, i).separation(fine.pixel_to_world(d * j + d // 2, d * i + d // 2))
    assert np.all(sep.to_value("arcsec") < 1e-9)
    step = fine.pixel_to_world(0, 0).separation(fine.pixel_to_world(1, 0)).to_value("arcsec")
    assert step == pytest.approx(0.1 / d, rel=1e-6)


def test_phase_alignment_recovers_a_subpixel_shift():
    yy, xx = np.mgrid[:64, :64]
    ref = np.exp(-((yy - 30.0) ** 2 + (xx - 34.0) ** 2) / 20.0) + 0.5 * np.exp(-((yy - 20.0) ** 2 + (xx - 22.0) ** 2) / 8.0)
    moved = scipy.ndimage.shift(ref, (1.3, -2.6), order=3, mode="nearest")
    aligned, shift = phase_align(moved, ref)
    assert shift == pytest.approx((-1.3, 2.6), abs=0.06)
    assert np.abs(aligned - ref)[8:-8, 8:-8].max() < 0.02


def test_common_field_drops_nan_edges():
    cube = np.ones((3, 10, 12))
    cube[:, :2, :] = np.nan
    cube[:, :, 11] = np.nan
    images = np.ones((2, 30, 36))
    images[1, :, :4] = np.nan  # the first two spaxel columns are not fully covered
    assert common_field(cube, images, 3) == (2, 10, 2, 11)
    with pytest.raises(InputError, match="image 1: does not overlap"):
        common_field(cube, np.stack([images[0], np.full((30, 36), np.nan)]), 3)


def test_psf_cubes_sum_to_one_and_widen_with_wavelength():
    psf_m, psf_h = psf_cubes(np.linspace(1.7, 2.3, 7), factor=3, spaxel_arcsec=0.1, size=21, n_samples=3)
    np.testing.assert_allclose(psf_m.sum(axis=(1, 2)), 1.0, rtol=1e-12)
    np.testing.assert_allclose(psf_h.sum(axis=(1, 2)), 1.0, rtol=1e-12)
    assert psf_m[0].max() > psf_m[-1].max()  # diffraction: a redder PSF is broader
    assert psf_h[3].max() < psf_m[3].max()  # the IFU's spaxel and slicer blur it further


def test_resampling_keeps_nans_local():
    from mosaic.fusion.prepare import resample_image

    wcs = scene_wcs((12, 12), np.linspace(1.7, 2.2, 5)).celestial
    fine = fine_wcs(wcs, 3)
    image = np.add.outer(np.arange(36.0), np.arange(36.0))
    image[10, 20] = np.nan
    out = resample_image(image, fine, fine, (36, 36))  # the same grid: bicubic reproduces the image
    assert np.isnan(out[10, 20])
    assert np.isnan(out).sum() <= 9
    good = np.isfinite(out)
    np.testing.assert_allclose(out[good], image[good], rtol=0, atol=1e-6)
