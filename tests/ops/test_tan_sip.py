"""The compiled TAN-SIP pixel map against astropy's two calls (wcslib), and where it does not apply."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.wcs import WCS
from drizzle.utils import calc_pixmap as drizzle_calc_pixmap
from hypothesis import given, settings
from hypothesis import strategies as st

from mosaic.ops.pixmap import calc_pixmap
from mosaic.ops.tan_sip import tan_sip_map
from mosaic.simulate.pointing import detector_cutout_wcs

SHAPE = (120, 140)
#: astropy works in degrees: its own rounding moves positions of 0.03" pixels by ~1e-8 pixel
ATOL_PIX = 1e-7


def grid_wcs(ra, dec, *, scale_arcsec=0.0155, rot_deg=0.0, crpix=(400.0, 300.0)) -> WCS:
    g = WCS(naxis=2)
    g.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    g.wcs.crval = [ra, dec]
    g.wcs.crpix = list(crpix)
    g.wcs.cdelt = [-scale_arcsec / 3600.0, scale_arcsec / 3600.0]
    c, s = np.cos(np.radians(rot_deg)), np.sin(np.radians(rot_deg))
    g.wcs.pc = [[c, -s], [s, c]]
    g.wcs.set()
    return g


def exposure_wcs(ra, dec, roll_deg, sip_scale=1.0) -> WCS:
    w = detector_cutout_wcs(SHAPE, corner=(900, 700), roll_deg=roll_deg)
    w.wcs.crval = [ra, dec]
    if w.sip is not None and sip_scale != 1.0:
        from astropy.wcs import Sip

        w.sip = Sip(w.sip.a * sip_scale, w.sip.b * sip_scale, None, None, w.sip.crpix)
    w.wcs.set()
    return w


def astropy_map(we, wg, x, y):
    return wg.world_to_pixel_values(*we.pixel_to_world_values(x, y))


@settings(max_examples=40, deadline=None)
@given(
    ra=st.floats(0.0, 360.0), dec=st.floats(-89.9, 89.9), roll=st.floats(0.0, 360.0), rot=st.floats(-180.0, 180.0),
    d_ra=st.floats(-0.01, 0.01), d_dec=st.floats(-0.01, 0.01), sip_scale=st.sampled_from([0.0, 1.0, 3.0]),
)
def test_equals_astropy_anywhere_on_the_sky(ra, dec, roll, rot, d_ra, d_dec, sip_scale):
    """Any roll, any grid rotation, at the poles and across RA 0/360, with and without SIP."""
    we = exposure_wcs(ra, dec, roll, sip_scale)
    wg = grid_wcs((ra + d_ra) % 360.0, float(np.clip(dec + d_dec, -89.95, 89.95)), rot_deg=rot)
    m = tan_sip_map(we, wg)
    assert m is not None
    y, x = np.mgrid[0 : SHAPE[0] : 7, 0 : SHAPE[1] : 9].astype(np.float64)
    x = x + 0.25  # off-integer positions too (corners)
    ax, ay = astropy_map(we, wg, x, y)
    bx, by = m(x, y)
    np.testing.assert_allclose(bx, ax, rtol=0, atol=ATOL_PIX)
    np.testing.assert_allclose(by, ay, rtol=0, atol=ATOL_PIX)


def test_points_beyond_the_grid_horizon_are_nan():
    we = exposure_wcs(10.0, 0.0, 0.0)
    wg = grid_wcs(190.0, 0.0)  # the exposure is on the far side of the grid's sky
    bx, by = tan_sip_map(we, wg)(np.array([0.0, 50.0]), np.array([0.0, 60.0]))
    assert np.isnan(bx).all() and np.isnan(by).all()


def _with(w, **changes):
    w = w.deepcopy()
    for k, v in changes.items():
        setattr(w.wcs, k, v)
    w.wcs.set()
    return w


@pytest.mark.parametrize(
    "case",
    ["sin grid", "sip grid", "dec first", "pv", "not astropy"],
)
def test_frames_it_does_not_reproduce_fall_back_to_astropy(case):
    we = exposure_wcs(53.1, -27.8, 20.0)
    wg = grid_wcs(53.1, -27.8)
    if case == "sin grid":
        wg = _with(wg, ctype=["RA---SIN", "DEC--SIN"])
    elif case == "sip grid":
        wg = we.deepcopy()
    elif case == "dec first":
        wg = _with(wg, ctype=["DEC--TAN", "RA---TAN"], crval=[-27.8, 53.1])
    elif case == "pv":
        wg = wg.deepcopy()
        wg.wcs.set_pv([(2, 1, 0.01)])
        wg.wcs.set()
    elif case == "not astropy":
        wg = object()
    assert tan_sip_map(we, wg) is None
    if case in ("sin grid", "dec first"):
        # calc_pixmap then makes astropy's calls: the drizzle package's map, bit for bit
        we.pixel_shape = (SHAPE[1], SHAPE[0])
        np.testing.assert_array_equal(calc_pixmap(we, wg, shape=SHAPE, compiled=True), drizzle_calc_pixmap(we, wg, SHAPE))


def test_calc_pixmap_uses_it_when_asked_and_stays_within_rounding_of_the_drizzle_package():
    we = exposure_wcs(150.1, 2.2, 33.0)
    we.pixel_shape = (SHAPE[1], SHAPE[0])
    wg = grid_wcs(150.1, 2.2, rot_deg=-12.0)
    ref = drizzle_calc_pixmap(we, wg, SHAPE)
    np.testing.assert_array_equal(calc_pixmap(we, wg, shape=SHAPE), ref)  # by default: astropy's calls
    got = calc_pixmap(we, wg, shape=SHAPE, compiled=True)
    np.testing.assert_allclose(got, ref, rtol=0, atol=ATOL_PIX)
    y, x = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]].astype(np.float64)
    np.testing.assert_array_equal(got, np.dstack(tan_sip_map(we, wg)(x, y)))
    # per pixel: a region of rows with their own columns maps to the whole map's numbers
    lo, hi = np.full(SHAPE[0], 20), np.arange(SHAPE[0]) % 50 + 60
    part = calc_pixmap(we, wg, (slice(0, SHAPE[0]), slice(0, SHAPE[1])), columns=(lo, hi), halo_rows=1, compiled=True)
    mapped = np.isfinite(part[..., 0])
    assert mapped.sum() > 0.2 * mapped.size
    np.testing.assert_array_equal(part[mapped], got[mapped])


@settings(max_examples=30, deadline=None)
@given(
    y0=st.integers(0, 60), x0=st.integers(0, 60), ny=st.integers(1, 60), nx=st.integers(1, 80), halo=st.integers(0, 3),
    seed=st.integers(0, 2**32 - 1), offset=st.tuples(st.integers(-300, 300), st.integers(-300, 300)),
)
def test_rows_written_straight_into_the_map_equal_the_whole_map_and_map_the_same_pixels(y0, x0, ny, nx, halo, seed, offset):
    """The compiled row walk (:meth:`TanSipMap.rows`, what ``calc_pixmap`` runs with ``columns``)
    against the compiled whole box to the bit, and against astropy's row map for which pixels
    are mapped (columns beyond the region, rows with none, offsets)."""
    we = exposure_wcs(150.1, 2.2, 71.0)
    wg = grid_wcs(150.1, 2.2, rot_deg=25.0)
    ny, nx = min(ny, SHAPE[0] - y0), min(nx, SHAPE[1] - x0)
    region = (slice(y0, y0 + ny), slice(x0, x0 + nx))
    rng = np.random.default_rng(seed)
    lo = rng.integers(x0 - 10, x0 + nx + 5, ny)
    hi = lo + rng.integers(-5, nx + 10, ny)
    got = calc_pixmap(we, wg, region, columns=(lo, hi), halo_rows=halo, compiled=True, offset=offset)
    whole = calc_pixmap(we, wg, region, compiled=True, offset=offset)
    by_astropy = calc_pixmap(we, wg, region, columns=(lo, hi), halo_rows=halo, offset=offset)
    mapped = np.isfinite(got)
    np.testing.assert_array_equal(mapped, np.isfinite(by_astropy))
    np.testing.assert_array_equal(got[mapped], whole[mapped])
    np.testing.assert_allclose(got[mapped], by_astropy[mapped], rtol=0, atol=ATOL_PIX)
