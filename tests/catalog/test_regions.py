"""Regions stitched from chunk pieces equal NumPy slices; moment sums give photutils' centroids and sizes."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from photutils.segmentation import SourceCatalog, detect_sources

from mosaic.catalog.photometry import _centroids_and_sizes, _tile_moments
from mosaic.catalog.regions import ChunkGrid, delayed_on_regions, optimize_together


def _pair(a, b):
    return a, b


@settings(max_examples=25, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 60), st.integers(1, 60)),
    chunks=st.tuples(st.integers(1, 25), st.integers(1, 25)),
    data=st.data(),
)
def test_region_equals_numpy_slice(shape, chunks, data):
    ys = sorted(data.draw(st.lists(st.integers(0, shape[0]), min_size=2, max_size=2)))
    xs = sorted(data.draw(st.lists(st.integers(0, shape[1]), min_size=2, max_size=2)))
    if ys[0] == ys[1] or xs[0] == xs[1]:
        return
    region = (slice(*ys), slice(*xs))
    values = np.arange(shape[0] * shape[1], dtype=np.int32).reshape(shape) % 7
    arr, _ = optimize_together(da.from_array(values, chunks=chunks), None)
    grid = ChunkGrid(arr)
    lut = np.array([0, 10, 20, 30, 40, 50, 60], dtype=np.int32)
    lookups = {(i, j): lut for i in range(arr.numblocks[0]) for j in range(arr.numblocks[1])}
    task = delayed_on_regions(_pair, [grid.region(region), grid.region(region, lookups=lookups)])
    plain, mapped = dask.compute(task, scheduler="sync")[0]
    np.testing.assert_array_equal(plain, values[region])
    np.testing.assert_array_equal(mapped, lut[values[region]])


def test_moment_sums_give_photutils_centroids_and_a_bound_on_the_semimajor_axis(scene):
    img, _, mask = scene
    segm = detect_sources(img, 1.5, n_pixels=6, mask=mask)
    ref = SourceCatalog(img, segm, mask=mask)
    bbox = np.column_stack([ref.bbox_ymin, ref.bbox_ymax + 1, ref.bbox_xmin, ref.bbox_xmax + 1]).astype(np.int64)
    sums = np.zeros((segm.n_labels, 6))
    for y0 in range(0, img.shape[0], 40):  # tiles that cut segments
        for x0 in range(0, img.shape[1], 45):
            sl = (slice(y0, y0 + 40), slice(x0, x0 + 45))
            present, part = _tile_moments(segm.data[sl], img[sl], mask[sl], (y0, x0), bbox[:, [0, 2]])
            np.add.at(sums, present - 1, part)
    xy, a = _centroids_and_sizes(sums, bbox)
    np.testing.assert_allclose(xy[:, 0], ref.x_centroid, rtol=0, atol=1e-9)
    np.testing.assert_allclose(xy[:, 1], ref.y_centroid, rtol=0, atol=1e-9)
    sma = np.asarray(ref.semimajor_axis.value)
    assert np.all(a >= sma)
    assert np.all(a <= np.sqrt(sma**2 + 1 / 12 + 1e-5))
