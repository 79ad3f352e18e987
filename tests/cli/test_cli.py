"""The ``mosaic`` command: subcommands, help, one-line errors and exit codes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits

from mosaic.cli import commands, main


@pytest.mark.parametrize("command", commands())
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert command in capsys.readouterr().out


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "mosaic", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("mosaic ")


def test_simulate_then_info(tmp_path, capsys):
    rc = main(["simulate", str(tmp_path / "f"), "--exposures", "2", "--size", "64", "--psf-size", "21", "--band", "F444W", "--seed", "3"])
    assert rc == 0
    cals = sorted((tmp_path / "f").glob("*_cal.fits"))
    assert len(cals) == 2
    assert fits.getheader(cals[0])["FILTER"] == "F444W" and fits.getheader(cals[0])["DETECTOR"] == "NRCBLONG"
    # long-wave pixels are 0.063"
    assert fits.getheader(cals[0], "SCI")["PIXAR_A2"] == pytest.approx(0.063**2)
    capsys.readouterr()
    assert main(["info", *map(str, cals)]) == 0
    out = capsys.readouterr().out
    assert "F444W" in out and "NRCBLONG" in out and "64x64" in out
    # the flagged percentage printed is the one in the file
    dq = fits.getdata(cals[0], "DQ")
    assert f"{100 * np.mean((dq & 1) != 0):.3f}".rstrip("0") in out


def test_errors_are_one_line_and_nonzero(tmp_path, capsys):
    missing = tmp_path / "nothere_cal.fits"
    assert main(["info", str(missing)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(missing) in err[0] and "no such file" in err[0]
    assert main(["simulate", str(tmp_path / "g"), "--psf-size", "20"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "psf_size must be odd" in err[0]
    assert not (tmp_path / "g").exists(), "a refused configuration must write nothing"


def test_drizzle_and_updc_can_clean_outliers_first(tmp_path, small_field):
    files = [str(p) for p in small_field.exposures]
    prep = tmp_path / "prep"
    assert main(["drizzle", *files, "--out", str(tmp_path / "clean_i2d.fits"), "--tile", "96", "--outliers", "--prep-dir", str(prep)]) == 0
    cleaned = sorted(prep.glob("*_crf.fits"))
    assert len(cleaned) == len(files)
    assert all(fits.getheader(p)["S_OUTLIR"] == "COMPLETE" for p in cleaned)
    # the mosaic is that of the cleaned exposures
    assert main(["drizzle", *map(str, cleaned), "--out", str(tmp_path / "ref_i2d.fits"), "--tile", "96"]) == 0
    np.testing.assert_array_equal(fits.getdata(tmp_path / "clean_i2d.fits", "SCI"), fits.getdata(tmp_path / "ref_i2d.fits", "SCI"))
    # UPDC finds the PSFs of the cleaned exposures (psf_<band>.fits in the simulation's folder)
    assert main(["updc", *files, "--psf-dir", str(small_field.outdir), "--out", str(tmp_path / "updc"), "--iterations", "1",
                 "--outliers", "--flatten-background", "--flatten-box", "16", "--prep-dir", str(prep), "--overwrite"]) == 0
    assert (tmp_path / "updc" / "updc_iter01_i2d.fits").exists()
    flattened = sorted(prep.glob("*_bkg.fits"))
    assert len(flattened) == len(files) and all(fits.getheader(p)["S_BKDSUB"] == "COMPLETE" for p in flattened)
