"""``mosaic simulate``: a synthetic NIRCam field with ground truth."""

from __future__ import annotations

import logging
from dataclasses import replace

__all__ = ["add_parser", "run"]

log = logging.getLogger(__name__)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulate a dithered NIRCam field (cal files, truth, PSFs)",
        description="Write JWST-like _cal.fits exposures of a simulated field, its truth image and table, and its PSFs.",
    )
    p.add_argument("outdir", help="directory to write into")
    p.add_argument("--exposures", type=int, default=4, help="dithered exposures per pointing (default 4)")
    p.add_argument("--pointings", type=int, nargs=2, default=(1, 1), metavar=("NY", "NX"), help="grid of pointings (default 1 1)")
    p.add_argument("--size", type=int, default=256, help="detector side in pixels (default 256; real: 2048)")
    p.add_argument("--band", default="F200W", help="NIRCam filter (default F200W)")
    p.add_argument(
        "--layout-band", default=None,
        help="band whose FWHM sets the source layout (default: --band); give every band of a field the same one and the same --seed",
    )
    p.add_argument("--psf-size", type=int, default=101, help="odd PSF size on the output grid (default 101; paper: 1501)")
    p.add_argument("--psr", type=float, default=0.5, help="output/input pixel-scale ratio (default 0.5)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--background", type=float, default=0.15, help="sky level in MJy/sr (default 0.15; 0 for none)")
    p.add_argument("--no-icl", action="store_true", help="leave out the intracluster light")
    p.add_argument("--noiseless", action="store_true", help="no noise, cosmic rays, hot pixels or striping")
    p.add_argument("--flagship", action="store_true", help="the paper's scale: 36 SW exposures of 2048² (3x3 pointings x 4 dithers)")
    p.add_argument("--workers", type=int, default=1, help="processes rendering exposures in parallel (default 1)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files in OUTDIR")
    p.set_defaults(func=run)


def run(args) -> int:
    from mosaic.simulate import SimConfig, flagship_config, simulate_field  # noqa: PLC0415

    base = flagship_config() if args.flagship else SimConfig()
    changes = {
        "band": args.band.upper(),
        "layout_band": args.layout_band.upper() if args.layout_band else None,
        "psr": args.psr,
        "seed": args.seed,
        "background": args.background,
        "icl": not args.no_icl,
        "noiseless": args.noiseless,
    }
    if not args.flagship:
        changes.update(n_exposures=args.exposures, n_pointings=tuple(args.pointings), size=args.size, psf_size=args.psf_size)
    field = simulate_field(args.outdir, replace(base, **changes), overwrite=args.overwrite, n_workers=args.workers)
    log.info(
        "wrote %d exposures, truth (%d sources) and PSFs to %s; output grid %d x %d",
        len(field.exposures),
        len(field.truth_table),
        field.outdir,
        *field.grid.shape,
    )
    return 0
