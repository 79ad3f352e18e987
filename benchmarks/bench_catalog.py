"""``mosaic detect`` (photutils and SEP engines) on worker processes against whole-image photutils and SEP, same run.

Run::

    python benchmarks/bench_catalog.py --size 4096 --sources 3600 --tile 1024 --workers 2 --deblend
    python benchmarks/bench_catalog.py --size 9584 --sources 20000 --tile 1024 --workers 2 --deblend

The sky (Gaussian sources of sigma 0.8-6 px with fluxes spread over 4 decades, on unit noise)
is rendered block by block from a seed and written once as an ``_i2d.fits`` mosaic (SCI
float32, ERR 1, WHT 1); every contender reads that file. The contenders:

- ``mosaic detect`` as the command runs it (:func:`mosaic.pipeline.detect.detect_image` on a
  cluster of ``--workers`` forked processes, as ``mosaic detect --workers N``; 0: threads),
  with the photutils engine and with ``--engine sep``;
- photutils on the whole image with the same settings: ``convolve`` with the 2-px FWHM
  Gaussian (7 px), ``detect_sources`` at 1.5 x ERR with 10 pixels, ``deblend_sources`` (with
  ``--deblend``), ``SourceCatalog`` (centroids, shapes, segment and Kron fluxes, 3/6 px
  circular fluxes with errors);
- SEP on the whole image with the same settings: ``sep.extract`` (the same filter as a plain
  convolution, ``filter_type="conv"``, 1.5 x ERR,
  10 pixels, deblending with ``--deblend``, no cleaning), ``kron_radius``, ``sum_ellipse``,
  ``sum_circle``.

Printed per contender: wall time, CPU time of all processes (this one and the workers), peak
memory of all processes above the baseline, the number of sources; then the ratios and the
largest differences between the tiled and whole-image catalogues. The cluster is started
before the clocks (its start-up is printed apart), and every contender has its modules imported.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import dask.array as da
import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).parent))
from _memory import PeakMemory  # noqa: E402

__all__ = ["main"]

RADII = (3.0, 6.0)
FWHM, NSIGMA, NPIX = 2.0, 1.5, 10


def _sky_block(block_info=None, *, sources=None, seed=0):
    (y0, y1), (x0, x1) = block_info[None]["array-location"]
    rng = np.random.default_rng([seed, y0, x0])
    block = rng.standard_normal((y1 - y0, x1 - x0))
    x, y, f, s = sources
    reach = 5 * s
    near = (x + reach > x0) & (x - reach < x1) & (y + reach > y0) & (y - reach < y1)
    for xi, yi, fi, si in zip(x[near], y[near], f[near], s[near], strict=True):
        r = int(np.ceil(5 * si))
        ya, yb = max(int(yi) - r, y0), min(int(yi) + r + 1, y1)
        xa, xb = max(int(xi) - r, x0), min(int(xi) + r + 1, x1)
        if ya >= yb or xa >= xb:
            continue
        yy, xx = np.mgrid[ya:yb, xa:xb]
        block[ya - y0 : yb - y0, xa - x0 : xb - x0] += fi / (2 * np.pi * si * si) * np.exp(-((xx - xi) ** 2 + (yy - yi) ** 2) / (2 * si * si))
    return block.astype(np.float32)


def make_sky(path: Path, size: int, n_sources: int, chunk: int = 1024, seed: int = 0) -> None:
    """An ``_i2d.fits`` mosaic of ``size``² with ``n_sources`` Gaussian sources on unit noise (ERR 1, WHT 1)."""
    from astropy.io import fits

    rng = np.random.default_rng(seed)
    sources = (rng.uniform(0, size, n_sources), rng.uniform(0, size, n_sources), 10 ** rng.uniform(1.3, 4.5, n_sources), rng.uniform(0.8, 6.0, n_sources))
    chunks = ((chunk,) * (size // chunk) + ((size % chunk,) if size % chunk else ()),) * 2
    sky = da.map_blocks(_sky_block, chunks=chunks, dtype=np.float32, sources=sources, seed=seed).compute()
    ones = np.ones_like(sky)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(sky, name="SCI"), fits.ImageHDU(ones, name="ERR"), fits.ImageHDU(ones, name="WHT")]).writeto(path)


def _read(path: Path):
    from astropy.io import fits

    with fits.open(path) as hdul:
        sci, err, wht = (hdul[k].data.astype(np.float64) for k in ("SCI", "ERR", "WHT"))
    good = np.isfinite(sci) & (wht > 0)
    return np.where(good, sci, 0.0), np.where(good & (err > 0), err, np.inf), err, ~good


def _kernel():
    from photutils.segmentation import make_2dgaussian_kernel

    return make_2dgaussian_kernel(FWHM, size=7).array


def whole_photutils(path: Path, deblend: bool) -> dict:
    from astropy.convolution import convolve
    from photutils.segmentation import SourceCatalog, deblend_sources, detect_sources

    data, rms, err, bad = _read(path)
    det = convolve(data, _kernel(), boundary="fill", fill_value=0.0, nan_treatment="interpolate", preserve_nan=False)
    segm = detect_sources(det, NSIGMA * rms, n_pixels=NPIX, mask=bad)
    if deblend:
        segm = deblend_sources(det, segm, NPIX, progress_bar=False)
    cat = SourceCatalog(data, segm, convolved_data=det, error=err, mask=bad)
    cols = {c: np.asarray(getattr(getattr(cat, c), "value", getattr(cat, c))) for c in ("x_centroid", "y_centroid", "segment_flux", "kron_flux", "kron_radius")}
    for r in RADII:
        cols[f"circ_flux_r{r:g}"] = np.asarray(cat.circular_photometry(r)[0])
    return cols


def whole_sep(path: Path, deblend: bool) -> dict:
    import sep

    data, rms, _, bad = _read(path)
    sep.set_extract_pixstack(data.size)
    o = sep.extract(data, NSIGMA, err=rms, mask=bad, minarea=NPIX, filter_kernel=_kernel().astype(np.float32), filter_type="conv",
                    deblend_cont=0.005 if deblend else 1.0, clean=False)
    o = o[np.lexsort((o["x"], o["y"]))]
    kr, _ = sep.kron_radius(data, o["x"], o["y"], o["a"], o["b"], o["theta"], 6.0, mask=bad)
    kflux, _, _ = sep.sum_ellipse(data, o["x"], o["y"], o["a"], o["b"], o["theta"], 2.5 * np.maximum(kr, 3.5), err=rms, mask=bad, subpix=1)
    cols = {"x_centroid": o["x"], "y_centroid": o["y"], "segment_flux": o["flux"], "kron_flux": kflux, "kron_radius": kr, "merged": (o["flag"] & 1) > 0}
    for r in RADII:
        cols[f"circ_flux_r{r:g}"] = sep.sum_circle(data, o["x"], o["y"], r, err=rms, mask=bad)[0]
    return cols


def tiled(path: Path, out: Path, deblend: bool, tile: int, engine: str) -> dict:
    from mosaic.exceptions import NoWCSWarning
    from mosaic.pipeline.detect import detect_image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoWCSWarning)
        # ERR as it is: the whole-image references threshold at NSIGMA x ERR
        t = detect_image(path, out, threshold=NSIGMA, n_pixels=NPIX, deblend=deblend, fwhm=FWHM, radii=RADII, tile=tile, engine=engine,
                         overwrite=True, noise="err")
    cols = {c: np.asarray(getattr(t[c], "value", t[c])) for c in ("x_centroid", "y_centroid", "segment_flux", "kron_flux", "kron_radius")}
    for r in RADII:
        cols[f"circ_flux_r{r:g}"] = np.asarray(t[f"circ_flux_r{r:g}"].value)
    if engine == "sep":
        cols["merged"] = (np.asarray(t["flags"]) & 1) > 0
    return cols


def _cpu_seconds() -> float:
    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    return total


def _timed(label, func, *args):
    with PeakMemory() as mem:
        c0, t0 = _cpu_seconds(), time.perf_counter()
        cols = func(*args)
        wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    peak = (mem.peak - mem.baseline) / 2**30
    print(f"{label}: {wall:.1f} s wall, {cpu:.1f} s CPU, peak +{peak:.2f} GiB, {len(cols['x_centroid'])} sources", flush=True)
    return cols, wall


def _compare(name, a, b) -> None:
    if len(a["x_centroid"]) != len(b["x_centroid"]):
        print(f"{name}: different source counts ({len(a['x_centroid'])} vs {len(b['x_centroid'])})")
        return
    rows = ~b["merged"] if "merged" in b else np.ones(len(b["x_centroid"]), bool)
    if "merged" in b:  # SEP hands the pixels between deblended children out at random: compare the others
        rows &= ~a["merged"]
    dpos = max(np.nanmax(np.abs(a[k][rows] - b[k][rows]), initial=0.0) for k in ("x_centroid", "y_centroid"))
    rel = max(np.nanmax(np.abs(a[k][rows] - b[k][rows]) / np.maximum(np.abs(b[k][rows]), 1e-300), initial=0.0) for k in a if k not in ("x_centroid", "y_centroid", "merged"))
    print(f"{name}: same {len(b['x_centroid'])} sources ({rows.sum()} compared); max |dpos| {dpos:.1e} px, max relative flux/radius difference {rel:.1e}")


def _warm_imports():
    import astropy.convolution  # noqa: F401
    import photutils.segmentation  # noqa: F401
    import sep  # noqa: F401

    import mosaic.catalog.detect  # noqa: F401
    import mosaic.catalog.photometry  # noqa: F401
    import mosaic.catalog.sep_engine  # noqa: F401
    import mosaic.pipeline.detect  # noqa: F401


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--tile", type=int, default=1024)
    p.add_argument("--workers", type=int, default=2, help="worker processes of the mosaic runs (0: threads)")
    p.add_argument("--sources", type=int, default=3600)
    p.add_argument("--deblend", action="store_true")
    p.add_argument("--sync", action="store_true", help="run mosaic detect on dask's synchronous scheduler (one process) instead")
    p.add_argument("--only", choices=("photutils", "sep"), default=None, help="run one engine's pair only")
    p.add_argument("--repeat", type=int, default=1,
                   help="run each pair N times, tiled and whole image one after the other (the cluster kept up); the ratios of the "
                        "fastest runs and of each pair are printed (on a shared machine the fastest run is the steadiest figure)")
    args = p.parse_args(argv)
    os.environ.setdefault("MOSAIC_PROGRESS", "0")
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("distributed").setLevel(logging.ERROR)
    from mosaic.cli._common import forked_workers, local_client

    work = Path(tempfile.mkdtemp(prefix="bench_catalog_"))
    path = work / "sky_i2d.fits"
    print(f"load average before: {os.getloadavg()[0]:.1f}", flush=True)
    try:
        t0 = time.perf_counter()
        make_sky(path, args.size, args.sources, args.tile)
        print(f"sky {args.size}^2 with {args.sources} sources written in {time.perf_counter() - t0:.1f} s", flush=True)
        _warm_imports()
        t0 = time.perf_counter()
        import dask

        cluster = dask.config.set(scheduler="sync") if args.sync else forked_workers()
        with cluster, local_client(0 if args.sync else args.workers, dashboard=False) as client:
            if client is not None:
                client.run(_warm_imports)
            if client is not None:
                print(f"cluster of {args.workers} workers started in {time.perf_counter() - t0:.1f} s", flush=True)
            where = "synchronous scheduler" if args.sync else f"{args.workers} workers"
            res, wall = {}, {}
            peers = {"photutils": ("whole-image photutils", whole_photutils), "sep": ("whole-image SEP", whole_sep)}
            for _ in range(max(1, args.repeat)):
                for engine in ("photutils", "sep"):
                    if args.only not in (None, engine):
                        continue
                    res[f"tiled-{engine}"], w = _timed(
                        f"mosaic detect --engine {engine} ({where}, tiles {args.tile})", tiled, path, work / f"{engine}.ecsv", args.deblend, args.tile, engine,
                    )
                    wall.setdefault(f"tiled-{engine}", []).append(w)
                    if args.repeat > 1 or client is None:  # else the peer runs once the cluster is down, as before
                        res[f"whole-{engine}"], w = _timed(peers[engine][0], peers[engine][1], path, args.deblend)
                        wall.setdefault(f"whole-{engine}", []).append(w)
        for engine in ("photutils", "sep"):
            if args.only in (None, engine) and f"whole-{engine}" not in wall:
                res[f"whole-{engine}"], w = _timed(peers[engine][0], peers[engine][1], path, args.deblend)
                wall[f"whole-{engine}"] = [w]
        for engine in ("photutils", "sep"):
            if f"tiled-{engine}" in wall:
                tw, ww = np.array(wall[f"tiled-{engine}"]), np.array(wall[f"whole-{engine}"])
                speed = ww.min() / tw.min()
                print(f"{engine}: whole-image / tiled wall time = {speed:.2f} (tiled is {speed:.2f}x as fast; fastest of {len(tw)} runs each: "
                      f"{tw.min():.1f} s vs {ww.min():.1f} s)")
                if len(tw) > 1:
                    print(f"{engine}: per pair: {', '.join(f'{w / t:.2f}' for t, w in zip(tw, ww, strict=True))}")
                _compare(f"{engine} tiled vs whole", res[f"tiled-{engine}"], res[f"whole-{engine}"])
        print(f"load average after: {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
