"""``mosaic fuse`` end to end on a simulated scene written as FITS, and its one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from mosaic.cli import main
from mosaic.fusion import metrics
from mosaic.fusion.simulate import simulate_scene, write_scene

FILTERS = ("F182M", "F187N", "F200W", "F210M", "F212N")


@pytest.fixture(scope="module")
def scene_files(tmp_path_factory):
    scene = simulate_scene(coarse_shape=(18, 18), n_wave=30, seed=5)
    return scene, write_scene(scene, tmp_path_factory.mktemp("fusion_scene"))


def _images(paths):
    return [str(paths[f]) for f in FILTERS]


def test_fuse_command(scene_files, tmp_path):
    scene, paths = scene_files
    out = tmp_path / "fused.fits"
    argv = ["fuse", "--images", *_images(paths), "--cube", str(paths["cube"]), "--out", str(out), "--components", "4", "--boundary", "periodic"]
    assert main(argv) == 0
    with fits.open(out) as hdul:
        cube, hdr, primary = hdul["SCI"].data.astype(np.float64), hdul["SCI"].header, hdul[0].header
        assert hdul["BASIS"].data.shape == (4, 30)
    assert cube.shape == scene.truth.shape
    wcs = WCS(hdr)
    assert wcs.has_spectral
    np.testing.assert_allclose(wcs.spectral.pixel_to_world(np.arange(30)).to_value("um"), scene.wavelengths, rtol=1e-6)
    # the simulation used these very top hats: cross-calibration finds factors near 1
    for f in FILTERS:
        assert primary[f"XCAL{f[1:4]}"] == pytest.approx(1.0, abs=0.03)
    up = metrics.upsampled_ifu(scene.cube, 3)
    for channel in (6, 15, 24):
        assert metrics.psnr(scene.truth[channel], cube[channel]) > metrics.psnr(scene.truth[channel], up[channel]) + 2.0
    # tiled gives the same cube
    out_t = tmp_path / "tiled.fits"
    assert main([*argv[:-5], str(out_t), "--components", "4", "--boundary", "periodic", "--tile", "10", "--previews"]) == 0
    tiled = fits.getdata(out_t, "SCI").astype(np.float64)
    assert np.abs(tiled - cube).max() < 1e-4 * np.abs(cube).max()
    assert len(list(tmp_path.glob("tiled_*um.png"))) == 3


def test_fuse_mean_choices(scene_files, tmp_path):
    """--mean data keeps the IFU's averaged spectrum (seed 003); the default projects it on fewer components than channels."""
    scene, paths = scene_files
    base = ["fuse", "--images", *_images(paths), "--cube", str(paths["cube"]), "--components", "4", "--boundary", "periodic"]
    means = {}
    for mean in ("projected", "data"):
        out = tmp_path / f"{mean}.fits"
        assert main([*base, "--out", str(out), "--mean", mean]) == 0
        means[mean] = (fits.getdata(out, "MEAN"), fits.getheader(out, 0)["FUSEMRNK"])
    average = fits.getdata(paths["cube"], "SCI").astype(np.float64).mean(axis=(1, 2))
    np.testing.assert_allclose(means["data"][0], average, rtol=1e-6)
    assert means["data"][1] == 0
    assert 1 <= means["projected"][1] < len(average)
    # the projection moves the mean by about the noise of an averaged channel, no more
    residual = np.sqrt(np.mean((means["projected"][0] - average) ** 2))
    assert 0 < residual < 2 * scene.sigma_cube / np.sqrt(scene.cube[0].size)


def _write_cube(path, src, *, header_edit):
    with fits.open(src) as hdul:
        data, hdr = hdul["SCI"].data, hdul["SCI"].header.copy()
    header_edit(hdr)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data, header=hdr, name="SCI")]).writeto(path)
    return path


def _run_error(argv, capsys):
    assert main(argv) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if " INFO " not in line]
    assert len(err) == 1
    assert err[0].startswith("mosaic fuse: error: ")
    return err[0]


def test_cube_without_spectral_axis(scene_files, tmp_path, capsys):
    _, paths = scene_files

    def strip(h):
        for key in ("CTYPE3", "CUNIT3", "CRVAL3", "CDELT3", "CRPIX3"):
            del h[key]

    cube = _write_cube(tmp_path / "nospec.fits", paths["cube"], header_edit=strip)
    msg = _run_error(["fuse", "--images", *_images(paths), "--cube", str(cube), "--out", str(tmp_path / "o.fits")], capsys)
    assert "nospec.fits" in msg and "no spectral axis" in msg
    assert not (tmp_path / "o.fits").exists()


def test_filter_outside_the_cube(scene_files, tmp_path, capsys):
    _, paths = scene_files

    def redden(h):
        # the cube now starts at 2.0 um: F182M is outside it
        h["CRVAL3"] = 2.0e-6 if h["CUNIT3"].strip() == "m" else 2.0

    cube = _write_cube(tmp_path / "red.fits", paths["cube"], header_edit=redden)
    msg = _run_error(["fuse", "--images", *_images(paths), "--cube", str(cube), "--out", str(tmp_path / "o.fits")], capsys)
    assert "F182M" in msg and "not inside the IFU cube's range" in msg


def test_image_not_overlapping(scene_files, tmp_path, capsys):
    _, paths = scene_files
    far = tmp_path / "far.fits"
    with fits.open(paths["F200W"]) as hdul:
        hdr = hdul["SCI"].header.copy()
        hdr["CRVAL2"] += 0.1  # six arcminutes north
        fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(hdul["SCI"].data, header=hdr, name="SCI")]).writeto(far)
    msg = _run_error(["fuse", "--images", str(far), "--filters", "F200W", "--cube", str(paths["cube"]), "--out", str(tmp_path / "o.fits")], capsys)
    assert "far.fits" in msg and "does not overlap" in msg


def test_non_integer_ratio_without_resampling(scene_files, tmp_path, capsys):
    _, paths = scene_files
    odd = tmp_path / "odd.fits"
    with fits.open(paths["F200W"]) as hdul:
        hdr = hdul["SCI"].header.copy()
        for key in ("CDELT1", "CDELT2"):
            hdr[key] *= 1.07
        fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(hdul["SCI"].data, header=hdr, name="SCI")]).writeto(odd)
    argv = ["fuse", "--images", str(odd), "--filters", "F200W", "--cube", str(paths["cube"]), "--out", str(tmp_path / "o.fits"), "--no-resample"]
    msg = _run_error(argv, capsys)
    assert "odd.fits" in msg and "not the integer --factor 3" in msg


def test_fuse_rotated_nircam_grid(scene_files, tmp_path):
    """Images on a NIRCam-like grid (0.031", rotated 25 degrees) are co-registered through their WCS."""
    from mosaic.fusion.prepare import fine_wcs, resample_image

    scene, paths = scene_files
    t, s = np.deg2rad(25.0), 0.031 / 3600
    rotated = []
    for f in FILTERS:
        with fits.open(paths[f]) as hdul:
            image, wcs = hdul["SCI"].data.astype(np.float64), WCS(hdul["SCI"].header)
        grid = WCS(naxis=2)
        grid.wcs.ctype, grid.wcs.crval, grid.wcs.crpix = ["RA---TAN", "DEC--TAN"], wcs.wcs.crval, [40.5, 40.5]
        grid.wcs.cd = np.array([[-s * np.cos(t), s * np.sin(t)], [s * np.sin(t), s * np.cos(t)]])
        hdr = grid.to_header()
        hdr["FILTER"] = f
        rotated.append(tmp_path / f"rot_{f}.fits")
        data = resample_image(image, wcs, grid, (80, 80)).astype(np.float32)
        fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data, header=hdr, name="SCI")]).writeto(rotated[-1])
    out = tmp_path / "fused.fits"
    assert main(["fuse", "--images", *map(str, rotated), "--cube", str(paths["cube"]), "--out", str(out), "--components", "4"]) == 0
    with fits.open(out) as hdul:
        cube, out_wcs = hdul["SCI"].data.astype(np.float64), WCS(hdul["SCI"].header).celestial
    # the fused field is where the rotated images cover whole spaxels; find it on the truth's grid
    truth_wcs = fine_wcs(WCS(fits.getheader(paths["cube"], "SCI")).celestial, 3)
    x0, y0 = (int(np.round(float(v))) for v in truth_wcs.world_to_pixel(out_wcs.pixel_to_world(0, 0)))
    assert y0 % 3 == 0 and x0 % 3 == 0 and cube.shape[1] < scene.truth.shape[1]
    truth = scene.truth[:, y0 : y0 + cube.shape[1], x0 : x0 + cube.shape[2]]
    up = metrics.upsampled_ifu(scene.cube, 3)[:, y0 : y0 + cube.shape[1], x0 : x0 + cube.shape[2]]
    for channel in (6, 15, 24):
        assert metrics.psnr(truth[channel], cube[channel]) > metrics.psnr(truth[channel], up[channel]) + 1.0


def test_a_cube_with_its_scale_in_the_pc_matrix_fuses_as_with_cdelt(scene_files, tmp_path):
    """The same cube with its spaxel scale in PC1_1, PC2_2 and CDELT1 = CDELT2 = 1 (the form
    astropy writes a CD-matrix WCS back in): the same spaxel size (not 1 degree: point-like
    PSFs), so the same fused cube."""
    scene, paths = scene_files

    def scale_in_pc(hdr):
        for k in (1, 2):
            hdr[f"PC{k}_{k}"] = hdr[f"CDELT{k}"]
            hdr[f"CDELT{k}"] = 1.0

    pc_cube = tmp_path / "pc_cube.fits"
    _write_cube(pc_cube, paths["cube"], header_edit=scale_in_pc)
    assert WCS(fits.getheader(pc_cube, "SCI")).celestial.wcs.get_cdelt()[0] == 1.0
    got = {}
    for name, cube in (("cdelt", paths["cube"]), ("pc", pc_cube)):
        out = tmp_path / f"{name}.fits"
        assert main(["fuse", "--images", *_images(paths), "--cube", str(cube), "--out", str(out), "--components", "4", "--boundary", "periodic"]) == 0
        got[name] = fits.getdata(out, "SCI").astype(np.float64)
    np.testing.assert_allclose(got["pc"], got["cdelt"], rtol=0, atol=1e-6 * np.abs(got["cdelt"]).max())
