"""Pieces shared by the subcommands: argument types and the optional local dask cluster."""

from __future__ import annotations

import argparse
import logging
from contextlib import contextmanager

__all__ = ["positive_float", "positive_int", "non_negative_int", "local_client"]

log = logging.getLogger(__name__)


def _number(text: str, kind, what: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None


def positive_float(text: str) -> float:
    v = _number(text, float, "a number")
    if not v > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return v


def positive_int(text: str) -> int:
    v = _number(text, int, "an integer")
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive integer")
    return v


def non_negative_int(text: str) -> int:
    v = _number(text, int, "an integer")
    if v < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return v


@contextmanager
def local_client(n_workers: int):
    """A client on a LocalCluster of ``n_workers`` processes, or None (threads here) for 0."""
    if n_workers <= 0:
        yield None
        return
    from distributed import Client, LocalCluster  # noqa: PLC0415

    with LocalCluster(n_workers=n_workers, threads_per_worker=1) as cluster, Client(cluster) as client:
        log.info("dask dashboard: %s", client.dashboard_link)
        yield client
