"""``mosaic outliers`` and ``mosaic destripe`` on simulated files."""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from mosaic.cli import main
from mosaic.io.cal import DQ


def test_outliers_cli(cr_field, cleaned, tmp_path, capsys):
    out = tmp_path / "crf"
    rc = main(["outliers", *map(str, cr_field.exposures), "--out", str(out), "--tile", "96"])
    assert rc == 0
    got = sorted(out.glob("*_crf.fits"))
    assert [p.name for p in got] == [p.name for p in cleaned]
    for a, b in zip(got, cleaned, strict=True):  # the same as the library call
        np.testing.assert_array_equal(fits.getdata(a, "DQ") & DQ["OUTLIER"], fits.getdata(b, "DQ") & DQ["OUTLIER"])
    rc = main(["outliers", str(cr_field.exposures[0]), "--out", str(tmp_path / "x")])
    assert rc == 1 and "at least 2 exposures" in capsys.readouterr().err


def test_destripe_cli(striped, tmp_path, capsys):
    rc = main(["destripe", *map(str, striped.exposures), "--out", str(tmp_path), "--amps", "4"])
    assert rc == 0 and len(list(tmp_path.glob("*_1fc.fits"))) == 1
    rc = main(["destripe", *map(str, striped.exposures), "--out", str(tmp_path), "--amps", "4"])
    assert rc == 1 and "exists" in capsys.readouterr().err
