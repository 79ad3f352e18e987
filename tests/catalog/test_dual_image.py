"""Dual-image detection: segments found on a smoothed blurred image, split and measured on a sharp one.

The scene is one set of point sources seen twice: blurred (a drizzle mosaic's PSF, low noise)
and sharp (an iterate: narrower PSF, more noise). The tiled result is checked against photutils
on the whole image; the measured noise against the standard deviation of pure noise.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from astropy.convolution import convolve
from astropy.io import fits
from astropy.stats import mad_std, sigma_clipped_stats
from astropy.utils.exceptions import AstropyUserWarning
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from photutils.segmentation import SourceCatalog, deblend_sources, detect_sources, make_2dgaussian_kernel

from mosaic.catalog.dual import detect_dual, measured_noise
from mosaic.catalog.noise import sky_noise
from mosaic.cli import main

from .conftest import tan_wcs

SHAPE = (120, 140)
WCS = tan_wcs(SHAPE)


def _stars(rng, n):
    ny, nx = SHAPE
    xy = np.column_stack([rng.uniform(5, nx - 5, n), rng.uniform(5, ny - 5, n)])
    # three close pairs, 4 px apart: one blended source in the blurred image, two in the sharp one
    for i in range(3):
        xy = np.vstack([xy, xy[i] + [4.0, 0.0]])
    return xy, rng.uniform(300, 3000, len(xy))


def _image(xy, flux, sigma, noise, rng):
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    img = rng.normal(0.0, noise, SHAPE)
    for (x0, y0), f in zip(xy, flux, strict=True):
        img += f / (2 * np.pi * sigma**2) * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * sigma**2))
    return img


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(7)
    xy, flux = _stars(rng, 30)
    blurred = _image(xy, flux, 2.5, 1.0, rng)
    sharp = _image(xy, flux, 1.2, 2.0, rng)
    err_b, err_s = np.full(SHAPE, 1.0), np.full(SHAPE, 2.0)
    err_b[:, 100:] = 1.5  # a coverage step: the threshold map follows ERR
    mask = np.zeros(SHAPE, bool)
    mask[10:14, 30:60] = True
    return blurred, sharp, err_b, err_s, mask, xy


@pytest.fixture(scope="module")
def reference(scene):
    """photutils on the whole image, the noise scale measured on the whole image (sources masked:
    :func:`mosaic.catalog.noise.sky_noise` of the NumPy image)."""
    blurred, sharp, err_b, err_s, mask, _ = scene
    kernel = make_2dgaussian_kernel(3.0, size=9)  # smooth(): the odd size nearest 3 FWHM
    det = convolve(np.where(mask, 0.0, blurred), kernel, boundary="fill", fill_value=0.0)
    k_ref = sky_noise(det, ~mask, err=err_b).scale
    ref = detect_sources(det, 4.0 * k_ref * err_b, 5, mask=mask)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyUserWarning)  # linear levels where a segment dips below 0
        sharp0 = np.where(mask, 0.0, sharp)
        floor = sky_noise(sharp0, ~mask).scale
        ref = deblend_sources(np.maximum(sharp0, floor), ref, 5, contrast=0.03, progress_bar=False)
    cat = SourceCatalog(np.where(mask, 0.0, sharp), ref, error=err_s, mask=mask, kron_params=(2.5, 3.0, 0.0))
    peak = [np.max((det / (k_ref * err_b))[ref.data == lab]) for lab in ref.labels]
    return k_ref, ref, cat, peak


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ty=st.integers(23, 120), tx=st.integers(23, 140))
def test_dual_equals_photutils_on_the_whole_image(scene, reference, ty, tx):
    blurred, sharp, err_b, err_s, mask, _ = scene
    k_ref, ref, cat, peak = reference
    table, seg, k = detect_dual(
        blurred, sharp, threshold=4.0, detection_err=err_b, measurement_err=err_s, mask=mask, fwhm=3.0,
        n_pixels=5, tile=(ty, tx), radii=(3.0,), wcs=WCS,
    )
    assert k == pytest.approx(k_ref, rel=1e-9)
    np.testing.assert_array_equal(np.asarray(seg.data), ref.data)
    np.testing.assert_allclose(np.asarray(table["kron_flux"]), cat.kron_flux, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(table["segment_flux_err"]), cat.segment_flux_err, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(table["detection_snr"]), peak, rtol=1e-9)


def test_the_threshold_unit_is_the_noise_not_the_stars(scene, reference):
    """The scene's 36 bright stars fill much of the small image with their wings: the measured
    scale is that of the smoothed noise alone (to 10 %), where a clipped standard deviation of
    every pixel counted the wings too (2.7 times the noise here)."""
    blurred, _, err_b, _, mask, _ = scene
    k_ref = reference[0]
    # the same robust scatter of det / ERR where det is the scene's noise (sigma 1) alone, smoothed
    rng = np.random.default_rng(99)
    alone = [convolve(rng.normal(0.0, 1.0, SHAPE), make_2dgaussian_kernel(3.0, size=9), boundary="wrap") / err_b for _ in range(20)]
    truth = float(np.mean([mad_std(z[~mask]) for z in alone]))
    assert k_ref == pytest.approx(truth, rel=0.1)
    det = convolve(np.where(mask, 0.0, blurred), make_2dgaussian_kernel(3.0, size=9), boundary="fill", fill_value=0.0)
    assert sigma_clipped_stats((det / err_b)[~mask])[2] > 2 * truth


def test_close_pairs_split_on_the_sharp_image(scene):
    blurred, sharp, err_b, err_s, mask, xy = scene
    dual, _, _ = detect_dual(blurred, sharp, threshold=4.0, detection_err=err_b, measurement_err=err_s, mask=mask, fwhm=3.0, n_pixels=5, tile=60, wcs=WCS)
    alone, _, _ = detect_dual(blurred, blurred, threshold=4.0, detection_err=err_b, measurement_err=err_b, mask=mask, fwhm=3.0, n_pixels=5, tile=60, wcs=WCS)

    def found(table, p):
        d = np.hypot(np.asarray(table["x_centroid"]) - p[0], np.asarray(table["y_centroid"]) - p[1])
        return np.min(d) < 1.0

    pairs = xy[-6:]
    assert sum(found(dual, p) for p in pairs) > sum(found(alone, p) for p in pairs)


def test_measured_noise_of_smoothed_noise():
    # the std of smoothed white noise over a mis-scaled ERR: what the threshold's unit must be
    rng = np.random.default_rng(2)
    noise = rng.normal(size=(300, 300))
    smoothed = convolve(noise, make_2dgaussian_kernel(3.0, size=5))
    err = np.full(noise.shape, 2.0)
    good = np.ones(noise.shape, bool)
    sigma, k = measured_noise(smoothed, good, err=err)
    assert k == pytest.approx(np.std(smoothed) / 2.0, rel=0.05)
    np.testing.assert_allclose(sigma, k * err)
    level, k_plain = measured_noise(smoothed, good)
    assert level == k_plain == pytest.approx(np.std(smoothed), rel=0.05)
    with pytest.raises(ValueError, match="usable pixels"):
        measured_noise(smoothed, np.zeros(noise.shape, bool))


def test_measured_noise_masks_the_sources_of_a_crowded_field():
    """A crowded smoothed field (1500 blobs, 18 % of the pixels above 2 sigma of the smoothed
    noise): the measured noise is that of the smoothed noise alone (to 4 %), where a clipped
    standard deviation of every pixel takes the sources' wings for noise (1.37x here), and the
    threshold would rise with crowding."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(1)
    n = 1024
    noise = rng.normal(0.0, 1.0, (n, n))
    y, x = np.indices((n, n))
    sources = np.zeros((n, n))
    for _ in range(1500):
        cx, cy = rng.uniform(0, n, 2)
        r, a = rng.uniform(1.5, 6.0), rng.uniform(0.3, 3.0)
        sources += a * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))
    truth = gaussian_filter(noise, 1.5).std()  # the smoothed noise alone
    image = gaussian_filter(noise + sources, 1.5)
    assert (gaussian_filter(sources, 1.5) > 2 * truth).mean() > 0.15  # crowded
    good = np.ones((n, n), bool)
    _, k = measured_noise(image, good)
    assert k == pytest.approx(truth, rel=0.04)
    assert sigma_clipped_stats(image)[2] > 1.25 * truth  # what the clipped scatter of all pixels gives
    # with an ERR of 3: the scale of image / err, from the same masked pixels
    _, k_err = measured_noise(image, good, err=np.full((n, n), 3.0))
    assert k_err == pytest.approx(truth / 3.0, rel=0.04)


def _write_i2d(path, sci, err):
    hdr = WCS.to_header()
    hdus = [fits.PrimaryHDU(), fits.ImageHDU(sci.astype(np.float32), hdr, name="SCI"), fits.ImageHDU(err.astype(np.float32), hdr, name="ERR")]
    fits.HDUList(hdus).writeto(path)
    return str(path)


def test_cli_detection_image(tmp_path, scene):
    blurred, sharp, err_b, err_s, _, _ = scene
    drz = _write_i2d(tmp_path / "drz_i2d.fits", blurred, err_b)
    itr = _write_i2d(tmp_path / "it_i2d.fits", sharp, err_s)
    out = tmp_path / "cat.ecsv"
    assert main(["detect", itr, "--detection-image", drz, "--out", str(out), "--threshold", "4", "--fwhm", "3", "--npixels", "5", "--deblend", "--tile", "64"]) == 0
    from astropy.table import QTable  # noqa: PLC0415

    got = QTable.read(out)
    f32 = [a.astype(np.float32).astype(np.float64) for a in (blurred, sharp, err_b, err_s)]
    ref, _, _ = detect_dual(f32[0], f32[1], threshold=4.0, detection_err=f32[2], measurement_err=f32[3], fwhm=3.0, n_pixels=5, tile=64, wcs=WCS)
    assert len(got) == len(ref) > 20
    np.testing.assert_allclose(np.asarray(got["kron_flux"]), np.asarray(ref["kron_flux"]), rtol=1e-5)
    assert got.meta["detection_image"] == drz
    # images of different grids are refused by name
    small = _write_i2d(tmp_path / "small_i2d.fits", blurred[:50], err_b[:50])
    assert main(["detect", itr, "--detection-image", small, "--out", str(tmp_path / "c2.ecsv")]) == 1


def test_cli_detection_image_that_is_the_measured_one(tmp_path, scene):
    """The same file found and measured (its sky measured once): the catalogue of a copy of it as
    the detection image, whose sky is measured on its own, and the sky is removed from both."""
    import shutil  # noqa: PLC0415

    from astropy.table import QTable  # noqa: PLC0415

    blurred, _, err_b, _, _, _ = scene
    sky = 40.0 * float(np.median(err_b))  # a drizzle mosaic's sky, left in: removed before detection
    drz = _write_i2d(tmp_path / "drz_i2d.fits", blurred + sky, err_b)
    copy = shutil.copy(drz, tmp_path / "copy_i2d.fits")
    opts = ["--threshold", "4", "--fwhm", "3", "--npixels", "5", "--tile", "64"]
    assert main(["detect", drz, "--detection-image", drz, "--out", str(tmp_path / "same.ecsv"), *opts]) == 0
    assert main(["detect", drz, "--detection-image", str(copy), "--out", str(tmp_path / "copy.ecsv"), *opts]) == 0
    same, other = QTable.read(tmp_path / "same.ecsv"), QTable.read(tmp_path / "copy.ecsv")
    assert len(same) == len(other) > 10
    for name in ("x_centroid", "y_centroid", "kron_flux", "segment_flux"):
        np.testing.assert_array_equal(np.asarray(same[name]), np.asarray(other[name]))
    # the sky is gone: the catalogue of the same image without it (where none is removed)
    bare = _write_i2d(tmp_path / "bare_i2d.fits", blurred, err_b)
    assert main(["detect", bare, "--detection-image", bare, "--out", str(tmp_path / "bare.ecsv"), *opts]) == 0
    ref = QTable.read(tmp_path / "bare.ecsv")
    assert len(ref) == len(same)
    np.testing.assert_allclose(np.asarray(same["x_centroid"]), np.asarray(ref["x_centroid"]), atol=0.05)
    np.testing.assert_allclose(np.asarray(same["segment_flux"]), np.asarray(ref["segment_flux"]), rtol=0.02, atol=float(np.median(err_b)) * 20)


def test_deblending_below_zero_is_photutils_linear_fallback(scene):
    # segments of a noisy sharp image dip below 0: photutils then uses linear levels for them;
    # the tiled deblending decides that itself (thread-safe) and warns once, naming the parents
    from mosaic.catalog.detect import detect_segmentation, smooth  # noqa: PLC0415
    from mosaic.exceptions import DeblendModeWarning  # noqa: PLC0415

    blurred, sharp, _, _, _, _ = scene
    det = np.asarray(smooth(blurred, fwhm=3.0, tile=(41, 47)))
    with pytest.warns(DeblendModeWarning, match="linear"):
        seg = detect_segmentation(det, 3.0, n_pixels=5, deblend=True, deblend_image=sharp, tile=(41, 47))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyUserWarning)
        ref = deblend_sources(sharp, detect_sources(det, 3.0, 5), 5, progress_bar=False)
    np.testing.assert_array_equal(np.asarray(seg.data), ref.data)
