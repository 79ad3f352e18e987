"""The noise of an image measured on its own sky: what a detection threshold is in units of.

An ``_i2d`` mosaic's ERR says how the noise varies over the field (coverage, exposure time), but
its level can be wrong: an iteration that distorts it, a mis-scaled calibration, correlations
that the propagation leaves out. :func:`sky_noise` measures the level on the image itself: the
robust scatter of ``image / err`` (or of ``image`` without ERR) about the local background, over
the sky, that is the good pixels left once the sources are masked.

The measurement uses a strided sample of about ``n_sample`` pixels of the whole image, the same
pixels whatever the tiling, so a tiled detection thresholds exactly as an untiled one:

1. a local background: medians of the sky in meshes of ``box`` x ``box`` sample pixels,
   median-filtered over 3 x 3 meshes and interpolated bilinearly, so that what varies on
   larger scales (intracluster light, galaxy halos, a sky left over) is not counted as noise;
2. sources masked: the background-subtracted sample smoothed by a 3 x 3 mean, groups of at
   least ``min_pixels`` connected pixels above ``mask_sigma`` times the smoothed sample's own
   robust scatter, grown by ``grow`` pixels (of the sample); steps 1 and 2 are done twice, the
   second time with the sources of the first masked;
3. the level: the standard deviation of the background-subtracted sky pixels left after clipping
   at 5 MAD-based sigma (:func:`clipped_stats`); the sky: the clipped median of the sky pixels
   themselves.

On pure Gaussian noise the scale comes out within 0.3 % of the truth; on a field whose sources
cover a third of the pixels, within 1 %.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

__all__ = ["SkyNoise", "clipped_stats", "measured_sky", "mesh_medians", "sample_step", "sky_noise", "source_mask", "strided", "strided_sample"]

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class SkyNoise:
    """A measured sky level and noise scale.

    Attributes
    ----------
    sky : float
        Clipped median of the sky pixels (of ``image / err`` with ERR).
    scale : float
        Their standard deviation after clipping at 5 MAD-based sigma: the noise (without ERR), or the factor by which
        ERR must be multiplied to be the noise (with ERR).
    n_sky : int
        Sky pixels of the sample it was measured on.
    n_sample : int
        Good pixels of the sample (sources included).
    step : int
        Stride of the sample.
    """

    sky: float
    scale: float
    n_sky: int
    n_sample: int
    step: int


def clipped_stats(values: np.ndarray, sigma: float) -> tuple[float, float]:
    """Median and standard deviation of ``values`` after clipping at ``sigma`` MAD-based standard
    deviations about the median, at most 10 times: astropy's ``sigma_clipped_stats(values,
    sigma=sigma, maxiters=10, cenfunc="median", stdfunc="mad_std")``, computed on the values sorted
    once (:func:`mosaic.ops.sigma_clip.sigma_clipped_median_std`, a third of the time)."""
    from mosaic.ops.sigma_clip import sigma_clipped_median_std  # noqa: PLC0415

    med, std, _ = sigma_clipped_median_std(values, sigma, maxiters=10)
    return med, std


def source_mask(z: np.ndarray, ok: np.ndarray, *, med: float, mask_sigma: float, min_pixels: int, grow: int) -> np.ndarray:
    """True on the sample's pixels that belong to (or border) a source."""
    from scipy import ndimage  # noqa: PLC0415

    w = ok.astype(np.float64)
    num = ndimage.uniform_filter(np.where(ok, z - med, 0.0), size=3, mode="constant")
    den = ndimage.uniform_filter(w, size=3, mode="constant")
    smooth = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    s_med, s_std = clipped_stats(smooth[ok], 3.0)
    if not s_std > 0:
        return np.zeros_like(ok)
    labels, n = ndimage.label(ok & (smooth > s_med + mask_sigma * s_std), structure=np.ones((3, 3), bool))
    if n == 0:
        return np.zeros_like(ok)
    big = np.bincount(labels.ravel(), minlength=n + 1) >= min_pixels
    big[0] = False
    mask = big[labels]
    if grow > 0 and mask.any():
        mask = ndimage.binary_dilation(mask, structure=np.ones((3, 3), bool), iterations=grow)
    return mask


def mesh_medians(z: np.ndarray, use: np.ndarray, box: int, my: int, mx: int) -> np.ndarray:
    """``np.median`` of ``z[use]`` in each ``box`` x ``box`` mesh (NaN where none) and the number of
    values, all meshes at once: each mesh's used values sorted (unused ones as +inf, last), the
    middle one or the mean of the middle two, as ``np.median`` takes them."""
    ny, nx = z.shape
    v = np.full((my * box, mx * box), np.inf)
    v[:ny, :nx] = np.where(use, z, np.inf)
    v = np.sort(v.reshape(my, box, mx, box).transpose(0, 2, 1, 3).reshape(my, mx, box * box), axis=-1)
    n = np.isfinite(v).sum(axis=-1)
    lo = np.take_along_axis(v, np.maximum(n - 1, 0)[..., None] // 2, axis=-1)[..., 0]
    hi = np.take_along_axis(v, (n // 2)[..., None], axis=-1)[..., 0]
    with np.errstate(invalid="ignore"):
        med = np.where(n % 2 == 1, hi, (lo + hi) / 2)
    return np.where(n > 0, med, np.nan), n


def _background(z: np.ndarray, use: np.ndarray, box: int) -> np.ndarray:
    """Median of ``z`` over ``use`` in meshes of ``box`` pixels, 3 x 3-median-filtered, bilinear."""
    from scipy import ndimage  # noqa: PLC0415

    ny, nx = z.shape
    my, mx = -(-ny // box), -(-nx // box)
    least = max(10, box * box // 4)
    med, count = mesh_medians(z, use, box, my, mx)
    mesh = np.where(count >= least, med, np.nan)
    empty = np.isnan(mesh)
    if empty.all():
        return np.full(z.shape, np.median(z[use]) if use.any() else 0.0)
    if empty.any():  # meshes without enough sky take their nearest measured neighbour's value
        idx = ndimage.distance_transform_edt(empty, return_distances=False, return_indices=True)
        mesh = mesh[tuple(idx)]
    mesh = ndimage.median_filter(mesh, size=3, mode="nearest")
    yy = (np.arange(ny) + 0.5) / box - 0.5
    xx = (np.arange(nx) + 0.5) / box - 0.5
    coords = np.meshgrid(yy, xx, indexing="ij")
    return ndimage.map_coordinates(mesh, coords, order=1, mode="nearest")


def sample_step(shape, n_sample: float = 1e6) -> int:
    """The stride of :func:`strided_sample` on both axes of an image of ``shape``: about
    ``n_sample`` pixels are taken (every pixel of a smaller image)."""
    return max(1, int(np.sqrt(np.prod(shape) / n_sample)))


def strided(arrays, step: int) -> list[np.ndarray]:
    """Every ``step``-th pixel on both axes of each of ``arrays`` (NumPy or dask), as NumPy
    arrays. Dask arrays are computed together, so the chunks they share (an image and a mask
    made from it) are read once."""
    import dask  # noqa: PLC0415

    return [np.asarray(a) for a in dask.compute(*(a[::step, ::step] for a in arrays))]


def strided_sample(image, good, *, err=None, n_sample: float = 1e6) -> tuple[np.ndarray, np.ndarray, int]:
    """``(z, ok, step)``: every ``step``-th pixel of ``image`` (of ``image / err`` with ``err``) on
    both axes, about ``n_sample`` of them, and where they may be used (``good``, finite, ERR > 0).

    Raises
    ------
    ValueError
        Fewer than 100 usable pixels.
    """
    step = sample_step(np.shape(image), n_sample)
    z, ok, *e = strided([image, good] if err is None else [image, good, err], step)
    z = z.astype(np.float64, copy=False)
    ok = ok.astype(bool, copy=False) & np.isfinite(z)
    if err is not None:
        e = e[0].astype(np.float64, copy=False)
        ok &= np.isfinite(e) & (e > 0)
        z = np.divide(z, e, out=np.zeros_like(z), where=ok)
    n_ok = int(ok.sum())
    if n_ok < 100:
        msg = f"only {n_ok} usable pixels to measure the noise on; expected at least 100 (finite, unmasked{', with ERR > 0' if err is not None else ''})"
        raise ValueError(msg)
    return z, ok, step


def measured_sky(image, good, *, source: str = "the image") -> SkyNoise:
    """:func:`sky_noise` of an image a user gave: too few usable pixels is one
    :class:`~mosaic.exceptions.InputError` naming ``source``, not a ValueError."""
    from mosaic.exceptions import InputError  # noqa: PLC0415

    try:
        return sky_noise(image, good)
    except ValueError as exc:
        msg = f"{source}: cannot measure the sky: {exc}"
        raise InputError(msg) from None


def sky_noise(image, good, *, err=None, n_sample: float = 1e6, clip: float = 5.0, mask_sigma: float = 2.5,
              min_pixels: int = 5, grow: int = 2, box: int = 16) -> SkyNoise:
    """Robust sky level and noise of ``image`` (or of ``image / err``), sources masked.

    Parameters
    ----------
    image : array
        2-D image (NumPy or dask), background-subtracted for a mosaic with ERR.
    good : bool array
        True where a pixel may be used (finite, covered).
    err : array, optional
        Per-pixel noise (ERR); the scale is then that of ``image / err``, pixels with a
        non-finite or non-positive ERR left out.
    n_sample : float
        About this many pixels are used (a strided sample; all of them for smaller images).
    clip : float
        Sigma-clipping limit of the final statistics (the sources are masked by then; clipping
        at 3 would bias the scale of Gaussian noise low by 1.4 %, at 5 by 0.01 %).
    mask_sigma, min_pixels, grow
        Source mask: connected groups of at least ``min_pixels`` pixels of the 3 x 3-smoothed
        sample above ``mask_sigma`` times its robust scatter, grown by ``grow`` pixels.
    box : int
        Mesh of the local background, in pixels of the sample (image pixels for an image of
        fewer than ``n_sample`` pixels). On a simulated walkthrough field with intracluster light,
        meshes of 16, 32, 64 and 128 pixels gave scales of 1.13, 1.33, 1.63 and 2.45: structure on
        the mesh's scale counts as noise, so the mesh is small (its median's own noise,
        ~0.08 sigma before the 3 x 3 filter, adds < 0.1 % to the variance).

    Returns
    -------
    SkyNoise

    Raises
    ------
    ValueError
        Fewer than 100 usable pixels.
    """
    shape = tuple(int(s) for s in np.shape(image))
    if len(shape) != 2:
        msg = f"image must be 2-D; got shape {shape}"
        raise ValueError(msg)
    z, ok, step = strided_sample(image, good, err=err, n_sample=n_sample)
    n_ok = int(ok.sum())
    med, std = clipped_stats(z[ok], 3.0)
    sky = ok
    if std > 0:
        mesh = max(4, int(box))
        for _ in range(2):
            resid = z - _background(z, sky, mesh)
            sky = ok & ~source_mask(resid, ok, med=0.0, mask_sigma=mask_sigma, min_pixels=min_pixels, grow=grow)
            if sky.sum() < max(100, n_ok // 10):
                log.warning("noise: sources cover %.0f %% of the sample; measuring on all %d pixels", 100 * (1 - sky.sum() / n_ok), n_ok)
                sky = ok
                break
        resid = z - _background(z, sky, mesh)
        _, std = clipped_stats(resid[sky], clip)
        med, _ = clipped_stats(z[sky], clip)
    return SkyNoise(sky=med, scale=std, n_sky=int(sky.sum()), n_sample=n_ok, step=step)
