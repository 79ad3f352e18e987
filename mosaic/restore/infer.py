"""Learned restoration of a mosaic with ONNX Runtime, tiled on dask (no PyTorch at run time).

*Model.* :class:`RestorationModel` opens an ONNX file written by :mod:`mosaic.restore.export`
(the shipped one by default, from the package, never from the network) and reads its metadata:
the band, output pixel scale and drizzle (kernel, pixfrac) it was trained for, which
:meth:`~RestorationModel.check` holds an image to, and the sides' multiple.

*Normalisation.* One global transform per image (:mod:`mosaic.restore.normalise`): the sky and
noise of the whole image, computed first; every tile uses them, so no tile is scaled on its own.

*Tiles.* The image is cut into ``tile`` x ``tile`` cores; each is run with ``overlap`` pixels of
its neighbours around it (zeros, i.e. sky, beyond the image's edge). A tile's result is weighted
by a separable window that is 1 in its core, falls as ``sin^2`` across a band of ``overlap``
pixels centred on the core's edges (not at the image's edges) and is 0 beyond; the weights of
neighbouring tiles sum to exactly 1, and every pixel comes from tiles that saw at least
``overlap / 2`` pixels of context around it. The network is local (see
:mod:`mosaic.restore.model`), so with enough overlap the tiled result equals the whole-image
one. Tile and overlap are multiples of the model's multiple (8) so that every tile sits on the
same pixel lattice as the whole image.

*NaN.* Uncovered (NaN) pixels enter as sky and are NaN again in the result.
"""

from __future__ import annotations

import functools
import json
import logging
from importlib import resources
from pathlib import Path

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from mosaic.exceptions import InputError
from mosaic.restore.normalise import Normalisation, estimate_normalisation

__all__ = ["RestorationModel", "default_model_path", "restore_whole", "restore_tiled", "restore_image", "blend_window", "PIXEL_SCALE_RTOL", "PIXFRAC_ATOL", "DRIZZLE_KERNEL", "DRIZZLE_PIXFRAC"]

log = logging.getLogger(__name__)

#: an image's pixel scale may differ from the model's by this fraction
PIXEL_SCALE_RTOL = 0.02
#: an image's drizzle pixfrac may differ from the model's by this much
PIXFRAC_ATOL = 1e-3
#: how the training inputs are drizzled (:mod:`mosaic.restore.data`): the kernel and pixfrac
#: shape the mosaic's PSF (the detector pixel and the kernel's footprint spread it), which the
#: model learns to undo; the drizzle of models whose metadata does not say
DRIZZLE_KERNEL = "square"
DRIZZLE_PIXFRAC = 1.0
_DEFAULT = "restormer_f200w.onnx"


def default_model_path() -> Path:
    """The shipped model (inside the package)."""
    return Path(str(resources.files("mosaic").joinpath("data/restore", _DEFAULT)))


@functools.lru_cache(maxsize=4)
def _session(path: str, threads: int):
    import onnxruntime as ort  # noqa: PLC0415

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    return ort.InferenceSession(path, sess_options=opts, providers=providers)


class RestorationModel:
    """A restoration network in ONNX with its metadata.

    Parameters
    ----------
    path : path-like, optional
        ONNX file (default: the shipped model, :func:`default_model_path`).
    threads : int
        ONNX Runtime threads per call.

    Raises
    ------
    InputError
        The file is missing, is not an ONNX model, or is not a mosaic restoration model.
    """

    def __init__(self, path=None, *, threads: int = 1):
        self.path = Path(path) if path is not None else default_model_path()
        self.threads = int(threads)
        if not self.path.is_file():
            msg = f"{self.path}: no such model file; expected an ONNX restoration model (mosaic.restore.export)"
            raise InputError(msg)
        try:
            sess = _session(str(self.path), self.threads)
        except Exception as err:  # onnxruntime raises its own exception types for unreadable models
            msg = f"{self.path}: not an ONNX model ({' '.join(str(err).split())[:200]}); expected an ONNX restoration model"
            raise InputError(msg) from None
        meta = sess.get_modelmeta().custom_metadata_map
        if "mosaic_restore" not in meta:
            msg = f"{self.path}: an ONNX model without mosaic restoration metadata (band, pixel scale); expected one written by mosaic.restore.export"
            raise InputError(msg)
        try:
            self.band = meta["band"].upper()
            self.pixel_scale_arcsec = float(meta["pixel_scale_arcsec"])
            self.multiple = int(meta["multiple"])
            self.halo = int(meta.get("receptive_halo", 96))
            self.reference_fwhm_px = float(meta["reference_fwhm_px"])
            self.softening = float(meta["softening"])
            self.config = json.loads(meta.get("config", "{}"))
            self.training = json.loads(meta.get("training", "{}"))
            # models exported before these keys were written are trained on the simulator's
            # square-kernel, pixfrac-1 mosaics (mosaic.restore.data)
            self.drizzle_kernel = meta.get("drizzle_kernel", DRIZZLE_KERNEL).lower()
            self.drizzle_pixfrac = float(meta.get("drizzle_pixfrac", DRIZZLE_PIXFRAC))
        except (KeyError, ValueError) as err:
            msg = f"{self.path}: malformed restoration metadata ({err}); expected band, pixel_scale_arcsec, multiple, reference_fwhm_px, softening"
            raise InputError(msg) from None
        self.metadata = dict(meta)

    def __repr__(self) -> str:
        return f"RestorationModel({str(self.path)!r}, band={self.band}, pixel_scale_arcsec={self.pixel_scale_arcsec:.5f})"

    def check(self, *, band: str | None, pixel_scale_arcsec: float, source="image", kernel: str | None = None,
              pixfrac: float | None = None) -> None:
        """Refuse an image of another band, pixel scale or drizzle (kernel, pixfrac) than the
        model's inputs (InputError naming both); None: not known, not checked."""
        if band is not None and band.upper() != self.band:
            msg = f"{source}: band {band.upper()!r}, but model {self.path.name} is trained for {self.band!r}; expected a {self.band} image or a model for {band.upper()}"
            raise InputError(msg)
        if abs(pixel_scale_arcsec / self.pixel_scale_arcsec - 1) > PIXEL_SCALE_RTOL:
            msg = (f"{source}: pixel scale {pixel_scale_arcsec:.5f}\", but model {self.path.name} is trained for "
                   f"{self.pixel_scale_arcsec:.5f}\" (within {PIXEL_SCALE_RTOL:.0%}); expected a mosaic on that grid")
            raise InputError(msg)
        # the drizzle's kernel and pixfrac shape the mosaic's PSF, which the network and its
        # Wiener base undo as they were trained: another drizzle would be restored wrongly, silently
        differs = self.drizzle_differs(kernel=kernel, pixfrac=pixfrac)
        if differs:
            given = f"drizzle kernel {str(kernel).strip()!r} (RESKERN)" if differs[0] == "kernel" else f"drizzle pixfrac {float(pixfrac):g} (PIXFRAC)"
            msg = f"{source}: {given}, but {self.trained_drizzle}; expected a mosaic drizzled that way"
            raise InputError(msg)

    @property
    def trained_drizzle(self) -> str:
        """How the training inputs were drizzled, in words."""
        return f"model {self.path.name} is trained on mosaics drizzled with kernel {self.drizzle_kernel!r}, pixfrac {self.drizzle_pixfrac:g}"

    def drizzle_differs(self, *, kernel: str | None = None, pixfrac: float | None = None) -> list[str]:
        """Which of ``kernel`` and ``pixfrac`` differ from the training inputs' (None: not known)."""
        out = []
        if kernel is not None and str(kernel).strip().lower() != self.drizzle_kernel:
            out.append("kernel")
        if pixfrac is not None and abs(float(pixfrac) - self.drizzle_pixfrac) > PIXFRAC_ATOL:
            out.append("pixfrac")
        return out

    def run(self, u: np.ndarray) -> np.ndarray:
        """The network on one image in network space (sides multiples of :attr:`multiple`)."""
        x = np.ascontiguousarray(u, dtype=np.float32)[None, None]
        return _session(str(self.path), self.threads).run(None, {"input": x})[0][0, 0]


def _run_padded(model: RestorationModel, u: np.ndarray, pad: int) -> np.ndarray:
    """The network on ``u`` with ``pad`` zeros around it and more at the end to the multiple; cropped back."""
    m = model.multiple
    ny, nx = u.shape
    py, px = (-(ny + 2 * pad)) % m, (-(nx + 2 * pad)) % m
    big = np.pad(u, ((pad, pad + py), (pad, pad + px)))
    return model.run(big)[pad : pad + ny, pad : pad + nx]


def restore_whole(u: np.ndarray, model: RestorationModel, *, overlap: int = 64) -> np.ndarray:
    """The network on a whole image in network space (the reference for the tiled result)."""
    return _run_padded(model, np.asarray(u, np.float32), overlap)


def _ramp(d: np.ndarray, overlap: int) -> np.ndarray:
    """0 for d <= -overlap/2, 1 for d >= overlap/2, sin^2 between: r(d) + r(-d) = 1."""
    if overlap == 0:
        return (d > 0).astype(np.float64)
    t = np.clip((d + overlap / 2) / overlap, 0.0, 1.0)
    return np.sin(0.5 * np.pi * t) ** 2


def blend_window(core: int, overlap: int, *, first: bool, last: bool) -> np.ndarray:
    """1-D weights over a tile's ``core + 2 * overlap`` pixels (no taper at the image's edges)."""
    p = np.arange(core + 2 * overlap) + 0.5
    left = np.ones_like(p) if first else _ramp(p - overlap, overlap)
    right = np.ones_like(p) if last else _ramp(overlap + core - p, overlap)
    return left * right


def _tile(block, model, overlap, block_info=None):
    info = block_info[0]
    (i, j), (n_i, n_j) = info["chunk-location"], info["num-chunks"]
    out = _run_padded(model, block, 0)
    cy, cx = block.shape[0] - 2 * overlap, block.shape[1] - 2 * overlap
    wy = blend_window(cy, overlap, first=i == 0, last=i == n_i - 1)
    wx = blend_window(cx, overlap, first=j == 0, last=j == n_j - 1)
    return (out * wy[:, None] * wx[None, :]).astype(np.float32)


def _assemble(shape, parts, places):
    out = np.zeros(shape, np.float32)
    for part, (src, dst) in zip(parts, places, strict=True):
        out[dst] += part[src]
    return out


def _tiles(n: int, tile: int, overlap: int) -> tuple[int, ...]:
    """Chunks of ``tile`` along an axis of ``n``, a last one shorter than ``overlap`` merged into the one before."""
    sizes = [tile] * (n // tile) + ([n % tile] if n % tile else [])
    if len(sizes) > 1 and sizes[-1] < max(overlap, 1):
        sizes[-2:] = [sizes[-2] + sizes[-1]]
    return tuple(sizes)


def _bounds(chunks):
    edges = np.concatenate([[0], np.cumsum(chunks)])
    return list(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True))


def _sources(bounds, overlap):
    """Per output block on one axis: (neighbour index, slice in its extended tile, slice in the block)."""
    table = []
    for a0, a1 in bounds:
        rows = []
        for k, (b0, b1) in enumerate(bounds):
            lo, hi = max(a0, b0 - overlap), min(a1, b1 + overlap)
            if lo < hi:
                rows.append((k, slice(lo - (b0 - overlap), hi - (b0 - overlap)), slice(lo - a0, hi - a0)))
        table.append(rows)
    return table


def restore_tiled(u: da.Array, model: RestorationModel, *, tile: int = 512, overlap: int | None = None) -> da.Array:
    """The network over a (large) image in network space, tile by tile, blended (see the module docstring).

    Parameters
    ----------
    u : dask.array.Array
        Image in network space (NaN-free).
    model : RestorationModel
    tile, overlap : int
        Core side and overlap in pixels, multiples of ``model.multiple``; ``overlap <= tile``
        (default: the model's halo).
    """
    m = model.multiple
    overlap = model.halo if overlap is None else int(overlap)
    for name, v in (("tile", tile), ("overlap", overlap)):
        if v < 0 or v % m or (name == "tile" and v == 0):
            msg = f"{name} {v!r}: expected a positive multiple of {m} (0 allowed for overlap)"
            raise ValueError(msg)
    if overlap > tile:
        msg = f"overlap {overlap!r} exceeds tile {tile!r}; expected overlap <= tile"
        raise ValueError(msg)
    u = da.asarray(u).astype(np.float32)
    shape = u.shape
    if min(shape) < overlap:  # dask's halo needs an axis at least as long: extend it with sky (zeros)
        u = da.pad(u, [(0, max(0, overlap - n)) for n in shape])
    u = u.rechunk(tuple(_tiles(n, tile, overlap) for n in u.shape))
    ext = u.map_overlap(_tile, depth=overlap, boundary=0, trim=False, dtype=np.float32, meta=np.empty((0, 0), np.float32),
                        model=model, overlap=overlap)
    by, bx = _bounds(u.chunks[0]), _bounds(u.chunks[1])
    sy, sx = _sources(by, overlap), _sources(bx, overlap)
    name = "restore-blend-" + tokenize(ext.name, overlap)
    dsk = {}
    for i, (y0, y1) in enumerate(by):
        for j, (x0, x1) in enumerate(bx):
            keys, places = [], []
            for ki, srcy, dsty in sy[i]:
                for kj, srcx, dstx in sx[j]:
                    keys.append((ext.name, ki, kj))
                    places.append(((srcy, srcx), (dsty, dstx)))
            dsk[(name, i, j)] = (_assemble, (y1 - y0, x1 - x0), keys, places)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[ext])
    out = da.Array(graph, name, u.chunks, dtype=np.float32)
    return out if out.shape == shape else out[: shape[0], : shape[1]]


def restore_image(image, model: RestorationModel, *, tile: int = 512, overlap: int | None = None, norm: Normalisation | None = None):
    """Restore an image in its own units: global normalisation, tiled network, back; NaN kept NaN.

    Parameters
    ----------
    image : dask.array.Array or array_like
        The mosaic (SCI), NaN where uncovered.
    model : RestorationModel
    tile, overlap : int
        See :func:`restore_tiled`.
    norm : Normalisation, optional
        The transform (default: estimated from the whole image first).

    Returns
    -------
    restored : dask.array.Array
        float32, chunked (tile, tile).
    norm : Normalisation
    """
    image = da.asarray(image).rechunk((tile, tile))
    norm = norm or estimate_normalisation(image, softening=model.softening)
    u = image.map_blocks(norm.forward, dtype=np.float32)
    r = restore_tiled(u, model, tile=tile, overlap=overlap)
    # the tiles' last chunk may be merged into the one before (restore_tiled): follow its chunks
    restored = da.map_blocks(_back, r, image.rechunk(r.chunks), norm=norm, dtype=np.float32)
    return restored, norm


def _back(r, x, *, norm):
    out = norm.inverse(r)
    out[~np.isfinite(x)] = np.nan
    return out
