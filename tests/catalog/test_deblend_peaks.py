"""The deblending short cut: a parent with at most one local maximum is one that photutils leaves whole."""

from __future__ import annotations

import warnings

import numpy as np
from astropy.convolution import convolve
from astropy.utils.exceptions import AstropyUserWarning
from hypothesis import given, settings
from hypothesis import strategies as st
from photutils.segmentation import SegmentationImage, deblend_sources, detect_sources, make_2dgaussian_kernel
from photutils.utils.exceptions import NoDetectionsWarning as PhotutilsNoDetectionsWarning
from scipy import ndimage as ndi

from mosaic.catalog.detect import _at_most_one_peak


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 100_000),
    n_sources=st.integers(1, 12),
    connectivity=st.sampled_from([4, 8]),
    mode=st.sampled_from(["exponential", "linear", "sinh"]),
    quantum=st.sampled_from([0.0, 0.25]),
)
def test_single_peaked_parents_are_not_split_by_photutils(seed, n_sources, connectivity, mode, quantum):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64]
    img = rng.normal(0.0, 1.0, (64, 64))
    for _ in range(n_sources):
        x, y, s = rng.uniform(0, 64), rng.uniform(0, 64), rng.uniform(0.8, 5.0)
        img += rng.uniform(5, 300) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * s * s))
    det = convolve(img, make_2dgaussian_kernel(2.0, size=5).array)
    if quantum:  # plateaus: equal neighbours count as several maxima, so such parents go to photutils
        det = np.round(det / quantum) * quantum
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PhotutilsNoDetectionsWarning)
        segm = detect_sources(det, 1.0, n_pixels=5, connectivity=connectivity)
    if segm is None:
        return
    footprint = ndi.generate_binary_structure(2, 2 if connectivity == 8 else 1)
    for label, sl in zip(segm.labels, segm.slices, strict=True):
        inside = segm.data[sl] == label
        if not _at_most_one_peak(det[sl], inside, footprint):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyUserWarning)  # exponential mode falling back to linear
            result = deblend_sources(det[sl], SegmentationImage(inside.astype(np.int32)), 5, n_levels=32, contrast=0.0, mode=mode,
                                     connectivity=connectivity, progress_bar=False)
        assert result.n_labels == 1, (label, seed)


def test_two_peaks_are_left_to_photutils():
    yy, xx = np.mgrid[:30, :40]
    det = 10 * np.exp(-((xx - 15) ** 2 + (yy - 15) ** 2) / 8.0) + 8 * np.exp(-((xx - 24) ** 2 + (yy - 15) ** 2) / 8.0)
    inside = det > 0.5
    assert ndi.label(inside, structure=np.ones((3, 3)))[1] == 1
    assert not _at_most_one_peak(det, inside, np.ones((3, 3), bool))
    result = deblend_sources(det, SegmentationImage(inside.astype(np.int32)), 5, progress_bar=False)
    assert result.n_labels == 2
    single = 10 * np.exp(-((xx - 20) ** 2 + (yy - 15) ** 2) / 20.0)
    assert _at_most_one_peak(single, single > 0.5, np.ones((3, 3), bool))
    nan = single.copy()
    nan[15, 3] = np.nan
    assert not _at_most_one_peak(nan, single > 0.0, np.ones((3, 3), bool))
