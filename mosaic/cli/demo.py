"""``mosaic demo``: the main job on its embedded default, small enough for a laptop.

Simulates a small dithered F200W field, reads it back lazily, drizzles it tile by tile into the
iteration-0 mosaic (pixfrac 1, pixel-scale ratio 0.5; an ``_i2d.fits`` file and a zarr store),
and writes quick-look PNGs of one exposure, the truth and the mosaic. Later stages (UPDC,
catalogues, the HTML report) join as they land.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from astropy.io import fits

from mosaic.coadd.drizzle import drizzle_mosaic
from mosaic.io.cal import CalCutouts, read_exposures
from mosaic.io.grid import MosaicGrid
from mosaic.io.products import write_drizzle_products
from mosaic.io.store import Store
from mosaic.simulate import SimConfig, simulate_field
from mosaic.viz.preview import write_png

__all__ = ["add_parser", "run", "demo"]

log = logging.getLogger(__name__)


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="run the whole job on a small simulated field", description=__doc__.split("\n\n")[1])
    p.add_argument("--out", default="mosaic-demo", help="directory for everything the demo writes (default ./mosaic-demo)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.set_defaults(func=run)


def demo(out, *, seed: int = 1) -> dict:
    """Run the demo into ``out``; returns the paths written, by name."""
    out = Path(out)
    t0 = time.perf_counter()
    field = simulate_field(out / "exposures", SimConfig(n_exposures=4, size=256, seed=seed), overwrite=True)
    ds = read_exposures(field.exposures)
    log.info("read back %d exposures of %s lazily", ds.sizes["exposure"], ds.attrs["band"])
    shape = (ds.sizes["y"], ds.sizes["x"])
    grid = MosaicGrid.from_exposures(ds.attrs["wcs"], [shape] * ds.sizes["exposure"], psr=0.5, tile=256)
    mosaic = drizzle_mosaic(ds, grid, pixfrac=1.0, cutout_reader=CalCutouts(ds["path"].values, ds.attrs["bad_bits"]))
    written = write_drizzle_products(
        mosaic, grid, out=out / "demo_drizzle_i2d.fits", store=Store(out / "demo.zarr"), field="demo", overwrite=True
    )
    products = {
        "exposures": out / "exposures",
        "drizzle_i2d": written["i2d"],
        "store": written["store"],
        "exposure_png": write_png(out / "exposure_1.png", ds["sci"][0].values),
        "truth_png": write_png(out / "truth.png", fits.getdata(field.truth_image)),
        "drizzle_png": write_png(out / "drizzle.png", fits.getdata(written["i2d"], "SCI")),
        "psf_png": write_png(out / "psf.png", fits.getdata(field.psf), stretch="log", percent=99.99),
    }
    log.info("demo finished in %.1f s", time.perf_counter() - t0)
    return products


def run(args) -> int:
    products = demo(args.out, seed=args.seed)
    width = max(len(k) for k in products)
    lines = [f"  {k:<{width}}  {v}" for k, v in products.items()]
    print("mosaic demo wrote:\n" + "\n".join(lines))
    return 0
