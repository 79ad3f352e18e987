"""Catalogue products (ECSV, Parquet, DS9, segmentation FITS and store) and the CLI commands."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import QTable
from photutils.segmentation import SourceCatalog, detect_sources

from mosaic.catalog.detect import detect_segmentation
from mosaic.catalog.photometry import NoWCSWarning, source_catalog
from mosaic.cli import main
from mosaic.io.catalogs import (
    read_catalog,
    read_image,
    write_catalog,
    write_regions,
    write_segmentation_fits,
    write_segmentation_store,
)
from mosaic.io.store import Store


@pytest.fixture(scope="module")
def measured(scene, wcs_factory):
    img, _, mask = scene
    wcs = wcs_factory(img.shape)
    seg = detect_segmentation(img, 2.0, n_pixels=8, mask=mask, tile=(40, 50))
    cat = source_catalog(img, seg, error=np.ones(img.shape), mask=mask, wcs=wcs, radii=(3.0,), flux_unit=u.uJy)
    return img, mask, wcs, seg, cat


@pytest.mark.parametrize("suffix", [".ecsv", ".parquet"])
def test_catalog_round_trip_keeps_units(tmp_path, measured, suffix):
    cat = measured[4]
    path = write_catalog(cat, tmp_path / f"cat{suffix}")
    back = read_catalog(path)
    assert back.colnames == cat.colnames
    assert back["kron_flux"].unit == u.uJy and back["ra"].unit == u.deg and back["x_centroid"].unit == u.pix
    np.testing.assert_array_equal(back["ra"].value, cat["ra"].value)
    with pytest.raises(FileExistsError, match="exists"):
        write_catalog(cat, path)
    assert not list(tmp_path.glob(".*part*"))  # no temporaries left


def test_region_file(tmp_path, measured):
    cat = measured[4]
    text = write_regions(cat, tmp_path / "cat.reg", pixel_scale_arcsec=0.031).read_text()
    assert text.splitlines()[2] == "fk5"
    assert sum(ln.startswith("ellipse(") for ln in text.splitlines()) == len(cat)
    pixels = write_regions(cat, tmp_path / "pix.reg").read_text().splitlines()
    assert pixels[2] == "image"
    x, y = (float(v) for v in pixels[3][len("ellipse(") :].split(",")[:2])
    assert (x, y) == pytest.approx((cat["x_centroid"][0].value + 1, cat["y_centroid"][0].value + 1), abs=1e-3)


def test_segmentation_fits_and_store(tmp_path, measured):
    img, mask, wcs, seg, _ = measured
    path = write_segmentation_fits(seg.data, tmp_path / "seg.fits", wcs=wcs)
    ref = detect_sources(img, 2.0, n_pixels=8, mask=mask).data
    np.testing.assert_array_equal(fits.getdata(path, "SEGM"), ref)
    store = Store(tmp_path / "s.zarr")
    write_segmentation_store(store, "field", "F200W", seg.data, wcs=wcs)
    assert store.is_complete("field", "F200W", "catalogs/segmentation")
    np.testing.assert_array_equal(store.read_product("field", "F200W", "catalogs/segmentation")["segm"].values, ref)


def _write_i2d(path, img, wcs, *, err=True):
    hdr = wcs.to_header()
    hdr["BUNIT"] = "MJy/sr"
    hdus = [fits.PrimaryHDU(header=fits.Header([("FILTER", "F200W")])), fits.ImageHDU(img.astype(np.float32), hdr, name="SCI")]
    if err:
        hdus.append(fits.ImageHDU(np.ones(img.shape, np.float32), hdr, name="ERR"))
        wht = np.ones(img.shape, np.float32)
        wht[:3] = 0
        hdus.append(fits.ImageHDU(wht, hdr, name="WHT"))
    fits.HDUList(hdus).writeto(path)
    return path


@pytest.mark.parametrize("noise", ["err", "measured"])
def test_cli_detect_equals_photutils(tmp_path, measured, noise):
    """Tiled, through the file and the command: photutils on the whole image at ``2 x ERR``, or at
    ``2 x k x ERR`` with the measured ``k`` (the scene's noise is 1 and so is its ERR)."""
    img, _, wcs, _, _ = measured
    image = _write_i2d(tmp_path / "m_i2d.fits", img, wcs)
    out = tmp_path / "cat.parquet"
    rc = main(["detect", str(image), "--out", str(out), "--threshold", "2", "--npixels", "8", "--fwhm", "0", "--tile", "96", "--noise", noise,
               "--regions", str(tmp_path / "cat.reg"), "--segmentation", str(tmp_path / "seg.fits"), "--store", str(tmp_path / "s.zarr")])
    assert rc == 0
    cat = read_catalog(out)
    k = cat.meta["noise_scale"]
    assert cat.meta["noise"] == noise
    assert k == (1.0 if noise == "err" else pytest.approx(1.0, abs=0.03))
    data = img.astype(np.float32).astype(np.float64)
    good = np.ones(img.shape, bool)
    good[:3] = False
    ref = SourceCatalog(np.where(good, data, 0.0), detect_sources(data, 2.0 * k, n_pixels=8, mask=~good), error=np.ones(img.shape), mask=~good)
    assert len(cat) == len(ref) > 5
    np.testing.assert_allclose(cat["x_centroid"].value, ref.x_centroid, atol=1e-6)
    # MJy/sr summed over pixels of known solid angle -> uJy
    area = (0.031 / 206264.80624709636) ** 2
    np.testing.assert_allclose(cat["kron_flux"].to_value(u.uJy), ref.kron_flux * area * 1e12, rtol=1e-6)
    assert (tmp_path / "seg.fits").exists() and (tmp_path / "cat.reg").exists()
    assert main(["detect", str(image), "--out", str(out)]) == 1  # exists without --overwrite


def test_cli_detect_daofind_and_no_wcs(tmp_path, scene, capsys):
    img = scene[0]
    plain = tmp_path / "plain.fits"
    fits.PrimaryHDU(img.astype(np.float32)).writeto(plain)
    with pytest.warns(NoWCSWarning):
        assert main(["detect", str(plain), "--out", str(tmp_path / "a.ecsv"), "--tile", "64"]) == 0
    cat = read_catalog(tmp_path / "a.ecsv")
    assert len(cat) and np.all(np.isnan(cat["ra"]))
    assert main(["detect", str(plain), "--out", str(tmp_path / "b.ecsv"), "--method", "daofind", "--fwhm", "3", "--threshold", "4"]) == 0
    assert len(read_catalog(tmp_path / "b.ecsv")) > 5


def test_cli_bad_input(tmp_path, capsys):
    assert main(["detect", str(tmp_path / "missing.fits"), "--out", str(tmp_path / "c.ecsv")]) == 1
    assert "missing.fits" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["detect", "x.fits", "--out", "c.ecsv", "--threshold", "0"])
    cube = tmp_path / "cube.fits"
    fits.PrimaryHDU(np.zeros((2, 3, 4), np.float32)).writeto(cube)
    assert main(["detect", str(cube), "--out", str(tmp_path / "c.ecsv")]) == 1
    assert "2-D" in capsys.readouterr().err


def test_cli_match_and_masks(tmp_path, measured, capsys):
    img, _, wcs, _, cat = measured
    a = write_catalog(cat, tmp_path / "a.ecsv")
    shifted = QTable(cat, copy=True)
    shifted["ra"] = shifted["ra"] + 0.01 / 3600 * u.deg
    b = write_catalog(shifted, tmp_path / "b.ecsv")
    assert main(["match", str(a), str(b), "--max-sep", "0.1", "--out", str(tmp_path / "m.ecsv")]) == 0
    assert capsys.readouterr().out.startswith(f"{len(cat)} matches")
    assert len(read_catalog(tmp_path / "m.ecsv")) == len(cat)
    image = _write_i2d(tmp_path / "m_i2d.fits", img, wcs)
    rc = main(["masks", str(image), "--reference", str(a), "--percent", "5", "--kind", "derivative", "--radius", "3",
               "--scores", str(tmp_path / "s.ecsv"), "--out", str(tmp_path / "mask.fits")])
    assert rc == 0
    assert "success" in capsys.readouterr().out
    scores = read_catalog(tmp_path / "s.ecsv")
    assert scores["success"].sum() > 0.5 * len(scores)  # detected sources sit in the bright, steep pixels
    assert fits.getdata(tmp_path / "mask.fits").mean() == pytest.approx(0.05, abs=0.002)


def test_read_image(tmp_path, measured):
    img, _, wcs, _, _ = measured
    im = read_image(_write_i2d(tmp_path / "x_i2d.fits", img, wcs), tile=64)
    assert im.band == "F200W" and im.err is not None and im.wcs is not None
    np.testing.assert_array_equal(im.sci.compute(), img.astype(np.float32))
    assert im.flux_scale[1] == u.uJy
