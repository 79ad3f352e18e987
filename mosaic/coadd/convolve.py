"""Tiled PSF convolution of a dask image: ``B f`` and ``B* f`` on the mosaic's tiles.

The result has the input's chunks and equals the whole-image
``scipy.signal.fftconvolve(image, psf, mode="same")`` (flipped PSF for the adjoint) to float32
round-off, for any chunking and for PSFs wider than a chunk. Two graphs are offered; both give
each tile one FFT of about ``(tile + psf - 1)²`` pixels and never build a task bigger than that,
so memory is set by the tile and the PSF, not the mosaic:

``"overlap-add"``
    Each input tile is convolved once in ``"full"`` mode (its footprint grown by the PSF
    radius ``h`` on every side); each output tile sums the pieces of its neighbours' results
    that fall on it. The pieces cut for an output tile cover at most ``(tile + 2h)²`` pixels.
``"halo"`` (default)
    Each output tile gathers its outer region (core grown by ``h``, zero beyond the image)
    from slices of the input tiles that overlap it, and keeps the ``"valid"`` part of its
    convolution. Unlike ``dask.array.map_overlap`` the halo may exceed a chunk: the slices are
    explicit tasks on every tile within reach, not a depth-limited exchange with neighbours.

A staged image (:mod:`mosaic.coadd.staging`) is convolved like the halo method, but each
output tile reads its outer region from disk, once the tiles under it are written, instead of
gathering slices of tiles held in memory.

The halo is the default: it holds only input slices (``tile²`` each) between tasks where
overlap-add holds convolved pieces (``(tile + 2h)²`` each), it rounds once instead of once per
piece, and it needs fewer tasks; the two ran equally fast, within run-to-run noise, in
``benchmarks/bench_convolve.py``.

Every tile's transform has the same padded shape (from the largest chunk), so each worker
transforms the PSF once, into the cache of the one :class:`~mosaic.ops.convolve.PreparedPSF`
that the graph holds as a single key.
"""

from __future__ import annotations

import logging
import operator
from itertools import accumulate, product

import dask.array as da
import numpy as np
import scipy.fft
from dask.array.utils import meta_from_array
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from mosaic.coadd.staging import Staged
from mosaic.ops.convolve import PreparedPSF, array_module, fft_convolve, psf_halo, result_dtype
from mosaic.registry import algorithm

__all__ = ["METHODS", "convolve_tiled"]

log = logging.getLogger(__name__)

#: graph layouts of :func:`convolve_tiled`
METHODS = ("halo", "overlap-add")


def _square(prepared: PreparedPSF) -> PreparedPSF:
    """The PSF zero-padded to a square, so one halo serves both axes."""
    ny, nx = prepared.shape
    if ny == nx:
        return prepared
    n = max(ny, nx)
    xp = array_module(prepared.psf)
    psf = xp.zeros((n, n), dtype=np.float64)
    y0, x0 = (n - ny) // 2, (n - nx) // 2
    psf[y0 : y0 + ny, x0 : x0 + nx] = prepared.psf
    return PreparedPSF(psf)


def _bounds(chunks: tuple[int, ...]) -> list[tuple[int, int]]:
    stops = list(accumulate(chunks))
    return [(stop - c, stop) for c, stop in zip(chunks, stops, strict=True)]


def _pieces_on_axis(chunks, h: int) -> list[list[tuple[int, slice, slice]]]:
    """Overlap-add along one axis: for each output block, ``(input block, cut, place)``.

    Input block ``i`` spanning ``[s, e)`` convolves to a piece spanning ``[s - h, e + h)``;
    ``cut`` selects the part of that piece inside output block ``a`` and ``place`` says where
    it goes in ``a``.
    """
    bounds = _bounds(chunks)
    out = []
    for sa, ea in bounds:
        row = []
        for i, (si, ei) in enumerate(bounds):
            if ei == si:
                continue
            lo, hi = max(si - h, sa), min(ei + h, ea)
            if hi > lo:
                row.append((i, slice(lo - (si - h), hi - (si - h)), slice(lo - sa, hi - sa)))
        out.append(row)
    return out


def _halo_on_axis(chunks, h: int) -> list[list[tuple[int, slice, slice]]]:
    """Halo gathering along one axis: for each output block, ``(input block, cut, place)``.

    Output block ``a`` spanning ``[s, e)`` reads ``[s - h, e + h)``; ``cut`` selects the part
    of input block ``i`` inside that window and ``place`` says where it goes in the window.
    """
    bounds = _bounds(chunks)
    out = []
    for sa, ea in bounds:
        row = []
        for i, (si, ei) in enumerate(bounds):
            lo, hi = max(si, sa - h), min(ei, ea + h)
            if hi > lo:
                row.append((i, slice(lo - si, hi - si), slice(lo - (sa - h), hi - (sa - h))))
        out.append(row)
    return out


def _full_piece(prepared: PreparedPSF, block, adjoint: bool, fft_shape):
    return fft_convolve(block, prepared, adjoint=adjoint, mode="full", fft_shape=fft_shape)


def _sum_pieces(shape, dtype, places, parts, meta):
    """Output block of the overlap-add: the pieces summed in float64, then cast once."""
    if not parts:
        return np.zeros(shape, dtype=dtype, like=meta)
    xp = array_module(parts[0])
    out = xp.zeros(shape, dtype=np.float64)
    for place, part in zip(places, parts, strict=True):
        out[place] += part
    return out.astype(dtype, copy=False)


def _convolve_window(prepared: PreparedPSF, shape, places, parts, adjoint: bool, fft_shape, meta):
    """Output block of the halo method: the zero-padded window, convolved, its valid part."""
    h = prepared.shape[0] // 2
    dtype = result_dtype(meta.dtype)
    core = (shape[0] - 2 * h, shape[1] - 2 * h)
    if 0 in core:
        return np.zeros(core, dtype=dtype, like=meta)
    xp = array_module(parts[0])
    window = xp.zeros(shape, dtype=dtype)
    for place, part in zip(places, parts, strict=True):
        window[place] = part
    return fft_convolve(window, prepared, adjoint=adjoint, mode="valid", fft_shape=fft_shape)


@algorithm("convolution")
def convolve_tiled(image, psf, *, adjoint: bool = False, method: str = "halo"):
    """Convolve a tiled image with a PSF: ``B x`` (or ``B* x``), block by block.

    Parameters
    ----------
    image : dask.array.Array or Staged
        2-D image, any chunks (NumPy or CuPy blocks); zero outside its bounds. A staged image
        (:func:`mosaic.coadd.staging.stage`) is read back window by window: each output tile
        reads its outer region from disk once the tiles under it are written, so no tile waits
        in memory for its neighbours (``method`` is then not used).
    psf : numpy.ndarray or PreparedPSF
        PSF with odd sides, centred on its middle pixel (see
        :func:`mosaic.ops.convolve.fft_convolve`). It may be larger than a chunk.
    adjoint : bool, optional
        Apply the adjoint: convolve with the PSF flipped on both axes.
    method : {"halo", "overlap-add"}, optional
        Graph layout (see the module notes); both give the same numbers.

    Returns
    -------
    dask.array.Array
        Same shape and chunks as ``image``; float32 for float32 input, float64 for float64
        or integer input. Equal to ``scipy.signal.fftconvolve(image, psf, mode="same")`` to
        that type's round-off.

    Notes
    -----
    For chunks of ``t`` and a PSF radius ``h = psf_halo(psf.shape)``, each output tile depends
    on ``(1 + 2 ceil(h / t))²`` input tiles at most, and no task holds more than one padded
    transform of ``(t + 2h)²`` pixels (plus its complex128 spectrum).

    The PSF travels inside the graph, once: a 1501² float64 PSF makes a graph of about 17 MiB,
    for which ``distributed`` warns "Sending large graph"; that is expected and harmless.
    """
    if isinstance(image, Staged):
        return _convolve_staged(image, psf, adjoint)
    if not isinstance(image, da.Array):
        msg = f"image must be a dask array; got {type(image).__name__}; expected dask.array.Array (use da.from_array)"
        raise TypeError(msg)
    if image.ndim != 2:
        msg = f"image must be 2-D; got shape {image.shape!r}; expected (ny, nx)"
        raise ValueError(msg)
    if any(np.isnan(c) for axis in image.chunks for c in axis):
        msg = f"image has unknown chunk sizes {image.chunks!r}; expected known chunks (call compute_chunk_sizes())"
        raise ValueError(msg)
    if method not in METHODS:
        msg = f"method must be one of {METHODS}; got {method!r}"
        raise ValueError(msg)
    # one padded shape for every tile: one cached transfer function per worker
    prepared, h, fft_shape = _prepare(psf, image.chunks)
    dtype = result_dtype(image.dtype)
    meta = meta_from_array(image, ndim=2, dtype=dtype)
    in_meta = meta_from_array(image, ndim=2)

    token = tokenize(image, prepared.psf, adjoint, method)
    name = f"convolve-{method}-{token}"
    psf_key = f"convolve-psf-{tokenize(prepared.psf)}"
    dsk: dict = {psf_key: prepared}
    if method == "overlap-add":
        _overlap_add_graph(dsk, image, name, psf_key, h, adjoint, fft_shape, dtype, meta)
    else:
        _halo_graph(dsk, image, name, psf_key, h, adjoint, fft_shape, in_meta)
    log.debug("convolve_tiled %s: %d tasks for %s blocks, halo %d", method, len(dsk), image.numblocks, h)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[image])
    return da.Array(graph, name, chunks=image.chunks, dtype=dtype, meta=meta)


def _prepare(psf, chunks):
    """The PSF padded to a square (a PreparedPSF), its halo, and the one padded FFT shape of every tile."""
    prepared = _square(psf if isinstance(psf, PreparedPSF) else PreparedPSF(psf))
    h = psf_halo(prepared.shape)
    t_max = tuple(max(c, default=0) for c in chunks)
    fft_shape = tuple(scipy.fft.next_fast_len(t + 2 * h, real=True) for t in t_max)
    return prepared, h, fft_shape


def _convolve_staged(staged: Staged, psf, adjoint: bool) -> da.Array:
    """:func:`convolve_tiled` of a staged image: each output tile convolves a window read from disk."""
    prepared, h, fft_shape = _prepare(psf, staged.chunks)
    dtype = result_dtype(staged.dtype)
    meta = meta_from_array(staged.meta, ndim=2, dtype=dtype)
    token = tokenize(staged.path, staged.written.name, prepared.psf, adjoint)
    name = f"convolve-staged-{token}"
    psf_key = f"convolve-psf-{tokenize(prepared.psf)}"
    dsk: dict = {psf_key: prepared}
    bounds = [_bounds(c) for c in staged.chunks]
    for (a, (y0, y1)), (b, (x0, x1)) in product(enumerate(bounds[0]), enumerate(bounds[1])):
        region = (slice(y0 - h, y1 + h), slice(x0 - h, x1 + h))
        dsk[(name, a, b)] = (_convolve_read, psf_key, staged.window(region), adjoint, fft_shape, meta)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[staged.written])
    return da.Array(graph, name, chunks=staged.chunks, dtype=dtype, meta=meta)


def _convolve_read(prepared: PreparedPSF, window, adjoint: bool, fft_shape, meta):
    """Output tile of a staged convolution: the window read back (host), on ``meta``'s module, its valid part."""
    h = prepared.shape[0] // 2
    core = (window.shape[0] - 2 * h, window.shape[1] - 2 * h)
    if 0 in core:
        return np.zeros(core, dtype=meta.dtype, like=meta)
    window = array_module(meta).asarray(window, dtype=meta.dtype)
    return fft_convolve(window, prepared, adjoint=adjoint, mode="valid", fft_shape=fft_shape)


def _overlap_add_graph(dsk, image, name, psf_key, h, adjoint, fft_shape, dtype, meta) -> None:
    piece = f"{name}-piece"
    cut = f"{name}-cut"
    for i, j in product(*(range(n) for n in image.numblocks)):
        if image.chunks[0][i] and image.chunks[1][j]:
            dsk[(piece, i, j)] = (_full_piece, psf_key, (image.name, i, j), adjoint, fft_shape)
    rows, cols = (_pieces_on_axis(c, h) for c in image.chunks)
    for (a, row), (b, col) in product(enumerate(rows), enumerate(cols)):
        places, keys = [], []
        for (i, cy, py), (j, cx, px) in product(row, col):
            if (piece, i, j) not in dsk:
                continue
            key = (cut, i, j, a, b)
            dsk[key] = (operator.getitem, (piece, i, j), (cy, cx))
            places.append((py, px))
            keys.append(key)
        shape = (image.chunks[0][a], image.chunks[1][b])
        dsk[(name, a, b)] = (_sum_pieces, shape, dtype, places, keys, meta)


def _halo_graph(dsk, image, name, psf_key, h, adjoint, fft_shape, in_meta) -> None:
    cut = f"{name}-cut"
    rows, cols = (_halo_on_axis(c, h) for c in image.chunks)
    for (a, row), (b, col) in product(enumerate(rows), enumerate(cols)):
        places, keys = [], []
        for (i, cy, py), (j, cx, px) in product(row, col):
            whole = (cy.stop - cy.start, cx.stop - cx.start) == (image.chunks[0][i], image.chunks[1][j])
            if whole:
                key = (image.name, i, j)
            else:
                key = (cut, a, b, i, j)
                dsk[key] = (operator.getitem, (image.name, i, j), (cy, cx))
            places.append((py, px))
            keys.append(key)
        shape = (image.chunks[0][a] + 2 * h, image.chunks[1][b] + 2 * h)
        dsk[(name, a, b)] = (_convolve_window, psf_key, shape, places, keys, adjoint, fft_shape, in_meta)
