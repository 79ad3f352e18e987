"""Tiled DAOFIND equals DAOStarFinder on the whole image."""

from __future__ import annotations

import numpy as np
import pytest
from photutils.detection import DAOStarFinder

from mosaic.catalog.daofind import detect_daofind, fill_masked
from mosaic.catalog.detect import NoDetectionsWarning

COLUMNS = ("x_centroid", "y_centroid", "sharpness", "roundness1", "roundness2", "peak", "flux", "daofind_mag")


@pytest.fixture(scope="module")
def stars(scene_factory):
    img, _ = scene_factory(2, shape=(160, 150), n_sources=40, sigma=(1.3, 1.3), flux=(30.0, 3000.0))
    mask = np.zeros(img.shape, bool)
    mask[50:60, 10:40] = True
    img[100:104, 120:123] = np.nan
    return img, mask


@pytest.mark.parametrize("tile", [(23, 31), (29, 19), (160, 150)])
def test_daofind_equals_whole_image(stars, tile):
    img, mask = stars
    filled, bad = fill_masked(img, mask)
    ref = DAOStarFinder(4.0, 3.0).find_stars(filled, mask=bad)
    ref = ref[np.lexsort((ref["x_centroid"], ref["y_centroid"]))]
    got = detect_daofind(img, 4.0, fwhm=3.0, mask=mask, tile=tile)
    assert len(got) == len(ref) > 20
    for name in COLUMNS:
        np.testing.assert_allclose(np.asarray(got[name]), np.asarray(ref[name]), rtol=1e-6, atol=1e-9, err_msg=name)
    np.testing.assert_array_equal(got["id"], np.arange(1, len(ref) + 1))


def test_daofind_nothing_found():
    with pytest.warns(NoDetectionsWarning):
        t = detect_daofind(np.zeros((40, 40)), 1.0, fwhm=2.0, tile=16)
    assert len(t) == 0 and "x_centroid" in t.colnames


def test_daofind_bad_threshold():
    with pytest.raises(ValueError, match="threshold must be positive; got 0"):
        detect_daofind(np.zeros((10, 10)), 0, fwhm=2.0)
