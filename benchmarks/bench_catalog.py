"""Tiled detection + photometry on a dask LocalCluster against whole-image photutils, same run.

Run::

    python benchmarks/bench_catalog.py --size 9584 --tile 1024 --workers 2 --sources 20000

The sky (Gaussian sources of sigma 0.8-6 px with fluxes spread over 4 decades, on unit noise)
is rendered block by block from a seed and written once to a zarr array; both contenders read
the same pixels. The peer is photutils on the whole image: ``astropy.convolution.convolve``
with a 2-px FWHM Gaussian, ``detect_sources`` (1.5 sigma, 10 pixels), ``deblend_sources``
(with ``--deblend``) and ``SourceCatalog`` (centroids, shapes, segment, Kron and 3/6-px
circular fluxes with errors). The tiled run does the same with :mod:`mosaic.catalog` on
``--workers`` processes. Printed: wall time, ratio to the peer, peak memory of all processes
above the baseline, and the largest differences between the two catalogues.

Both contenders are timed warm: photutils, astropy.convolution and mosaic.catalog are imported
in this process and on every worker before the clocks start (importing them takes 2-3 s, which
the contender run first would otherwise pay alone).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import dask.array as da
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _memory import PeakMemory  # noqa: E402

__all__ = ["main"]

RADII = (3.0, 6.0)


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


def make_sky(path: Path, size: int, n_sources: int, chunk: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    sources = (rng.uniform(0, size, n_sources), rng.uniform(0, size, n_sources), 10 ** rng.uniform(1.3, 4.5, n_sources), rng.uniform(0.8, 6.0, n_sources))
    sky = da.map_blocks(_sky_block, chunks=((chunk,) * (size // chunk) + ((size % chunk,) if size % chunk else ()),) * 2, dtype=np.float32, sources=sources, seed=seed)
    sky.to_zarr(str(path), overwrite=True)


def whole_image(path: Path, deblend: bool):
    from astropy.convolution import convolve
    from photutils.segmentation import SourceCatalog, deblend_sources, detect_sources, make_2dgaussian_kernel

    data = da.from_zarr(str(path)).compute().astype(np.float64)
    err = np.ones_like(data)
    det = convolve(data, make_2dgaussian_kernel(2.0, size=5).array)
    segm = detect_sources(det, 1.5, n_pixels=10)
    if deblend:
        segm = deblend_sources(det, segm, 10, mode="linear", progress_bar=False)
    cat = SourceCatalog(data, segm, convolved_data=det, error=err)
    cols = {c: np.asarray(getattr(getattr(cat, c), "value", getattr(cat, c))) for c in ("x_centroid", "y_centroid", "segment_flux", "kron_flux", "kron_radius")}
    for r in RADII:
        cols[f"circ{r:g}"] = np.asarray(cat.circular_photometry(r)[0])
    return cols


def tiled(path: Path, deblend: bool, tile: int):
    import warnings

    from mosaic.catalog.detect import detect_segmentation, smooth
    from mosaic.catalog.photometry import NoWCSWarning, source_catalog

    data = da.from_zarr(str(path)).rechunk(tile).astype(np.float64)
    err = da.ones_like(data)
    det = smooth(data, fwhm=2.0, size=5, tile=tile).persist()
    seg = detect_segmentation(det, 1.5, n_pixels=10, deblend=deblend, mode="linear", tile=tile)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoWCSWarning)
        cat = source_catalog(data, seg, error=err, convolved=det, radii=RADII)
    cols = {c: np.asarray(getattr(cat[c], "value", cat[c])) for c in ("x_centroid", "y_centroid", "segment_flux", "kron_flux", "kron_radius")}
    for r in RADII:
        cols[f"circ{r:g}"] = np.asarray(cat[f"circ_flux_r{r:g}"].value)
    return cols


def _warm_imports():
    import astropy.convolution  # noqa: F401
    import photutils.segmentation  # noqa: F401

    import mosaic.catalog.detect  # noqa: F401
    import mosaic.catalog.photometry  # noqa: F401


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=9584)
    p.add_argument("--tile", type=int, default=1024)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--sources", type=int, default=20000)
    p.add_argument("--deblend", action="store_true")
    p.add_argument("--skip-whole", action="store_true", help="run the tiled contender only")
    args = p.parse_args(argv)
    from distributed import Client, LocalCluster

    work = Path(tempfile.mkdtemp(prefix="bench_catalog_"))
    path = work / "sky.zarr"
    try:
        t0 = time.perf_counter()
        make_sky(path, args.size, args.sources, args.tile)
        print(f"sky {args.size}^2 with {args.sources} sources rendered in {time.perf_counter() - t0:.1f} s")
        results = {}
        _warm_imports()
        with LocalCluster(n_workers=args.workers, threads_per_worker=1, memory_limit="6GiB") as cluster, Client(cluster) as client:
            client.run(_warm_imports)
            with PeakMemory() as mem:
                t0 = time.perf_counter()
                results["tiled"] = tiled(path, args.deblend, args.tile)
                t_tiled = time.perf_counter() - t0
            m_tiled = (mem.peak - mem.baseline) / 2**30
        print(f"tiled ({args.workers} workers, tiles {args.tile}): {t_tiled:.1f} s, peak +{m_tiled:.2f} GiB, {len(results['tiled']['x_centroid'])} sources")
        if args.skip_whole:
            return 0
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            results["whole"] = whole_image(path, args.deblend)
            t_whole = time.perf_counter() - t0
        m_whole = (mem.peak - mem.baseline) / 2**30
        print(f"whole-image photutils: {t_whole:.1f} s, peak +{m_whole:.2f} GiB, {len(results['whole']['x_centroid'])} sources")
        print(f"ratio tiled/whole: time {t_tiled / t_whole:.2f}, memory {m_tiled / m_whole:.2f}")
        a, b = results["tiled"], results["whole"]
        if len(a["x_centroid"]) == len(b["x_centroid"]):
            dpos = max(np.nanmax(np.abs(a["x_centroid"] - b["x_centroid"])), np.nanmax(np.abs(a["y_centroid"] - b["y_centroid"])))
            rel = max(np.nanmax(np.abs(a[k] - b[k]) / np.maximum(np.abs(b[k]), 1e-300)) for k in a if k not in ("x_centroid", "y_centroid"))
            print(f"same {len(b['x_centroid'])} sources; max |dpos| {dpos:.2e} px, max relative flux/radius difference {rel:.2e}")
        else:
            print("different source counts!")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
