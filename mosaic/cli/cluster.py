"""``mosaic cluster``: what a cluster configuration would start, without starting it.

    mosaic cluster info [--config FILE.yaml] [--kind local|cuda|slurm|pbs|address] [--set KEY=VALUE ...]

For ``slurm`` and ``pbs`` it prints the batch script of one worker job (nothing is submitted).
"""

from __future__ import annotations

import argparse
import logging

import yaml

from mosaic.cluster import KINDS, describe, load_cluster_config, resolve_cluster_spec

__all__ = ["add_parser", "run"]

log = logging.getLogger(__name__)


def _setting(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    # YAML reads numbers, booleans and lists as they would be written in the config file
    return key.strip(), yaml.safe_load(value)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``cluster`` subcommand on ``subparsers``; returns its parser."""
    p = subparsers.add_parser(
        "cluster",
        help="show what a cluster configuration would start (local, cuda, slurm, pbs, address)",
        description=(
            "Check a cluster configuration and print what mosaic would start: workers, threads, "
            "memory limits and spill directory for a local cluster, the job script for SLURM or "
            "PBS (nothing is submitted). Without --config the settings come from dask's "
            "configuration key mosaic.cluster, then from this machine's cores and memory."
        ),
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    info = actions.add_parser("info", help="print what the configuration would start")
    info.add_argument(
        "--config", metavar="FILE.yaml",
        help="YAML with the cluster settings (top level, under 'cluster:', or under 'mosaic: cluster:')",
    )
    info.add_argument("--kind", choices=KINDS, help="override the kind (drops the file's settings of another kind)")
    info.add_argument(
        "--set", dest="settings", action="append", type=_setting, default=[], metavar="KEY=VALUE",
        help="override one setting, e.g. --set n_workers=4 --set walltime=02:00:00 (repeatable)",
    )
    info.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``mosaic cluster info``; returns the exit code. A bad configuration raises ValueError."""
    where = "cluster"
    spec = None
    if args.config:
        spec = load_cluster_config(args.config)
        where = f"{args.config}: cluster"
    overrides = dict(args.settings)
    if args.kind:
        overrides["kind"] = args.kind
    checked = resolve_cluster_spec(spec, where=where, **overrides)
    print(describe(checked))
    return 0
