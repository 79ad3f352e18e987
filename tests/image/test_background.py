"""Tiled Background2D and the ICL background equal photutils on the whole image."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import photutils.background as pb
import pytest
from astropy.convolution import Gaussian2DKernel, convolve_fft
from astropy.stats import SigmaClip
from astropy.utils.exceptions import AstropyUserWarning
from hypothesis import given, settings
from hypothesis import strategies as st
from photutils.segmentation import detect_sources
from photutils.utils import circular_footprint

from mosaic.image.background import DetectionTier, NonFiniteDataWarning, background_2d, icl_background
from mosaic.ops.background import ESTIMATORS, RMS_ESTIMATORS


def _reference(img, box, *, estimator="median", rms_estimator="std", **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyUserWarning)
        return pb.Background2D(
            img, box, bkg_estimator=getattr(pb, ESTIMATORS[estimator])(),
            bkg_rms_estimator=getattr(pb, RMS_ESTIMATORS[rms_estimator])(), **kw,
        )


def _sky(ny, nx, seed, dtype=np.float32):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:ny, :nx]
    img = 10 + 0.03 * xx - 0.02 * yy + 3 * np.exp(-((xx - nx / 2) ** 2 + (yy - ny / 3) ** 2) / (2 * 30.0**2))
    img = img + rng.normal(0, 1, (ny, nx))
    for _ in range(8):  # compact sources
        y, x = rng.integers(0, ny), rng.integers(0, nx)
        img += 40 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.5**2))
    return img.astype(dtype)


@st.composite
def cases(draw):
    ny, nx = draw(st.integers(30, 110)), draw(st.integers(30, 110))
    box = (draw(st.integers(5, min(40, ny))), draw(st.integers(5, min(40, nx))))
    img = _sky(ny, nx, draw(st.integers(0, 2**31)), draw(st.sampled_from([np.float32, np.float64])))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    mask = rng.random((ny, nx)) < 0.05 if draw(st.booleans()) else None
    coverage = None
    if draw(st.booleans()):
        coverage = np.zeros((ny, nx), bool)
        coverage[: ny // 4, : nx // 3] = True
    if draw(st.booleans()):
        img[rng.random((ny, nx)) < 0.02] = np.nan
    return {
        "img": img, "box": box, "mask": mask, "coverage": coverage,
        "tile": draw(st.integers(1, 3)) * max(box),
        "chunks": (draw(st.integers(7, ny)), draw(st.integers(7, nx))),
        "filter_size": draw(st.sampled_from([1, 3, (3, 5)])),
        "estimator": draw(st.sampled_from(sorted(ESTIMATORS))),
        "rms_estimator": draw(st.sampled_from(sorted(RMS_ESTIMATORS))),
        "exclude_percentile": draw(st.sampled_from([10.0, 50.0])),
        "filter_threshold": draw(st.sampled_from([None, 11.0])),
    }


@settings(max_examples=15)
@given(cases())
def test_tiled_background_equals_photutils(case):
    img = case["img"]

    def tiled():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NonFiniteDataWarning)
            return background_2d(
                da.from_array(img, chunks=case["chunks"]), box_size=case["box"], estimator=case["estimator"],
                rms_estimator=case["rms_estimator"], mask=case["mask"], coverage_mask=case["coverage"],
                filter_size=case["filter_size"], exclude_percentile=case["exclude_percentile"],
                filter_threshold=case["filter_threshold"], tile=case["tile"],
            )

    try:
        ref = _reference(
            img, case["box"], estimator=case["estimator"], rms_estimator=case["rms_estimator"], mask=case["mask"],
            coverage_mask=case["coverage"], filter_size=case["filter_size"], exclude_percentile=case["exclude_percentile"],
            filter_threshold=case["filter_threshold"],
        )
    except ValueError as err:  # every box excluded: photutils refuses, and so must we
        assert "boxes" in str(err)
        with pytest.raises(ValueError, match="every box"):
            tiled()
        return
    got = tiled()
    bkg, rms = got.background.compute(), got.background_rms.compute()
    assert bkg.dtype == ref.background.dtype and rms.dtype == ref.background_rms.dtype
    np.testing.assert_allclose(bkg, ref.background, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rms, ref.background_rms, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.background_mesh, ref.background_mesh, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got.n_pixels_mesh, ref.n_pixels_mesh)


def test_all_nan_tile_is_filled_as_photutils_does():
    img = _sky(120, 100, 1)
    img[40:80, 20:40] = np.nan  # exactly one 40x20 tile
    ref = _reference(img, (20, 20), filter_size=3)
    with pytest.warns(NonFiniteDataWarning, match="800 NaN or inf pixels"):
        got = background_2d(da.from_array(img, chunks=(40, 20)), box_size=20, tile=40)
    assert np.isfinite(got.background_mesh).all()
    np.testing.assert_allclose(got.background.compute(), ref.background, rtol=1e-6)
    np.testing.assert_allclose(got.background_rms.compute(), ref.background_rms, rtol=1e-6)
    # masked NaNs are not warned about
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        background_2d(img, box_size=20, tile=40, mask=np.isnan(img))


def test_bad_input_gets_one_clear_error():
    img = _sky(50, 40, 2)
    with pytest.raises(ValueError, match=r"box_size \(64, 64\) is larger than the image shape \(50, 40\)"):
        background_2d(img, box_size=64)
    with pytest.raises(ValueError, match=r"estimator 'mode2' is not known; expected one of \['biweight', 'mean', 'median'"):
        background_2d(img, box_size=10, estimator="mode2")
    with pytest.raises(ValueError, match="sigma must be a positive number.*got -1"):
        background_2d(img, box_size=10, sigma=-1.0)
    with pytest.raises(ValueError, match="filter_size must be odd"):
        background_2d(img, box_size=10, filter_size=4)
    with pytest.raises(ValueError, match="every box"), pytest.warns(NonFiniteDataWarning):
        background_2d(np.full((40, 40), np.nan), box_size=10)


def _reference_icl(img, bad, tiers, box, filt):
    kw = {"filter_size": filt, "sigma_clip": SigmaClip(sigma=3.0, maxiters=10), "exclude_percentile": 10.0}
    est = pb.BiweightLocationBackground()
    first = pb.Background2D(img, box, mask=bad, bkg_estimator=est, **kw)
    resid = img - first.background
    resid[bad] = 0.0
    sources = np.zeros(img.shape, bool)
    for t in tiers:
        smooth = convolve_fft(resid, Gaussian2DKernel(t.kernel_sigma), boundary="fill", fill_value=0.0, normalize_kernel=True)
        segm = detect_sources(smooth, t.n_sigma * first.background_rms, n_pixels=t.n_pixels, mask=bad)
        if segm is not None:
            fp = circular_footprint(t.dilate_radius) if t.dilate_radius else None
            sources |= segm.make_source_mask(footprint=fp)
    final = pb.Background2D(img, box, mask=bad | sources, bkg_estimator=est, **kw)
    return first, sources, final


@pytest.mark.parametrize("tile", [20, 40])
def test_icl_background_equals_whole_image_three_steps(tile):
    ny, nx = 160, 140
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[:ny, :nx]
    icl = 4.0 * np.exp(-((xx - 70) ** 2 + (yy - 80) ** 2) / (2 * 25.0**2))
    img = 5.0 + icl + rng.normal(0, 1, (ny, nx))
    for _ in range(15):
        y, x = rng.integers(5, ny - 5), rng.integers(5, nx - 5)
        img += rng.uniform(20, 80) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * rng.uniform(1, 3) ** 2))
    bad = rng.random((ny, nx)) < 0.01
    img[bad] = np.nan
    tiers = (DetectionTier(4.0, 1.5, 15, 0), DetectionTier(1.5, 1.0, 5, 0), DetectionTier(1.0, 0.8, 2, 2))
    first, sources, final = _reference_icl(img, bad, tiers, 20, 3)
    got = icl_background(da.from_array(img, chunks=(33, 29)), mask=bad, box_size=20, filter_size=3, tiers=tiers, tile=tile)
    np.testing.assert_allclose(got.initial.background.compute(), first.background, rtol=1e-9)
    assert sources.any()
    np.testing.assert_array_equal(got.source_mask.compute(), sources)
    np.testing.assert_allclose(got.final.background.compute(), final.background, rtol=1e-9)
    np.testing.assert_allclose(got.final.background_rms.compute(), final.background_rms, rtol=1e-9)
