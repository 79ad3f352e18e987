"""Thresholds in units of the measured noise (issue 16.5) against simulated truth and Gaussian statistics."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.convolution import convolve
from astropy.io import fits
from hypothesis import given, settings
from hypothesis import strategies as st
from photutils.segmentation import detect_sources, make_2dgaussian_kernel
from scipy.special import ndtr

from mosaic.catalog.noise import mesh_medians, sky_noise
from mosaic.cli import main
from mosaic.exceptions import NoDetectionsWarning
from mosaic.io.catalogs import read_catalog

from .conftest import tan_wcs


def _i2d(path, sci, err):
    hdr = tan_wcs(sci.shape).to_header()
    hdus = [fits.PrimaryHDU(), fits.ImageHDU(sci.astype(np.float32), hdr, name="SCI")]
    if err is not None:
        hdus += [fits.ImageHDU(err.astype(np.float32), hdr, name="ERR"), fits.ImageHDU(np.ones(sci.shape, np.float32), hdr, name="WHT")]
    fits.HDUList(hdus).writeto(path)
    return str(path)


@pytest.fixture(scope="module")
def field(scene_factory):
    """Sources on noise whose level rises 0.8 -> 1.6 across the field (a coverage gradient)."""
    img, truth = scene_factory(3, shape=(240, 260), n_sources=30, sigma=(1.0, 4.0), flux=(40.0, 2000.0), noise=0.0)
    sigma = 0.8 + 0.8 * np.indices(img.shape)[1] / img.shape[1]
    img = img + np.random.default_rng(30).normal(0.0, 1.0, img.shape) * sigma
    return img, sigma, truth


@pytest.mark.parametrize(("factor", "sources"), [(1.0, 0), (0.5, 0), (2.5, 0), (0.5, 40)])
def test_scale_is_the_true_noise_over_err(scene_factory, factor, sources):
    """ERR wrong by ``factor``: the measured scale is ``1 / factor`` (sources masked), and exactly
    twice as large for ERR halved."""
    img, _ = scene_factory(7, shape=(300, 320), n_sources=sources, noise=0.0)
    sigma = 1.0 + np.indices(img.shape)[0] / img.shape[0]
    img = img + np.random.default_rng(8).normal(0.0, 1.0, img.shape) * sigma
    good = np.ones(img.shape, bool)
    good[:, :5] = False
    img[:, :5] = 1e6  # masked pixels are not used
    m = sky_noise(img, good, err=factor * sigma)
    assert m.scale == pytest.approx(1 / factor, rel=0.015)
    assert m.n_sky > (0.5 if sources else 0.97) * m.n_sample
    assert sky_noise(img, good, err=factor * sigma / 2).scale == 2 * m.scale  # ERR halved: exactly twice
    with pytest.raises(ValueError, match="only 0 usable pixels"):
        sky_noise(img, np.zeros(img.shape, bool))


def test_wrong_err_gives_the_catalogue_of_the_true_noise(tmp_path, field, capsys):
    """With ERR half the truth, the measured-noise threshold finds what photutils finds at the
    same threshold in units of the *true* noise, tile by tile as on one tile; ERR as it is does not."""
    img, sigma, _ = field
    right, wrong = _i2d(tmp_path / "right_i2d.fits", img, sigma), _i2d(tmp_path / "wrong_i2d.fits", img, 0.5 * sigma)
    args = ["--threshold", "4", "--npixels", "5", "--fwhm", "2"]
    assert main(["detect", right, "--out", str(tmp_path / "right.ecsv"), "--tile", "64", "--segmentation", str(tmp_path / "a.fits"), *args]) == 0
    assert main(["detect", wrong, "--out", str(tmp_path / "wrong.ecsv"), "--tile", "1024", "--segmentation", str(tmp_path / "b.fits"), *args]) == 0
    log = capsys.readouterr().err
    assert main(["detect", wrong, "--out", str(tmp_path / "err.ecsv"), "--noise", "err", *args]) == 0
    a, b, c = (read_catalog(tmp_path / f"{n}.ecsv") for n in ("right", "wrong", "err"))
    # ERR halved doubles the measured scale exactly: the same thresholds, the same catalogue
    assert b.meta["noise_scale"] == 2 * a.meta["noise_scale"] == pytest.approx(2.0, rel=0.015)
    assert f"threshold 4 x {b.meta['noise_scale']:.4g} x ERR (ERR scaled to the measured noise" in log
    np.testing.assert_array_equal(fits.getdata(tmp_path / "a.fits", "SEGM"), fits.getdata(tmp_path / "b.fits", "SEGM"))
    assert len(a) == len(b)
    for col in ("x_centroid", "y_centroid", "segment_flux"):  # 64-px tiles against one tile: sums in another order
        np.testing.assert_allclose(np.asarray(a[col]), np.asarray(b[col]), rtol=1e-12)
    # the reference: photutils on the whole image, threshold in units of the simulated noise
    data = img.astype(np.float32).astype(np.float64)
    conv = convolve(data, make_2dgaussian_kernel(2.0, size=7).array, boundary="fill", fill_value=0.0)
    ref = detect_sources(conv, 4.0 * sigma.astype(np.float32), n_pixels=5)
    n_ref = ref.n_labels
    yx = np.array([np.mean(np.nonzero(ref.data == lab), axis=1) for lab in ref.labels])

    def matched(cat):
        xy = np.column_stack([np.asarray(cat["x_centroid"]), np.asarray(cat["y_centroid"])])
        d = np.hypot(xy[:, None, 0] - yx[None, :, 1], xy[:, None, 1] - yx[None, :, 0])
        return int((d.min(axis=0) < 1.5).sum())

    area_ref = int((ref.data > 0).sum())
    assert n_ref > 15
    assert abs(len(a) - n_ref) <= 1 and matched(a) >= n_ref - 1
    assert np.sum(np.asarray(a["area"])) == pytest.approx(area_ref, rel=0.03)
    # ERR as it is thresholds at 2 true sigma: another catalogue (more sources, segments 1.5x larger)
    assert c.meta["noise_scale"] == 1.0
    assert len(c) > n_ref + 1 and np.sum(np.asarray(c["area"])) > 1.3 * area_ref


def test_pure_noise_follows_gaussian_statistics(tmp_path):
    """Unsmoothed pure noise, 1-pixel sources: the pixels above ``t`` measured sigmas number
    ``N Q(t)`` (Gaussian tail), with ERR half the truth; ERR as it is counts ``N Q(t / 2)``."""
    rng = np.random.default_rng(5)
    shape = (400, 400)
    n = shape[0] * shape[1]
    img = rng.normal(0.0, 2.0, shape)
    path = _i2d(tmp_path / "noise_i2d.fits", img, np.ones(shape))  # true noise 2, ERR 1
    plain = _i2d(tmp_path / "plain.fits", img + 10.0, None)  # no ERR, a sky of 10

    def pixels(image, threshold, *extra):
        out = tmp_path / f"c{len(list(tmp_path.glob('*.ecsv')))}.ecsv"
        assert main(["detect", image, "--out", str(out), "--threshold", str(threshold), "--npixels", "1", "--fwhm", "0", *extra]) == 0
        cat = read_catalog(out)
        return int(np.sum(np.asarray(cat["area"]))) if len(cat) else 0, cat.meta["noise_scale"]

    for image in (path, plain):
        got, k = pixels(image, 3)
        assert k == pytest.approx(2.0, rel=0.01)
        expect = n * ndtr(-3.0)
        assert abs(got - expect) < 4 * np.sqrt(expect)
    with pytest.warns(NoDetectionsWarning):
        assert pixels(path, 5)[0] == 0  # N Q(5) = 0.05 expected
    got, k = pixels(path, 5, "--noise", "err")
    expect = n * ndtr(-2.5)
    assert k == 1.0 and abs(got - expect) < 4 * np.sqrt(expect)


def test_bad_noise_input(tmp_path, capsys):
    flat = _i2d(tmp_path / "flat.fits", np.full((50, 60), 3.0), None)
    assert main(["detect", flat, "--out", str(tmp_path / "a.ecsv")]) == 1
    assert "flat.fits: the measured noise is 0.0" in capsys.readouterr().err
    assert main(["detect", flat, "--out", str(tmp_path / "b.ecsv"), "--noise", "err", "--detection-image", flat]) == 1
    assert "--noise err with --detection-image is not allowed" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["detect", flat, "--out", str(tmp_path / "c.ecsv"), "--noise", "sky"])


@pytest.mark.parametrize("how", [["--method", "daofind", "--fwhm", "2.5"], ["--engine", "sep", "--fwhm", "2"]])
def test_daofind_and_sep_threshold_in_the_measured_noise_too(tmp_path, field, how):
    """ERR halved: DAOFIND and the SEP engine find the same sources in measured-noise units, more with ERR as it is."""
    pytest.importorskip("sep")
    img, sigma, _ = field
    right, wrong = _i2d(tmp_path / "right_i2d.fits", img, sigma), _i2d(tmp_path / "wrong_i2d.fits", img, 0.5 * sigma)
    cats = {}
    for name, path, noise in (("right", right, "measured"), ("wrong", wrong, "measured"), ("err", wrong, "err")):
        out = tmp_path / f"{name}.ecsv"
        assert main(["detect", path, "--out", str(out), "--threshold", "5", "--npixels", "5", "--noise", noise, *how]) == 0
        cats[name] = read_catalog(out)
    a, b, c = cats["right"], cats["wrong"], cats["err"]
    assert b.meta["noise_scale"] == 2 * a.meta["noise_scale"] == pytest.approx(2.0, rel=0.015)
    assert len(a) == len(b) > 10
    np.testing.assert_allclose(np.asarray(a["x_centroid"]), np.asarray(b["x_centroid"]), rtol=1e-12)
    assert len(c) > len(a)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), ny=st.integers(1, 60), nx=st.integers(1, 60), box=st.integers(1, 17), used=st.floats(0.0, 1.0))
def test_mesh_medians_equal_numpy_median_per_mesh(seed, ny, nx, box, used):
    """The meshes' medians at once equal ``np.median`` of each mesh's used pixels, bit for bit (ties and partial meshes too)."""
    rng = np.random.default_rng(seed)
    z = np.round(rng.normal(size=(ny, nx)), 1)  # ties
    use = rng.random((ny, nx)) < used
    my, mx = -(-ny // box), -(-nx // box)
    med, count = mesh_medians(z, use, box, my, mx)
    for j in range(my):
        for i in range(mx):
            v = z[j * box : (j + 1) * box, i * box : (i + 1) * box][use[j * box : (j + 1) * box, i * box : (i + 1) * box]]
            assert count[j, i] == v.size
            assert (np.isnan(med[j, i]) and v.size == 0) or med[j, i] == np.median(v)


def test_the_sky_of_a_plain_image_is_that_of_the_sky():
    """``--noise err`` on an image without ERR (:func:`mosaic.pipeline.detect.background_rms`):
    on a field of known sky (3, noise 1) whose sources put light in 29 % of the pixels, the sky
    within 0.05 and the noise within 3 %; a clipped median and scatter of every pixel gave
    +0.15 and +8 %."""
    from astropy.stats import sigma_clipped_stats

    from mosaic.pipeline.detect import background_rms
    from tests.skies import deep_field

    image, _ = deep_field(n_galaxies=250, n_stars=30, sky=3.0)
    sky, rms = background_rms(image, np.ones(image.shape, bool))
    assert sky == pytest.approx(3.0, abs=0.05) and rms == pytest.approx(1.0, rel=0.03)
    _, med, std = sigma_clipped_stats(image)
    assert med > 3.14 and std > 1.06  # what it was


@pytest.mark.parametrize("padding", [0.2, 0.35])
def test_zero_padding_of_an_image_without_wht_is_no_data(tmp_path, padding):
    """A plain mosaic (no WHT) padded with exact zeros outside its footprint: the zeros are not
    sky. The measured noise is the footprint's (1 here) to 2 %, and the pixels above 3 sigma are
    the footprint's Gaussian tail; counted as sky, 20 % of zeros measured the noise 12 % low and
    35 % measured 0 (one error about a constant image). A count image's real zeros are data."""
    from mosaic.pipeline.detect import _zero_padded

    rng = np.random.default_rng(8)
    img = rng.normal(0.0, 1.0, (400, 400))
    rows = int(padding * img.shape[0])
    img[:rows] = 0.0
    path = _i2d(tmp_path / "padded.fits", img, None)
    out = tmp_path / "padded.ecsv"
    assert main(["detect", path, "--out", str(out), "--threshold", "3", "--npixels", "1", "--fwhm", "0"]) == 0
    cat = read_catalog(out)
    assert cat.meta["noise_scale"] == pytest.approx(1.0, rel=0.02)
    n = (img.shape[0] - rows) * img.shape[1]
    expect = n * ndtr(-3.0)
    assert abs(int(np.sum(np.asarray(cat["area"]))) - expect) < 4 * np.sqrt(expect)
    counts = rng.poisson(0.5, (200, 200)).astype(np.float64)  # 61 % zeros, all of them data
    assert not _zero_padded(counts, "counts") and _zero_padded(np.where(np.arange(200)[:, None] < 40, 0.0, rng.normal(size=(200, 200))), "p")


def test_an_i2d_with_its_sky_left_in_is_detected_as_one_without(tmp_path, field):
    """``mosaic drizzle``'s mosaic keeps the sky (its ERR does not): a sky of 40 ERR left in
    made the whole image one segment. The sky (sources masked) is removed first, so the catalogue
    is that of the sky-subtracted image, alone and as a detection image; a sky-subtracted
    product is used as it is."""
    img, sigma, _ = field
    with_sky = _i2d(tmp_path / "sky_i2d.fits", img + 40.0, sigma)
    without = _i2d(tmp_path / "nosky_i2d.fits", img, sigma)
    cats = []
    for path, extra in ((without, []), (with_sky, []), (with_sky, ["--detection-image", with_sky])):
        out = tmp_path / f"c{len(cats)}.ecsv"
        assert main(["detect", path, "--out", str(out), "--threshold", "3", *extra]) == 0
        cats.append(read_catalog(out))
    assert len(cats[0]) > 10
    assert abs(len(cats[1]) - len(cats[0])) <= 1 and cats[1].meta["noise_scale"] == pytest.approx(cats[0].meta["noise_scale"], rel=0.02)
    assert abs(len(cats[2]) - len(cats[0])) <= 0.2 * len(cats[0])
    # the same sources with the same fluxes: the sky is not in them
    def column(cat, name):
        return np.asarray(getattr(cat[name], "value", cat[name]), dtype=float)

    x0, y0, f0 = column(cats[0], "x_centroid"), column(cats[0], "y_centroid"), column(cats[0], "kron_flux")
    x1, y1, f1 = column(cats[1], "x_centroid"), column(cats[1], "y_centroid"), column(cats[1], "kron_flux")
    ratios = []
    for x, y, f in zip(x1, y1, f1, strict=True):
        d = np.hypot(x0 - x, y0 - y)
        if d.min() < 0.5:
            ratios.append(f / f0[np.argmin(d)])
    assert len(ratios) >= len(cats[0]) - 2
    assert np.nanmedian(ratios) == pytest.approx(1.0, abs=0.02)
