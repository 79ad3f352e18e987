"""Background-mesh operators against photutils, scipy and analytic answers."""

from __future__ import annotations

import numpy as np
import photutils.background as pb
from astropy.stats import SigmaClip
from photutils.segmentation import detect_sources
from photutils.utils import circular_footprint
from scipy.ndimage import zoom

from mosaic.ops.background import make_estimators, mesh_statistics, source_mask_window, zoom_weights


def test_mesh_statistics_of_a_whole_image_equal_photutils_meshes():
    rng = np.random.default_rng(0)
    img = rng.normal(5, 1, (47, 38)).astype(np.float32)
    img[::7, ::5] += 30
    mask = rng.random(img.shape) < 0.1
    bkg_est, rms_est = make_estimators("sextractor", "mad_std")
    got = mesh_statistics(img, mask, box_size=(10, 9), sigma_clip=SigmaClip(3, maxiters=10), bkg_estimator=bkg_est,
                          rms_estimator=rms_est, exclude_percentile=50.0)
    ref = pb.Background2D(img, (10, 9), mask=mask, filter_size=1, exclude_percentile=50.0,
                          bkg_estimator=pb.SExtractorBackground(), bkg_rms_estimator=pb.MADStdBackgroundRMS())
    assert got.shape == (4, 5, 5)  # partial boxes on the bottom row and right column
    np.testing.assert_array_equal(got[2], ref.n_pixels_mesh)
    # the 2-pixel-wide right column has too few pixels: excluded here, filled later by photutils
    excluded = got[2] <= 0.5 * 90
    assert np.array_equal(np.isnan(got[0]), excluded) and excluded[:, -1].all() and not excluded[:, :-1].any()
    np.testing.assert_allclose(got[0][~excluded], ref.background_mesh[~excluded], rtol=1e-6)  # no filter
    np.testing.assert_allclose(got[1][~excluded], ref.background_rms_mesh[~excluded], rtol=1e-6)
    assert got[3].sum() == 0


def test_zoom_weights_reproduce_scipy_zoom():
    rng = np.random.default_rng(1)
    mesh = rng.normal(size=(4, 6))
    wy, wx = zoom_weights(4, 7), zoom_weights(6, 5)
    assert wy.shape == (28, 4) and wx.shape == (30, 6)
    np.testing.assert_allclose(wy @ mesh @ wx.T, zoom(mesh, (7, 5), order=3, mode="reflect", grid_mode=True), atol=1e-12)


def test_source_mask_window_equals_detect_sources():
    rng = np.random.default_rng(2)
    data = rng.normal(size=(60, 70))
    bad = rng.random(data.shape) < 0.02
    for n_pixels, radius in ((1, 0), (5, 0), (4, 2)):
        segm = detect_sources(data, 1.0, n_pixels=n_pixels, mask=bad)
        want = segm.make_source_mask(footprint=circular_footprint(radius) if radius else None)
        np.testing.assert_array_equal(source_mask_window(data, 1.0, bad, n_pixels=n_pixels, dilate_radius=radius), want)
