"""Tiled segmentation equals photutils' detect_sources / deblend_sources on the whole image."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from astropy.convolution import convolve
from hypothesis import given, settings
from hypothesis import strategies as st
from photutils.segmentation import SegmentationImage, deblend_sources, detect_sources, make_2dgaussian_kernel
from photutils.utils.exceptions import NoDetectionsWarning as PhotutilsNoDetectionsWarning
from scipy.ndimage import find_objects

from mosaic.catalog.detect import NoDetectionsWarning, detect_segmentation, smooth, threshold_from_rms

KERNEL = make_2dgaussian_kernel(2.0, size=5).array


@pytest.fixture(scope="module")
def detection(scene):
    img, _, mask = scene
    return convolve(img, KERNEL), mask


@pytest.fixture(scope="module")
def reference(detection):
    det, mask = detection
    segm = detect_sources(det, 1.0, n_pixels=8, mask=mask)
    return segm, deblend_sources(det, segm, 8, progress_bar=False)


def test_smooth_equals_astropy_convolve(scene):
    img = scene[0].copy()
    img[10:14, 100:103] = np.nan  # NaN interpolated as astropy does
    tiled = smooth(img, fwhm=2.0, size=5, tile=(23, 37)).compute()
    np.testing.assert_array_equal(tiled, convolve(img, KERNEL))


# tiles that do not divide the image, tiles smaller than the largest source (sigma 8 px), one piece
@pytest.mark.parametrize("tile", [(37, 41), (16, 16), (7, 170), (150, 170)])
def test_segmentation_equals_photutils(detection, reference, tile):
    det, mask = detection
    segm, _ = reference
    seg = detect_segmentation(det, 1.0, n_pixels=8, mask=mask, tile=tile)
    assert seg.n_labels == segm.n_labels
    np.testing.assert_array_equal(seg.data.compute(), segm.data)
    bbox = np.array([[s[0].start, s[0].stop, s[1].start, s[1].stop] for s in find_objects(segm.data)])
    np.testing.assert_array_equal(seg.bbox, bbox)


@pytest.mark.parametrize("tile", [(37, 41), (16, 16)])
def test_deblending_equals_photutils(detection, reference, tile):
    det, mask = detection
    _, deblended = reference
    seg = detect_segmentation(det, 1.0, n_pixels=8, mask=mask, tile=tile, deblend=True)
    assert seg.info["n_split"] > 0  # the scene has blends
    assert seg.n_labels == deblended.n_labels
    np.testing.assert_array_equal(seg.data.compute(), deblended.data)


def test_source_larger_than_tiles_is_one_source():
    yy, xx = np.mgrid[:120, :130]
    img = 100 * np.exp(-((xx - 61.3) ** 2 + (yy - 58.7) ** 2) / (2 * 20.0**2))  # ~100 px across
    seg = detect_segmentation(img, 1.0, n_pixels=5, tile=(13, 17))
    assert seg.n_labels == 1
    np.testing.assert_array_equal(seg.data.compute(), detect_sources(img, 1.0, n_pixels=5).data)


def test_all_masked_tile_and_threshold_map(detection):
    det, _ = detection
    mask = np.zeros(det.shape, bool)
    mask[:40, :50] = True  # whole tiles of 20 x 25 masked
    rms = 0.5 + 0.002 * np.arange(det.shape[1])[None, :] * np.ones(det.shape)
    thr = threshold_from_rms(rms, 2.0)
    seg = detect_segmentation(det, thr, n_pixels=8, mask=mask, tile=(20, 25))
    np.testing.assert_array_equal(seg.data.compute(), detect_sources(det, thr, n_pixels=8, mask=mask).data)
    assert not seg.data.compute()[:40, :50].any()


def test_empty_detection_warns():
    img = np.zeros((40, 50))
    with pytest.warns(NoDetectionsWarning):
        seg = detect_segmentation(img, 1.0, n_pixels=3, tile=16)
    assert seg.n_labels == 0
    assert not seg.data.compute().any()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"threshold": 0.0}, "threshold must be positive"), ({"threshold": -1.0}, "threshold must be positive"),
     ({"n_pixels": 0}, "n_pixels"), ({"connectivity": 6}, "connectivity"), ({"mode": "log"}, "mode"),
     ({"tile": 0}, "tile"), ({"contrast": 2.0}, "contrast")],
)
def test_bad_input(kwargs, match):
    args = {"threshold": 1.0, **kwargs}
    thr = args.pop("threshold")
    with pytest.raises(ValueError, match=match):
        detect_segmentation(np.ones((20, 20)), thr, **args)


def test_threshold_from_rms_rejects_non_positive_sigma():
    with pytest.raises(ValueError, match="n_sigma must be a positive number; got 0"):
        threshold_from_rms(np.ones(3), 0)


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    shape=st.tuples(st.integers(60, 130), st.integers(60, 130)),
    tile=st.tuples(st.integers(5, 70), st.integers(5, 70)),
    n_sources=st.integers(0, 25),
    connectivity=st.sampled_from([4, 8]),
    deblend=st.booleans(),
)
def test_tiled_segmentation_property(scene_factory, seed, shape, tile, n_sources, connectivity, deblend):
    img, _ = scene_factory(seed, shape=shape, n_sources=n_sources, sigma=(0.8, 10.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PhotutilsNoDetectionsWarning)
        ref = detect_sources(img, 2.0, n_pixels=6, connectivity=connectivity)
    if ref is None:
        with pytest.warns(NoDetectionsWarning):
            seg = detect_segmentation(img, 2.0, n_pixels=6, connectivity=connectivity, tile=tile, deblend=deblend)
        assert seg.n_labels == 0
        return
    if deblend:
        ref = deblend_sources(img, ref, 6, connectivity=connectivity, mode="linear", progress_bar=False)
    seg = detect_segmentation(img, 2.0, n_pixels=6, connectivity=connectivity, tile=tile, deblend=deblend, mode="linear")
    assert isinstance(ref, SegmentationImage)
    np.testing.assert_array_equal(seg.data.compute(), ref.data)
