"""Drizzle and blot operators against the drizzle package, and the adjoint pair D, D^T."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from astropy.wcs import WCS
from drizzle.resample import Drizzle, blot_image
from drizzle.utils import calc_pixmap
from hypothesis import given, settings
from hypothesis import strategies as st

from mosaic.io.grid import MosaicGrid
from mosaic.ops.drizzle import (
    KERNELS,
    DrizzleInput,
    _bands,
    blot,
    blot_exact,
    blot_interp,
    combine_partials,
    drizzle_block,
    drizzle_linear,
    drizzle_partial,
    drizzle_tile,
    empty_partial,
    finalize_partial,
    kernel_radius,
    weight_map,
)
from mosaic.simulate.pointing import detector_cutout_wcs

SHAPE = (90, 100)
PSR = 0.5


def sip_wcs(shape=SHAPE, corner=(150, 1800), roll_deg=0.0) -> WCS:
    return detector_cutout_wcs(shape, corner=corner, roll_deg=roll_deg)


@pytest.fixture(scope="module")
def geometry():
    """An exposure, a north-up grid (rotated ~70 deg from the detector) and the pixel map."""
    w = sip_wcs(roll_deg=3.0)
    grid = MosaicGrid.from_exposures([w], [SHAPE], psr=PSR, tile=64)
    return w, grid, calc_pixmap(w, grid.wcs, SHAPE)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(42)
    sci = rng.uniform(0.5, 2.0, SHAPE).astype(np.float32)
    wht = rng.uniform(0.2, 1.0, SHAPE).astype(np.float32)
    wht[rng.random(SHAPE) < 0.03] = 0.0
    var = rng.uniform(0.01, 0.1, SHAPE).astype(np.float32)
    return sci, wht, var


def _quiet():
    """drizzle warns (from C, as a bare Warning) that gaussian and lanczos lose flux."""
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.filterwarnings("ignore", "Kernel '.*' is not a flux-conserving kernel")
    return ctx


def _whole(sci, wht, var, pixmap, shape, kernel, pixfrac):
    ctx = _quiet()
    try:
        d = Drizzle(kernel=kernel, out_shape=shape)
        d.add_image(sci, exptime=1.0, pixmap=pixmap, data2=[var], weight_map=wht, pixfrac=pixfrac, pixel_scale_ratio=PSR)
    finally:
        ctx.__exit__(None, None, None)
    return d


@pytest.mark.parametrize("kernel", KERNELS)
@settings(max_examples=6, deadline=None)
@given(y0=st.integers(0, 180), x0=st.integers(0, 180), h=st.integers(3, 120), w=st.integers(3, 120))
def test_block_equals_its_part_of_a_whole_drizzle(geometry, data, kernel, y0, x0, h, w):
    _, grid, pixmap = geometry
    sci, wht, var = data
    pixfrac = 0.7 if kernel in ("square", "turbo", "gaussian") else 1.0
    ref = _whole(sci, wht, var, pixmap, grid.shape, kernel, pixfrac)
    block = (slice(y0, min(y0 + h, grid.shape[0])), slice(x0, min(x0 + w, grid.shape[1])))
    shape = (block[0].stop - block[0].start, block[1].stop - block[1].start)
    pm = pixmap - np.array([x0, y0], dtype=float)
    ctx = _quiet()
    try:
        got = drizzle_tile(sci, pm, shape, weight_map=wht, variances=[var], pixfrac=pixfrac, kernel=kernel, pixel_scale_ratio=PSR)
    finally:
        ctx.__exit__(None, None, None)
    np.testing.assert_array_equal(got.sci, ref.out_img[block])
    np.testing.assert_array_equal(got.wht, ref.out_wht[block])
    np.testing.assert_array_equal(got.ctx, ref.out_ctx[0][block] != 0)
    np.testing.assert_array_equal(got.var[0], ref.out_img2[0][block])


@settings(max_examples=8, deadline=None)
@given(
    y0=st.integers(0, 180), x0=st.integers(0, 180), h=st.integers(3, 120), w=st.integers(3, 120),
    exposures=st.lists(st.integers(0, 39), min_size=1, max_size=3, unique=True),
)
def test_inputs_of_a_block_equal_their_part_of_one_whole_drizzle(geometry, data, y0, x0, h, w, exposures):
    """Several inputs on one block == one whole-output Drizzle adding them in the same order."""
    w_exp, grid, pixmap = geometry
    sci, wht, var = data
    # the others: the same detector dithered by whole output pixels, other values
    shifts = [(0.0, 0.0), (7.0, -5.0), (-11.0, 13.0)][: len(exposures)]
    rng = np.random.default_rng(len(exposures))
    inputs = [(sci if i == 0 else rng.uniform(0.5, 2.0, SHAPE).astype(np.float32), pixmap + s) for i, s in enumerate(shifts)]
    n_planes = 2  # exposure numbers up to 39 use the second context plane
    # the reference's output holds every shifted footprint whole (20 pixels more on each side)
    big = (grid.shape[0] + 40, grid.shape[1] + 40)
    ref = Drizzle(kernel="square", out_shape=big, begin_ctx_id=0, max_ctx_id=32 * n_planes - 1)
    for (x, pm), k in zip(inputs, exposures, strict=True):
        ref._ctx_id = k  # the reference numbers its inputs as the mosaic does
        ref.add_image(x, exptime=1.0, pixmap=pm + 20, data2=[var, 2 * var], weight_map=wht, pixfrac=0.8, pixel_scale_ratio=PSR)
    shape = (min(h, grid.shape[0] - y0), min(w, grid.shape[1] - x0))
    block = (slice(y0 + 20, y0 + 20 + shape[0]), slice(x0 + 20, x0 + 20 + shape[1]))
    got = drizzle_block(
        [DrizzleInput(x, pm - np.array([x0, y0], float), wht, (var, 2 * var), k, PSR) for (x, pm), k in zip(inputs, exposures, strict=True)],
        shape, n_planes=n_planes, pixfrac=0.8,
    )
    np.testing.assert_allclose(got["sci"], ref.out_img[block], rtol=1e-6)
    np.testing.assert_allclose(got["wht"], ref.out_wht[block], rtol=1e-6)
    np.testing.assert_array_equal(got["con"], ref.out_ctx[(slice(None), *block)])
    for mine, theirs in zip(got["var"], ref.out_img2, strict=True):
        np.testing.assert_allclose(mine, theirs[block], rtol=1e-6)
    want_err = np.sqrt(ref.out_img2[0][block].astype(float) + ref.out_img2[1][block])
    np.testing.assert_allclose(got["err"], want_err, rtol=1e-6)


def test_block_inputs_must_agree(geometry, data):
    _, _, pixmap = geometry
    sci, wht, var = data
    one = DrizzleInput(sci, pixmap, wht, (var,), 0, PSR)
    with pytest.raises(ValueError, match="exposure 1 has 0 variance arrays; expected 1"):
        drizzle_block([one, one._replace(exposure=1, variances=())], (10, 10))
    with pytest.raises(ValueError, match="exposure number 32 does not fit 1 context planes"):
        drizzle_block([one._replace(exposure=32)], (10, 10), n_planes=1)
    with pytest.raises(ValueError, match="exposure 0: pixmap has shape"):
        drizzle_block([one._replace(pixmap=pixmap[:5])], (10, 10))


@settings(max_examples=40, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 40), st.integers(1, 40)), density=st.floats(0.0, 1.0),
    band_rows=st.integers(0, 12), seed=st.integers(0, 2**16),
)
def test_bands_are_disjoint_and_hold_every_near_pixel(shape, density, band_rows, seed):
    near = np.random.default_rng(seed).random(shape) < density * 0.2
    bands = _bands(near, band_rows)
    if not near.any() or min(shape) < 2:
        assert bands == []
        return
    count = np.zeros(shape, int)
    for y0, y1, x0, x1 in bands:
        assert 0 <= y0 < y1 < shape[0] and 0 <= x0 < x1 < shape[1]  # at least 2 x 2, on the image
        count[y0 : y1 + 1, x0 : x1 + 1] += 1
    assert count.max() == 1  # disjoint: no pixel is drizzled twice
    assert (count[near] == 1).all()
    ys = [b[0] for b in bands]
    assert ys == sorted(ys)  # in row order, as one pass would go


def test_banded_drizzle_equals_one_pass_to_the_bit(geometry, data):
    _, grid, pixmap = geometry
    sci, wht, var = data
    pm = pixmap - np.array([40.0, 60.0])
    one = drizzle_tile(sci, pm, (90, 70), weight_map=wht, variances=[var], pixel_scale_ratio=PSR, band_rows=0)
    for rows in (2, 5, 32):
        banded = drizzle_tile(sci, pm, (90, 70), weight_map=wht, variances=[var], pixel_scale_ratio=PSR, band_rows=rows)
        for a, b in ((one.sci, banded.sci), (one.wht, banded.wht), (one.ctx, banded.ctx), (one.var[0], banded.var[0])):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("psr", [0.5, 1.0])
def test_kernel_radius_bounds_the_footprint(geometry, kernel, psr):
    w, _, _ = geometry
    grid = MosaicGrid.from_exposures([w], [SHAPE], psr=psr, tile=64)
    pixmap = calc_pixmap(w, grid.wcs, SHAPE)
    reach = kernel_radius(kernel, pixfrac=1.0, pixel_scale_ratio=psr)
    for j, i in ((45, 50), (1, 1), (88, 97)):
        one = np.zeros(SHAPE, np.float32)
        one[j, i] = 1.0
        ctx = _quiet()
        try:
            d = Drizzle(kernel=kernel, out_shape=grid.shape)
            d.add_image(np.ones(SHAPE, np.float32), exptime=1.0, pixmap=pixmap, weight_map=one, pixel_scale_ratio=psr)
        finally:
            ctx.__exit__(None, None, None)
        yy, xx = np.nonzero(d.out_wht)
        assert len(yy) > 0
        ox, oy = pixmap[j, i]
        assert np.abs(xx - ox).max() <= reach and np.abs(yy - oy).max() <= reach


def test_partials_add_up_to_a_sequential_drizzle(geometry, data):
    w, grid, pixmap = geometry
    sci, wht, var = data
    rng = np.random.default_rng(7)
    w2 = sip_wcs(roll_deg=3.0 + 0.3)
    # an output with room around both footprints (the package drops input pixels that
    # straddle its output's border; drizzle_tile never does)
    shape = (grid.shape[0] + 60, grid.shape[1] + 60)
    pm1 = pixmap + 30.0
    pm2 = calc_pixmap(w2, grid.wcs, SHAPE) + 30.0 + rng.uniform(-1, 1, size=2)
    sci2 = (sci * 1.1).astype(np.float32)
    ref = Drizzle(out_shape=shape, begin_ctx_id=0, max_ctx_id=1)
    tiles, parts = [], []
    for k, (s, pm) in enumerate(((sci, pm1), (sci2, pm2))):
        ref.add_image(s, exptime=1.0, pixmap=pm, data2=[var], weight_map=wht)
        t = drizzle_tile(s, pm, shape, weight_map=wht, variances=[var])
        tiles.append(t)
        parts.append(drizzle_partial(t, k, n_planes=1))
    out = finalize_partial(combine_partials(*parts))
    ok = ~np.isnan(ref.out_img)
    np.testing.assert_array_equal(np.isnan(out["sci"]), ~ok)
    np.testing.assert_allclose(out["sci"][ok], ref.out_img[ok], rtol=1e-6)
    np.testing.assert_allclose(out["wht"], ref.out_wht, rtol=1e-6)
    np.testing.assert_allclose(out["var"][0][ok], ref.out_img2[0][ok], rtol=1e-6)
    np.testing.assert_array_equal(out["con"], ref.out_ctx)
    np.testing.assert_allclose(out["err"][ok], np.sqrt(ref.out_img2[0][ok]), rtol=1e-6)
    # an empty partial changes nothing
    again = finalize_partial(combine_partials(empty_partial(shape, n_planes=1, n_var=1), *parts))
    np.testing.assert_array_equal(again["sci"], out["sci"])


def test_context_bits_past_32():
    t = drizzle_tile(np.ones((4, 4), np.float32), np.dstack(np.meshgrid(np.arange(4.0), np.arange(4.0))), (4, 4))
    p31 = drizzle_partial(t, 31, n_planes=2)
    p40 = drizzle_partial(t, 40, n_planes=2)
    con = combine_partials(p31, p40).con
    assert con.dtype == np.int32
    assert con[0, 1, 1] == np.int32(-(2**31))  # bit 31: the sign bit of an int32
    assert con[1, 1, 1] == 1 << 8
    with pytest.raises(ValueError, match="does not fit 2 context planes"):
        drizzle_partial(t, 64, n_planes=2)


def test_weight_maps():
    good = np.array([[True, True, False, True]])
    vr = np.array([[4.0, np.nan, 4.0, 0.0]])
    np.testing.assert_array_equal(weight_map(good, vr, weight="ivm"), [[0.25, 0, 0, 0]])
    np.testing.assert_array_equal(weight_map(good, weight="exptime", exptime=100.0), [[100, 100, 0, 100]])
    np.testing.assert_array_equal(weight_map(good, weight="uniform"), [[1, 1, 0, 1]])
    assert weight_map(good, vr).dtype == np.float32
    with pytest.raises(ValueError, match=r"weight 'ivn' is not supported; expected one of \('ivm', 'exptime', 'uniform'\)"):
        weight_map(good, vr, weight="ivn")
    with pytest.raises(ValueError, match="needs var_rnoise"):
        weight_map(good, weight="ivm")
    with pytest.raises(ValueError, match="needs a positive exposure time"):
        weight_map(good, weight="exptime", exptime=np.nan)


def test_bad_arguments_name_the_allowed_values():
    pm = np.zeros((3, 3, 2))
    with pytest.raises(ValueError, match="kernel 'box' is not supported; expected one of"):
        drizzle_tile(np.ones((3, 3)), pm, (4, 4), kernel="box")
    with pytest.raises(ValueError, match="pixfrac must be a number above 0.001"):
        kernel_radius("square", pixfrac=0.0)
    with pytest.raises(ValueError, match="pixmap has shape"):
        drizzle_tile(np.ones((3, 4)), pm, (4, 4))
    with pytest.raises(ValueError, match="interp 'cubic' is not supported"):
        blot_interp(np.ones((3, 3)), pm, interp="cubic")
    with pytest.raises(ValueError, match="blot method 'area' is not supported"):
        blot(np.ones((3, 3)), pm, method="area")


# -- D and its transpose -------------------------------------------------------------------------


def test_drizzle_linear_is_the_package_numerator(geometry):
    """``D x`` = drizzle's ``out_img * out_wht`` with unit weights, pixfrac 1, square kernel."""
    _, grid, pixmap = geometry
    x = np.random.default_rng(1).uniform(0, 1, SHAPE).astype(np.float32)
    d = Drizzle(out_shape=grid.shape)
    d.add_image(x, exptime=1.0, pixmap=pixmap)
    ref = np.nan_to_num(d.out_img).astype(np.float64) * d.out_wht
    got = drizzle_linear(x, pixmap, grid.shape)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6 * ref.max())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_blot_is_the_transpose_of_drizzle(geometry, seed):
    """Dot-product test ``<D x, y> = <x, D^T y>`` with D from the drizzle package itself."""
    _, grid, pixmap = geometry
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, SHAPE).astype(np.float32)
    y = rng.uniform(0, 1, grid.shape)
    d = Drizzle(out_shape=grid.shape)
    d.add_image(x, exptime=1.0, pixmap=pixmap, pixfrac=1.0)
    dx = np.nan_to_num(d.out_img).astype(np.float64) * d.out_wht
    lhs = np.sum(dx * y)
    rhs = np.sum(x.astype(np.float64) * blot_exact(y, pixmap, normalize=False))
    assert rhs == pytest.approx(lhs, rel=1e-5)
    # and to round-off with our own D
    assert np.sum(drizzle_linear(x, pixmap, grid.shape) * y) == pytest.approx(rhs, rel=1e-12)


def test_blot_of_drizzle_reproduces_a_smooth_image(geometry):
    w, grid, pixmap = geometry
    y, x = np.indices(SHAPE, dtype=float)
    smooth = 1.0 + 0.5 * np.sin(x / 13.0) * np.cos(y / 17.0) + 0.002 * x
    d = Drizzle(out_shape=grid.shape)
    d.add_image(smooth.astype(np.float32), exptime=1.0, pixmap=pixmap)
    back = blot_exact(d.out_img, pixmap)
    inner = (slice(3, -3), slice(3, -3))
    # drizzle then blot smooths by about a pixel: second order in (1 px / 13 px)
    np.testing.assert_allclose(back[inner], smooth[inner], rtol=3e-3)
    # a constant comes back exactly, even where the image is partly missing (NaN)
    const = np.full(grid.shape, 2.5)
    const[:40] = np.nan
    b = blot_exact(const, pixmap)
    ok = np.isfinite(b)
    assert ok.sum() > 0.5 * b.size
    np.testing.assert_allclose(b[ok], 2.5, rtol=1e-12)


def test_interpolating_blot_is_the_package_blot(geometry):
    _, grid, pixmap = geometry
    img = np.random.default_rng(3).uniform(0, 1, grid.shape).astype(np.float32)
    for interp in ("poly5", "linear", "lanczos3"):
        want = blot_image(img, pixmap, fillval=np.nan, interp=interp)
        np.testing.assert_array_equal(blot_interp(img, pixmap, interp=interp), want)
        np.testing.assert_array_equal(blot(img, pixmap, method="interp", interp=interp), want)
    np.testing.assert_array_equal(blot(img, pixmap), blot_exact(img, pixmap))
    pm = pixmap.copy()
    pm[0, 0] = np.nan
    out = blot_interp(img, pm, fillval=-1.0)
    assert out[0, 0] == -1.0 and out[1, 1] == blot_image(img, pixmap, fillval=-1.0)[1, 1]
