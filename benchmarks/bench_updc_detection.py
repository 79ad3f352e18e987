"""Crowded-field detection: true detections at a fixed number of false ones, drizzle vs UPDC iterations.

    python benchmarks/bench_updc_detection.py [--seeds 21 22] [--ratios 0.1 1 20] [--n-stars 400]
                                              [--false 2 10] [--size 128] [--iterations 10]

A globular-cluster-like field: ``--n-stars`` point sources drawn uniformly over the mosaic (on
128² exposures at psr 0.5: a mean nearest-neighbour distance of about 1.2 FWHM, ~90 % of stars
with a neighbour closer than 2 FWHM), fluxes from a luminosity function rising to the faint end
(dN/dm ~ 10^0.3m over 9.5 mag, from ~2e5 electrons per exposure down to below the detection
limit). Geometry and PSF come from :func:`mosaic.simulate.simulate_field` (4 dithered, distorted
F200W exposures, the model PSF); the stars are rendered into each exposure with the simulator's
own renderer, then observed on a sky of ``ratio`` x the read noise (12 e-) with read and photon
noise, as in ``tests/coadd/test_updc_noise.py``. UPDC runs ``--iterations`` with the default
noise-aware update (``pedestal="auto"``).

Detection (all thresholds in units of the *measured* noise of the smoothed detection image,
:func:`mosaic.catalog.dual.measured_noise`; 3 sigma, 5 pixels, deblending):

- ``single``: each image on its own: smoothed by a Gaussian of the PSF's FWHM (the drizzle's
  matched filter; for iterates too), segmented and deblended on the smoothed image, as
  ``mosaic detect`` does;
- ``dual``: found on the smoothed drizzle, deblended and measured on the iterate
  (``mosaic detect ITER --detection-image DRIZZLE``, :func:`mosaic.catalog.dual.detect_dual`).

Every detection is scored by the peak of its smoothed detection image in measured-noise units
(for ``dual`` children: of the iterate smoothed alike, so that a child that is only a ring or a
noise peak of the iterate does not borrow its parent's significance); going down the scores,
a detection is true if an unmatched true star lies within 2 pixels (0.4 FWHM), else false.
The table gives the number of true detections when the score threshold admits ``--false`` false
ones, where only the fully covered sky (eroded by 8 pixels) counts. Seeds 21, 22 are the
reported fields; seed 20 was the one the settings were chosen on.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

C = 1e-4  # MJy/sr per electron (the simulator's 1 ks exposure)
READ_NOISE_E = 12.0
MATCH_PX = 2.0
CONTRASTS = [0.03]  # the dual mode's default; on seed 20, 0.001 and 0.01 let rings and spike pieces through
FLOOR = 2.5  # lowest threshold (measured sigmas); the curves are read above it


def crowded_exposures(folder: Path, *, seed: int, n_stars: int, size: int, layout=None):
    """Noiseless exposures (MJy/sr, no sky) of a crowded star field, the dataset, PSF, grid and truth.

    ``layout(grid_shape) -> (x, y, m)`` replaces the crowded field's stars (output-grid pixels,
    magnitudes relative to 2e5 electrons per exposure).
    """
    from astropy.io import fits
    from astropy.table import Table
    from astropy.wcs import WCS

    from mosaic.io.cal import read_exposures
    from mosaic.psf.files import read_psf
    from mosaic.psf.model import jwst_psf
    from mosaic.simulate import SimConfig, simulate_field
    from mosaic.simulate.field import fine_grid_wcs, render_exposure

    cfg = SimConfig(size=size, psf_size=51, n_exposures=4, seed=seed, n_galaxies=0, n_stars=1, n_pairs=0, noiseless=True, icl=False, background=0.0)
    sim = simulate_field(folder, cfg, overwrite=True)
    grid, up = sim.grid, cfg.upsample
    fine = fine_grid_wcs(grid, up)
    fine_scale = grid.pixel_scale_arcsec / up
    psf_fine = jwst_psf(cfg.band, pixel_scale_arcsec=fine_scale, size=cfg.psf_size * up + (1 - up % 2), oversample=2, n_wavelengths=cfg.n_wavelengths, n_pupil=256)
    rng = np.random.default_rng([seed, 16])
    ny, nx = grid.shape
    x, y = rng.uniform(0, nx - 1, n_stars), rng.uniform(0, ny - 1, n_stars)
    k = 0.3 * np.log(10.0)
    m = np.log(1 + rng.random(n_stars) * (np.exp(k * 9.5) - 1)) / k  # dN/dm ~ 10^0.3m on 0..9.5
    if layout is not None:
        x, y, m = (np.asarray(v, dtype=float) for v in layout(grid.shape))
        n_stars = len(x)
    pixar = float(fits.getheader(sim.exposures[0], "SCI")["PIXAR_SR"])
    electrons = 2e5 * 10 ** (-0.4 * m)  # per exposure
    flux_ujy = electrons * C * pixar * 1e12
    stars = Table({
        "id": np.arange(1, n_stars + 1), "kind": ["star"] * n_stars, "x": up * (x + 0.5) - 0.5, "y": up * (y + 0.5) - 0.5,
        "flux": flux_ujy, "mag": m, "sersic_n": np.zeros(n_stars), "r_eff": np.zeros(n_stars), "ellip": np.zeros(n_stars),
        "theta": np.zeros(n_stars),
    })
    exposures = read_exposures(sim.exposures).load()
    area_fine = float(np.deg2rad(fine_scale / 3600.0) ** 2)
    clean = np.stack([render_exposure(WCS(fits.getheader(p, "SCI")), stars, fine, psf_fine, cfg, None, area_fine) for p in sim.exposures])
    truth = Table({"x": x, "y": y, "mag": m, "electrons": electrons})
    return exposures, clean, read_psf(sim.psf)[0], grid, truth


def observe(exposures, clean: np.ndarray, ratio: float, *, seed: int):
    """The clean exposures on a sky of ``ratio`` x the read noise, with read and photon noise."""
    rn = READ_NOISE_E * C
    sky = ratio * rn
    signal = clean + sky
    rng = np.random.default_rng([seed, int(ratio * 1000)])
    sci = signal + rng.normal(size=signal.shape) * np.sqrt(np.clip(signal, 0, None) * C + rn**2)
    e = exposures.copy()
    dims = e["sci"].dims
    bad = ~np.isfinite(e["sci"].values)
    e["sci"] = (dims, np.where(bad, np.nan, sci).astype(np.float32))
    e["var_poisson"] = (dims, (np.clip(sci, 0, None) * C).astype(np.float32))
    e["var_rnoise"] = (dims, np.full(sci.shape, rn**2, dtype=np.float32))
    e["var_flat"] = (dims, np.zeros(sci.shape, dtype=np.float32))
    return e.chunk({"exposure": 1}), sky


def score_curve(scores, x, y, truth_xy, good) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (true, false) counts going down the scores, detections inside ``good`` only."""
    from scipy.spatial import cKDTree

    iy, ix = np.round(y).astype(int), np.round(x).astype(int)
    inside = (iy >= 0) & (ix >= 0) & (iy < good.shape[0]) & (ix < good.shape[1])
    inside[inside] = good[iy[inside], ix[inside]]
    order = np.argsort(-np.asarray(scores)[inside], kind="stable")
    xs, ys = np.asarray(x)[inside][order], np.asarray(y)[inside][order]
    tree = cKDTree(truth_xy)
    used = np.zeros(len(truth_xy), bool)
    is_true = np.zeros(len(xs), bool)
    for i, (px, py) in enumerate(zip(xs, ys, strict=True)):
        cand = [j for j in tree.query_ball_point((px, py), MATCH_PX) if not used[j]]
        if cand:
            d = [np.hypot(*(truth_xy[j] - (px, py))) for j in cand]
            used[cand[int(np.argmin(d))]] = True
            is_true[i] = True
    return np.cumsum(is_true), np.cumsum(~is_true)


def true_at_false(n_true, n_false, n_allowed: int) -> int:
    """True detections at the lowest score threshold that admits at most ``n_allowed`` false ones."""
    ok = n_false <= n_allowed
    return int(n_true[ok].max()) if ok.any() else 0


def detections(images: dict, good, fwhm: float, *, tile: int = 512):
    """``{(mode, n): (scores, x, y)}`` for single-image detection of every image and dual of the iterates."""
    from mosaic.catalog.detect import detect_segmentation, smooth
    from mosaic.catalog.dual import measured_noise

    out = {}
    for n, img in images.items():
        det = smooth(np.where(good, img, 0.0), fwhm=fwhm, tile=tile).compute()
        noise, _ = measured_noise(det, good)
        snr = det / noise
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            seg = detect_segmentation(snr, FLOOR, n_pixels=5, mask=~good, deblend=True, tile=tile)
        out[("single", n)] = _peaks(snr, np.asarray(seg.data))
        if n == 0:
            continue
        for c in CONTRASTS:
            _, dseg, _ = _dual(images[0], img, good, fwhm, tile, c)
            out[(f"dual c={c:g}", n)] = _peaks(snr, np.asarray(dseg.data))
    return out


def _dual(drizzle, iterate, good, fwhm, tile, contrast):
    from mosaic.catalog.dual import detect_dual

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return detect_dual(drizzle, iterate, threshold=FLOOR, mask=~good, fwhm=fwhm, n_pixels=5, tile=tile, radii=(), contrast=contrast)


def _peaks(snr, seg):
    """Peak of ``snr`` in every segment, and the position of that peak."""
    from scipy import ndimage

    labels = np.unique(seg[seg > 0])
    if labels.size == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    peak = np.asarray(ndimage.maximum(snr, seg, labels))
    pos = np.asarray(ndimage.maximum_position(snr, seg, labels), dtype=float)
    return peak, pos[:, 1], pos[:, 0]


def run_field(seed: int, ratios, *, n_stars: int, size: int, n_iterations: int, n_false) -> list[dict]:
    from scipy.ndimage import binary_erosion

    from mosaic.coadd.updc import updc
    from mosaic.psf.model import fwhm_arcsec

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        exposures, clean, psf, grid, truth = crowded_exposures(Path(tmp), seed=seed, n_stars=n_stars, size=size)
        fwhm = fwhm_arcsec("F200W") / grid.pixel_scale_arcsec
        for ratio in ratios:
            e, sky = observe(exposures, clean, ratio, seed=seed)
            t0 = time.perf_counter()
            run = updc(e, grid.with_tiling(512), psf, n_iterations=n_iterations, errors=False, background=sky)
            con = run.iterations[0]["con"].values[0]
            good = binary_erosion(con == con.max(), iterations=8)
            keep = [0, n_iterations // 2, n_iterations]
            images = {n: np.nan_to_num(run.product(n)["sci"].values.astype(np.float64)) for n in keep}
            seconds = time.perf_counter() - t0
            txy = np.column_stack([truth["x"], truth["y"]])
            iy, ix = np.round(txy[:, 1]).astype(int), np.round(txy[:, 0]).astype(int)
            n_truth = int(good[np.clip(iy, 0, good.shape[0] - 1), np.clip(ix, 0, good.shape[1] - 1)].sum())
            for (mode, n), (score, x, y) in detections(images, good, fwhm).items():
                nt, nf = score_curve(score, x, y, txy, good)
                rows.append({"seed": seed, "ratio": ratio, "mode": mode, "iteration": n, "n_truth": n_truth,
                             **{f"true@{f}": true_at_false(nt, nf, f) for f in n_false}, "updc_s": seconds,
                             "n_det": len(nt), "n_true_all": int(nt[-1]) if len(nt) else 0})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[21, 22])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.1, 1.0, 20.0])
    parser.add_argument("--n-stars", type=int, default=400)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--false", type=int, nargs="+", default=[2, 10])
    parser.add_argument("--contrasts", type=float, nargs="+", default=list(CONTRASTS), help="deblending contrasts of the dual mode")
    args = parser.parse_args(argv)
    CONTRASTS[:] = args.contrasts
    logging.basicConfig(level=logging.WARNING)
    rows = []
    for seed in args.seeds:
        rows += run_field(seed, args.ratios, n_stars=args.n_stars, size=args.size, n_iterations=args.iterations, n_false=args.false)
    cols = [f"true@{f}" for f in args.false]
    print(f"{args.n_stars} stars per field, true detections at a fixed number of false ones (sum over seeds {args.seeds}):")
    print(f"{'sky/RN':>7} {'detect on':>28} " + " ".join(f"{c:>9}" for c in cols) + "   (of n true stars)")
    for ratio in args.ratios:
        for mode, n in [("single", 0)] + [(m, n) for n in sorted({r["iteration"] for r in rows if r["iteration"]}) for m in ("single", *(f"dual c={c:g}" for c in CONTRASTS))]:
            sel = [r for r in rows if r["ratio"] == ratio and r["mode"] == mode and r["iteration"] == n]
            label = "drizzle (iteration 0)" if n == 0 else (f"iteration {n}" if mode == "single" else f"drizzle -> it. {n}, {mode[5:]}")
            print(f"{ratio:7g} {label:>28} " + " ".join(f"{sum(r[c] for r in sel):9d}" for c in cols)
                  + f"   ({sum(r['n_truth'] for r in sel)}; all {sum(r['n_det'] for r in sel)} detections, {sum(r['n_true_all'] for r in sel)} true)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
