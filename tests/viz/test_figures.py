"""Report figures: the scale bar and N/E arrows follow the WCS, one stretch is shared by every panel."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from astropy.visualization import AsinhStretch  # noqa: E402
from astropy.wcs import WCS  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mosaic.viz.figures import (  # noqa: E402
    NO_DATA,
    SharedStretch,
    image_panels,
    north_east,
    pixel_scale_arcsec,
    residual_panels,
    scale_bar_arcsec,
    shared_rgb,
)


def _wcs(scale_arcsec: float, angle_deg: float, *, flip: bool = True, shape=(90, 120)) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.1, 2.2]
    w.wcs.crpix = [(shape[1] + 1) / 2, (shape[0] + 1) / 2]
    t = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    w.wcs.cd = scale_arcsec / 3600.0 * rot @ np.diag([-1.0 if flip else 1.0, 1.0])
    w.array_shape = shape
    return w


@settings(max_examples=25, deadline=None)
@given(angle=st.floats(-180, 180), scale=st.floats(0.01, 1.0), flip=st.booleans())
def test_north_and_east_are_the_inverse_cd_columns(angle, scale, flip):
    w = _wcs(scale, angle, flip=flip)
    x0, y0 = w.wcs.crpix - 1
    north, east = north_east(w, x0, y0, step_arcsec=1e-3)
    # at the tangent point (xi, eta) = CD (dx, dy): north is CD^-1 (0, 1), east CD^-1 (1, 0)
    inv = np.linalg.inv(w.wcs.cd)
    ref_n, ref_e = inv[:, 1] / np.hypot(*inv[:, 1]), inv[:, 0] / np.hypot(*inv[:, 0])
    np.testing.assert_allclose(north, ref_n, atol=1e-6)
    np.testing.assert_allclose(east, ref_e, atol=1e-6)
    assert pixel_scale_arcsec(w) == pytest.approx(scale, rel=1e-9)


def test_north_up_east_left():
    north, east = north_east(_wcs(0.03, 0.0), 59.5, 44.5)
    np.testing.assert_allclose(north, [0, 1], atol=1e-6)
    np.testing.assert_allclose(east, [-1, 0], atol=1e-6)


@pytest.mark.parametrize(("width", "length"), [(6.76, 1.0), (0.5, 0.1), (40.0, 5.0), (0.04, 0.01)])
def test_scale_bar_is_the_largest_round_length_within_a_fifth(width, length):
    assert scale_bar_arcsec(width) == length


def _bar(ax):
    """The scale bar: the one horizontal two-point line of the axes."""
    lines = [ln for ln in ax.lines if len(ln.get_xdata()) == 2 and ln.get_ydata()[0] == ln.get_ydata()[1]]
    assert len(lines) == 1
    x = lines[0].get_xdata()
    return float(x[1] - x[0])


def test_panels_share_one_stretch_and_draw_the_bar_from_the_pixel_scale():
    rng = np.random.default_rng(4)
    shape = (90, 120)
    w = _wcs(0.0155, 30.0, shape=shape)
    a = rng.normal(0.0, 0.01, shape)
    a[40:45, 50:55] += 50.0
    b = 3.0 * a
    b[:10] = np.nan
    stretch = SharedStretch.from_reference(a, name="a")
    assert (stretch.vmin, stretch.vmax) == pytest.approx(tuple(np.percentile(a, [0.5, 99.9])))
    fig = image_panels({"a": a, "b": b}, w, stretch)
    images = [ax.images[0] for ax in fig.axes if ax.images and ax.get_title()]
    assert len(images) == 2
    # one stretch: the same limits and softening, and the same value gives the same colour
    assert {(im.norm.vmin, im.norm.vmax) for im in images} == {(stretch.vmin, stretch.vmax)}
    assert images[0].norm(1.0) == images[1].norm(1.0)
    # NaN stays masked (matplotlib hands the norm a masked array) and is drawn in the no-data colour
    assert images[1].norm(np.ma.masked_invalid([np.nan, 1.0])).mask.tolist() == [True, False]
    assert matplotlib.colors.to_hex(images[1].cmap.get_bad()) == NO_DATA
    fig.canvas.draw()
    drawn = images[1].make_image(fig.canvas.get_renderer(), unsampled=True)[0]
    no_data = tuple(int(NO_DATA[i : i + 2], 16) for i in (1, 3, 5))
    column = [tuple(int(v) for v in r[0][:3]) for r in drawn]  # the first column, at the data's resolution
    assert column.count(no_data) == 10  # b's ten NaN rows
    # the stretch is astropy's asinh between the limits
    x = (1.0 - stretch.vmin) / (stretch.vmax - stretch.vmin)
    assert images[0].norm(1.0) == pytest.approx(float(AsinhStretch(stretch.a)(np.array([x]))[0]))
    # the bar is 0.25" (the largest round length within a fifth of 120 x 0.0155" = 1.86"), in pixels
    for ax in fig.axes:
        if ax.get_title():
            assert _bar(ax) == pytest.approx(0.25 / 0.0155)
            assert any(t.get_text() == "0.25 arcsec" for t in ax.texts)
    assert "0.5th and 99.9th percentiles of a" in stretch.describe("MJy/sr") and "MJy/sr" in stretch.describe("MJy/sr")
    plt.close(fig)


def test_residual_panels_data_minus_mock():
    rng = np.random.default_rng(5)
    w = _wcs(0.031, 60.0, shape=(50, 60))
    data = rng.normal(1.0, 0.1, (50, 60))
    mocks = {"iteration 0": np.full((50, 60), 0.9), "iteration 5": np.ones((50, 60))}
    fig = residual_panels(data, mocks, w, SharedStretch.from_reference(data), limit=0.5)
    panels = {ax.get_title(): ax.images[0].get_array() for ax in fig.axes if ax.get_title()}
    np.testing.assert_allclose(panels["data - mock, iteration 0"], data - 0.9)
    np.testing.assert_allclose(panels["data - mock, iteration 5"], data - 1.0)
    np.testing.assert_allclose(panels["mock, iteration 5"], 1.0)
    plt.close(fig)


def test_shared_rgb_uses_the_reference_stretch_for_every_composite():
    rng = np.random.default_rng(6)
    ref = rng.normal(0.0, 1.0, (3, 40, 50))
    other = ref.copy()
    other[:, :20] *= 4.0
    other[:, 0, 0] = np.nan
    pixels, stretches = shared_rgb({"ref": ref, "other": other}, "ref")
    assert len(stretches) == 3
    # pixels with the same values get the same colour in both composites
    np.testing.assert_array_equal(pixels["ref"][20:], pixels["other"][20:])
    for c, s in enumerate(stretches):
        assert (s.vmin, s.vmax) == pytest.approx(tuple(np.percentile(ref[c], [0.5, 99.9])))
    assert tuple(pixels["other"][0, 0]) == tuple(int(NO_DATA[i : i + 2], 16) for i in (1, 3, 5))
