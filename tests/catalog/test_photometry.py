"""The tiled catalogue equals photutils' SourceCatalog on the whole image."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest
from astropy.convolution import convolve
from hypothesis import given, settings
from hypothesis import strategies as st
from photutils.segmentation import SourceCatalog, deblend_sources, detect_sources, make_2dgaussian_kernel

from mosaic.catalog.detect import NoDetectionsWarning, detect_segmentation
from mosaic.catalog.photometry import FLAGS, NoWCSWarning, catalog_columns, source_catalog

KERNEL = make_2dgaussian_kernel(2.0, size=5).array
RADII = (3.0, 5.5)
COLUMNS = ("x_centroid", "y_centroid", "segment_flux", "segment_flux_err", "kron_flux", "kron_flux_err", "kron_radius",
           "semimajor_axis", "semiminor_axis", "orientation", "ellipticity", "area", "bbox_xmin", "bbox_xmax", "bbox_ymin", "bbox_ymax")


@pytest.fixture(scope="module")
def inputs(scene, wcs_factory):
    img, _, mask = scene
    err = 1.0 + 0.01 * np.arange(img.shape[1])[None, :] * np.ones(img.shape)
    det = convolve(img, KERNEL)
    return img, err, mask, det, wcs_factory(img.shape)


@pytest.fixture(scope="module")
def reference(inputs):
    img, err, mask, det, wcs = inputs
    segm = deblend_sources(det, detect_sources(det, 1.0, n_pixels=8, mask=mask), 8, progress_bar=False)
    return SourceCatalog(img, segm, convolved_data=det, error=err, mask=mask, wcs=wcs)


def _values(x):
    return np.asarray(getattr(x, "value", x), dtype=float)


def assert_catalog_equal(cat, ref, radii=RADII):
    assert len(cat) == ref.n_labels
    np.testing.assert_array_equal(cat["label"], ref.labels)
    for name in COLUMNS:
        a, b = _values(cat[name]), _values(getattr(ref, name))
        if name in ("x_centroid", "y_centroid"):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-6, err_msg=name)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=0, equal_nan=True, err_msg=name)
    for r in radii:
        flux, err = ref.circular_photometry(r)
        key = f"{r:g}".replace(".", "p")
        np.testing.assert_allclose(_values(cat[f"circ_flux_r{key}"]), _values(flux), rtol=1e-6, equal_nan=True)
        np.testing.assert_allclose(_values(cat[f"circ_flux_err_r{key}"]), _values(err), rtol=1e-6, equal_nan=True)


@pytest.mark.parametrize("tile", [(37, 41), (31, 29), (150, 170)])
def test_catalog_equals_whole_image_source_catalog(inputs, reference, tile):
    img, err, mask, det, wcs = inputs
    seg = detect_segmentation(det, 1.0, n_pixels=8, mask=mask, tile=tile, deblend=True)
    cat = source_catalog(img, seg, error=err, mask=mask, convolved=det, wcs=wcs, radii=RADII)
    assert cat.colnames == catalog_columns(RADII)
    assert_catalog_equal(cat, reference)
    sky = reference.sky_centroid
    np.testing.assert_allclose(cat["ra"].to_value(u.deg), sky.ra.deg, rtol=0, atol=1e-10)
    np.testing.assert_allclose(cat["dec"].to_value(u.deg), sky.dec.deg, rtol=0, atol=1e-10)
    # parents: deblended children point at their parent segment
    assert set(cat["parent"]) <= set(range(1, seg.info["n_parents"] + 1))


def test_flags(inputs, reference):
    img, err, mask, det, wcs = inputs
    seg = detect_segmentation(det, 1.0, n_pixels=8, mask=mask, tile=(37, 41), deblend=True)
    cat = source_catalog(img, seg, error=err, mask=mask, convolved=det, wcs=wcs)
    edge = (cat["bbox_xmin"] == 0) | (cat["bbox_ymin"] == 0) | (cat["bbox_xmax"] == img.shape[1] - 1) | (cat["bbox_ymax"] == img.shape[0] - 1)
    assert np.all(cat["flags"][edge] & FLAGS["edge"])
    # a source whose Kron aperture covers the masked box is flagged, by the aperture's own pixels
    for row, ap in zip(cat, reference.kron_aperture, strict=True):
        masked = ap is not None and np.any(ap.to_mask(method="center").get_values(mask.astype(float)) > 0)
        assert bool(row["flags"] & FLAGS["masked"]) == masked
    assert np.any(cat["flags"] & FLAGS["masked"])


def test_flux_scale_and_units(inputs):
    img, err, mask, det, wcs = inputs
    seg = detect_segmentation(det, 1.0, n_pixels=8, mask=mask, tile=50)
    cat = source_catalog(img, seg, error=err, mask=mask, wcs=wcs, flux_scale=2.0, flux_unit=u.uJy)
    ref = SourceCatalog(img, detect_sources(det, 1.0, n_pixels=8, mask=mask), error=err, mask=mask)
    assert cat["kron_flux"].unit == u.uJy and cat["x_centroid"].unit == u.pix
    np.testing.assert_allclose(cat["segment_flux"].to_value(u.uJy), 2.0 * ref.segment_flux, rtol=1e-12)


def test_no_wcs_gives_nan_sky_positions_with_a_warning(inputs):
    img, err, mask, det, _ = inputs
    seg = detect_segmentation(det, 1.0, n_pixels=8, mask=mask, tile=64)
    with pytest.warns(NoWCSWarning, match="no celestial WCS"):
        cat = source_catalog(img, seg, mask=mask)
    assert len(cat) and np.all(np.isnan(cat["ra"]))


def test_empty_catalogue_has_every_column(wcs_factory):
    img = np.zeros((30, 40))
    with pytest.warns(NoDetectionsWarning):
        seg = detect_segmentation(img, 1.0, n_pixels=3, tile=16)
    cat = source_catalog(img, seg, wcs=wcs_factory(img.shape), radii=(2.0,), flux_unit=u.uJy)
    assert len(cat) == 0
    assert cat.colnames == catalog_columns((2.0,))
    assert cat["kron_flux"].unit == u.uJy and cat["ra"].unit == u.deg


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), tile=st.tuples(st.integers(12, 60), st.integers(12, 60)), deblend=st.booleans())
def test_tiled_catalog_property(scene_factory, wcs_factory, seed, tile, deblend):
    img, _ = scene_factory(seed, shape=(90, 110), n_sources=12, sigma=(1.0, 6.0))
    err = np.ones(img.shape)
    ref_seg = detect_sources(img, 2.5, n_pixels=6)
    if ref_seg is None:
        return
    if deblend:
        ref_seg = deblend_sources(img, ref_seg, 6, mode="linear", progress_bar=False)
    ref = SourceCatalog(img, ref_seg, error=err)
    seg = detect_segmentation(img, 2.5, n_pixels=6, tile=tile, deblend=deblend, mode="linear")
    cat = source_catalog(img, seg, error=err, wcs=wcs_factory(img.shape), radii=(4.0,))
    assert_catalog_equal(cat, ref, radii=(4.0,))
