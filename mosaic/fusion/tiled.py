"""Fusion of fields larger than one solve: a dask graph of overlapping tiles, blended with tapers.

The field is cut into tile *cores* of ``tile`` IFU spaxels; each tile is solved exactly
(:func:`mosaic.fusion.solve.solve_exact`) on its core plus a ``halo`` of spaxels on every side,
with the global subspace (one PCA and one mean spectrum for the whole field, computed first), and
its solution is kept on the core plus a ``blend`` margin. Where margins overlap, the solutions
are mixed with linear ramps that sum to one (a partition of unity), so seams are tapered. Each
tile's solve sees periodic data only over its own window, so the halo must cover the reach of
the PSFs *and* of the regulariser; the difference from the untiled solve falls off with the
halo (see ``tests/fusion/test_tiled.py``).

With a periodic boundary, an axis along which a tile's window (core plus two halos) would be
at least as long as the field is solved whole instead, in its own period (a wider window would
hold the data's seam): tiled then equals untiled exactly along that axis.

The field's own edges follow ``boundary``: ``"periodic"`` pads with the opposite edge (then the
tiled result approximates the untiled periodic solve everywhere), ``"reflect"`` mirrors the data
(fewer edge artefacts on real, non-periodic fields; the untiled equivalent is
:func:`solve_padded`).

What is blended is the subspace coefficients ``Z`` (``k`` planes), not the cube: the cube is
``V Z + mean``, formed lazily chunk by chunk (:func:`expand`), so no task holds the whole field.
"""

from __future__ import annotations

import logging
import math

import dask
import dask.array as da
import numpy as np

from mosaic.fusion.objective import Subspace
from mosaic.fusion.operators import FusionOperators
from mosaic.fusion.solve import solve_exact

__all__ = ["fuse_tiled", "solve_padded", "expand", "default_halo", "BOUNDARIES"]

log = logging.getLogger(__name__)

BOUNDARIES = ("periodic", "reflect")
_PAD_MODE = {"periodic": "wrap", "reflect": "symmetric"}


def default_halo(ops: FusionOperators) -> int:
    """Halo in IFU spaxels: twice the larger PSF radius plus 20 fine pixels, in spaxels rounded up.

    The tiled solve differs from the untiled one by an error that falls off exponentially with
    the halo, about 2x per fine pixel (more slowly for a larger ``mu``). With 16 fine pixels it
    reached 1.4e-4 of the solution's peak on noise data at d = 2 (a case hypothesis found); with
    20 the worst of a sweep of such cases was 1.6e-5 (``tests/fusion/test_tiled.py``).
    """
    radius = max(ops.psf_m.shape[1], ops.psf_m.shape[2], ops.psf_h.shape[1], ops.psf_h.shape[2]) // 2
    return math.ceil((2 * radius + 20) / ops.factor)


def _with_shape(ops: FusionOperators, coarse_shape) -> FusionOperators:
    return FusionOperators(
        psf_m=ops.psf_m,
        psf_h=ops.psf_h,
        throughput=ops.throughput,
        factor=ops.factor,
        coarse_shape=coarse_shape,
        offset=ops.offset,
        ifu_throughput=ops.ifu_throughput,
    )


def _pad(images, cube, d, halo, boundary, xp=np):
    """Both arrays padded by ``halo`` spaxels (one number, or one per axis ``(hy, hx)``)."""
    mode = _PAD_MODE[boundary]
    hy, hx = (halo, halo) if np.ndim(halo) == 0 else halo
    images = xp.pad(images, ((0, 0), (d * hy, d * hy), (d * hx, d * hx)), mode=mode)
    cube = xp.pad(cube, ((0, 0), (hy, hy), (hx, hx)), mode=mode)
    return images, cube


def solve_padded(images, cube, ops: FusionOperators, subspace: Subspace, *, gamma: float, mu: float, pad: int, boundary="reflect"):
    """The untiled solve of a field padded by ``pad`` spaxels (``boundary`` mode), cropped back: ``Z`` ``(k, ny, nx)``."""
    _check_boundary(boundary)
    if pad == 0:
        return solve_exact(images, cube, ops, subspace, gamma=gamma, mu=mu)
    images, cube = _pad(np.asarray(images), np.asarray(cube), ops.factor, pad, boundary)
    ny, nx = cube.shape[1:]
    z = solve_exact(images, cube, _with_shape(ops, (ny, nx)), subspace, gamma=gamma, mu=mu)
    f = ops.factor * pad
    return z[:, f:-f, f:-f]


def _check_boundary(boundary):
    if boundary not in BOUNDARIES:
        msg = f"boundary must be one of {BOUNDARIES}; got {boundary!r}"
        raise ValueError(msg)


def _starts(n, tile):
    return list(range(0, n, tile))


def _ramp(length, margin):
    """1-D taper over a tile's kept window of ``length`` fine pixels with ``margin`` blended on each side."""
    if margin == 0:
        return np.ones(length)
    x = np.arange(length) + 0.5
    return np.clip(np.minimum(x, length - x) / (2 * margin), 0.0, 1.0)


def _axis_plan(n, tile, halo, blend, *, whole):
    """Per tile along one axis of ``n`` spaxels: its ``core`` (field), solve ``window`` (padded
    field) and ``keep`` (window) ranges and ``blend``, in spaxels.

    With a periodic boundary, a window at least as long as the field (``tile + 2 halo >= n``)
    would hold more than one period of the data with a seam inside: the axis is solved whole
    instead (the field's own period, exactly as the untiled solve), and its tiles are not blended.
    """
    out = []
    for c0 in _starts(n, tile):
        c1 = min(c0 + tile, n)
        if whole:
            out.append({"core": (c0, c1), "window": (0, n), "keep": (c0, c1), "blend": 0})
        else:
            out.append({"core": (c0, c1), "window": (c0, c1 + 2 * halo), "keep": (halo - blend, halo + c1 - c0 + blend), "blend": blend})
    return out


def _solve_window(images, cube, ops, subspace, gamma, mu):
    return solve_exact(images, cube, ops, subspace, gamma=gamma, mu=mu)


def _crop(z, keep):
    (y0, y1), (x0, x1) = keep
    return z[:, y0:y1, x0:x1]


def _assemble(chunk, pieces, k):
    """One output chunk of ``Z`` from the tile solutions that reach it, weighted by their tapers."""
    (cy0, cy1), (cx0, cx1) = chunk
    num = np.zeros((k, cy1 - cy0, cx1 - cx0))
    den = np.zeros((cy1 - cy0, cx1 - cx0))
    for z, (wy0, wx0), weights in pieces:
        ys = slice(max(cy0, wy0), min(cy1, wy0 + z.shape[1]))
        xs = slice(max(cx0, wx0), min(cx1, wx0 + z.shape[2]))
        if ys.start >= ys.stop or xs.start >= xs.stop:
            continue
        w = np.outer(weights[0][ys.start - wy0 : ys.stop - wy0], weights[1][xs.start - wx0 : xs.stop - wx0])
        out = (slice(None), slice(ys.start - cy0, ys.stop - cy0), slice(xs.start - cx0, xs.stop - cx0))
        num[out] += w * z[:, ys.start - wy0 : ys.stop - wy0, xs.start - wx0 : xs.stop - wx0]
        den[out[1:]] += w
    return num / den


def fuse_tiled(
    images,
    cube,
    ops: FusionOperators,
    subspace: Subspace,
    *,
    gamma: float,
    mu: float,
    tile: int = 32,
    halo: int | None = None,
    blend: int | None = None,
    boundary: str = "periodic",
) -> da.Array:
    """``Z`` ``(k, ny, nx)`` of a whole field as a lazy dask array, solved tile by tile.

    Parameters
    ----------
    images, cube : ndarray or dask.array.Array
        NIRCam images ``(n_filter, ny, nx)`` and IFU cube ``(n_wave, ny / d, nx / d)`` of the field.
    ops : FusionOperators
        Forward models; their ``coarse_shape`` must be the field's.
    subspace : Subspace
        The global subspace (PCA of the whole cube).
    gamma, mu : float
        Weights of objective (9).
    tile : int
        Core size of a tile, in IFU spaxels.
    halo : int, optional
        Spaxels solved around each core and thrown away (default :func:`default_halo`).
    blend : int, optional
        Spaxels on each side of a core over which neighbouring tiles are tapered together
        (default ``min(halo // 2, tile // 2)``); must not exceed the halo or half a tile.
    boundary : {"periodic", "reflect"}
        How the field is extended beyond its edges.

    Returns
    -------
    dask.array.Array
        ``Z``, chunked by tile cores; ``expand(Z, subspace)`` is the fused cube.
    """
    _check_boundary(boundary)
    d, (ny, nx), k = ops.factor, ops.coarse_shape, subspace.n_components
    if tuple(cube.shape[1:]) != (ny, nx) or tuple(images.shape[1:]) != ops.shape:
        msg = f"images {tuple(images.shape)!r} and cube {tuple(cube.shape)!r} do not match the operators' grid {ops.shape!r}"
        raise ValueError(msg)
    tile = int(tile)
    halo = default_halo(ops) if halo is None else int(halo)
    blend = min(halo // 2, tile // 2) if blend is None else int(blend)
    if tile < 1 or halo < 0 or not 0 <= blend <= min(halo, tile // 2):
        msg = f"need tile >= 1, halo >= 0 and 0 <= blend <= min(halo, tile // 2); got tile={tile}, halo={halo}, blend={blend}"
        raise ValueError(msg)
    # periodic: an axis whose windows would be at least the field is solved whole, with no halo
    wholes = tuple(boundary == "periodic" and tile + 2 * halo >= n for n in (ny, nx))
    halos = tuple(0 if w else halo for w in wholes)
    if any(h > n for h, n in zip(halos, (ny, nx), strict=True)):
        msg = f"halo {halo} is larger than the field ({ny} x {nx} spaxels); solve the field whole"
        raise ValueError(msg)
    images, cube = _pad(da.asarray(images), da.asarray(cube), d, halos, boundary, xp=da)
    ys, xs = _starts(ny, tile), _starts(nx, tile)
    plans = [_axis_plan(n, tile, h, blend, whole=w) for n, h, w in zip((ny, nx), halos, wholes, strict=True)]
    operators, solved, results = {}, {}, {}
    for i, py in enumerate(plans[0]):
        for j, px in enumerate(plans[1]):
            (wy0, wy1), (wx0, wx1) = py["window"], px["window"]
            shape = (wy1 - wy0, wx1 - wx0)
            if shape not in operators:
                operators[shape] = _with_shape(ops, shape)
            window = (wy0, wy1, wx0, wx1)
            if window not in solved:  # tiles along a whole axis share their strip's solve
                solved[window] = dask.delayed(_solve_window, pure=False)(
                    images[:, d * wy0 : d * wy1, d * wx0 : d * wx1],
                    cube[:, wy0:wy1, wx0:wx1],
                    operators[shape],
                    subspace,
                    gamma,
                    mu,
                )
            keep = tuple((d * p["keep"][0], d * p["keep"][1]) for p in (py, px))
            z = dask.delayed(_crop, pure=False)(solved[window], keep)
            origin = tuple(d * (p["core"][0] - p["blend"]) for p in (py, px))
            weights = tuple(_ramp(d * (p["core"][1] - p["core"][0] + 2 * p["blend"]), d * p["blend"]) for p in (py, px))
            results[i, j] = (z, origin, weights)
    log.info("fusion: %d x %d tiles of %d spaxels, halo %d, blend %d", len(ys), len(xs), tile, halo, blend)
    rows = []
    for i, y0 in enumerate(ys):
        row = []
        for j, x0 in enumerate(xs):
            y1, x1 = min(y0 + tile, ny), min(x0 + tile, nx)
            near = [results[a, b] for a in (i - 1, i, i + 1) for b in (j - 1, j, j + 1) if (a, b) in results]
            chunk = ((d * y0, d * y1), (d * x0, d * x1))
            part = dask.delayed(_assemble, pure=False)(chunk, near, k)
            row.append(da.from_delayed(part, shape=(k, d * (y1 - y0), d * (x1 - x0)), dtype=np.float64))
        rows.append(row)
    return da.block(rows)


def _expand_block(z, basis, mean):
    return np.tensordot(basis, z, axes=1) + mean[:, None, None]


def expand(z: da.Array, subspace: Subspace) -> da.Array:
    """The fused cube ``V Z + mean`` ``(n_wave, ny, nx)``, lazily, chunk by chunk of ``Z``."""
    n_wave = subspace.basis.shape[0]
    z = z.rechunk({0: -1})
    return da.map_blocks(
        _expand_block,
        z,
        subspace.basis,
        subspace.mean,
        chunks=((n_wave,), *z.chunks[1:]),
        dtype=np.float64,
        meta=np.empty((0, 0, 0)),
    )
