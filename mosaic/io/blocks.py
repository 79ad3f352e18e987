"""Writing dask arrays into their targets block by block: one task per block for every array of
the same blocks.

A product's planes (the variables of a store product, the extensions of an ``_i2d.fits`` file)
are often the planes of one task's result. A task per array and block (``dask.array.store``, or
one ``map_blocks`` per array) cost the scheduler as much as the writes themselves; here one task
writes a block of every array that has the same blocks.
"""

from __future__ import annotations

import functools

import dask.array as da
import numpy as np
from dask.base import tokenize

__all__ = ["block_writes"]


def block_writes(write, sources, targets, *, name: str, where, dtype, per_target=None) -> list:
    """One lazy array of write tasks per group of ``sources`` with the same blocks.

    Parameters
    ----------
    write : callable
        ``write(*blocks, targets=..., block_info=..., **per_target)``: writes the same block of
        each of its group's arrays into its target (the block's region is
        ``block_info[0]["array-location"]``) and returns a one-element array of ``dtype``.
    sources : sequence of dask arrays
    targets : sequence
        One target per source (a zarr array, a FITS image's memory layout...); they travel in a
        ``functools.partial``, where dask does not walk them for collections.
    name : str
        The prefix of the tasks' names.
    where
        What tells these targets from any others (the file or store written), for the names.
    dtype
        What each task returns.
    per_target : dict of sequences, optional
        More keywords for ``write``, one value per target, handed over group by group as tuples.

    Returns
    -------
    list of dask.array.Array
        One array per group, a one-element block per block written; compute them.
    """
    per_target = per_target or {}
    groups: dict[tuple, list[int]] = {}
    sources = [da.asarray(a) for a in sources]
    for i, a in enumerate(sources):
        groups.setdefault(a.chunks, []).append(i)
    out = []
    for chunks, members in groups.items():
        arrays = [sources[i] for i in members]
        keywords = {key: tuple(values[i] for i in members) for key, values in per_target.items()}
        group_targets = tuple(targets[i] for i in members)
        task = functools.partial(write, targets=group_targets, **keywords)
        token = tokenize(*(a.name for a in arrays), where, keywords, members)
        out.append(
            da.map_blocks(
                task, *arrays, chunks=tuple((1,) * len(c) for c in chunks), meta=np.empty((0,) * len(chunks), dtype=dtype),
                name=f"{name}-{token}",
            ),
        )
    return out
