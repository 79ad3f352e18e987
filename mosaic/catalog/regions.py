"""Rectangular regions of tiled dask arrays, handed to one task each as plain NumPy arrays.

Catalogue tasks work on regions that do not follow the chunk grid (a segment's bounding box, a
tile grown by the reach of its sources' apertures). Slicing a dask array per region and handing
the slice to ``dask.delayed`` costs a separate graph optimisation per argument and, when the
arrays are lazy, can recompute chunks once per region. Here every array is optimised once,
together with the others (so chunks they share keep one key), and a region is a list of
*pieces*: a small getitem task on each chunk it overlaps (whole chunks are used as they are).
All the regions of one pass go into one graph, so each chunk is computed or read once per
pass, and only the pieces a region needs travel between workers; :func:`delayed_on_regions`
makes the task that stitches them and calls the operator on plain arrays.
"""

from __future__ import annotations

import uuid

import dask
import dask.array as da
import numpy as np

__all__ = ["ChunkGrid", "Region", "delayed_on_regions", "optimize_together"]


def optimize_together(*arrays):
    """Optimise the dask arrays among ``arrays`` in one pass (others pass through unchanged)."""
    idx = [i for i, a in enumerate(arrays) if isinstance(a, da.Array)]
    opt = dask.optimize(*(arrays[i] for i in idx)) if idx else ()
    out = list(arrays)
    for i, a in zip(idx, opt, strict=True):
        out[i] = a
    return out


def _cut(block, index, lookup):
    piece = np.asarray(block)[index]
    return piece if lookup is None else lookup[piece]


class ChunkGrid:
    """The chunks of a 2-D dask array as delayed objects, and the regions made of them.

    Parameters
    ----------
    array : dask.array.Array, scalar or None
        A 2-D array (already optimised, see :func:`optimize_together`); scalars and None are
        handed to every region as they are.
    """

    def __init__(self, array):
        self.value = array
        if isinstance(array, da.Array):
            self._set(array.to_delayed(optimize_graph=False), array.chunks, array.dtype)

    @classmethod
    def from_blocks(cls, blocks: dict, chunks, dtype) -> ChunkGrid:
        """A grid over delayed chunks ``blocks[(i, j)]`` (e.g. persisted per-tile results) of ``chunks``."""
        grid = cls(None)
        arr = np.empty((len(chunks[0]), len(chunks[1])), dtype=object)
        for k, v in blocks.items():
            arr[k] = v
        grid._set(arr, chunks, dtype)
        return grid

    def _set(self, blocks, chunks, dtype):
        self.blocks, self.dtype, self.value = blocks, np.dtype(dtype), None
        self.edges = tuple(np.cumsum((0, *c)) for c in chunks)

    @property
    def is_array(self) -> bool:
        return hasattr(self, "blocks")

    def block_ranges(self, region) -> tuple[range, range]:
        """Chunk rows and columns that ``region`` (a pair of slices) overlaps."""
        ey, ex = self.edges
        return (
            range(int(np.searchsorted(ey, region[0].start, "right")) - 1, int(np.searchsorted(ey, region[0].stop, "left"))),
            range(int(np.searchsorted(ex, region[1].start, "right")) - 1, int(np.searchsorted(ex, region[1].stop, "left"))),
        )

    def region(self, region, *, lookups=None):
        """``array[region]`` as a :class:`Region` (the value itself for a scalar or None).

        ``lookups[(i, j)]``, when given, is a table applied to chunk ``(i, j)``'s values in the
        piece task (``table[piece]``), e.g. local labels to global ones.
        """
        if not self.is_array:
            return self.value
        (y0, y1), (x0, x1) = (region[0].start, region[0].stop), (region[1].start, region[1].stop)
        ey, ex = self.edges
        rows, cols = self.block_ranges(region)
        pieces = []
        for i in rows:
            for j in cols:
                by0, by1, bx0, bx1 = int(ey[i]), int(ey[i + 1]), int(ex[j]), int(ex[j + 1])
                sy, sx = slice(max(y0, by0) - by0, min(y1, by1) - by0), slice(max(x0, bx0) - bx0, min(x1, bx1) - bx0)
                dst = (slice(sy.start + by0 - y0, sy.stop + by0 - y0), slice(sx.start + bx0 - x0, sx.stop + bx0 - x0))
                table = None if lookups is None else lookups[(i, j)]
                if table is None and sy == slice(0, by1 - by0) and sx == slice(0, bx1 - bx0):
                    piece = self.blocks[i, j]
                else:
                    piece = dask.delayed(_cut, pure=False)(self.blocks[i, j], (sy, sx), table)
                pieces.append((dst, piece))
        return Region((y1 - y0, x1 - x0), (self.dtype if lookups is None else np.dtype(np.int32)).str, pieces)


class Region:
    """A region of a chunked array: its shape, dtype and ``[(destination slices, delayed piece)]``."""

    def __init__(self, shape, dtype, pieces):
        self.shape, self.dtype, self.pieces = shape, dtype, pieces


def _apply(func, layouts, args, kwargs, *pieces):
    regions = []
    for layout in layouts:
        if layout[0] == "value":
            regions.append(layout[1])
            continue
        shape, dtype, dsts, start = layout
        own = pieces[start : start + len(dsts)]
        if len(own) == 1:
            regions.append(np.asarray(own[0]))
            continue
        out = np.empty(shape, dtype=dtype)
        for dst, piece in zip(dsts, own, strict=True):
            out[dst] = piece
        regions.append(out)
    return func(*regions, *args, **kwargs)


def delayed_on_regions(func, regions, *args, **kwargs):
    """``dask.delayed(func)(*arrays, *args, **kwargs)``, the arrays stitched from ``regions`` in the task.

    ``regions`` are :class:`Region` objects (or plain values, passed as they are). The pieces go
    in as top-level task arguments: ``dask.delayed`` optimises and culls the graph of every
    collection it finds *inside* a container argument, once per call, which costs milliseconds
    per task; top-level delayed arguments cost nothing.
    """
    layouts, pieces = [], []
    for r in regions:
        if isinstance(r, Region):
            layouts.append((r.shape, r.dtype, tuple(dst for dst, _ in r.pieces), len(pieces)))
            pieces += [p for _, p in r.pieces]
        else:
            layouts.append(("value", r))
    # named after the operator, so dashboards and task streams say what runs
    key = f"{func.__name__.lstrip('_')}-{uuid.uuid4().hex}"
    return dask.delayed(_apply, pure=False)(func, tuple(layouts), args, kwargs, *pieces, dask_key_name=key)
