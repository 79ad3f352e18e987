"""``mosaic run``: one field from a YAML config, every band, resumable.

    mosaic run FIELD.yaml [--bands F200W ...] [--overwrite] [--check]

Runs preprocessing, drizzle, UPDC, catalogues and previews for every band of the field as the
config says (see mosaic.config and examples/field.yaml), records every step in the
store, and ends with a summary table. Run the same command again after a kill: complete steps
and UPDC iterations are read back, not redone. The exit code is 1 when a band failed.
"""

from __future__ import annotations

import argparse
import logging

__all__ = ["add_parser", "run"]

log = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``run`` subcommand on ``subparsers``; returns its parser."""
    p = subparsers.add_parser(
        "run",
        help="run a field from a YAML config (preprocess, drizzle, UPDC, catalogues, previews); resumable",
        description=__doc__.split("\n\n")[2],
    )
    p.add_argument("config", metavar="FIELD.yaml", help="field configuration (see examples/field.yaml)")
    p.add_argument("--bands", nargs="+", metavar="BAND", help="only these bands of the field")
    p.add_argument("--overwrite", action="store_true", help="redo every step, even those complete in the store")
    p.add_argument("--check", action="store_true", help="only validate the config and find the inputs; run nothing")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``mosaic run``; returns the exit code (1 when a band failed). Bad config raises ConfigError."""
    from mosaic.cli._common import forked_workers  # noqa: PLC0415
    from mosaic.config import load_field  # noqa: PLC0415
    from mosaic.pipeline import check_config, run_field  # noqa: PLC0415

    config = load_field(args.config)
    check_config(config, plan=args.check)  # a run plans its bands itself before it starts
    if args.check:
        for band, cfg in config.bands.items():
            log.info("%s %s: %d exposures, PSF %s", config.field, band, len(cfg.exposure_paths()), cfg.psf)
        log.info("%s: valid; products in %s, store %s", args.config, config.outdir, config.store_path)
        return 0
    # a local cluster's workers forked from this process (no imports repeated), profiled for the dashboard
    with forked_workers(profile=True):
        report = run_field(config, overwrite=args.overwrite, bands=args.bands)
    return 0 if report.ok else 1
