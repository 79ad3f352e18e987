"""A function over items on threads of this process: for client-side passes over many files or
exposures whose work (file reads, NumPy, WCS transformations) leaves the GIL.

The threads are at most the cores this process may use (``dask.system.CPU_COUNT``: a batch
job's allocation or a container's quota, not the node's) and at most ``most``; with one, the
items run in this thread, one after the other. Results come in the items' order, and an item's
error is raised as the serial loop would raise it (the first in the given order).
"""

from __future__ import annotations

__all__ = ["thread_map"]


def thread_map(fn, items, *, most: int, name: str) -> list:
    """``[fn(item) for item in items]``, on up to ``most`` threads named ``name``."""
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    from dask.system import CPU_COUNT  # noqa: PLC0415

    items = list(items)
    threads = min(len(items), CPU_COUNT, int(most))
    if threads <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(threads, thread_name_prefix=name) as pool:
        return list(pool.map(fn, items))
