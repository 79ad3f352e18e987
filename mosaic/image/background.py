"""Background and RMS maps of mosaics far larger than memory, equal to photutils' Background2D.

:func:`background_2d` runs :class:`photutils.background.Background2D`'s algorithm on dask tiles
whose edges are multiples of the box size, so every box lies inside one tile and the mesh of
the tiled run *is* the mesh of the whole-image run:

1. a map over the tiles computes each box's sigma-clipped background and RMS
   (:func:`mosaic.ops.background.mesh_statistics`) -- one pass over the data;
2. the low-resolution mesh (``(image / box)²`` values) is gathered, its excluded boxes filled
   by inverse-distance weighting and median filtered, exactly as photutils does;
3. the full-resolution maps are lazy: each output tile is the bicubic zoom of the global mesh
   evaluated on that tile only (:func:`mosaic.ops.background.interpolate_mesh`).

:func:`icl_background` is the three-step intracluster-light background of seed 000 sec. 2.2
(initial background, four tiers of source detection on the background-subtracted image after
Bagley et al. 2023, masked final background), every step tiled.

Memory is one tile (plus, for ICL detection, the smoothing kernel's halo) per task; the mesh
and the zoom weights (``image_side x mesh_side`` floats per axis) are the only global arrays.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import dask.array as da
import numpy as np

from mosaic.exceptions import NonFiniteDataWarning
from mosaic.ops.background import (
    N_MESH_PLANES,
    fill_mesh,
    filter_mesh,
    interpolate_mesh,
    make_estimators,
    mesh_statistics,
    source_mask_window,
)
from mosaic.registry import algorithm

__all__ = [
    "BAGLEY_TIERS",
    "Background",
    "DetectionTier",
    "IclBackground",
    "NonFiniteDataWarning",
    "background_2d",
    "icl_background",
    "tier_source_mask",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetectionTier:
    """One tier of source masking: smooth, threshold, keep groups, dilate.

    Attributes
    ----------
    kernel_sigma : float
        Standard deviation (pixels) of the Gaussian the residual image is smoothed with.
    n_sigma : float
        Detection threshold in units of the background RMS.
    n_pixels : int
        Fewest 8-connected pixels of a source.
    dilate_radius : int
        Radius of the circular footprint the source mask is dilated with (0: none).
    """

    kernel_sigma: float
    n_sigma: float
    n_pixels: int
    dilate_radius: int = 0


#: the four tiers of Bagley et al. (2023) with the thresholds of seed 000 sec. 2.2 (1.5, 1.5, 1.0, 0.8)
BAGLEY_TIERS = (
    DetectionTier(25.0, 1.5, 15, 0),
    DetectionTier(15.0, 1.5, 15, 0),
    DetectionTier(5.0, 1.0, 5, 0),
    DetectionTier(2.0, 0.8, 2, 3),
)


@dataclass
class Background:
    """A background model: lazy full-resolution maps and the low-resolution meshes behind them.

    Attributes
    ----------
    background, background_rms : dask.array.Array
        Full-resolution maps (``Background2D.background`` and ``.background_rms``).
    background_mesh, background_rms_mesh : ndarray
        The filled, filtered meshes.
    n_pixels_mesh : ndarray
        Pixels used per box.
    box_size : tuple of int
        ``(ny, nx)``.
    """

    background: da.Array
    background_rms: da.Array
    background_mesh: np.ndarray
    background_rms_mesh: np.ndarray
    n_pixels_mesh: np.ndarray
    box_size: tuple[int, int]

    @property
    def background_median(self) -> float:
        """Median of the background mesh (SourceExtractor's "(M+D) Background")."""
        return float(np.median(self.background_mesh))

    @property
    def background_rms_median(self) -> float:
        """Median of the RMS mesh."""
        return float(np.median(self.background_rms_mesh))


@dataclass
class IclBackground:
    """Result of :func:`icl_background`.

    Attributes
    ----------
    final : Background
        The background with sources masked (step 3): the ICL-preserving background.
    initial : Background
        The large-box background of step 1 (only used for detection).
    source_mask : dask.array.Array
        The union of the tier masks (step 2).
    tier_masks : list of dask.array.Array
        The mask of each tier.
    """

    final: Background
    initial: Background
    source_mask: da.Array
    tier_masks: list = field(default_factory=list)


def _pair(value, name: str) -> tuple[int, int]:
    v = np.atleast_1d(np.asarray(value))
    if v.size == 1:
        v = np.repeat(v, 2)
    if v.size != 2 or not all(float(a).is_integer() and a >= 1 for a in v):
        msg = f"{name} must be a positive integer or (ny, nx) pair of them; got {value!r}"
        raise ValueError(msg)
    return int(v[0]), int(v[1])


def _as_image(image):
    if not isinstance(image, da.Array):
        image = da.from_array(np.asarray(image), chunks=-1)
    if image.ndim != 2:
        msg = f"image must be 2-D; got shape {tuple(image.shape)!r}"
        raise ValueError(msg)
    return image


def _as_mask(mask, image, name):
    if mask is None:
        return None
    if tuple(mask.shape) != tuple(image.shape):
        msg = f"{name} has shape {tuple(mask.shape)!r}; expected the image's shape {tuple(image.shape)!r}"
        raise ValueError(msg)
    return da.asarray(mask).astype(bool).rechunk(image.chunks)


def _tile_chunks(n: int, box: int, tile: int) -> tuple[int, ...]:
    t = max(box, (tile // box) * box)
    return tuple(min(t, n - s) for s in range(0, n, t))


def _make_sigma_clip(sigma, maxiters):
    if sigma is None:
        return None
    from astropy.stats import SigmaClip  # noqa: PLC0415

    if not np.isfinite(sigma) or sigma <= 0:
        msg = f"sigma must be a positive number (or None for no clipping); got {sigma!r}"
        raise ValueError(msg)
    return SigmaClip(sigma=sigma, maxiters=maxiters)


@algorithm("background")
def background_2d(
    image,
    *,
    box_size=64,
    filter_size=3,
    filter_threshold: float | None = None,
    estimator: str = "median",
    rms_estimator: str = "std",
    sigma: float | None = 3.0,
    maxiters: int = 10,
    mask=None,
    coverage_mask=None,
    fill_value: float = 0.0,
    exclude_percentile: float = 10.0,
    tile: int = 1024,
) -> Background:
    """Background and RMS maps from sigma-clipped box statistics (photutils ``Background2D``).

    Computes the mesh now (one pass over the image) and returns lazy full-resolution maps.

    Parameters
    ----------
    image : dask.array.Array or array_like
        2-D image; NaN and inf pixels are left out (with a :class:`NonFiniteDataWarning`).
    box_size : int or (int, int)
        Box size ``(ny, nx)`` in pixels; at most the image's shape.
    filter_size : int or (int, int)
        Odd median-filter window over the mesh, in boxes (1: none).
    filter_threshold : float, optional
        Filter only boxes whose background exceeds this.
    estimator : str
        Box background: ``median``, ``mean``, ``biweight``, ``sextractor`` or ``mode``.
    rms_estimator : str
        Box RMS: ``std``, ``mad_std`` or ``biweight``.
    sigma : float or None
        Sigma-clipping limit in each box (None: no clipping).
    maxiters : int
        Most clipping iterations.
    mask : array_like of bool, optional
        True where pixels (sources, bad pixels) are left out of the statistics.
    coverage_mask : array_like of bool, optional
        True where there is no data; those pixels get ``fill_value`` in the maps.
    fill_value : float
        Value of the maps under ``coverage_mask``.
    exclude_percentile : float
        Boxes with more than this percentage of pixels masked are excluded and filled.
    tile : int
        Tile side in pixels, rounded down to a multiple of the box (at least one box).

    Returns
    -------
    Background
    """
    image = _as_image(image)
    box = _pair(box_size, "box_size")
    if box[0] > image.shape[0] or box[1] > image.shape[1]:
        msg = f"box_size {box} is larger than the image shape {tuple(image.shape)}; expected at most the image shape"
        raise ValueError(msg)
    fsize = _pair(filter_size, "filter_size")
    if fsize[0] % 2 == 0 or fsize[1] % 2 == 0:
        msg = f"filter_size must be odd; got {filter_size!r}"
        raise ValueError(msg)
    if not 0 <= exclude_percentile <= 100:
        msg = f"exclude_percentile must be in [0, 100]; got {exclude_percentile!r}"
        raise ValueError(msg)
    if int(tile) < 1:
        msg = f"tile must be a positive number of pixels; got {tile!r}"
        raise ValueError(msg)
    bkg_est, rms_est = make_estimators(estimator, rms_estimator)
    sigma_clip = _make_sigma_clip(sigma, maxiters)

    chunks = tuple(_tile_chunks(n, b, int(tile)) for n, b in zip(image.shape, box, strict=True))
    image = image.rechunk(chunks)
    masks = [_as_mask(m, image, name) for m, name in ((mask, "mask"), (coverage_mask, "coverage_mask"))]
    work = image.dtype if image.dtype.kind == "f" else np.dtype(np.float32)

    mesh_chunks = ((N_MESH_PLANES,), *(tuple(-(-c // b) for c in cs) for cs, b in zip(chunks, box, strict=True)))
    stats = da.map_blocks(
        _mesh_block, image, *[m for m in masks if m is not None],
        chunks=mesh_chunks, new_axis=0, dtype=np.float64, meta=np.empty((0, 0, 0)),
        box_size=box, sigma_clip=sigma_clip, bkg_estimator=bkg_est, rms_estimator=rms_est,
        exclude_percentile=exclude_percentile, has_mask=masks[0] is not None, has_coverage=masks[1] is not None,
    )
    from mosaic.progress import compute  # noqa: PLC0415

    (planes,) = compute(stats, description=f"background meshes ({box[0]}x{box[1]} boxes)")
    bkg_stats, rms_stats, n_good, n_nonfinite = planes
    if n_nonfinite.sum() > 0:
        warnings.warn(
            f"the image has {int(n_nonfinite.sum())} NaN or inf pixels that no mask covers; they were left out",
            NonFiniteDataWarning, stacklevel=2,
        )
    if np.all(np.isnan(bkg_stats)):
        msg = (
            f"every box of {box} has too few good pixels (exclude_percentile={exclude_percentile}); the image "
            f"{tuple(image.shape)} may be all NaN or masked; expected some boxes with enough unmasked finite pixels"
        )
        raise ValueError(msg)
    n_excluded = int(np.isnan(bkg_stats).sum())
    if n_excluded:
        log.info("background: %d of %d boxes excluded, filled by interpolation", n_excluded, bkg_stats.size)

    # the dtypes photutils' meshes have: whatever the estimators return for the data's type
    probe = np.zeros((1, 1, 4), dtype=work)
    bkg_dtype = np.asarray(bkg_est(probe, axis=-1)).dtype
    rms_dtype = np.asarray(rms_est(probe, axis=-1)).dtype
    bkg_stats, rms_stats = bkg_stats.astype(bkg_dtype), rms_stats.astype(rms_dtype)
    bkg_filled = fill_mesh(bkg_stats)
    rms_filled = fill_mesh(rms_stats)
    kw = {"filter_size": fsize, "filter_threshold": filter_threshold, "bkg_mesh": bkg_filled, "bkg_min": np.nanmin(bkg_stats)}
    bkg_mesh = filter_mesh(bkg_filled, **kw)
    rms_mesh = filter_mesh(rms_filled, **kw)

    maps = [
        _zoomed(mesh, image, box, masks[1], fill_value, work)
        for mesh in (bkg_mesh, rms_mesh)
    ]
    return Background(maps[0], maps[1], bkg_mesh, rms_mesh, n_good.astype(np.int64), box)


def _mesh_block(data, *args, has_mask, has_coverage, **kwargs):
    it = iter(args)
    mask = next(it) if has_mask else None
    coverage = next(it) if has_coverage else None
    return mesh_statistics(data, mask, coverage, **kwargs)


def _zoomed(mesh, image, box, coverage, fill_value, work_dtype):
    lo, hi = np.min(mesh), np.max(mesh)
    dtype = work_dtype if lo == hi else mesh.dtype  # as photutils: constant maps take the data's type
    args = [coverage] if coverage is not None else []
    return da.map_blocks(
        _zoom_block, *([image] + args), dtype=dtype, meta=np.empty((0, 0), dtype=dtype),
        mesh=mesh, box=box, dtype_out=dtype, fill_value=fill_value, has_coverage=coverage is not None,
    )


def _zoom_block(data, *args, mesh, box, dtype_out, fill_value, has_coverage, block_info=None):
    (r0, r1), (c0, c1) = block_info[0]["array-location"]
    out = interpolate_mesh(mesh, box_size=box, rows=slice(r0, r1), cols=slice(c0, c1), dtype=dtype_out)
    if has_coverage:
        out[np.asarray(args[0], dtype=bool)] = fill_value
    return out


@algorithm("background")
def tier_source_mask(residual, rms, *, tier: DetectionTier, bad=None):
    """Source mask of one detection tier on a background-subtracted (dask) image.

    The residual (bad pixels set to 0) is smoothed with a normalised Gaussian (FFT, zero beyond
    the image, as ``astropy.convolution.convolve_fft`` with ``boundary="fill"``); pixels above
    ``tier.n_sigma * rms`` form sources of at least ``tier.n_pixels`` 8-connected pixels
    (``photutils.segmentation.detect_sources``), dilated by a circle of ``tier.dilate_radius``.

    Parameters
    ----------
    residual : dask.array.Array
        Background-subtracted image.
    rms : dask.array.Array
        Background RMS map.
    tier : DetectionTier
        Smoothing, threshold, size and dilation.
    bad : dask.array.Array of bool, optional
        Pixels never part of a source.

    Returns
    -------
    dask.array.Array of bool
    """
    from astropy.convolution import Gaussian2DKernel  # noqa: PLC0415

    from mosaic.coadd.convolve import convolve_tiled  # noqa: PLC0415

    if tier.kernel_sigma <= 0 or tier.n_sigma <= 0 or tier.n_pixels < 1 or tier.dilate_radius < 0:
        msg = f"tier {tier!r} is invalid; expected kernel_sigma > 0, n_sigma > 0, n_pixels >= 1, dilate_radius >= 0"
        raise ValueError(msg)
    kernel = Gaussian2DKernel(tier.kernel_sigma).array
    kernel = kernel / kernel.sum()
    bad_or_nan = ~da.isfinite(residual) if bad is None else bad | ~da.isfinite(residual)
    filled = da.where(bad_or_nan, 0.0, residual).astype(np.float64)
    smoothed = convolve_tiled(filled, kernel)
    threshold = tier.n_sigma * rms.rechunk(smoothed.chunks)
    halo = int(tier.n_pixels) - 1 + int(tier.dilate_radius)
    depth = {0: min(halo, residual.shape[0] - 1), 1: min(halo, residual.shape[1] - 1)}
    if any(h >= min(c) for h, c in zip(depth.values(), smoothed.chunks, strict=True)):
        # the halo must come from the neighbours only
        smoothed = smoothed.rechunk({a: max(h + 1, max(c)) for a, (h, c) in enumerate(zip(depth.values(), smoothed.chunks, strict=True))})
        threshold = threshold.rechunk(smoothed.chunks)
    bad_or_nan = bad_or_nan.rechunk(smoothed.chunks)
    out = da.map_overlap(
        _source_block, smoothed, threshold, bad_or_nan, depth=depth, boundary="none", trim=True,
        dtype=bool, meta=np.empty((0, 0), dtype=bool), n_pixels=int(tier.n_pixels), dilate_radius=int(tier.dilate_radius),
    )
    return out.rechunk(residual.chunks)


def _source_block(smoothed, threshold, bad, *, n_pixels, dilate_radius):
    return source_mask_window(smoothed, threshold, bad, n_pixels=n_pixels, dilate_radius=dilate_radius)


@algorithm("background")
def icl_background(
    image,
    *,
    mask=None,
    coverage_mask=None,
    box_size=60,
    filter_size=5,
    estimator: str = "biweight",
    rms_estimator: str = "std",
    sigma: float | None = 3.0,
    maxiters: int = 10,
    exclude_percentile: float = 10.0,
    tiers=BAGLEY_TIERS,
    tile: int = 1020,
) -> IclBackground:
    """The three-step intracluster-light background of seed 000 sec. 2.2, tiled.

    1. an initial background of sigma-clipped boxes (biweight location), masking only bad
       pixels; 2. sources detected in tiers (Bagley et al. 2023: Gaussian smoothing, threshold
       ``n_sigma`` times the initial RMS map, fewest pixels, dilation) on the image minus that
       background; 3. the final background of the same boxes with bad pixels and every tier's
       sources masked, median filtered and zoomed -- it keeps the ICL that step 1 over-subtracts.

    Parameters
    ----------
    image : dask.array.Array or array_like
        2-D image.
    mask : array_like of bool, optional
        Bad pixels.
    coverage_mask : array_like of bool, optional
        Pixels without data (filled with 0 in the maps).
    box_size : int or (int, int)
        Box size of steps 1 and 3 (the paper: 60).
    filter_size : int or (int, int)
        Median filter over the mesh, in boxes (the paper: 5).
    estimator : str
        Box background estimator (the paper: biweight).
    rms_estimator : str
        Box RMS estimator.
    sigma : float or None
        Sigma clipping in each box.
    maxiters : int
        Most clipping iterations.
    exclude_percentile : float
        Boxes with more masked pixels than this percentage are excluded and filled.
    tiers : sequence of DetectionTier
        Detection tiers (default :data:`BAGLEY_TIERS`).
    tile : int
        Tile side in pixels (rounded down to a multiple of the box).

    Returns
    -------
    IclBackground
    """
    image = _as_image(image)
    if not tiers:
        msg = f"tiers must hold at least one DetectionTier; got {tiers!r}"
        raise ValueError(msg)
    common = {
        "box_size": box_size, "filter_size": filter_size, "estimator": estimator, "rms_estimator": rms_estimator,
        "sigma": sigma, "maxiters": maxiters, "exclude_percentile": exclude_percentile, "tile": tile,
        "coverage_mask": coverage_mask,
    }
    log.info("ICL step 1: initial background")
    initial = background_2d(image, mask=mask, **common)
    image = image.rechunk(initial.background.chunks)
    bad = _as_mask(mask, image, "mask")
    if coverage_mask is not None:
        cov = _as_mask(coverage_mask, image, "coverage_mask")
        bad = cov if bad is None else bad | cov
    residual = image - initial.background
    log.info("ICL step 2: %d tiers of source detection", len(tiers))
    tier_masks = [tier_source_mask(residual, initial.background_rms, tier=t, bad=bad) for t in tiers]
    sources = tier_masks[0]
    for m in tier_masks[1:]:
        sources = sources | m
    final_mask = sources if bad is None else sources | bad
    log.info("ICL step 3: final background with sources masked")
    final = background_2d(image, mask=final_mask, **common)
    return IclBackground(final=final, initial=initial, source_mask=sources, tier_masks=tier_masks)
