"""``mosaic demo``: the main job on its embedded default, small enough for a laptop.

Simulates a small dithered field in two bands (F150W and F200W: the same sky, stars blue and
galaxies red), runs it as ``mosaic run`` would -- outliers, drizzle, UPDC (10 iterations),
catalogues of iterations 0, 5 and 10, previews -- on a local dask cluster, makes a colour
composite, and writes ``report.html``: before/after images on one stretch, a close pair, the
data against the mock of one exposure, convergence (χ²/N and FWHM per iteration), detections,
fluxes and magnitudes against the truth, a star's profile and the run's timings.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

__all__ = ["add_parser", "run", "demo", "DEMO_BANDS"]

log = logging.getLogger(__name__)

#: the demo's bands, bluest first; the layout (and the truth) is F200W's
DEMO_BANDS = ("F150W", "F200W")
#: colours of the two-band composite: F200W red, F150W blue, both green
DEMO_RGB = {"F200W": (1.0, 0.5, 0.0), "F150W": (0.0, 0.5, 1.0)}


def add_parser(sub) -> None:
    # the module docstring's reST literals are plain text in a terminal
    description = __doc__.split("\n\n")[1].replace("``", "")
    p = sub.add_parser("demo", help="run the whole job on a small simulated field", description=description)
    p.add_argument("--out", default="mosaic-demo", help="directory for everything the demo writes (default ./mosaic-demo)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--iterations", type=int, default=10, help="UPDC iterations (default 10)")
    p.add_argument("--workers", type=int, default=2, help="local dask worker processes (default 2; 0: threads in this process)")
    p.set_defaults(func=run)


def _config(out: Path, sims: dict, *, iterations: int, workers: int):
    from mosaic.config import field_from_mapping  # noqa: PLC0415

    saved = sorted({0, min(5, iterations), iterations})
    # the dashboard on this host only, on a free port (mosaic.cluster.DEFAULT_DASHBOARD's rule; ":0" listened on every interface)
    cluster = {"kind": "local", "n_workers": workers, "threads_per_worker": 1, "dashboard_address": "127.0.0.1:0"} if workers > 0 else None
    raw = {
        "field": "demo",
        "bands": {b: {"inputs": str(s.outdir / "*_cal.fits"), "psf": str(s.psf)} for b, s in sims.items()},
        "grid": {"psr": 0.5, "tile": 512},
        "preprocessing": {"outliers": {"enabled": True}},
        # UPDC starts from the drizzle mosaic (its iteration 0): no separate drizzle step
        "drizzle": {"enabled": False},
        "updc": {"iterations": iterations, "save": saved},
        # a local background (16-pixel meshes) takes out the intracluster light before detection
        "catalogs": {"enabled": True, "iterations": saved, "background_box": 16},
        "products": {"outdir": str(out / "products"), "previews": True},
        "store": str(out / "demo.zarr"),
    }
    if cluster is not None:
        raw["cluster"] = cluster
    return field_from_mapping(raw, base=out), saved


def _i2d(band_report, label: str) -> Path:
    for value in band_report.products.values():
        if str(value).endswith(f"_{label}_i2d.fits"):
            return Path(value)
    msg = f"the run wrote no {label} mosaic for {band_report.band}; products: {sorted(band_report.products)}"
    raise RuntimeError(msg)


def _catalogue(band_report, label: str):
    from astropy.table import Table  # noqa: PLC0415

    for key, value in band_report.products.items():
        if key.startswith("catalogs/") and key.endswith(label):
            return Table.read(value)
    msg = f"the run wrote no {label} catalogue for {band_report.band}"
    raise RuntimeError(msg)


def _pixel(wcs, ra, dec):
    x, y = wcs.world_to_pixel_values(np.atleast_1d(ra), np.atleast_1d(dec))
    return np.asarray(x, float), np.asarray(y, float)


def _pair_figure(images: dict, wcs, truth, *, half: int = 12):
    """Cut-outs of the 0.7-FWHM pair in each image (linear, 0 to each panel's peak), in arcsec."""
    from mosaic.viz.figures import pair_panels, pixel_scale_arcsec  # noqa: PLC0415

    pair = truth[truth["pair_id"] == 0]
    x, y = _pixel(wcs, pair["ra"], pair["dec"])
    cx, cy = int(round(x.mean())), int(round(y.mean()))
    cuts = {}
    for name, image in images.items():
        padded = np.pad(np.asarray(image, dtype=float), half, constant_values=np.nan)
        cuts[name] = padded[cy : cy + 2 * half + 1, cx : cx + 2 * half + 1]
    return pair_panels(cuts, (x - cx, y - cy), pixel_scale_arcsec(wcs))


def _isolated_stars(truth):
    return truth[(truth["kind"] == "star") & truth["isolated"]]


def _fwhm_table(images: dict, wcs, truth, psf):
    """Median FWHM (arcsec) of the isolated stars in each ``{iteration: image}``, and the truth PSF's."""
    from astropy.table import QTable  # noqa: PLC0415

    from mosaic.catalog.profiles import star_fwhm  # noqa: PLC0415
    from mosaic.viz.figures import pixel_scale_arcsec  # noqa: PLC0415

    scale = pixel_scale_arcsec(wcs)
    stars = _isolated_stars(truth)
    x, y = _pixel(wcs, stars["ra"], stars["dec"])
    rows = []
    for n, image in images.items():
        f = np.array([star_fwhm(image, xi, yi, radius=10) for xi, yi in zip(x, y, strict=True)]) * scale
        ok = np.isfinite(f)
        rows.append((n, int(ok.sum()), float(np.median(f[ok])) if ok.any() else np.nan, float(np.min(f[ok])) if ok.any() else np.nan,
                     float(np.max(f[ok])) if ok.any() else np.nan))
    c = (psf.shape[1] - 1) / 2, (psf.shape[0] - 1) / 2
    truth_fwhm = star_fwhm(psf, c[0], c[1], radius=10) * scale
    return QTable(rows=rows, names=("iteration", "n_stars", "median_fwhm", "min_fwhm", "max_fwhm")), truth_fwhm


def _star_profiles(images: dict, wcs, truth, psf):
    """Fig. 16 for the brightest isolated star: profiles and curves of growth over its true flux, radii in arcsec."""
    from mosaic.catalog.analysis import plot_profiles  # noqa: PLC0415
    from mosaic.catalog.profiles import star_profile  # noqa: PLC0415
    from mosaic.viz.figures import pixel_scale_arcsec  # noqa: PLC0415

    stars = _isolated_stars(truth)
    star = stars[np.argmax(stars["flux"])]
    x, y = _pixel(wcs, star["ra"], star["dec"])
    scale = pixel_scale_arcsec(wcs)
    # µJy -> the images' MJy/sr summed over pixels
    total = float(star["flux"]) / (np.deg2rad(scale / 3600.0) ** 2 * 1e12)
    radii = np.arange(0.0, 20.5, 1.0)
    # NaN (no data) stays NaN: RadialProfile leaves such pixels out instead of counting zeros
    profiles = {name: star_profile(im, float(x[0]), float(y[0]), edge_radii=radii, mask=~np.isfinite(im)) for name, im in images.items()}
    c = (psf.shape[1] - 1) / 2
    profiles["truth PSF x true flux"] = star_profile(psf * total, c, c, edge_radii=radii)
    return plot_profiles(profiles, ee_total=total, pixel_scale=scale), star, profiles


def _convergence(store, field: str, band: str, saved, grid_wcs, psf, *, exposure: int = 0):
    """χ²/N of the saved iterates (read from the store, sky included) against the exposures UPDC fitted."""
    from mosaic.io.cal import read_exposures  # noqa: PLC0415
    from mosaic.viz.convergence import convergence_table  # noqa: PLC0415

    first = store.read_product(field, band, "updc/iter_00")
    paths = list(first.attrs["exposure_paths"])
    fill = float(store.manifest(field, band)["updc/iter_00"]["background"])
    iterates = {n: store.read_product(field, band, f"updc/iter_{n:02d}")["sci"].values for n in saved}
    exposures = read_exposures(paths, check_data=False)
    table = convergence_table(iterates, exposures, grid_wcs, psf, fill=fill, mocks_of=exposure)
    return table, exposures, Path(paths[exposure]).name


def _recorded_chi2(store, field: str, band: str, n_iterations: int):
    """``{iteration: chi2/dof}`` that UPDC kept in the store's manifest, for every iteration; None where it keeps none."""
    manifest = store.manifest(field, band)
    values = {n: manifest.get(f"updc/iter_{n:02d}", {}).get("chi2_dof") for n in range(n_iterations + 1)}
    return values if all(isinstance(v, int | float) for v in values.values()) else None


def _residual_figure(table, exposures, exposure: int, saved):
    from mosaic.coadd.drizzle import exposure_wcs  # noqa: PLC0415
    from mosaic.viz.figures import SharedStretch, residual_panels  # noqa: PLC0415

    data = exposures["sci"].values[exposure].astype(float)
    err = exposures["err"].values[exposure].astype(float)
    data = np.where(exposures["good"].values[exposure], data, np.nan)
    mocks = {f"iteration {n}": table.meta["mocks"][n] for n in (saved[0], saved[-1])}
    stretch = SharedStretch.from_reference(data, name="the exposure's data")
    limit = 5.0 * float(np.nanmedian(err))
    fig = residual_panels(data, mocks, exposure_wcs(exposures)[exposure], stretch, limit=limit)
    return fig, stretch, limit


def _composites(bands: dict, labels, out: Path):
    """Colour composites of ``labels`` on the stretch of the first one's channels; PNG files and the pixels."""
    from astropy.io import fits  # noqa: PLC0415
    from astropy.wcs import WCS  # noqa: PLC0415

    from mosaic.viz.figures import shared_rgb  # noqa: PLC0415
    from mosaic.viz.preview import save_png  # noqa: PLC0415
    from mosaic.viz.rgb import combine_bands, common_grid  # noqa: PLC0415

    channels, wcs = {}, None
    for label in labels:
        images = {}
        for b in DEMO_BANDS:
            with fits.open(_i2d(bands[b], label)) as hdul:
                images[b] = (hdul["SCI"].data.astype(float), WCS(hdul["SCI"].header))
        arrays, wcs = common_grid(images, reference="F200W")
        channels[label] = combine_bands(arrays, DEMO_RGB)
    pixels, stretches = shared_rgb(channels, labels[0])
    paths = {label: save_png(out / f"demo_rgb_{label}.png", px) for label, px in pixels.items()}
    return pixels, stretches, wcs, paths


def demo(out, *, seed: int = 1, iterations: int = 10, workers: int = 2, size: int = 160) -> dict:
    """Run the demo into ``out``; returns the paths written, by name."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    from mosaic.pipeline import run_field  # noqa: PLC0415
    from mosaic.simulate import SimConfig, simulate_field  # noqa: PLC0415

    # absolute, so that the field config's paths are not taken relative to ``out`` a second time
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    sims = {}
    for band in DEMO_BANDS:
        cfg = SimConfig(band=band, layout_band="F200W", n_exposures=4, size=size, psf_size=51, seed=seed, n_stars=5, n_pairs=2)
        sims[band] = simulate_field(out / "sim" / band.lower(), cfg, overwrite=True)
    t_sim = time.perf_counter() - t0
    log.info("simulated %s in %.1f s", ", ".join(DEMO_BANDS), t_sim)

    config, saved = _config(out, sims, iterations=iterations, workers=workers)
    report = run_field(config, overwrite=True, start_cluster=workers > 0)
    failed = [b for b in report.bands if not b.ok]
    if failed:
        msg = f"the demo run failed for {[b.band for b in failed]}: {[b.error for b in failed]}"
        raise RuntimeError(msg)
    products = write_demo_report(out, sims, config, report, saved, seed=seed, workers=workers, size=size, simulation_seconds=t_sim)
    log.info("demo finished in %.1f s", time.perf_counter() - t0)
    return products


def write_demo_report(out: Path, sims: dict, config, report, saved, *, seed: int, workers: int, size: int, simulation_seconds: float) -> dict:
    """The demo's colour composites and ``report.html`` from a finished run; returns the paths written, by name.

    ``sims`` are the simulated fields by band (their truth, PSF), ``config`` the field config
    run, ``report`` its :class:`~mosaic.pipeline.field.FieldReport`, ``saved`` the saved iterations.
    """
    from astropy.io import fits  # noqa: PLC0415
    from astropy.table import Table  # noqa: PLC0415
    from astropy.wcs import WCS  # noqa: PLC0415

    from mosaic.catalog.analysis import (  # noqa: PLC0415
        detections_vs_iteration,
        flux_vs_truth,
        magnitude_comparison,
        magnitudes_vs_truth,
        plot_detections,
    )
    from mosaic.io.store import Store  # noqa: PLC0415
    from mosaic.psf.files import read_psf  # noqa: PLC0415
    from mosaic.viz.figures import SharedStretch, image_panels, plot_convergence, rgb_panels  # noqa: PLC0415
    from mosaic.viz.report import Section, figure_png, write_report  # noqa: PLC0415

    iterations = saved[-1]
    t_sim = simulation_seconds
    t_report = time.perf_counter()
    bands = {b.band: b for b in report.bands}
    labels = {n: f"iter{n:02d}" for n in saved}
    last = labels[saved[-1]]
    names = {n: "drizzle (iteration 0)" if n == 0 else f"UPDC iteration {n}" for n in saved}

    # what the report shows, for the layout band
    ref = bands["F200W"]
    truth = Table.read(sims["F200W"].outdir / "truth.ecsv")
    paths = {n: _i2d(ref, labels[n]) for n in saved}
    wcs = WCS(fits.getheader(paths[saved[0]], "SCI"))
    images = {n: fits.getdata(p, "SCI").astype(float) for n, p in paths.items()}
    psf = read_psf(sims["F200W"].psf)[0]
    truth_image = fits.getdata(sims["F200W"].truth_image).astype(float)
    catalogs = {n: _catalogue(ref, labels[n]) for n in saved}
    threshold = catalogs[saved[0]].meta.get("threshold_sigma", "?")

    stretch = SharedStretch.from_reference(images[saved[0]], name="the drizzle mosaic")
    before_after = image_panels({names[n]: images[n] for n in saved}, wcs, stretch)
    # the other band: drizzle and the last iteration, on the stretch of its own drizzle mosaic
    blue = {n: fits.getdata(_i2d(bands["F150W"], labels[n]), "SCI").astype(float) for n in (saved[0], saved[-1])}
    blue_stretch = SharedStretch.from_reference(blue[saved[0]], name="the F150W drizzle mosaic")
    blue_wcs = WCS(fits.getheader(_i2d(bands["F150W"], labels[saved[0]]), "SCI"))
    blue_fig = image_panels({f"F150W {names[n]}": im for n, im in blue.items()}, blue_wcs, blue_stretch)
    pixels, rgb_stretch, rgb_wcs, rgb = _composites(bands, [labels[saved[0]], last], out)
    rgb_fig = rgb_panels({names[saved[0]]: pixels[labels[saved[0]]], names[saved[-1]]: pixels[last]}, rgb_wcs)
    pair_fig = _pair_figure({**{names[n]: images[n] for n in saved}, "truth (not convolved)": truth_image}, wcs, truth)

    store = Store(config.store_path)
    conv, exposures, exposure_name = _convergence(store, config.field, "F200W", saved, wcs, psf)
    residual_fig, res_stretch, res_limit = _residual_figure(conv, exposures, 0, saved)
    fwhm, truth_fwhm = _fwhm_table(images, wcs, truth, psf)
    recorded = _recorded_chi2(store, config.field, "F200W", iterations)
    if recorded is not None:
        conv["chi2_recorded"] = [recorded[n] for n in conv["iteration"]]
    conv_fig = plot_convergence(conv, fwhm, truth_fwhm=truth_fwhm, recorded=recorded)

    detections = detections_vs_iteration(catalogs, truth)
    det_fig = plot_detections(detections, label="F200W")
    fluxes = flux_vs_truth(catalogs, truth)
    versus = (saved[0], saved[min(1, len(saved) - 1)])
    mag_fig = _magnitude_figure(
        magnitude_comparison(catalogs[versus[0]], catalogs[versus[1]]),
        {names[n]: magnitudes_vs_truth(catalogs[n], truth) for n in (saved[0], saved[-1])},
        (names[versus[0]], names[versus[1]]),
    )
    profile_fig, star, profiles = _star_profiles({names[saved[0]]: images[saved[0]], names[saved[-1]]: images[saved[-1]]}, wcs, truth, psf)
    scale = float(np.sqrt(np.abs(np.linalg.det(wcs.pixel_scale_matrix)))) * 3600.0
    t_report_data = time.perf_counter() - t_report

    sections = [
        Section(
            "The run",
            text=[
                f"Field 'demo': {len(DEMO_BANDS)} bands ({', '.join(DEMO_BANDS)}), 4 dithered, distorted SW exposures of {size}² each, "
                "simulated with cosmic rays, hot pixels, 1/f striping, sky and intracluster light; the truth is known.",
                f"Each band ran: outliers across exposures, the drizzle mosaic (pixfrac 1, psr 0.5: UPDC iteration 0), "
                f"{iterations} UPDC iterations (saved: {', '.join(map(str, saved))}), catalogues of the saved iterations "
                "(segmentation at the same threshold) and previews, on "
                + (f"a local dask cluster of {workers} worker processes." if workers > 0 else "threads in this process."),
                f"The figures below are for F200W unless said otherwise; its output grid has {scale:.4f}\" pixels, north up.",
            ],
            tables=[(report_table(report), "steps per band (status: done now, resumed from the store, off)")],
        ),
        Section(
            "Before and after",
            text=["Every panel of a figure has the same stretch, stated under it, taken from the drizzle mosaic. Axes are "
                  "offsets in arcsec from the image's centre; the bar is a length on the sky; the arrows point north (N) "
                  "and east (E) as the WCS says. Grey-blue: no data."],
            figures=[
                (before_after, f"F200W: {stretch.describe('MJy/sr')}, the same for every panel; sky subtracted."),
                (blue_fig, f"F150W: {blue_stretch.describe('MJy/sr')}, the same for both panels; sky subtracted."),
                (rgb_fig, "colour composites (F200W red, F150W blue, both green); each channel has the same stretch in both "
                          "panels: " + "; ".join(f"{c}: {s.describe('MJy/sr', source=False)}" for c, s in zip(("red", "green", "blue"), rgb_stretch, strict=True))
                          + f" (the 0.5th and 99.9th percentiles of the drizzle composite's channels). Files: {rgb[labels[saved[0]]].name}, {rgb[last].name}."),
            ],
        ),
        Section(
            "A close pair",
            text=["The simulated pair 0.7 PSF FWHM apart: drizzle, UPDC iterations and the true sky (point sources on the output "
                  "grid). Each panel is linear from 0 to its own peak; + marks the true positions."],
            figures=[(pair_fig, "the 0.7-FWHM pair, F200W, offsets in arcsec from the pair's centre")],
        ),
        Section(
            "Data against the model",
            text=[f"The forward model of UPDC (each iterate, sky included, convolved with the PSF and integrated over the "
                  f"exposure's pixels) against exposure {exposure_name}. Structure left in data - mock is what the model "
                  "has not explained: the stars' cores and spikes at iteration 0, less as UPDC iterates; cosmic rays the "
                  "outlier step did not flag stay in the residual at every iteration."],
            figures=[(residual_fig, f"data (sky included) and mock: {res_stretch.describe('MJy/sr')}; data - mock: linear from "
                                    f"{-res_limit:.3g} to {res_limit:.3g} MJy/sr (5 x the exposure's median ERR). Grey-blue: "
                                    "flagged pixels (cosmic rays, reference pixels). Axes in arcsec on the detector's pixel grid.")],
        ),
        Section(
            "Convergence",
            text=["χ²/N is the mean of ((data - mock) / ERR)² over all N good pixels of the 4 exposures, for each saved "
                  "iterate. It is 1 for a model that explains the data to within their errors; the mosaic's pixels are not "
                  "subtracted from N, so values below 1 would mean the iteration fits noise. The mean is dominated by a few "
                  "hundred pixels in the bright stars' cores (and unflagged cosmic rays); the median-based value (median of "
                  "the squares / 0.455, also 1 for pure noise) says how the sky is fitted."
                  + (" chi2_recorded is the same quantity as UPDC computed it in its own forward pass and kept in the "
                     "store for every iteration (the line in the figure)." if recorded is not None else ""),
                  "FWHM: the median over the isolated stars of the diameter of a circle with the area of the star's "
                  "half-maximum isophote (spline-upsampled), at the true positions; the truth PSF is measured the same way. "
                  "The method is good to a few per cent down to 3 pixels (0.047\"); below that, as for the sharpest "
                  "iterations here, it reads some 6 % wide. UPDC's target is the sky before the PSF, so its stars can "
                  "become narrower than the PSF."],
            tables=[(conv, "χ² per data pixel against ERR (F200W)"),
                    (fwhm, f"FWHM of isolated stars, arcsec (truth PSF: {truth_fwhm:.4f}\")")],
            figures=[(conv_fig, "convergence per saved iteration")],
        ),
        Section(
            "Detections against the truth (fig. 13)",
            text=[f"Same detection threshold ({threshold} x each iteration's ERR, 5 pixels, after a local background of "
                  "16-pixel meshes) at every iteration. A detection is true when it and a source of the truth table are each "
                  "other's nearest neighbour within 0.1\", false otherwise; purity = true / detected, completeness = true / "
                  f"the {len(truth)} true sources. More detections are not a gain unless they are true: most false detections "
                  "of later iterations are pieces of the bright stars' diffraction spikes and rings."],
            tables=[(detections, "F200W detections against the truth")],
            figures=[(det_fig, "detections, purity and completeness per iteration")],
        ),
        Section(
            "Fluxes and magnitudes against the truth (fig. 14)",
            text=["Kron fluxes (SExtractor's MAG_AUTO, as in the paper) of the detections matched to the truth, over the "
                  "true fluxes; the ratio is 1 for a perfect measurement."],
            tables=[(fluxes, "measured / true Kron flux of matched sources (median and 16th-84th percentiles)")],
            figures=[(mag_fig, f"left: fig. 14, {names[versus[1]]} against {names[versus[0]]}; right: measured minus true "
                               "magnitude against the true one")],
        ),
        Section(
            "A star's profile (fig. 16)",
            text=[f"The brightest isolated star (true flux {float(star['flux']):.3g} µJy). Both panels are divided by the "
                  "star's true total flux: the encircled energy reaches 1 only if the image holds all of the star's flux "
                  "within the radius. The profile axis is symmetric-logarithmic: a sky-subtracted profile can go negative "
                  "(noise; the dark ring UPDC leaves around bright stars), which a log axis cannot show -- earlier reports "
                  "clipped it to 1e-8. 'truth PSF x true flux' is the model PSF on the output grid."],
            figures=[(profile_fig, "radial profile and encircled energy, radii in arcsec")],
        ),
    ]
    t_report_figs = time.perf_counter()
    for s in sections:
        s.figures = [(figure_png(f) if hasattr(f, "savefig") else f, caption) for f, caption in s.figures]
    timings = {
        "simulation s": round(t_sim, 1),
        "run s": round(report.seconds, 1),
        "report: measurements s": round(t_report_data, 1),
        "report: figures s": round(time.perf_counter() - t_report_figs, 1),
    }
    sections.append(Section("Timings", text=["Wall-clock seconds of the demo's stages (the steps of each band are in the first table)."],
                            values=timings))
    html = write_report(out / "report.html", "mosaic demo", sections, subtitle=f"seed {seed}")
    log.info("report written in %.1f s", time.perf_counter() - t_report)
    products = {
        "report": html,
        "simulation": out / "sim",
        "products": config.outdir,
        "store": config.store_path,
        "rgb": rgb[last],
    }
    for b in DEMO_BANDS:
        products[f"{b} UPDC {last}"] = _i2d(bands[b], last)
    return products


def _magnitude_figure(comparison, versus_truth: dict, labels):
    """Fig. 14 (one iteration's magnitudes against another's) beside measured minus true magnitudes."""
    import matplotlib.pyplot as plt  # noqa: PLC0415

    from mosaic.catalog.analysis import plot_magnitudes, plot_magnitudes_vs_truth  # noqa: PLC0415

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10.5, 4.4), layout="constrained")
    plot_magnitudes(comparison, ax=a1, labels=labels)
    plot_magnitudes_vs_truth(versus_truth, ax=a2)
    return fig


def report_table(report) -> list[dict]:
    """The run's steps as rows: band, step, status, seconds, detail."""
    return [
        {"band": b.band, "step": r.step, "status": r.status, "seconds": round(float(r.seconds), 2), "detail": r.detail}
        for b in report.bands
        for r in b.rows
    ]


def run(args) -> int:
    # the first line before the heavy imports, so a newcomer sees at once that it started
    log.info("mosaic demo: a simulated two-band field, run and reported in %s (about 1-2 minutes on 2 cores)", Path(args.out).resolve())
    from mosaic.cli._common import forked_workers  # noqa: PLC0415

    # the local cluster's workers forked from this process (no imports repeated), profiled for the dashboard
    with forked_workers(profile=True):
        products = demo(args.out, seed=args.seed, iterations=args.iterations, workers=args.workers)
    width = max(len(k) for k in products)
    lines = [f"  {k:<{width}}  {v}" for k, v in products.items()]
    print("mosaic demo wrote:\n" + "\n".join(lines) + f"\nopen {products['report']} in a browser")
    return 0
