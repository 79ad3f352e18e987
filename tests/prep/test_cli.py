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


def test_commands_preprocess_in_the_pipelines_order(cr_field, tmp_path):
    """``--outliers --destripe`` on a command gives the exposures of the pipeline's order (outliers, then destripe)."""
    import argparse

    from mosaic.cli._common import preprocess
    from mosaic.prep import ORDER
    from mosaic.prep.destripe import destripe_exposures
    from mosaic.prep.outliers import clean_exposures

    assert [name for name, _, _ in ORDER] == ["outliers", "destripe", "background", "skymatch"]
    args = argparse.Namespace(
        outliers=True, destripe=True, flatten_background=False, flatten_box=64, skymatch=False, skymatch_box=64, prep_dir=None, overwrite=False,
    )
    files = [str(p) for p in cr_field.exposures[:3]]
    got = preprocess(files, args, tmp_path / "cli")
    ref = destripe_exposures(clean_exposures(files, tmp_path / "a"), tmp_path / "b")
    assert [p.rsplit("/", 1)[1] for p in got] == [p.name for p in ref]
    assert all(p.endswith("_1fc.fits") for p in got)
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_array_equal(fits.getdata(a, "SCI"), fits.getdata(b, "SCI"))
