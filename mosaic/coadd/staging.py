"""Staging a tiled array on disk, so that its neighbours read windows of it instead of waiting for it.

A convolution with halos, or a pair window that reaches over a seam, needs parts of several
tiles. In a dask graph those tiles stay in memory until the last task that reads them has run,
and on a raster of tiles that is a front as wide as the mosaic: the memory held grows with the
mosaic, not with the tile. Staging cuts that dependency. Each tile is written to a zarr array as
soon as it is made and let go; the tasks that need a window read it back from disk once the
tiles it covers are written. Between the two there is only a one-byte flag per tile.

The zarr array has one chunk per tile (so no two tasks write the same chunk), is uncompressed
and keeps the dtype of the tiles: a window read back is bit for bit what the tiles held. It must
be on a path every worker can reach (the store's filesystem, as on HPC).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from itertools import accumulate, product
from pathlib import Path

import dask.array as da
import numpy as np
import zarr
from dask.array.utils import meta_from_array
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from mosaic.ops.convolve import to_host

__all__ = ["Staged", "stage"]

log = logging.getLogger(__name__)

#: every tile is written whole, even one of zeros: zarr's test of each chunk against the fill
#: value (a pass over the tile) costs more than the write it might save
_CONFIG = {"write_empty_chunks": True}


@dataclass(frozen=True)
class Staged:
    """A tiled array written to ``path``; ``written`` holds one flag per tile, set once it is on disk.

    Attributes
    ----------
    path : str
        The zarr array.
    shape, chunks : tuple
        Those of the array that was staged.
    dtype : numpy.dtype
        Its dtype (and the zarr array's).
    written : dask.array.Array
        ``int8`` flags, one ``(1, 1)`` block per tile: the task that makes one writes the tile.
    meta : array
        An empty array of the tiles' array module (NumPy or CuPy); windows are read to the host.
    """

    path: str
    shape: tuple
    chunks: tuple
    dtype: np.dtype
    written: da.Array
    meta: object

    def covering(self, region: tuple[slice, slice]) -> list[tuple]:
        """Keys of the flags of the tiles that ``region`` (may reach beyond the array) overlaps."""
        out = []
        hits = [_blocks_hit(c, r) for c, r in zip(self.chunks, region, strict=True)]
        for i, j in product(*hits):
            out.append((self.written.name, i, j))
        return out

    def window(self, region: tuple[slice, slice]) -> tuple:
        """A task that returns ``region`` of the array (zero beyond its bounds) once its tiles are written."""
        return (_read_window, self.path, _plain(region), self.shape, self.dtype, *self.covering(region))


def _plain(region) -> tuple[tuple[int, int], tuple[int, int]]:
    return tuple((int(s.start), int(s.stop)) for s in region)


def _blocks_hit(chunks, s: slice) -> list[int]:
    stops = list(accumulate(chunks))
    return [i for i, (c, stop) in enumerate(zip(chunks, stops, strict=True)) if c and stop - c < s.stop and stop > s.start]


def stage(x: da.Array, path) -> Staged:
    """Write ``x`` tile by tile to a new zarr array at ``path`` (replaced if there), lazily.

    ``x`` may have NumPy or CuPy blocks; they are written from the host. Nothing is computed
    until a task reading a window of the result (:meth:`Staged.window`) is.
    """
    path = str(path)
    dtype = np.dtype(x.dtype)
    tile = tuple(max(c, default=1) for c in x.chunks)
    if any(len(set(c[:-1])) > 1 or (len(c) > 1 and c[-1] > c[0]) for c in x.chunks):
        msg = f"staging {path}: chunks {x.chunks} are not regular; expected equal tiles with a smaller last one"
        raise ValueError(msg)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    zarr.create_array(store=path, shape=x.shape, chunks=tile, dtype=dtype, compressors=None, fill_value=0, overwrite=True, config=_CONFIG)
    name = f"staged-{tokenize(x.name, path)}"
    starts = [np.cumsum((0, *c)) for c in x.chunks]
    dsk = {}
    for i, j in product(*(range(n) for n in x.numblocks)):
        region = ((int(starts[0][i]), int(starts[0][i + 1])), (int(starts[1][j]), int(starts[1][j + 1])))
        dsk[(name, i, j)] = (_write_tile, path, region, (x.name, i, j))
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[x])
    written = da.Array(graph, name, chunks=tuple((1,) * n for n in x.numblocks), dtype=np.int8)
    log.debug("staging %s: %d tiles of %s", path, len(dsk), tile)
    meta = meta_from_array(x, ndim=2)
    return Staged(path=path, shape=tuple(x.shape), chunks=tuple(x.chunks), dtype=dtype, written=written, meta=meta)


def _write_tile(path: str, region, block) -> np.ndarray:
    (y0, y1), (x0, x1) = region
    zarr.open_array(path, mode="r+", config=_CONFIG)[y0:y1, x0:x1] = np.asarray(to_host(block))
    return np.ones((1, 1), dtype=np.int8)


def _read_window(path: str, region, shape, dtype, *written) -> np.ndarray:
    """``region`` (``((y0, y1), (x0, x1))``) of the array at ``path``, zero beyond ``shape``; ``written`` is only waited for."""
    (y0, y1), (x0, x1) = region
    out = np.zeros((y1 - y0, x1 - x0), dtype=dtype)
    ya, yb, xa, xb = max(y0, 0), min(y1, shape[0]), max(x0, 0), min(x1, shape[1])
    if yb > ya and xb > xa:
        out[ya - y0 : yb - y0, xa - x0 : xb - x0] = zarr.open_array(path, mode="r")[ya:yb, xa:xb]
    return out
