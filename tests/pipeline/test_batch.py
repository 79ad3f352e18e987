"""``mosaic batch``: one broken field fails alone, is reported, and a re-run skips the good one."""

from __future__ import annotations

from pathlib import Path

from astropy.io import fits

from mosaic.cli import main
from mosaic.config import load_survey
from mosaic.io.store import Store
from mosaic.pipeline import run_survey

from .conftest import THREADS, write_yaml


def _survey(tmp_path: Path, tiny_field) -> Path:
    broken = tmp_path / "broken_data"
    broken.mkdir()
    (broken / "jw0001_nrcb1_cal.fits").write_text("not a FITS file")
    return write_yaml(
        tmp_path / "survey.yaml",
        {
            "store": "survey.zarr",
            "outdir": "products",
            "cluster": THREADS,
            "max_concurrent_fields": 2,
            "defaults": {
                "grid": {"tile": 160},
                "updc": {"iterations": 1, "save": [1]},
                "products": {"previews": False},
            },
            "fields": [
                {"field": "good", "bands": {"F200W": {"inputs": f"{tiny_field.outdir}/*_cal.fits", "psf": str(tiny_field.psf)}}},
                {"field": "broken", "bands": {"F200W": {"inputs": "broken_data/*_cal.fits", "psf": str(tiny_field.psf)}}},
            ],
        },
    )


def test_a_broken_field_fails_alone_and_a_rerun_skips_the_good_one(tmp_path, tiny_field):
    path = _survey(tmp_path, tiny_field)
    log = tmp_path / "batch.log"
    assert main(["--log-file", str(log), "batch", str(path)]) == 1

    text = log.read_text()
    table = text[text.index("1 failure(s):") :]
    assert "broken  F200W  drizzle" in table
    assert "InputError: " in table and "jw0001_nrcb1_cal.fits: not a readable FITS file" in table
    assert "good" not in table.split("\n", 3)[-1]

    store = Store(tmp_path / "survey.zarr")
    good = store.manifest("good", "F200W")
    assert good["pipeline/run"]["status"] == "complete"
    assert store.is_complete("good", "F200W", "updc/iter_01")
    bad = store.manifest("broken", "F200W")["pipeline/run"]
    assert bad["status"] == "failed" and bad["step"] == "drizzle" and "not a readable FITS file" in bad["error"]
    i2d = tmp_path / "products" / "good" / "good_f200w_updc_iter01_i2d.fits"
    assert fits.getdata(i2d, "SCI").shape == tuple(fits.getheader(i2d, "SCI")[k] for k in ("NAXIS2", "NAXIS1"))
    stamp = i2d.stat().st_mtime_ns

    # the re-run: the good field is not redone, the broken one fails again with the same error
    report = run_survey(load_survey(path), start_cluster=False)
    assert not report.ok
    assert [(b.field, b.status) for b in report.bands()] == [("good", "resumed"), ("broken", "failed")]
    assert "not a readable FITS file" in report.failures()[0].error
    assert store.manifest("good", "F200W")["pipeline/run"] == good["pipeline/run"]
    assert i2d.stat().st_mtime_ns == stamp
    assert "broken  F200W  drizzle  InputError: " in report.failure_table()
