"""Measure restorations on held-out simulated fields against their truth.

``python -m mosaic.restore.evaluate --seeds 2000 2001 2002 [--model PATH] [--out DIR]`` simulates
each field (:func:`mosaic.restore.data.simulate_pair`, seeds not used in training), and compares,
with the target (truth convolved with the reference PSF, sky removed from every image):

- ``drizzle``: the input mosaic;
- ``rl``: single-image Richardson-Lucy of the mosaic with the band's PSF (``--rl-iterations``),
  an estimate of the unconvolved sky, so convolved with the reference PSF before comparing;
- ``updc``: UPDC (:func:`mosaic.coadd.updc.updc`, its defaults) on the field's simulated
  exposures, iteration ``--updc-iterations`` (10; 0 leaves it out), convolved likewise;
- ``model``: the learned restoration (shipped model by default; whole-image inference, which the
  tiled inference of ``mosaic restore`` equals to 1e-4).

Figures: PSNR and SSIM over each field's covered pixels (data range of the target) and the median
over 48x48 stamps of the galaxies; per galaxy, against the target's own value: the flux inside
the target's isophote (``target > 2 sigma`` of the input noise, connected to the centre), the
half-light radius (curve of growth about the target's flux-weighted centre within that isophote)
and a Sersic index from the concentration ``r80 / r20`` inverted through pure Sersic profiles.
Scatters are 1.4826 x MAD of ``log(value / target)`` (flux, radius) or of ``value - target``
(index). Writes ``evaluation.json``, ``evaluation.md`` (the table) and a figure.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.signal import fftconvolve
from scipy.special import gammaincinv

from mosaic.restore.data import reference_psf, simulate_pair
from mosaic.restore.infer import RestorationModel, restore_whole
from mosaic.restore.normalise import Normalisation

__all__ = ["richardson_lucy", "psnr", "galaxy_measurements", "evaluate_pair", "sersic_from_concentration", "markdown_table", "main"]

log = logging.getLogger(__name__)

STAMP = 48


def richardson_lucy(d, psf, *, n_iterations: int = 20, pedestal: float = 0.0):
    """Single-image Richardson-Lucy of ``d`` (NaN uncovered) with ``psf``, over the covered pixels.

    ``f <- f * B^T(M (d + s) / (B f + s)) / B^T(M)`` with ``s`` the pedestal, as the ``rl``
    baseline of :mod:`mosaic.coadd.baselines` (here whole-image, NumPy).
    """
    m = np.isfinite(d).astype(np.float64)
    d = np.where(m > 0, d, 0.0)
    flip = psf[::-1, ::-1]
    norm = np.maximum(fftconvolve(m, flip, mode="same"), 1e-12)
    f = np.maximum(d, 0.0) + 1e-6
    for _ in range(n_iterations):
        model = np.maximum(fftconvolve(f, psf, mode="same"), 0.0) + pedestal + 1e-12
        f = np.maximum(f * fftconvolve(m * (np.maximum(d, 0.0) + pedestal) / model, flip, mode="same") / norm, 0.0)
    return np.where(m > 0, f, np.nan)


def psnr(x, ref, *, data_range: float) -> float:
    """20 log10(data_range / RMSE) over the finite pixels of both."""
    ok = np.isfinite(x) & np.isfinite(ref)
    mse = float(np.mean((x[ok] - ref[ok]) ** 2))
    return float(20 * np.log10(data_range / np.sqrt(mse)))


def ssim(x, ref, *, data_range: float) -> float:
    from skimage.metrics import structural_similarity  # noqa: PLC0415

    return float(structural_similarity(np.nan_to_num(x), np.nan_to_num(ref), data_range=data_range))


_N_GRID = np.linspace(0.3, 8.0, 400)


def _concentration_of_sersic(n):
    # radii enclosing 20 % and 80 % of a (circular, unconvolved) Sersic profile: gammainc(2n, b r^(1/n)) = q
    b = gammaincinv(2 * n, 0.5)
    r = lambda q: (gammaincinv(2 * n, q) / b) ** n  # noqa: E731
    return r(0.8) / r(0.2)


def sersic_from_concentration(c):
    """Sersic index whose pure profile has ``r80 / r20 = c`` (clipped to 0.3..8)."""
    grid = _concentration_of_sersic(_N_GRID)
    return np.interp(c, grid, _N_GRID)


def _curve_radii(stamp, mask, centre, fractions=(0.2, 0.5, 0.8)):
    yy, xx = np.indices(stamp.shape)
    r = np.hypot(yy - centre[0], xx - centre[1])[mask]
    v = stamp[mask]
    order = np.argsort(r)
    cum = np.cumsum(v[order])
    total = cum[-1]
    if not total > 0:
        return [np.nan] * len(fractions)
    return [float(np.interp(q * total, cum, r[order])) for q in fractions]


def galaxy_measurements(images: dict, target, table, *, sigma: float, min_pixels: int = 12) -> dict:
    """Isophotal flux, half-light radius and concentration Sersic index of every galaxy, per image."""
    h = STAMP // 2
    out = {name: {"flux": [], "r50": [], "n": []} for name in ["target", *images]}
    ny, nx = target.shape
    for row in table:
        if row["kind"] == "star" or row["r_eff"] <= 0:
            continue
        x, y = int(round(row["x"])), int(round(row["y"]))
        if not (h <= y < ny - h and h <= x < nx - h):
            continue
        s = (slice(y - h, y + h), slice(x - h, x + h))
        t = target[s]
        if any(not np.all(np.isfinite(im[s])) for im in images.values()):
            continue
        labels, _ = ndimage.label(t > 2 * sigma)
        lab = labels[h, h]
        if lab == 0 or (labels == lab).sum() < min_pixels:
            continue
        mask = labels == lab
        w = np.where(mask, t, 0.0)
        centre = ndimage.center_of_mass(w)
        for name, stamp in [("target", t), *((k, im[s]) for k, im in images.items())]:
            r20, r50, r80 = _curve_radii(stamp, mask, centre)
            out[name]["flux"].append(float(stamp[mask].sum()))
            out[name]["r50"].append(r50)
            out[name]["n"].append(float(sersic_from_concentration(r80 / r20)) if r20 > 0 else np.nan)
    return {k: {q: np.asarray(v) for q, v in d.items()} for k, d in out.items()}


def _robust_std(v):
    v = v[np.isfinite(v)]
    return float(1.4826 * np.median(np.abs(v - np.median(v)))) if v.size else float("nan")


def scatter_table(meas: dict) -> dict:
    """Scatter and bias of every method's galaxy measurements against the target's."""
    t = meas["target"]
    rows = {}
    for name, m in meas.items():
        if name == "target":
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            lf = np.log(m["flux"] / t["flux"])
            lr = np.log(m["r50"] / t["r50"])
        dn = m["n"] - t["n"]
        rows[name] = {
            "n_galaxies": int(np.isfinite(lf).sum()),
            "flux_bias": float(np.exp(np.nanmedian(lf)) - 1), "flux_scatter": _robust_std(lf),
            "r50_bias": float(np.exp(np.nanmedian(lr)) - 1), "r50_scatter": _robust_std(lr),
            "n_bias": float(np.nanmedian(dn)), "n_scatter": _robust_std(dn),
        }
    return rows


def evaluate_pair(pair, model: RestorationModel, *, rl_iterations: int = 20) -> dict:
    """Images (sky removed) and figures of one field."""
    sky = pair.sky
    d = pair.input - sky
    # whole-image inference (what the tiled one equals to 1e-4), quicker than tiles on a small field
    norm = Normalisation(pair.sky, pair.sigma, model.softening)
    restored = norm.inverse(restore_whole(norm.forward(pair.input), model, overlap=0))
    restored[~np.isfinite(pair.input)] = np.nan
    ref = reference_psf(model.reference_fwhm_px)
    rl = richardson_lucy(pair.input, pair.psf, n_iterations=rl_iterations) - sky
    rl_ref = fftconvolve(np.nan_to_num(rl), ref, mode="same")
    rl_ref[~np.isfinite(pair.input)] = np.nan
    images = {"drizzle": d, "rl": rl_ref}
    if pair.updc is not None:
        updc_ref = fftconvolve(np.nan_to_num(pair.updc - sky), ref, mode="same")
        updc_ref[~np.isfinite(pair.input)] = np.nan
        images["updc"] = updc_ref
    images["model"] = restored - sky
    covered = np.isfinite(pair.input)
    target = np.where(covered, pair.target, np.nan)
    rng_ = float(np.nanmax(target) - np.nanmin(target))
    figures = {name: {"psnr": psnr(im, target, data_range=rng_), "ssim": ssim(np.where(covered, im, 0), np.where(covered, target, 0), data_range=rng_)}
               for name, im in images.items()}
    meas = galaxy_measurements(images, target, pair.table, sigma=pair.sigma)
    # stamp PSNR (min-max of the target stamp, as the seed's normalised stamps)
    h = STAMP // 2
    for name, im in images.items():
        vals = []
        for row in pair.table:
            x, y = int(round(row["x"])), int(round(row["y"]))
            if row["kind"] == "star" or not (h <= y < target.shape[0] - h and h <= x < target.shape[1] - h):
                continue
            s = (slice(y - h, y + h), slice(x - h, x + h))
            if not covered[s].all():
                continue
            t = target[s]
            vals.append(psnr(im[s], t, data_range=float(t.max() - t.min())))
        figures[name]["stamp_psnr"] = float(np.median(vals)) if vals else float("nan")
    return {"figures": figures, "measurements": meas, "images": images, "target": target}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m mosaic.restore.evaluate", description="evaluate restorations on held-out simulated fields")
    p.add_argument("--seeds", type=int, nargs="+", default=[2000, 2001, 2002])
    p.add_argument("--model", default=None)
    p.add_argument("--out", default="restore-eval")
    p.add_argument("--rl-iterations", type=int, default=20)
    p.add_argument("--updc-iterations", type=int, default=10)
    p.add_argument("--workdir", default="/tmp/mosaic-restore-eval")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = RestorationModel(args.model)
    per_field, all_meas, example = [], None, None
    for seed in args.seeds:
        pair = simulate_pair(args.workdir, seed, updc_iterations=args.updc_iterations)
        res = evaluate_pair(pair, model, rl_iterations=args.rl_iterations)
        per_field.append({"seed": seed, **res["figures"]})
        log.info("field %d: %s", seed, res["figures"])
        if all_meas is None:
            all_meas, example = res["measurements"], res
        else:
            for k in all_meas:
                for q in all_meas[k]:
                    all_meas[k][q] = np.concatenate([all_meas[k][q], res["measurements"][k][q]])
    methods = [m for m in per_field[0] if m != "seed"]
    summary = {m: {q: float(np.mean([f[m][q] for f in per_field])) for q in ("psnr", "ssim", "stamp_psnr")} for m in methods}
    galaxies = scatter_table(all_meas)
    result = {"model": str(model.path.name), "seeds": args.seeds, "rl_iterations": args.rl_iterations,
              "updc_iterations": args.updc_iterations, "per_field": per_field, "mean": summary, "galaxies": galaxies}
    (out / "evaluation.json").write_text(json.dumps(result, indent=1))
    (out / "evaluation.md").write_text(markdown_table(result) + "\n")
    _figure(example, all_meas, out / "evaluation.png")
    for m in methods:
        log.info("%-8s PSNR %.2f dB  SSIM %.3f  stamp PSNR %.2f dB | %s", m, summary[m]["psnr"], summary[m]["ssim"], summary[m]["stamp_psnr"], galaxies[m])
    log.info("table:\n%s", markdown_table(result))
    return 0


def markdown_table(result: dict) -> str:
    """The README's table of an ``evaluation.json``: one row per method, means over the fields."""
    names = {"drizzle": "drizzle (input)", "rl": f"single-image RL, {result['rl_iterations']} iterations",
             "updc": f"UPDC, iteration {result.get('updc_iterations')}", "model": f"model ({result['model']})"}
    n = max(g["n_galaxies"] for g in result["galaxies"].values())
    lines = [f"| method ({len(result['seeds'])} fields, {n} galaxies) | field PSNR | field SSIM | galaxy-stamp PSNR | "
             "flux bias / scatter | r50 bias / scatter | Sersic n bias / scatter |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for m, f in result["mean"].items():
        g = result["galaxies"][m]
        lines.append(f"| {names.get(m, m)} | {f['psnr']:.2f} dB | {f['ssim']:.4f} | {f['stamp_psnr']:.2f} dB | "
                     f"{100 * g['flux_bias']:+.1f} % / {g['flux_scatter']:.3f} | {100 * g['r50_bias']:+.1f} % / {g['r50_scatter']:.3f} | "
                     f"{g['n_bias']:+.2f} / {g['n_scatter']:.3f} |")
    return "\n".join(lines)


def _figure(example, meas, path):
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    n_cols = 1 + len(example["images"])
    fig, ax = plt.subplots(2, n_cols, figsize=(4 * n_cols, 8))
    t = example["target"]
    cy, cx = np.array(t.shape) // 2
    s = (slice(cy - 100, cy + 100), slice(cx - 100, cx + 100))
    lo, hi = np.nanpercentile(t[s], [1, 99.5])
    for a, (name, im) in zip(ax[0], [("target", t), *example["images"].items()], strict=True):
        a.imshow(np.arcsinh(im[s] / (hi * 0.05)), origin="lower", cmap="gray", vmin=np.arcsinh(lo / (hi * 0.05)), vmax=np.arcsinh(20))
        a.set_title(name)
    tm = meas["target"]
    for a, q, label in zip(ax[1], ("flux", "r50", "n"), ("isophotal flux", "half-light radius (px)", "Sersic n (concentration)"), strict=False):
        for name in example["images"]:
            a.scatter(tm[q], meas[name][q], s=6, label=name)
        a.plot([np.nanmin(tm[q]), np.nanmax(tm[q])], [np.nanmin(tm[q]), np.nanmax(tm[q])], "k-", lw=0.5)
        a.set_xlabel(f"target {label}")
        a.set_ylabel(label)
        if q == "flux":
            a.set_xscale("log")
            a.set_yscale("log")
        a.legend()
    for a in ax[1, 3:]:
        a.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
