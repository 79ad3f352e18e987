"""Progress for long dask computations, on any scheduler.

With a ``distributed.Client`` the scheduler feeds distributed's own task-level bar (this works
for remote and HPC clusters, unlike dask's local ``ProgressBar`` callback); without one, the local
scheduler's callbacks drive a tqdm bar. The bar is drawn on stderr only when
it is a terminal (or when forced), and every step is logged.
"""

from __future__ import annotations

import logging
import sys
import time

import dask
from dask.callbacks import Callback
from tqdm.std import tqdm  # text bars on stderr; notebooks without ipywidgets would warn with tqdm.auto

__all__ = ["compute", "show_bar"]

log = logging.getLogger(__name__)


def show_bar() -> bool:
    """Whether to draw bars: stderr is a terminal and ``MOSAIC_PROGRESS`` is not ``0``."""
    import os  # noqa: PLC0415

    flag = os.environ.get("MOSAIC_PROGRESS")
    if flag is not None:
        return flag not in ("0", "false", "no", "")
    return sys.stderr.isatty()


class _TqdmCallback(Callback):
    def __init__(self, bar):
        super().__init__()
        self.bar = bar

    def _start_state(self, dsk, state):
        self.bar.reset(total=sum(len(state[k]) for k in ("ready", "waiting", "running", "finished")))

    def _posttask(self, key, result, dsk, state, worker_id):
        self.bar.update(1)


def _distributed_client():
    try:
        from distributed import get_client  # noqa: PLC0415

        return get_client()
    except (ImportError, ValueError):
        return None


def compute(*collections, description: str = "computing", client=None, **kwargs):
    """``dask.compute`` with a progress bar and a log line with the elapsed time.

    Parameters
    ----------
    *collections
        Dask collections (or delayed objects) to compute together.
    description : str
        What is being computed, for the bar and the log.
    client : distributed.Client, optional
        Defaults to the current client if one is active, else the local scheduler.
    """
    client = client or _distributed_client()
    t0 = time.perf_counter()
    log.info("%s: started", description)
    if client is not None:
        from distributed import progress, wait  # noqa: PLC0415

        futures = client.compute(list(collections), **kwargs)
        if show_bar():
            # task-level bar fed by the scheduler: works for remote and HPC clusters too
            progress(futures, notebook=False)
        wait(futures)
        results = client.gather(futures)
    else:
        with tqdm(desc=description, unit="task", disable=not show_bar(), leave=False, file=sys.stderr) as bar:
            with _TqdmCallback(bar):
                results = dask.compute(*collections, **kwargs)
    log.info("%s: done in %.1f s", description, time.perf_counter() - t0)
    return tuple(results)
