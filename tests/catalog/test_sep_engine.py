"""The tiled SEP engine equals SEP on the whole image (extract, Kron radius, Kron and circular apertures)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mosaic.catalog.sep_engine import SEP_DEFAULT_KERNEL, sep_catalog
from mosaic.exceptions import NoDetectionsWarning, NoWCSWarning

sep = pytest.importorskip("sep")

RADII = (3.0, 6.0)


def whole_image(img, thr, *, err=None, mask=None, minarea=5, deblend_cont=1.0, filter_kernel=SEP_DEFAULT_KERNEL, filter_type="matched"):
    """SEP on the whole image, as its documentation shows; rows sorted by y then x."""
    sep.set_extract_pixstack(max(300_000, img.size))
    o = sep.extract(img, thr, err=err, mask=mask, minarea=minarea, deblend_cont=deblend_cont, filter_kernel=filter_kernel,
                    filter_type=filter_type, clean=False)
    o = o[np.lexsort((o["x"], o["y"]))]
    if not len(o):
        return o, {}
    kr, kflag = sep.kron_radius(img, o["x"], o["y"], o["a"], o["b"], o["theta"], 6.0, mask=mask)
    kflux, kerr, f = sep.sum_ellipse(img, o["x"], o["y"], o["a"], o["b"], o["theta"], 2.5 * np.maximum(kr, 3.5), err=err, mask=mask, subpix=1)
    cols = {"kron_radius": kr, "kron_flux": kflux, "kron_flux_err": kerr, "flags": o["flag"].astype(np.int64) | kflag | f}
    for r in RADII:
        flux, ferr, f = sep.sum_circle(img, o["x"], o["y"], r, err=err, mask=mask)
        cols[f"circ_flux_r{r:g}"], cols[f"circ_flux_err_r{r:g}"] = flux, ferr
        cols["flags"] |= f
    return o, cols


def tiled(img, thr, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoWCSWarning)
        warnings.simplefilter("ignore", NoDetectionsWarning)
        return sep_catalog(img, thr, radii=RADII, **kwargs)


def assert_rows_equal(t, o, cols, rows=slice(None)):
    """Positions to 1e-9 px (SEP sums moments in region coordinates), everything else to 1e-9 relative."""
    np.testing.assert_allclose(t["x_centroid"].value[rows], o["x"][rows], rtol=0, atol=1e-9)
    np.testing.assert_allclose(t["y_centroid"].value[rows], o["y"][rows], rtol=0, atol=1e-9)
    for name, ref in (("area", "npix"), ("bbox_xmin", "xmin"), ("bbox_xmax", "xmax"), ("bbox_ymin", "ymin"), ("bbox_ymax", "ymax")):
        np.testing.assert_array_equal(np.asarray(getattr(t[name], "value", t[name]))[rows], o[ref][rows])
    for name, ref in (("segment_flux", "flux"), ("semimajor_axis", "a"), ("semiminor_axis", "b"), ("peak", "peak")):
        np.testing.assert_allclose(t[name].value[rows], o[ref][rows], rtol=1e-9, atol=1e-12)
    for name, ref in cols.items():
        got = np.asarray(getattr(t[name], "value", t[name]))[rows]
        if name == "flags":
            np.testing.assert_array_equal(got, ref[rows])
        else:
            np.testing.assert_allclose(got, ref[rows], rtol=1e-9, atol=1e-9, equal_nan=True)


@settings(max_examples=10, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    shape=st.tuples(st.integers(60, 140), st.integers(60, 140)),
    tile=st.tuples(st.integers(9, 80), st.integers(9, 80)),
    halo=st.integers(5, 30),
    n_sources=st.integers(0, 30),
    noise_map=st.booleans(),
    filter_type=st.sampled_from(["matched", "conv"]),
)
def test_tiled_equals_whole_image_sep(scene_factory, seed, shape, tile, halo, n_sources, noise_map, filter_type):
    img, _ = scene_factory(seed, shape=shape, n_sources=n_sources, sigma=(0.8, 10.0))
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, bool)
    y, x = rng.integers(0, shape[0] - 5), rng.integers(0, shape[1] - 12)
    mask[y : y + 5, x : x + 12] = True
    err = 1.0 + 0.5 * rng.random(shape) if noise_map else None
    thr = 2.0 if noise_map else 2.5
    o, cols = whole_image(img, thr, err=err, mask=mask, filter_type=filter_type)
    t = tiled(img, thr, err=err, mask=mask, tile=tile, halo=halo, deblend_cont=1.0, filter_type=filter_type)
    assert len(t) == len(o)
    if len(o):
        assert_rows_equal(t, o, cols)


def test_source_larger_than_halo_and_tiles():
    yy, xx = np.mgrid[:140, :150]
    img = 100 * np.exp(-((xx - 71.3) ** 2 + (yy - 68.7) ** 2) / (2 * 20.0**2))  # ~110 px across
    img += 30 * np.exp(-((xx - 20.2) ** 2 + (yy - 120.4) ** 2) / (2 * 2.0**2))
    img += np.random.default_rng(3).normal(0, 0.3, img.shape)
    o, cols = whole_image(img, 1.5)
    t = tiled(img, 1.5, tile=(13, 17), halo=6, deblend_cont=1.0)
    assert len(t) == len(o) >= 2
    assert t["area"].value.max() > 5000  # the large source, extracted on its own box
    assert_rows_equal(t, o, cols)


def test_deblending_same_sources(scene):
    """SEP hands the pixels between deblended children out at random, from one random stream per
    call consumed in scan order: no tiling reproduces those pixels. Sources it did not split are
    equal; children are the same in number, each within 0.5 px, and their families hold the same pixels."""
    img = scene[0]
    o, cols = whole_image(img, 1.5, deblend_cont=0.005)
    t = tiled(img, 1.5, tile=(37, 41), halo=12, deblend_cont=0.005)
    assert len(t) == len(o)
    merged = (o["flag"] & sep.OBJ_MERGED) > 0
    assert merged.sum() >= 4  # the scene has blends
    whole_rows = np.flatnonzero(~merged)
    got = {(round(x, 6), round(y, 6)): i for i, (x, y) in enumerate(zip(t["x_centroid"].value, t["y_centroid"].value, strict=True))}
    idx = np.array([got[(round(o["x"][i], 6), round(o["y"][i], 6))] for i in whole_rows])
    sub = t[idx]
    assert_rows_equal(sub, o[whole_rows], {k: v[whole_rows] for k, v in cols.items()})
    tm = (t["flags"] & sep.OBJ_MERGED) > 0
    assert tm.sum() == merged.sum()
    d = np.hypot(t["x_centroid"].value[tm][:, None] - o["x"][merged][None], t["y_centroid"].value[tm][:, None] - o["y"][merged][None])
    assert d.min(axis=1).max() < 0.5
    assert t["area"].value[tm].sum() == o["npix"][merged].sum()


def test_whole_image_path_equals_sep(scene):
    """``whole=True``: one task reads the lazy inputs and runs SEP on the whole image; every row
    equals SEP's, deblended children included (one call, one random stream)."""
    import dask.array as da

    img = scene[0]
    rng = np.random.default_rng(5)
    err = 0.8 + 0.4 * rng.random(img.shape)
    mask = np.zeros(img.shape, bool)
    mask[40:46, 100:130] = True
    o, cols = whole_image(img, 1.5, err=err, mask=mask, deblend_cont=0.005)
    lazy = [da.from_array(a, chunks=(37, 41)) for a in (img, err, mask)]
    t = tiled(lazy[0], 1.5, err=lazy[1], mask=lazy[2], deblend_cont=0.005, tile=(37, 41), whole=True)
    assert len(t) == len(o) > 10
    assert ((o["flag"] & sep.OBJ_MERGED) > 0).sum() >= 4
    assert_rows_equal(t, o, cols)
    with pytest.raises(ValueError, match=r"err has shape \(3, 3\); expected the image shape"):
        tiled(img, 1.5, err=np.ones((3, 3)), whole=True)


def test_no_sources_and_bad_input():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoWCSWarning)
        with pytest.warns(NoDetectionsWarning):
            t = sep_catalog(np.zeros((40, 50)), 1.0, tile=16, halo=8)
    assert len(t) == 0
    with pytest.raises(ValueError, match="halo 2 is too small"):
        sep_catalog(np.zeros((40, 50)), 1.0, halo=2)
    with pytest.raises(ValueError, match="threshold must be a positive number"):
        sep_catalog(np.zeros((40, 50)), 0.0)


@pytest.mark.parametrize("whole", [[], ["--sep-whole-mpix", "0"]], ids=["whole-image-task", "tiles"])
def test_mosaic_detect_engine_sep(tmp_path, scene, whole, capsys):
    """``mosaic detect --engine sep`` on an i2d file: SEP on the whole image with ERR, masked zero
    weights; in one task (the image fits in memory) or in tiles."""
    from astropy.io import fits

    from mosaic.cli import main
    from mosaic.io.catalogs import read_catalog

    img, _, mask = scene
    err = np.full(img.shape, 0.9)
    wht = np.where(mask, 0.0, 1.0)
    path = tmp_path / "img_i2d.fits"
    hdus = [fits.PrimaryHDU(), fits.ImageHDU(img.astype(np.float32), name="SCI"), fits.ImageHDU(err.astype(np.float32), name="ERR"),
            fits.ImageHDU(wht.astype(np.float32), name="WHT")]
    fits.HDUList(hdus).writeto(path)
    out = tmp_path / "cat.ecsv"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoWCSWarning)
        assert main(["--log-level", "INFO", "detect", str(path), "--out", str(out), "--engine", "sep", "--tile", "48", "--fwhm", "0",
                     "--npixels", "5", *whole]) == 0
    log = capsys.readouterr().err
    assert ("sep: extract the whole image: done" in log) == (not whole)
    assert ("sep: extract tiles: done" in log) == bool(whole)
    t = read_catalog(out)
    # the measured noise: ERR (0.9) scaled to the scene's unit noise
    k = t.meta["noise_scale"]
    assert k == pytest.approx(1 / 0.9, rel=0.03)
    data = np.where(mask, 0.0, img.astype(np.float32).astype(np.float64))
    rms = np.where(mask, np.inf, err.astype(np.float32).astype(np.float64))
    o, cols = whole_image(data, 1.5 * k, err=rms, mask=mask, filter_kernel=None)
    assert len(t) == len(o) > 10
    assert t.meta["engine"] == "sep"
    assert_rows_equal(t, o, cols)
