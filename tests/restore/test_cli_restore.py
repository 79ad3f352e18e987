"""``mosaic restore`` end to end, and its refusals of bad input."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from mosaic.cli import main
from mosaic.exceptions import InputError
from mosaic.restore.infer import RestorationModel, restore_whole
from mosaic.restore.normalise import estimate_normalisation
from mosaic.restore.product import restore_i2d
from tests.restore.conftest import mosaic_image, write_mosaic


def test_cli_restore_writes_sci_with_wcs_and_err_statement(tmp_path, model):
    img = mosaic_image((96, 120), seed=11)
    src = write_mosaic(tmp_path / "in_i2d.fits", img)
    out = tmp_path / "out_i2d.fits"
    assert main(["restore", str(src), "--out", str(out), "--tile", "512", "--overlap", "32"]) == 0
    with fits.open(out) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "SCI"]
        sci, head, prim = hdul["SCI"].data, hdul["SCI"].header, hdul[0].header
    assert head["BUNIT"] == "MJy/sr"
    assert WCS(head).wcs.compare(WCS(fits.getheader(src, "SCI")).wcs, tolerance=1e-12)
    assert prim["ERRPROP"] is False and "not propagated" in str(prim["COMMENT"])
    assert prim["FILTER"] == "F200W" and prim["RSTBAND"] == "F200W"
    norm = estimate_normalisation(img)
    want = norm.inverse(restore_whole(norm.forward(img), model, overlap=32))
    ok = np.isfinite(img)
    np.testing.assert_allclose(sci[ok], want[ok], rtol=1e-4, atol=1e-3 * norm.sigma)
    assert np.isnan(sci[~ok]).all()
    # the sky level is kept
    assert np.nanmedian(sci) == pytest.approx(np.nanmedian(img), abs=3 * norm.sigma)
    # refuses to overwrite without --overwrite, with one line and exit code != 0
    assert main(["restore", str(src), "--out", str(out)]) != 0


def test_image_without_wcs_is_refused(tmp_path, model):
    src = write_mosaic(tmp_path / "nowcs.fits", mosaic_image((64, 64)), wcs=False)
    with pytest.raises(InputError, match="no celestial WCS"):
        restore_i2d(src, tmp_path / "o.fits", model=model)


def test_other_band_is_refused(tmp_path, model):
    src = write_mosaic(tmp_path / "f444w.fits", mosaic_image((64, 64)), band="F444W")
    with pytest.raises(InputError, match="F444W.*trained for 'F200W'"):
        restore_i2d(src, tmp_path / "o.fits", model=model)


def test_other_pixel_scale_is_refused(tmp_path, model):
    src = write_mosaic(tmp_path / "coarse.fits", mosaic_image((64, 64)), scale_arcsec=2 * model.pixel_scale_arcsec)
    with pytest.raises(InputError, match="pixel scale"):
        restore_i2d(src, tmp_path / "o.fits", model=model)


def test_file_that_is_not_a_model_is_refused(tmp_path):
    bad = tmp_path / "weights.onnx"
    bad.write_bytes(b"this is not a model\n" * 50)
    with pytest.raises(InputError, match="not an ONNX model"):
        RestorationModel(bad)
    with pytest.raises(InputError, match="no such model"):
        RestorationModel(tmp_path / "missing.onnx")


def test_onnx_without_restoration_metadata_is_refused(tmp_path, model):
    onnx = pytest.importorskip("onnx", reason="writing a metadata-free copy of the model needs onnx")
    proto = onnx.load(str(model.path))
    del proto.metadata_props[:]
    path = tmp_path / "bare.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(InputError, match="without mosaic restoration metadata"):
        RestorationModel(path)


def test_cli_bad_model_is_one_line_error(tmp_path, capsys):
    src = write_mosaic(tmp_path / "in.fits", mosaic_image((64, 64)))
    bad = tmp_path / "m.onnx"
    bad.write_text("nope")
    assert main(["restore", str(src), "--out", str(tmp_path / "o.fits"), "--model", str(bad)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert any("not an ONNX model" in line for line in err)
    assert not any("Traceback" in line for line in err)


@pytest.mark.parametrize(("keys", "words"), [
    ({"RESKERN": "gaussian"}, r"drizzle kernel 'gaussian' \(RESKERN\), but model restormer_f200w\.onnx is trained on mosaics drizzled with kernel 'square', pixfrac 1"),
    ({"PIXFRAC": 0.6}, r"drizzle pixfrac 0\.6 \(PIXFRAC\), but model .* pixfrac 1; expected a mosaic drizzled that way"),
])
def test_a_mosaic_drizzled_otherwise_than_the_training_inputs_is_refused(tmp_path, model, keys, words):
    """The drizzle's kernel and pixfrac set the mosaic's PSF, which the model was trained to undo
    (square, pixfrac 1): a mosaic drizzled otherwise is one clear error naming the file, and no
    product is written. The same keywords with the training's values, in any case, pass."""
    src = write_mosaic(tmp_path / "other_i2d.fits", mosaic_image((64, 64)))
    with fits.open(src, mode="update") as hdul:
        hdul[0].header.update(keys)
    out = tmp_path / "o.fits"
    with pytest.raises(InputError, match=f"{src.name}: {words}"):
        restore_i2d(src, out, model=model, tile=64, overlap=32)
    assert not out.exists() and not list(tmp_path.glob("*o.fits*"))
    with fits.open(src, mode="update") as hdul:
        hdul[0].header.update({"RESKERN": "SQUARE", "PIXFRAC": 1.0})
    assert restore_i2d(src, out, model=model, tile=64, overlap=32).exists()
    assert (model.drizzle_kernel, model.drizzle_pixfrac) == ("square", 1.0)  # the shipped model: its metadata predates the keys
