"""Kron and aperture magnitudes of isolated stars, drizzle vs UPDC iteration 5, against the truth.

    python benchmarks/bench_updc_photometry.py [--ratios 0.1 20] [--seed 31] [--iterations 5]
    python benchmarks/bench_updc_photometry.py --fwhm [--ratios 1 20] [--pedestal auto|none|ELECTRONS]

Nine isolated stars (a 3 x 3 lattice, > 13 FWHM apart) of 18 to 22 AB mag (the simulator's
1 ks F200W calibration) in 4 dithered, distorted 128² exposures with the model PSF, observed on a
faint (0.1 x the read noise) and a bright (20 x) sky as ``bench_updc_detection.py`` does. Stars
are found on the smoothed image (5 sigma of the measured noise) and measured by
:func:`mosaic.catalog.photometry.source_catalog` (Kron 2.5 with photutils' minimum Kron radius
1.4, "Kron3" with 3.0 as :func:`mosaic.catalog.dual.detect_dual` uses; circular apertures of 0.2"
and 0.35" radius). Magnitude minus true magnitude (the star's whole flux) per star, and the most negative
(brightest) surface brightness in an annulus 2-6 FWHM around each star relative to its peak
(the rings).

``--fwhm``: the FWHM the iteration reaches at real noise. Nine isolated stars of modest S/N
(2e5 down to 2e3 electrons per exposure: drizzle peak S/N ~600 to ~15), seed 41, iterations 0,
5, 10, 20 and 30: FWHM (:func:`mosaic.catalog.profiles.star_fwhm`) relative to iteration 0's, per
star and the median; the chi-squared per degree of freedom of every iterate, and the median FWHM
at the first iterate whose chi-squared per degree of freedom is at most 1 (fitted to the noise:
sharper than that is noise).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_updc_detection import C, crowded_exposures, observe  # noqa: E402

AB_18 = 10 ** ((23.9 - 18.0) / 2.5)  # uJy


def lattice(shape):
    ny, nx = shape
    ys, xs = np.meshgrid(np.linspace(0.3, 0.7, 3) * ny, np.linspace(0.3, 0.7, 3) * nx, indexing="ij")
    mags = np.linspace(18.0, 22.0, 9)
    # relative magnitudes of crowded_exposures: 2e5 electrons per exposure at m = 0
    pixar = np.deg2rad(0.031 / 3600.0) ** 2
    electrons = 10 ** ((23.9 - mags) / 2.5) / (C * pixar * 1e12)
    return xs.ravel() + 0.37, ys.ravel() + 0.21, -2.5 * np.log10(electrons / 2e5)


def measure(image, good, truth, fwhm, grid, n_expected):
    from mosaic.catalog.detect import detect_segmentation, smooth
    from mosaic.catalog.dual import measured_noise
    from mosaic.catalog.photometry import source_catalog

    det = smooth(np.where(good, image, 0.0), fwhm=fwhm, tile=512).compute()
    noise, _ = measured_noise(det, good)
    scale = grid.pixel_scale_arcsec
    radii = (0.2 / scale, 0.35 / scale)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg = detect_segmentation(det, 5 * noise, n_pixels=10, mask=~good, tile=512)
        cat = source_catalog(np.where(good, image, 0.0), seg, mask=~good, convolved=det, wcs=grid.wcs, radii=radii)
        kron3 = source_catalog(np.where(good, image, 0.0), seg, mask=~good, convolved=det, wcs=grid.wcs, kron_params=(2.5, 3.0, 0.0))
    out = []
    for t in truth:
        d = np.hypot(np.asarray(cat["x_centroid"].value) - t["x"], np.asarray(cat["y_centroid"].value) - t["y"])
        i = int(np.argmin(d))
        if d[i] > 2:
            continue
        true = t["flux_image"]
        row = {"mag": t["mag_ab"], "kron": -2.5 * np.log10(float(cat["kron_flux"][i].value) / true),
               "kron3": -2.5 * np.log10(float(kron3["kron_flux"][i].value) / true)}
        for r, name in zip(radii, ("r0.2", "r0.35"), strict=True):
            col = f"circ_flux_r{float(r):g}".replace(".", "p")
            row[name] = -2.5 * np.log10(float(cat[col][i].value) / true)
        yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
        rr = np.hypot(xx - t["x"], yy - t["y"])
        ring = (rr > 2 * fwhm) & (rr < 6 * fwhm)
        row["ring_min"] = float(image[ring].min() / image[rr < 2].max())
        out.append(row)
    assert len(out) == n_expected, f"found {len(out)} of {n_expected} stars"
    return out


def _pedestal(value):
    return {"auto": "auto", "none": None}.get(value) if value in ("auto", "none") else float(value) * C


def fwhm_ratios(args) -> int:
    """``--fwhm``: median FWHM relative to iteration 0 of stars of modest S/N."""
    from mosaic.catalog.profiles import star_fwhm
    from mosaic.coadd.updc import updc

    def modest(shape):
        x, y, _ = lattice(shape)
        return x, y, np.linspace(2.0, 7.0, 9)

    ratios = args.ratios or [1.0, 20.0]
    with tempfile.TemporaryDirectory() as tmp:
        exposures, clean, psf, grid, truth = crowded_exposures(Path(tmp), seed=41, n_stars=9, size=128, layout=modest)
        for ratio in ratios:
            e, sky = observe(exposures, clean, ratio, seed=41)
            run = updc(e, grid.with_tiling(512), psf, n_iterations=30, errors=False, background=sky, pedestal=_pedestal(args.pedestal), damping=args.damping)
            # the first iterate fitted to the noise: chi-squared per degree of freedom at most 1
            fitted = next((n for n, c in enumerate(run.chi2) if c is not None and c <= 1.0), None)
            fwhm = {}
            for n in sorted({0, 5, 10, 20, 30} | ({fitted} if fitted is not None else set())):
                image = np.nan_to_num(run.product(n)["sci"].values.astype(np.float64))
                fwhm[n] = np.array([star_fwhm(image, x, y, radius=10) for x, y in zip(truth["x"], truth["y"], strict=True)])
            print(f"sky/RN {ratio:g}, pedestal {run.pedestal / C:.0f} e-: FWHM at iteration 0 {np.round(fwhm[0], 2)} px")
            print(f"  iteration 10 / 0 per star (bright to faint): {np.round(fwhm[10] / fwhm[0], 2)}")
            print("  median: " + ", ".join(f"iteration {n} {np.nanmedian(fwhm[n] / fwhm[0]):.3f}x" for n in (5, 10, 20, 30)))
            print("  chi2/dof per iteration: " + " ".join(f"{c:.3f}" for c in run.chi2))
            if fitted is not None:
                print(f"  chi2/dof first <= 1 at iteration {fitted}: median FWHM {np.nanmedian(fwhm[fitted] / fwhm[0]):.3f}x iteration 0's")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratios", type=float, nargs="+", default=None, help="sky / read noise (default 0.1 20; 1 20 with --fwhm)")
    parser.add_argument("--seed", type=int, default=31)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--damping", type=float, default=0.0)
    parser.add_argument("--pedestal", default="auto", help="auto, none or a value in electrons")
    parser.add_argument("--fwhm", action="store_true", help="measure the FWHM reached instead")
    args = parser.parse_args(argv)
    if args.fwhm:
        return fwhm_ratios(args)
    from scipy.ndimage import binary_erosion

    from mosaic.coadd.updc import updc
    from mosaic.psf.model import fwhm_arcsec

    pedestal = _pedestal(args.pedestal)
    with tempfile.TemporaryDirectory() as tmp:
        exposures, clean, psf, grid, truth = crowded_exposures(Path(tmp), seed=args.seed, n_stars=9, size=128, layout=lattice)
        pixar = np.deg2rad(0.031 / 3600.0) ** 2
        truth["mag_ab"] = np.linspace(18.0, 22.0, 9)
        truth["flux_image"] = truth["electrons"] * C * pixar / grid.pixel_area_sr
        fwhm = fwhm_arcsec("F200W") / grid.pixel_scale_arcsec
        print(f"isolated stars, magnitude minus truth (positive: fainter), iterations 0 and {args.iterations}:")
        print(f"{'sky/RN':>7} {'it':>3} {'AB mag':>7} {'Kron':>7} {'Kron3':>7} {'r0.2as':>7} {'r0.35as':>7} {'ring min/peak':>14}")
        for ratio in args.ratios or [0.1, 20.0]:
            e, sky = observe(exposures, clean, ratio, seed=args.seed)
            run = updc(e, grid.with_tiling(512), psf, n_iterations=args.iterations, errors=False, background=sky,
                       pedestal=pedestal, damping=args.damping)
            con = run.iterations[0]["con"].values[0]
            good = binary_erosion(con == con.max(), iterations=8)
            for n in (0, args.iterations):
                image = np.nan_to_num(run.product(n)["sci"].values.astype(np.float64))
                for row in measure(image, good, truth, fwhm, grid, 9):
                    print(f"{ratio:7g} {n:3d} {row['mag']:7.2f} {row['kron']:+7.3f} {row['kron3']:+7.3f} {row['r0.2']:+7.3f} {row['r0.35']:+7.3f} {row['ring_min']:+14.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
