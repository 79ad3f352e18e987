"""Stretches against astropy on the whole array; sampled intervals on dask arrays."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from astropy.visualization import (
    AsinhStretch,
    HistEqStretch,
    ImageNormalize,
    LinearStretch,
    LogStretch,
    MinMaxInterval,
    PercentileInterval,
    PowerStretch,
    SqrtStretch,
    ZScaleInterval,
)

from mosaic.exceptions import InputError
from mosaic.viz.stretch import STRETCHES, display_limits, sample_pixels, stretch_image


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    img = rng.normal(100.0, 5.0, (120, 90))
    img[30:34, 40:44] += 5000.0
    img[0, :5] = np.nan
    return img


def _astropy(img, stretch, interval):
    finite = img[np.isfinite(img)]
    lo, hi = {"percentile": PercentileInterval(99.5), "zscale": ZScaleInterval(), "minmax": MinMaxInterval()}[interval].get_limits(finite)
    obj = {
        "asinh": AsinhStretch(0.1), "linear": LinearStretch(), "log": LogStretch(1000.0), "sqrt": SqrtStretch(),
        "power": PowerStretch(2.0), "zscale": LinearStretch(),
    }.get(stretch)
    if stretch == "histeq":
        inside = finite[(finite >= lo) & (finite <= hi)]
        obj = HistEqStretch(np.sort((inside - lo) / (hi - lo)))
    return ImageNormalize(vmin=lo, vmax=hi, stretch=obj, clip=True)(np.where(np.isfinite(img), img, lo))


@pytest.mark.parametrize("stretch", STRETCHES)
@pytest.mark.parametrize("interval", ["percentile", "zscale", "minmax"])
def test_equals_astropy_on_the_whole_image(image, stretch, interval):
    got = stretch_image(image, stretch=stretch, interval=interval)
    want = _astropy(image, stretch, "zscale" if stretch == "zscale" else interval)
    good = np.isfinite(image)
    np.testing.assert_allclose(got[good], np.asarray(want)[good], atol=1e-12)
    assert np.isnan(got[~good]).all()
    assert got[good].min() >= 0 and got[good].max() <= 1


def test_dask_is_lazy_and_equal(image):
    lazy = stretch_image(da.from_array(image, chunks=(37, 41)), stretch="asinh")
    assert isinstance(lazy, da.Array)
    np.testing.assert_allclose(lazy.compute(), stretch_image(image, stretch="asinh"), equal_nan=True)


def test_interval_from_a_strided_sample(image):
    # 120 x 90 with at most 1200 samples: every 3rd row and column (40 x 30 = 1200)
    sample = sample_pixels(da.from_array(image, chunks=50), n_samples=1200)
    want = image[::3, ::3]
    np.testing.assert_array_equal(sample, want[np.isfinite(want)])
    lo, hi = display_limits(image, interval="minmax", n_samples=1200)
    assert (lo, hi) == (np.nanmin(want), np.nanmax(want))


def test_unknown_names_list_the_allowed(image):
    with pytest.raises(InputError, match=r"stretch 'gamma' is unknown; expected one of \['asinh'"):
        stretch_image(image, stretch="gamma")
    with pytest.raises(InputError, match=r"interval 'iqr' is unknown; expected one of \['percentile'"):
        stretch_image(image, interval="iqr")
    with pytest.raises(InputError, match="no finite pixel"):
        stretch_image(np.full((4, 4), np.nan))
