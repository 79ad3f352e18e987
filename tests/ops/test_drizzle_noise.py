"""The drizzle's noise correlation against drizzled white noise and Casertano et al.'s large-area ratio."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.wcs import WCS
from drizzle.resample import Drizzle
from drizzle.utils import calc_pixmap
from hypothesis import given
from hypothesis import strategies as st
from photutils.aperture import CircularAperture, aperture_photometry

from mosaic.ops.drizzle_noise import aperture_noise_factor, drop_size, lag_correlation

SCALE = 0.031 / 3600


def _wcs(crpix, scale, roll):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = crpix
    c, s = np.cos(np.radians(roll)), np.sin(np.radians(roll))
    w.wcs.cd = scale * np.array([[-c, s], [s, c]])
    return w


def _aperture_pulls(kernel, pixfrac, psr, radii, *, n_exp=8, n_in=320, seed=0):
    """White noise (sigma 1) in ``n_exp`` exposures at random sub-pixel offsets and rolls, drizzled
    by the ``drizzle`` package with its variances; per radius, the standard deviation of aperture
    sums over photutils' errors from the drizzled ERR, on a lattice of apertures far enough apart
    to be independent."""
    rng = np.random.default_rng(seed)
    n_out = int(n_in / psr)
    out = _wcs([n_out / 2 + 0.5, n_out / 2 + 0.5], SCALE * psr, 0.0)
    d = Drizzle(kernel=kernel, out_shape=(n_out, n_out))
    for _ in range(n_exp):
        w = _wcs([n_in / 2 + rng.uniform(-3, 3), n_in / 2 + rng.uniform(-3, 3)], SCALE, rng.uniform(0, 360))
        ones = np.ones((n_in, n_in), np.float32)
        d.add_image(rng.normal(size=(n_in, n_in)).astype(np.float32), exptime=1.0, pixmap=calc_pixmap(w, out, (n_in, n_in)),
                    data2=[ones], weight_map=ones, pixfrac=pixfrac, pixel_scale_ratio=psr)
    # output pixels no drop reached are NaN: no value and no noise (the point kernel leaves many)
    img, err = np.nan_to_num(d.out_img), np.sqrt(np.nan_to_num(d.out_img2[0]))
    pulls = {}
    for r in radii:
        centres = np.arange(int(0.25 * n_out), int(0.75 * n_out), 2 * r + 6) + rng.uniform(0, 1)
        xy = np.array([(x, y) for x in centres for y in centres])
        t = aperture_photometry(img, CircularAperture(xy, r), error=err)
        s, e = np.asarray(t["aperture_sum"]), np.asarray(t["aperture_sum_err"])
        ok = np.isfinite(s) & (e > 0)
        assert ok.sum() > 200
        pulls[r] = float(np.std(s[ok] / e[ok]))
    return pulls


@pytest.mark.parametrize(("pixfrac", "psr"), [(1.0, 0.5), (0.6, 0.5), (0.8, 0.65)])
def test_factor_is_the_scatter_of_aperture_sums_on_drizzled_white_noise(pixfrac, psr):
    # the simulated truth: apertures on white noise drizzled by the package, over photutils'
    # sqrt(sum ERR²); two realisations of ~400-900 apertures each (a few per cent each)
    radii = (2.0, 5.0)
    runs = [_aperture_pulls("square", pixfrac, psr, radii, seed=s) for s in (1, 2)]
    model = aperture_noise_factor(radii, drop_size("square", pixfrac, psr))
    for r, f in zip(radii, model, strict=True):
        measured = np.mean([run[r] for run in runs])
        assert measured == pytest.approx(f, rel=0.06), (r, measured, f)
    if pixfrac == 1.0:  # the error photutils reports is about half the truth here
        assert min(np.mean([run[r] for run in runs]) for r in radii) > 1.7


def test_point_kernel_leaves_the_noise_independent():
    # no drop, no correlation: what is left is photutils' sqrt(sum w ERR²) over the circle's edge
    # pixels (the independent noise of a sum with weights w is sqrt(sum w² ERR²))
    pulls = _aperture_pulls("point", 1.0, 0.5, (3.0, 8.0), seed=3)
    assert drop_size("point", 1.0, 0.5) == 0.0
    model = aperture_noise_factor([3.0, 8.0, 100.0], 0.0)
    assert pulls[3.0] == pytest.approx(model[0], rel=0.06)
    assert pulls[8.0] == pytest.approx(model[1], rel=0.06)
    assert model[0] < model[1] < model[2] == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("drop", [1.2, 2.0, 3.0])
def test_large_apertures_reach_casertanos_ratio(drop):
    # Casertano et al. (2000), Fruchter & Hook (2002): over large areas the noise is R = s / (1 -
    # 1 / (3 s)) times the per-pixel one, for drops of s >= 1 output pixels
    expected = drop / (1.0 - 1.0 / (3.0 * drop))
    assert float(aperture_noise_factor(5000.0, drop)) == pytest.approx(expected, rel=2e-3)


def test_lag_correlation_of_a_two_pixel_drop():
    # (tri_2 * tri_1)(k) by hand: 5/3, 1, 1/6 and 0 at k = 0, 1, 2, 3
    rho = lag_correlation(2.0)
    np.testing.assert_allclose(rho, [1.0, 3.0 / 5.0, 1.0 / 10.0], atol=1e-6)
    np.testing.assert_array_equal(lag_correlation(0.0), [1.0])


@given(drop=st.floats(1.0, 4.0), r=st.floats(1.0, 200.0), k=st.floats(1.05, 3.0))
def test_factor_grows_with_the_aperture_towards_the_large_area_ratio(drop, r, k):
    f, g = (float(v) for v in aperture_noise_factor([r, k * r], drop))
    limit = drop / (1.0 - 1.0 / (3.0 * drop))
    assert 1.0 < f <= g * (1 + 1e-3)  # exact pixel weights and the continuous circle meet within 0.3 %
    assert g <= limit * (1 + 2e-3)


def test_factor_keeps_shape_nan_and_zero():
    out = aperture_noise_factor(np.array([[0.0, np.nan], [3.0, 40.0]]), 2.0)
    assert out.shape == (2, 2)
    assert out[0, 0] == 1.0
    assert np.isnan(out[0, 1])
    assert 1.9 < out[1, 0] < out[1, 1] < 2.4


def test_drop_size_by_kernel():
    assert drop_size("square", 1.0, 0.5) == 2.0
    assert drop_size("TURBO", 0.6, 0.5) == pytest.approx(1.2)
    assert drop_size("lanczos3", 1.0, 0.5) is None
    assert drop_size("gaussian", 1.0, 0.5) is None
    with pytest.raises(ValueError, match="pixfrac"):
        drop_size("square", 0.0, 0.5)
    with pytest.raises(ValueError, match="pixel_scale_ratio"):
        drop_size("square", 1.0, float("nan"))
