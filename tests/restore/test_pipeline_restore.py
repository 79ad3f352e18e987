"""The ``restore:`` section of a field config and its pipeline step, against ``mosaic restore`` on the same file."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from mosaic.cli import main
from mosaic.config import ConfigError, field_from_mapping
from mosaic.pipeline import check_config, run_field
from mosaic.restore.product import restore_i2d
from mosaic.simulate import SimConfig, simulate_field
from tests.pipeline.conftest import field_mapping

RESTORE = {"enabled": True, "tile": 128, "overlap": 32}


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    """Three dithered 96² F200W exposures (a 0.0155"/pix grid, the shipped model's)."""
    cfg = SimConfig(size=96, psf_size=21, n_exposures=3, seed=5, n_galaxies=6, n_stars=3, n_pairs=1, n_wavelengths=3)
    return simulate_field(tmp_path_factory.mktemp("restore_field"), cfg)


def _config(field, tmp_path, *, restore=None, **sections):
    raw = field_mapping(field, "rst", **{"updc": {"enabled": False}, **sections})
    raw["restore"] = {**RESTORE, **(restore or {})}
    return field_from_mapping(raw, base=tmp_path)


def _rows(report):
    return {r.step: r for r in report.bands[0].rows}


def test_restore_step_equals_mosaic_restore_and_resumes(field, tmp_path):
    config = _config(field, tmp_path)
    report = run_field(config)
    assert report.ok, report.table()
    rows = _rows(report)
    assert rows["drizzle"].status == rows["restore"].status == "done"
    out = tmp_path / "out" / "rst_f200w_restored_i2d.fits"
    assert rows["restore"].products == {"restored_i2d": str(out)}
    # the reference: the CLI on the pipeline's drizzle file, with the same tiling
    drizzle = tmp_path / "out" / "rst_f200w_drizzle_i2d.fits"
    ref = tmp_path / "ref_i2d.fits"
    assert main(["restore", str(drizzle), "--out", str(ref), "--tile", "128", "--overlap", "32"]) == 0
    got, want = fits.getdata(out, "SCI"), fits.getdata(ref, "SCI")
    assert np.isfinite(want).sum() > 0.5 * want.size
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6, equal_nan=True)
    assert fits.getheader(out)["RSTTILE"] == 128
    # a re-run reads the band back; a changed tiling redoes the restore step alone
    again = run_field(config, start_cluster=False)
    assert _rows(again)["restore"].status == "resumed"
    before = out.stat().st_mtime_ns
    retiled = run_field(_config(field, tmp_path, restore={"tile": 256}), start_cluster=False)
    rows = _rows(retiled)
    assert (rows["drizzle"].status, rows["restore"].status) == ("resumed", "done")
    assert out.stat().st_mtime_ns != before and fits.getheader(out)["RSTTILE"] == 256


def test_restore_off_adds_no_row(field, tmp_path):
    raw = field_mapping(field, "off", updc={"enabled": False}, drizzle={"enabled": False})
    report = run_field(field_from_mapping(raw, base=tmp_path), start_cluster=False)
    assert "restore" not in _rows(report)


@pytest.mark.parametrize(("restore", "sections", "words"), [
    ({"tile": 500}, {}, "restore.tile: got 500; expected an integer >= 8, a multiple of 8"),
    ({"overlap": 256}, {}, r"restore.overlap: got 256; expected at most restore.tile \(128\)"),
    ({"input": "updc"}, {}, "restore.input: got 'updc'"),
    ({"input": 3}, {"updc": {"enabled": True, "iterations": 2, "save": [0, 2]}}, r"restore.input: got 3; .*updc.save: \[0, 2\]"),
    ({}, {"drizzle": {"enabled": False}}, "restore.input: got 'drizzle'; expected a saved UPDC iteration when drizzle is off"),
    ({"colour": 1}, {}, "restore.colour: unknown key"),
])
def test_bad_restore_sections_name_the_key(field, tmp_path, restore, sections, words):
    raw = field_mapping(field, "bad", **{"updc": {"enabled": False}, **sections})
    raw["restore"] = {**RESTORE, **restore}
    with pytest.raises(ConfigError, match=words.replace(".", r"\.").replace(r"\.*", ".*")):
        field_from_mapping(raw, base=tmp_path)


def test_bad_restore_model_is_one_clear_error(field, tmp_path):
    missing = _config(field, tmp_path, restore={"model": "none.onnx"})
    with pytest.raises(ConfigError, match=r"restore\.model: .*none\.onnx: no such model file"):
        check_config(missing)
    bad = tmp_path / "bad.onnx"
    bad.write_text("not a model")
    with pytest.raises(ConfigError, match=r"restore\.model: .*not an ONNX model"):
        check_config(_config(field, tmp_path, restore={"model": str(bad)}))
    raw = field_mapping(field, "sw")
    raw["bands"] = {"F150W": raw["bands"]["F200W"]}
    raw["restore"] = RESTORE
    with pytest.raises(ConfigError, match=r"restore\.model: restormer_f200w\.onnx is trained for F200W; .*\['F150W'\]"):
        check_config(field_from_mapping(raw, base=tmp_path))


@pytest.mark.parametrize(("drizzle", "words"), [
    ({"kernel": "gaussian"}, r"drizzle\.kernel 'gaussian', drizzle\.pixfrac 1\), but restormer_f200w\.onnx is trained on mosaics drizzled with kernel 'square', pixfrac 1"),
    ({"pixfrac": 0.7}, r"drizzle\.kernel 'square', drizzle\.pixfrac 0\.7\), but .* pixfrac 1; expected those drizzle settings"),
])
def test_restoring_a_mosaic_drizzled_otherwise_than_the_model_is_refused_before_any_work(field, tmp_path, drizzle, words):
    """The model undoes the PSF of square-kernel, pixfrac-1 mosaics: a config that restores a
    drizzle mosaic made otherwise is one ConfigError at the check, before anything runs."""
    with pytest.raises(ConfigError, match=r"restore\.input: the drizzle mosaic \(" + words):
        check_config(_config(field, tmp_path, drizzle={"enabled": True, **drizzle}))
    assert not (tmp_path / "out").exists()


def test_restore_of_a_saved_iteration(field, tmp_path):
    config = _config(field, tmp_path, restore={"input": 1}, updc={"enabled": True, "iterations": 1, "save": [1]})
    report = run_field(config, start_cluster=False)
    assert report.ok, report.table()
    out = tmp_path / "out" / "rst_f200w_updc_iter01_restored_i2d.fits"
    assert _rows(report)["restore"].products == {"restored_i2d": str(out)}
    want = restore_i2d(tmp_path / "out" / "rst_f200w_updc_iter01_i2d.fits", tmp_path / "ref.fits", tile=128, overlap=32)
    np.testing.assert_allclose(fits.getdata(out, "SCI"), fits.getdata(want, "SCI"), rtol=0, atol=1e-6, equal_nan=True)
