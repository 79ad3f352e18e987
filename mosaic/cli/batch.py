"""``mosaic batch``: the fields of a survey on one cluster; resumable, failures reported at the end.

    mosaic batch SURVEY.yaml [--fields NAME ...] [--overwrite] [--check]

Runs every field (and band) of the survey manifest (see mosaic.config.load_survey and
examples/survey.yaml) with one store and one cluster. The status of every field/band
(started, complete, failed with its error) is kept in the store: run the same command again
after a kill and complete fields are skipped, the others continue. A field that fails does not
stop the others; the run ends with a table of the failures and exit code 1.
"""

from __future__ import annotations

import argparse
import logging

__all__ = ["add_parser", "run"]

log = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``batch`` subcommand on ``subparsers``; returns its parser."""
    p = subparsers.add_parser(
        "batch",
        help="run the fields of a survey manifest on one cluster; resumable",
        description=__doc__.split("\n\n")[2],
    )
    p.add_argument("config", metavar="SURVEY.yaml", help="survey manifest (see examples/survey.yaml)")
    p.add_argument("--fields", nargs="+", metavar="NAME", help="only these fields")
    p.add_argument("--overwrite", action="store_true", help="redo every step of every field")
    p.add_argument("--check", action="store_true", help="only validate the manifest and every field's config and inputs")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``mosaic batch``; returns the exit code (1 when a field failed)."""
    from mosaic.cli._common import forked_workers  # noqa: PLC0415
    from mosaic.config import load_survey  # noqa: PLC0415
    from mosaic.pipeline import check_config, run_survey  # noqa: PLC0415

    survey = load_survey(args.config, check_inputs=args.check)
    if args.check:
        for cfg in survey.fields:
            check_config(cfg)
            log.info("%s: bands %s -> %s", cfg.field, sorted(cfg.bands), cfg.outdir)
        log.info("%s: valid; %d fields, store %s", args.config, len(survey.fields), survey.store)
        return 0
    # a local cluster's workers forked from this process (no imports repeated), profiled for the dashboard
    with forked_workers(profile=True):
        report = run_survey(survey, overwrite=args.overwrite, fields=args.fields)
    return 0 if report.ok else 1
