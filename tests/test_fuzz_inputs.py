"""Fuzz (issue 22): a corpus of generated bad files through ``mosaic info``, ``drizzle`` and ``detect``.

Truncations, header mutations and extreme values of a valid exposure and of a valid mosaic. Every
command must end with exit 0, or exit 1 and one error line that names the file (never a
traceback, never the catch-all "unexpected" line), within 60 s, and the whole corpus within 2 GB.
The corpus runs in one child process (``python -c``), so a hang is a timeout and memory is the
child's own peak.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from astropy.io import fits

from mosaic.io.cal import write_cal
from mosaic.simulate.pointing import nircam_wcs

SIZE = 40


def _valid_cal(path: Path, k: int = 0) -> Path:
    rng = np.random.default_rng(k)
    w = nircam_wcs(size=SIZE, distortion=False, offset_arcsec=(0.3 * k, 0.2 * k))
    sci = (1.0 + 0.05 * rng.standard_normal((SIZE, SIZE))).astype(np.float32)
    sci[20:23, 20:23] += 50.0
    ones = np.ones_like(sci)
    write_cal(
        path, sci=sci, err=0.05 * ones, dq=np.zeros((SIZE, SIZE), np.uint32), var_poisson=1e-3 * ones,
        var_rnoise=2.5e-3 * ones, var_flat=0 * ones, wcs=w,
        meta={"FILTER": "F200W", "DETECTOR": "NRCB1", "EFFEXPTM": 100.0, "PHOTMJSR": 1.0, "PIXAR_SR": 2.3e-14},
    )
    return path


def _mutants(base: Path, out: Path, ext: str) -> list[Path]:
    """Bad copies of ``base``: truncations, header mutations, extreme values, byte flips."""
    raw = base.read_bytes()
    made = []

    def put(name, data: bytes):
        p = out / f"{name}{ext}"
        p.write_bytes(data)
        made.append(p)

    for cut in (0, 79, 2880, 2880 + 100, len(raw) // 2, len(raw) - 2880, len(raw) - 1):
        put(f"trunc{cut}", raw[:cut])
    put("text", b"SIMPLE  = this is not a FITS file\n" * 50)
    rng = np.random.default_rng(0)
    for i in range(4):  # random bytes over the headers
        b = bytearray(raw)
        for pos in rng.integers(0, min(len(b), 2880 * 3), 40):
            b[pos] = int(rng.integers(0, 256))
        put(f"flip{i}", bytes(b))
    sci = "SCI" if ext.endswith("_cal.fits") else 1
    mutations = {
        "naxis1_missing": lambda h: h[sci].header.remove("NAXIS1"),
        "naxis2_huge": lambda h: h[sci].header.set("NAXIS2", 10**9),
        "naxis3": lambda h: h[sci].header.set("NAXIS", 3),
        "bitpix16": lambda h: h[sci].header.set("BITPIX", 16),
        "ctype_junk": lambda h: h[sci].header.set("CTYPE1", "JUNK---XYZ"),
        "cdelt_zero": lambda h: (h[sci].header.set("CDELT1", 0.0), h[sci].header.set("CDELT2", 0.0)),
        "crval_far": lambda h: h[sci].header.set("CRVAL2", 89.99),
        "no_sci": lambda h: h[sci].header.set("EXTNAME", "NOPE"),
        "bzero_huge": lambda h: h[sci].header.set("BSCALE", 1e38),
    }
    for name, mutate in mutations.items():
        with fits.open(base) as hdul:
            hdul = fits.HDUList([h.copy() for h in hdul])
        mutate(hdul)
        p = out / f"{name}{ext}"
        # write the headers as they are (astropy would fix or refuse some): header blocks + the original data
        with p.open("wb") as fh:
            for h in hdul:
                fh.write(h.header.tostring().encode("ascii"))
                data = h.data if h.header.get("NAXIS", 0) else None
                if data is not None:
                    arr = np.ascontiguousarray(data).astype(data.dtype.newbyteorder(">"))
                    fh.write(arr.tobytes())
                    fh.write(b"\0" * (-arr.nbytes % 2880))
        made.append(p)
    for name, value in (("all_nan", np.nan), ("all_inf", np.inf), ("all_1e38", 1e38), ("all_zero", 0.0)):
        with fits.open(base) as hdul:
            hdul = fits.HDUList([h.copy() for h in hdul])
            hdul[sci].data = np.full_like(hdul[sci].data, value)
            if ext.endswith("_cal.fits") and name == "all_zero":
                hdul["VAR_RNOISE"].data = np.full_like(hdul[sci].data, -1.0)
            p = out / f"{name}{ext}"
            hdul.writeto(p)
            made.append(p)
    return made


_CHILD = textwrap.dedent(
    """
    import contextlib, io, json, os, resource, sys, time, warnings
    warnings.simplefilter("ignore")
    import distributed  # loaded once, as in every real command (not first inside another command's dask.config.set)
    from mosaic.cli import main
    cases = json.loads(sys.argv[1])
    out = []
    for argv, named in cases:
        err = io.StringIO()
        t0 = time.perf_counter()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main(["--log-level", "ERROR", *argv])
            except BaseException as exc:  # anything escaping main is a failure of the test
                code = f"raised {type(exc).__name__}: {exc}"
        out.append({"argv": argv, "named": named, "code": code, "err": err.getvalue(), "seconds": time.perf_counter() - t0})
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"cases": out, "peak_rss": rss}))
    """
)


def test_bad_files_give_one_line_errors_quickly_and_in_little_memory(tmp_path):
    good = [_valid_cal(tmp_path / f"good{k}_cal.fits", k) for k in range(2)]
    image = tmp_path / "mosaic_i2d.fits"
    from mosaic.cli import main

    assert main(["--log-level", "ERROR", "drizzle", *map(str, good), "--out", str(image)]) == 0
    (tmp_path / "cal").mkdir()
    (tmp_path / "img").mkdir()
    cals = _mutants(good[0], tmp_path / "cal", "_cal.fits")
    images = _mutants(image, tmp_path / "img", "_i2d.fits")
    cases = []
    for p in cals:
        cases.append((["info", str(p)], p.name))
        cases.append((["drizzle", str(p), str(good[1]), "--out", str(tmp_path / "out" / f"{p.stem}.fits")], p.name))
    for p in images:
        cases.append((["detect", str(p), "--out", str(tmp_path / "out" / f"{p.stem}.ecsv")], p.name))
    (tmp_path / "out").mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(cases)], capture_output=True, text=True, timeout=240, cwd=tmp_path,
        env={"MOSAIC_PROGRESS": "0", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    failures = []
    for case in result["cases"]:
        err, code = case["err"], case["code"]
        lines = [ln for ln in err.splitlines() if ": error: " in ln]
        if code not in (0, 1) or "Traceback" in err or case["seconds"] > 60:
            failures.append(case)
        elif code == 1 and (len(lines) != 1 or case["named"] not in lines[0] or "unexpected" in lines[0]):
            failures.append(case)
    assert not failures, json.dumps([(f['argv'][:2], f['code'], f['err'][-300:]) for f in failures], indent=1)
    assert result["peak_rss"] < 2 * 1024**3
    # the corpus does exercise the refusals: most bad files are refused, the extreme-valued ones are not all
    codes = [c["code"] for c in result["cases"]]
    assert codes.count(1) > len(codes) // 2
