"""Do the catalogue's flux errors describe the scatter of its fluxes? Pulls against the truth.

For each case a field is simulated twice with the same seed, with noise and ``--noiseless``
(``mosaic simulate``), and both are drizzled with the same options (``mosaic drizzle``). The
noisy mosaic is catalogued (``mosaic detect``, circular apertures of 2, 4 and 8 pixels) with the
default ``--flux-errors correlated`` and with ``independent``. The truth of each aperture flux is
the same aperture on the noiseless mosaic, less the sky the detection removed from the noisy
one, so a pull is the aperture's noise over its error.

Printed per case and radius:

- the factor applied;
- the robust scatter (1.4826 x MAD) of 4000 apertures at random places on the noise alone (the
  noisy mosaic less the noiseless one) over their scaled errors: it leaves the sources, their
  neighbours and the detection out, so what is above 1 is noise that neither ERR nor the
  drizzle's correlation holds (the simulator's 1/f striping, which ``mosaic drizzle`` leaves in
  without ``--destripe``, and the unflagged wings of cosmic rays and hot pixels);
- the robust scatter of the pulls ``(flux - truth) / error`` of real, isolated sources (true
  aperture flux 10 to 200 times its independent error; no other detection within
  ``max(3 r, r + 12)`` pixels, so photutils' neighbour correction inside the aperture does not
  change the sum), with either error. Fainter detections are chosen by their noise (a detection
  at 1.5 sigma a pixel is mostly where the noise was high), so their pulls are biased and say
  nothing of the error.

An honest error gives 1. Cases: four seeds (fields the model, which has no fitted parameter,
never saw), the simulator's bright sky (0.15 MJy/sr) and no sky (many negative pixels), and
``pixfrac`` 1 and 0.6 at the pixel-scale ratio 0.5.

    python benchmarks/bench_flux_errors.py [--data DIR] [--size 1024] [--exposures 8] [--updc]

``--updc``: also run ``mosaic updc`` (10 iterations) on the first case's noisy and noiseless
exposures and print, for iterations 0, 5 and 10, the robust scatter of 4000 random apertures on
the noise alone (noisy less noiseless iterate, less the difference of the sky levels the two
runs removed) over ``sqrt(sum ERR²)``: how far the errors of a catalogue of an iterate, which are
not scaled, are from the truth.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

RADII = (2.0, 4.0, 8.0)
CASES = [  # (seed, sky MJy/sr, pixfrac)
    (11, 0.15, 1.0),
    (12, 0.0, 1.0),
    (13, 0.15, 0.6),
    (14, 0.0, 0.6),
]


def _mosaic(*args):
    subprocess.run([sys.executable, "-m", "mosaic", "--log-level", "WARNING", *map(str, args)], check=True)


def _field(folder: Path, seed: int, sky: float, size: int, n_exp: int, noiseless: bool) -> list[str]:
    out = folder / f"s{seed}_b{sky:g}{'_truth' if noiseless else ''}"
    if not sorted(out.glob("*_cal.fits")):
        _mosaic("simulate", out, "--exposures", n_exp, "--size", size, "--seed", seed, "--background", sky, *(["--noiseless"] if noiseless else []))
    return sorted(str(p) for p in out.glob("*_cal.fits"))


def pulls(folder: Path, seed: int, sky: float, pixfrac: float, size: int, n_exp: int) -> dict:
    from astropy.io import fits  # noqa: PLC0415
    from photutils.aperture import CircularAperture, aperture_photometry  # noqa: PLC0415
    from scipy.spatial import cKDTree  # noqa: PLC0415

    from mosaic.io.catalogs import read_image  # noqa: PLC0415
    from mosaic.pipeline.detect import _leftover_sky, detect_image  # noqa: PLC0415

    mosaics = {}
    for truth in (False, True):
        paths = _field(folder, seed, sky, size, n_exp, truth)
        mosaics[truth] = folder / f"s{seed}_b{sky:g}_p{pixfrac:g}{'_truth' if truth else ''}_i2d.fits"
        if not mosaics[truth].exists():
            _mosaic("drizzle", *paths, "--out", mosaics[truth], "--pixfrac", pixfrac)
    cats = {
        mode: detect_image(mosaics[False], folder / f"cat_{mode}.ecsv", radii=RADII, overwrite=True, flux_errors=mode)
        for mode in ("correlated", "independent")
    }
    # the truth: the same apertures on the noiseless mosaic, less the sky detect removed from the noisy one
    noisy = read_image(mosaics[False])
    sky_noisy = float(_leftover_sky(noisy.sci, np.isfinite(noisy.sci) & (noisy.wht > 0), noisy.err, noisy.path))
    with fits.open(mosaics[True]) as h:
        sci = h["SCI"].data.astype(np.float64)
    with fits.open(mosaics[False]) as h:
        noise = np.nan_to_num(h["SCI"].data.astype(np.float64) - sci)
        err_map = h["ERR"].data.astype(np.float64)
    err_map = np.where(np.isfinite(err_map) & (err_map > 0), err_map, np.nan)
    scale, _ = noisy.flux_scale
    rng = np.random.default_rng(seed)
    ny, nx = noise.shape
    t = cats["correlated"]
    xy = np.column_stack([np.asarray(t["x_centroid"].value), np.asarray(t["y_centroid"].value)])
    out = {"n": len(t)}
    nearest = cKDTree(xy).query(xy, k=2)[0][:, 1] if len(xy) > 1 else np.full(len(xy), np.inf)
    for r in RADII:
        name = f"r{r:g}"
        ap = CircularAperture(xy, r)
        truth = np.asarray(aperture_photometry(np.nan_to_num(sci - sky_noisy), ap)["aperture_sum"]) * scale
        flux = np.asarray(t[f"circ_flux_{name}"].value)
        plain = np.asarray(cats["independent"][f"circ_flux_err_{name}"].value)
        with np.errstate(invalid="ignore", divide="ignore"):
            use = np.isfinite(flux) & (plain > 0) & (truth > 10 * plain) & (truth < 200 * plain) & (np.asarray(t["flags"]) == 0)
            use &= nearest > max(3 * r, r + 12)
        for mode, cat in cats.items():
            err = np.asarray(cat[f"circ_flux_err_{name}"].value)
            p = (flux[use] - truth[use]) / err[use]
            out[(mode, name)] = (1.4826 * np.median(np.abs(p - np.median(p))), int(use.sum()), float(np.median(p)))
        out[("factor", name)] = float(t.meta.get(f"flux_err_factor_{name}", np.nan))
        places = np.column_stack([rng.uniform(0.15 * nx, 0.85 * nx, 4000), rng.uniform(0.15 * ny, 0.85 * ny, 4000)])
        e = aperture_photometry(noise, CircularAperture(places, r), error=err_map)
        z = np.asarray(e["aperture_sum"]) / (np.asarray(e["aperture_sum_err"]) * out[("factor", name)])
        z = z[np.isfinite(z)]
        out[("noise", name)] = 1.4826 * np.median(np.abs(z - np.median(z)))
    return out


def updc_noise(folder: Path, seed: int, sky: float, size: int, n_exp: int, radii=(2.0, 4.0, 8.0)) -> dict:
    """Empty apertures on the noise of UPDC iterates 0, 5 and 10 over sqrt(sum ERR²)."""
    from astropy.io import fits  # noqa: PLC0415
    from photutils.aperture import CircularAperture, aperture_photometry  # noqa: PLC0415

    runs = {}
    for truth in (False, True):
        paths = _field(folder, seed, sky, size, n_exp, truth)
        runs[truth] = folder / f"updc_s{seed}{'_truth' if truth else ''}"
        if not (runs[truth] / "updc_iter10_i2d.fits").exists():
            psf = sorted((Path(paths[0]).parent).glob("psf_*.fits"))[0]
            _mosaic("updc", *paths, "--psf", psf, "--iterations", 10, "--save", "0,5,10", "--out", runs[truth], "--workers", 2, "--overwrite")
    rng = np.random.default_rng(seed)
    out = {}
    for it in (0, 5, 10):
        name = f"updc_iter{it:02d}_i2d.fits"
        with fits.open(runs[False] / name) as a, fits.open(runs[True] / name) as b:
            noise = a["SCI"].data.astype(np.float64) - b["SCI"].data.astype(np.float64)
            err = a["ERR"].data.astype(np.float64)
        # each run removed its own median sky (BKGLEVEL): the noisy one's is higher by the
        # noise's skew, a constant that is not noise
        noise = np.nan_to_num(noise - np.nanmedian(noise))
        err = np.where(np.isfinite(err) & (err > 0), err, np.nan)
        ny, nx = noise.shape
        for r in radii:
            places = np.column_stack([rng.uniform(0.15 * nx, 0.85 * nx, 4000), rng.uniform(0.15 * ny, 0.85 * ny, 4000)])
            t = aperture_photometry(noise, CircularAperture(places, r), error=err)
            z = np.asarray(t["aperture_sum"]) / np.asarray(t["aperture_sum_err"])
            z = z[np.isfinite(z)]
            out[(it, r)] = 1.4826 * np.median(np.abs(z - np.median(z)))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, help="folder for the fields (kept and reused; default a temporary one)")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--exposures", type=int, default=8)
    ap.add_argument("--updc", action="store_true", help="also the noise of UPDC iterates 0, 5, 10 over sqrt(sum ERR^2) (first case)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.data or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        print("| seed | sky MJy/sr | pixfrac | radius px | factor | empty apertures on the noise / scaled error | "
              "pull scatter, correlated | pull scatter, independent | sources | median pull |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for seed, sky, pixfrac in CASES:
            res = pulls(folder, seed, sky, pixfrac, args.size, args.exposures)
            for r in RADII:
                name = f"r{r:g}"
                c, n, med = res[("correlated", name)]
                i, _, _ = res[("independent", name)]
                print(f"| {seed} | {sky:g} | {pixfrac:g} | {r:g} | {res[('factor', name)]:.3f} | {res[('noise', name)]:.2f} | **{c:.2f}** | {i:.2f} | {n} | {med:+.2f} |",
                      flush=True)
        if args.updc:
            seed, sky, _ = CASES[0]
            res = updc_noise(folder, seed, sky, args.size, args.exposures)
            print(f"\nUPDC iterates (seed {seed}, sky {sky:g}): empty apertures on the noise / sqrt(sum ERR^2)")
            print("| iteration | " + " | ".join(f"r = {r:g}" for r in (2.0, 4.0, 8.0)) + " |")
            print("| --- | --- | --- | --- |")
            for it in (0, 5, 10):
                print(f"| {it} | " + " | ".join(f"{res[(it, r)]:.2f}" for r in (2.0, 4.0, 8.0)) + " |", flush=True)


if __name__ == "__main__":
    main()
