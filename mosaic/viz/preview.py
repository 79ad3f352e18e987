"""PNG previews of images of any size: NaN-aware block means, then a display stretch.

A mosaic larger than memory (a 9584² FITS file, a zarr array, a dask array) is previewed without
loading it whole: it is read block by block, each block reduced to its ``factor x factor`` means
(NaN pixels left out; a block of NaN stays NaN), so only the small preview (at most
``max_size`` on a side) is ever held, plus one chunk per thread. Chunks are aligned on multiples
of ``factor`` so that the blocked result is exactly the whole-image block mean. The display
interval is then computed from the preview itself (see :mod:`mosaic.viz.stretch`).

PNGs are written under a temporary name and renamed when whole; row 0 of the image is the bottom
of the PNG (north up for a north-up mosaic), NaN is black.
"""

from __future__ import annotations

import logging
import math
import os
import uuid
from pathlib import Path

import dask.array as da
import numpy as np

from mosaic.exceptions import InputError
from mosaic.io.images import open_image as io_open_image
from mosaic.registry import algorithm
from mosaic.viz.stretch import INTERVALS, STRETCHES, display_norm

__all__ = [
    "STRETCHES",
    "DEFAULT_MAX_SIZE",
    "downsample_factor",
    "block_mean",
    "open_image",
    "preview_array",
    "save_png",
    "write_png",
    "write_preview",
]

log = logging.getLogger(__name__)

#: longest side of a preview in pixels
DEFAULT_MAX_SIZE = 2048
#: target chunk side (pixels of the full image) when reading block by block
_CHUNK = 1024


def downsample_factor(shape, max_size: int) -> int:
    """The smallest integer factor that brings both sides of ``shape`` to ``max_size`` or less.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)``.
    max_size : int
        Longest side allowed.

    Returns
    -------
    int
        ``ceil(max(shape) / max_size)`` (1 when the image is small enough).
    """
    if isinstance(max_size, bool) or not isinstance(max_size, int | np.integer) or max_size < 1:
        msg = f"max_size must be a positive integer; got {max_size!r}"
        raise InputError(msg)
    return max(1, math.ceil(max(shape) / max_size))


def _block_mean_np(block: np.ndarray, factor: int) -> np.ndarray:
    """NaN-aware ``factor x factor`` means of one block; a partial edge block is averaged as is."""
    block = np.asarray(block, dtype=np.float64)
    ny, nx = block.shape
    oy, ox = -(-ny // factor), -(-nx // factor)
    padded = np.full((oy * factor, ox * factor), np.nan)
    padded[:ny, :nx] = block
    cells = padded.reshape(oy, factor, ox, factor)
    good = np.isfinite(cells)
    total = np.where(good, cells, 0.0).sum(axis=(1, 3))
    count = good.sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _aligned_chunks(n: int, factor: int) -> tuple[int, ...]:
    """Chunk sizes along one axis, multiples of ``factor`` except the last."""
    step = factor * max(1, round(_CHUNK / factor))
    return (step,) * (n // step) + ((n % step,) if n % step else ())


def _as_dask(array, factor: int) -> da.Array:
    data = array.data if hasattr(array, "dims") else array  # xarray: its NumPy or dask array
    if len(getattr(data, "shape", ())) != 2:
        msg = f"image has shape {getattr(data, 'shape', None)!r}; expected a 2-D image"
        raise InputError(msg)
    chunks = tuple(_aligned_chunks(n, factor) for n in data.shape)
    if isinstance(data, da.Array):
        aligned = all(all(c % factor == 0 for c in cs[:-1]) for cs in data.chunks)
        return data if aligned else data.rechunk(chunks)
    # NumPy, memmap, zarr: sliced one chunk at a time, never converted whole
    return da.from_array(data, chunks=chunks, meta=np.empty((0, 0), dtype=getattr(data, "dtype", np.float64)))


@algorithm("display")
def block_mean(array, factor: int):
    """NaN-aware block means: each ``factor x factor`` block replaced by the mean of its finite pixels.

    Parameters
    ----------
    array : array-like
        2-D NumPy, memmap, zarr, dask or xarray array; never loaded whole (dask input stays lazy).
    factor : int
        Block side in pixels. The last row and column of blocks may be partial; they are the
        mean of the pixels they hold. A block with no finite pixel is NaN.

    Returns
    -------
    numpy.ndarray or dask.array.Array
        float64 of shape ``ceil(ny / factor) x ceil(nx / factor)``; NumPy unless the input is dask.
    """
    if isinstance(factor, bool) or not isinstance(factor, int | np.integer) or factor < 1:
        msg = f"factor must be a positive integer; got {factor!r}"
        raise InputError(msg)
    factor = int(factor)
    lazy = isinstance(array.data if hasattr(array, "dims") else array, da.Array)
    data = _as_dask(array, factor)
    out_chunks = tuple(tuple(-(-c // factor) for c in cs) for cs in data.chunks)
    out = data.map_blocks(_block_mean_np, factor, chunks=out_chunks, dtype=np.float64, meta=np.empty((0, 0), np.float64))
    return out if lazy else out.compute()


def open_image(path, *, ext=None, chunk: int = _CHUNK) -> da.Array:
    """A FITS image or a zarr array as a lazy dask array, read chunk by chunk.

    Parameters
    ----------
    path : path-like
        A FITS file (the ``SCI`` extension, else the first 2-D image) or a zarr array
        (a directory, ``.zarr``; ``ext`` names an array inside a zarr group).
    ext : int or str, optional
        FITS extension or zarr component.
    chunk : int, optional
        Chunk side for FITS input.

    Returns
    -------
    dask.array.Array
        2-D, in the file's dtype (see :func:`mosaic.io.images.open_image`).
    """
    return io_open_image(path, ext=ext, tile=chunk)


@algorithm("display")
def preview_array(image, *, max_size: int = DEFAULT_MAX_SIZE) -> np.ndarray:
    """The image reduced by NaN-aware block means to at most ``max_size`` on a side, in memory.

    Parameters
    ----------
    image : array-like or path-like
        A 2-D array (NumPy, memmap, zarr, dask, xarray) or a FITS / zarr path (see
        :func:`open_image`).
    max_size : int, optional
        Longest side of the result.

    Returns
    -------
    numpy.ndarray
        float64, ``ceil(n / factor)`` on each side with ``factor`` from :func:`downsample_factor`.
    """
    path = image if isinstance(image, str | os.PathLike) else None
    if path is not None:
        image = open_image(path)
    shape = getattr(image, "shape", ())
    if len(shape) != 2:
        msg = f"image has shape {shape!r}; expected a 2-D image"
        raise InputError(msg)
    factor = downsample_factor(shape, max_size)
    if path is not None and Path(path).is_file():
        # FITS chunks on multiples of the factor: each chunk is read once and reduced alone
        image = open_image(path, chunk=factor * max(1, round(_CHUNK / factor)))
    out = block_mean(image, factor)
    if isinstance(out, da.Array):
        from mosaic.progress import compute  # noqa: PLC0415

        (out,) = compute(out, description="preview")
    log.info("preview: %d x %d reduced by %d to %d x %d", *shape, factor, *out.shape)
    return np.asarray(out)


def save_png(path, pixels) -> Path:
    """Write an RGB(A) array (rows bottom-up) as a PNG, under a temporary name renamed when whole.

    Parameters
    ----------
    path : path-like
        Destination; replaced if it exists.
    pixels : numpy.ndarray
        ``(ny, nx, 3 or 4)``, floats in ``[0, 1]`` or uint8; row 0 is the bottom of the picture.

    Returns
    -------
    pathlib.Path
    """
    from matplotlib import image as mimage  # noqa: PLC0415

    path = Path(path)
    if not path.parent.is_dir():
        msg = f"{path}: directory {path.parent} does not exist; expected an existing directory"
        raise InputError(msg)
    pixels = np.asarray(pixels)
    if pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        msg = f"pixels have shape {pixels.shape!r}; expected (ny, nx, 3) or (ny, nx, 4)"
        raise InputError(msg)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}.part.png")
    try:
        mimage.imsave(tmp, pixels, origin="lower", format="png")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _colour(image: np.ndarray, norm, cmap: str) -> np.ndarray:
    from matplotlib import colormaps  # noqa: PLC0415

    if cmap not in colormaps:
        msg = f"cmap {cmap!r} is unknown; expected a matplotlib colormap name such as 'gray', 'viridis', 'magma'"
        raise InputError(msg)
    good = np.isfinite(image)
    scaled = np.asarray(norm(np.where(good, image, norm.vmin)), dtype=np.float64)
    rgba = colormaps[cmap](np.clip(scaled, 0.0, 1.0))
    rgba[~good] = (0.0, 0.0, 0.0, 1.0)
    return rgba


@algorithm("display")
def write_png(path, image, *, stretch: str = "asinh", interval: str = "percentile", percent: float = 99.5,
              cmap: str = "gray") -> Path:
    """Write a 2-D image as a PNG at full resolution (north up: row 0 at the bottom), NaNs black.

    Parameters
    ----------
    path : path-like
        Destination PNG; replaced if it exists, written whole or not at all.
    image : array-like
        2-D image held in memory (use :func:`write_preview` for large images).
    stretch : {"asinh", "linear", "log", "sqrt", "power", "histeq", "zscale"}, optional
        Display stretch (see :func:`mosaic.viz.stretch.display_norm`).
    interval : {"percentile", "zscale", "minmax"}, optional
        How the black and white levels are chosen.
    percent : float, optional
        Percentage of the values inside a ``percentile`` interval.
    cmap : str, optional
        Matplotlib colormap.

    Returns
    -------
    pathlib.Path
    """
    data = np.asarray(image, dtype=np.float64)
    norm = display_norm(data, stretch=stretch, interval=interval, percent=percent)
    return save_png(path, _colour(data, norm, cmap))


@algorithm("display")
def write_preview(path, image, *, max_size: int = DEFAULT_MAX_SIZE, stretch: str = "asinh",
                  interval: str = "percentile", percent: float = 99.5, cmap: str = "gray") -> Path:
    """Write a PNG preview of an image of any size: block means to ``max_size``, then a stretch.

    Parameters
    ----------
    path : path-like
        Destination PNG; replaced if it exists, written whole or not at all.
    image : array-like or path-like
        A 2-D array (NumPy, memmap, zarr, dask, xarray) or a FITS / zarr path; never loaded whole.
    max_size : int, optional
        Longest side of the preview in pixels.
    stretch : {"asinh", "linear", "log", "sqrt", "power", "histeq", "zscale"}, optional
        Display stretch.
    interval : {"percentile", "zscale", "minmax"}, optional
        How the black and white levels are chosen (from the preview's pixels).
    percent : float, optional
        Percentage of the values inside a ``percentile`` interval.
    cmap : str, optional
        Matplotlib colormap.

    Returns
    -------
    pathlib.Path
    """
    norm_check = {"stretch": stretch, "interval": interval}
    for name, allowed in (("stretch", STRETCHES), ("interval", INTERVALS)):
        if norm_check[name] not in allowed:  # fail before reading a large image
            msg = f"{name} {norm_check[name]!r} is unknown; expected one of {list(allowed)}"
            raise InputError(msg)
    small = preview_array(image, max_size=max_size)
    return write_png(path, small, stretch=stretch, interval=interval, percent=percent, cmap=cmap)
