"""Pieces shared by the subcommands: argument types and the optional local dask cluster."""

from __future__ import annotations

import argparse
import logging
import sys
from contextlib import contextmanager
from pathlib import Path

__all__ = ["refuse_existing", "positive_float", "positive_int", "non_negative_int", "check_workers", "forked_workers", "local_client", "add_preprocessing_arguments", "preprocess"]

log = logging.getLogger(__name__)


def refuse_existing(path, overwrite: bool) -> Path:
    """``path`` as a Path; an :class:`~mosaic.exceptions.InputError` if it exists and ``overwrite`` is not set."""
    from mosaic.exceptions import InputError  # noqa: PLC0415

    path = Path(path)
    if path.exists() and not overwrite:
        msg = f"{path}: exists; pass --overwrite to replace it"
        raise InputError(msg)
    return path


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


def forked_workers(*, profile: bool = False):
    """Start local worker processes by forking this one (Linux), not by spawning fresh ones,
    polling less (:data:`mosaic.cluster.QUIET_POLLING`) and, unless ``profile``, unprofiled.

    A spawned worker imports dask, astropy, numba and the drizzle package again (seconds of
    CPU each, more than the whole work of a small mosaic); a forked one has them already.
    Elsewhere (macOS, Windows) forking is unsafe and the default stays. Only for commands:
    the process is the command's own (no kernel's or user's threads to copy in a fork).
    ``profile=True`` leaves the workers' profiler as the user's dask config has it (on by
    default: the dashboard's profile page), for commands that serve the dashboard.
    """
    import dask  # noqa: PLC0415
    import distributed  # noqa: F401, PLC0415 -- its defaults loaded first: leaving the set() below would otherwise drop the whole "distributed" config

    from mosaic.cluster import quiet_polling  # noqa: PLC0415

    # the workers' statistical profiler samples every thread's stack every 10 ms, CPU that
    # a batch run has no use for (the dashboard's task stream stays)
    settings = {} if profile else {"distributed.worker.profile.enabled": False}
    settings.update(quiet_polling())
    if sys.platform == "linux":
        settings["distributed.worker.multiprocessing-method"] = "fork"
    return dask.config.set(settings)


def add_workers_argument(p: argparse.ArgumentParser) -> None:
    """``--workers N`` of the commands that compute on dask: a local cluster of N worker
    processes, or threads in this process for 0 (the default); :func:`check_workers` refuses a
    negative one."""
    p.add_argument("--workers", type=int, default=0, metavar="N",
                   help="run on a local dask cluster of N worker processes (default 0: threads in this process)")


def check_workers(n_workers: int) -> None:
    """Refuse a negative ``--workers`` (0 is threads in this process), before any work."""
    from mosaic.exceptions import InputError  # noqa: PLC0415

    if n_workers < 0:
        msg = f"--workers {n_workers!r} is negative; expected 0 (threads) or a number of processes"
        raise InputError(msg)


@contextmanager
def local_client(n_workers: int, *, dashboard: bool = True):
    """A client on a LocalCluster of ``n_workers`` processes, or None (threads here) for 0.

    ``dashboard=False`` serves no dashboard (bokeh: about a second of start-up), for batch
    commands where nobody watches.
    """
    if n_workers <= 0:
        yield None
        return
    from distributed import Client, LocalCluster  # noqa: PLC0415

    # the dashboard on loopback, on a free port: not reachable from other hosts, no clash with a running one
    address = "127.0.0.1:0" if dashboard else None
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, dashboard_address=address) as cluster, Client(cluster) as client:
        if dashboard:
            log.info("dask dashboard: %s", client.dashboard_link)
        yield client


def add_preprocessing_arguments(p: argparse.ArgumentParser) -> None:
    """``--destripe``, ``--outliers``, ``--flatten-background``, ``--skymatch`` and ``--prep-dir``, for commands that read exposures."""
    g = p.add_argument_group("preprocessing (seed 000 sec. 2.1), run first: outliers, then destripe, then background, then skymatch")
    g.add_argument("--outliers", action="store_true", help="flag cosmic rays and hot pixels across exposures and replace them (writes _crf.fits)")
    g.add_argument("--destripe", action="store_true", help="remove 1/f striping per amplifier (writes _1fc.fits)")
    g.add_argument(
        "--flatten-background", action="store_true",
        help="flatten each exposure's background (ICL, gradients) to its sky level (writes _bkg.fits)",
    )
    g.add_argument("--flatten-box", type=positive_int, default=64, metavar="PIX", help="mesh size of --flatten-background (default 64)")
    g.add_argument(
        "--skymatch", action="store_true",
        help="match the exposures' sky levels over their overlaps, keeping their mean (writes _skm.fits)",
    )
    g.add_argument("--skymatch-box", type=positive_int, default=64, metavar="PIX", help="mesh size of --skymatch (default 64)")
    g.add_argument("--prep-dir", metavar="DIR", default=None, help="folder of the preprocessed exposures (default: next to the output, prep/)")


def preprocess(files, args, default_dir: Path, *, client=None) -> list[str]:
    """The exposures to coadd: ``files``, preprocessed as ``args`` asks, in :data:`mosaic.prep.ORDER`
    (the order of ``mosaic run``: outliers, destripe, background, skymatch).

    Outputs already in the folder (from an interrupted run) are redone only with ``--overwrite``;
    without it an existing output is an error naming it.
    """
    import importlib  # noqa: PLC0415

    from mosaic.prep import ORDER  # noqa: PLC0415

    wanted = {"outliers": args.outliers, "destripe": args.destripe, "background": args.flatten_background, "skymatch": args.skymatch}
    options = {"background": {"box_size": args.flatten_box}, "skymatch": {"box_size": args.skymatch_box}}
    paths = [str(f) for f in files]
    if not any(wanted.values()):
        return paths
    folder = Path(args.prep_dir) if args.prep_dir else Path(default_dir)
    folder.mkdir(parents=True, exist_ok=True)
    overwrite = bool(getattr(args, "overwrite", False))
    for name, module, function in ORDER:
        if not wanted[name]:
            continue
        step = getattr(importlib.import_module(module), function)
        log.info("preprocessing: %s of %d exposures -> %s", name, len(paths), folder)
        paths = [str(p) for p in step(paths, folder, overwrite=overwrite, client=client, **options.get(name, {}))]
    return paths
