"""Pre-fusion (seed 003, appendix A): the fine grid, co-registration, the fusion field and the PSF cubes.

- :func:`fine_wcs`: the IFU cube's celestial WCS refined ``d`` times, so that the middle fine pixel
  of each ``d x d`` block sits on the spaxel centre (the sampling of
  :class:`~mosaic.fusion.operators.FusionOperators`). The IFU cube keeps its own orientation
  (the pipeline's cubes are north-up); the images are rotated and resampled onto this grid.
- :func:`resample_image`: an image onto that grid, bicubic (``reproject``), as in the seed;
- :func:`phase_align`: for moving targets, the shift of a resampled image against the IFU cube
  seen through the same filter, by phase cross-correlation (scikit-image), and the shifted image;
- :func:`common_field`: the largest centred rectangle of spaxels where the cube and every
  image have data;
- :func:`psf_cubes`: NIRCam and NIRSpec PSFs at the IFU wavelengths from
  :func:`mosaic.psf.model.psf_monochromatic`, computed at a few wavelengths and interpolated.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.ndimage
import scipy.signal
from astropy.wcs import WCS

from mosaic.exceptions import InputError
from mosaic.psf.model import psf_monochromatic

__all__ = ["fine_wcs", "resample_image", "phase_align", "common_field", "psf_cubes", "pixel_ratio"]

log = logging.getLogger(__name__)


def pixel_ratio(image_wcs: WCS, cube_wcs: WCS) -> float:
    """IFU spaxel size over the image pixel size (about 3.2 for NIRCam SW against NIRSpec)."""
    from astropy.wcs.utils import proj_plane_pixel_scales  # noqa: PLC0415

    return float(np.mean(proj_plane_pixel_scales(cube_wcs.celestial)) / np.mean(proj_plane_pixel_scales(image_wcs.celestial)))


def fine_wcs(cube_wcs: WCS, factor: int) -> WCS:
    """The cube's celestial WCS with pixels ``factor`` times smaller, spaxel centres on the middle fine pixels."""
    d = int(factor)
    w = cube_wcs.celestial.deepcopy()
    if w.wcs.has_cd():
        w.wcs.cd = w.wcs.cd / d
    else:
        w.wcs.cdelt = w.wcs.cdelt / d
    # spaxel i (0-based) is centred on fine pixel d i + d // 2
    w.wcs.crpix = d * (w.wcs.crpix - 1) + 1 + d // 2
    if w.pixel_shape is not None:
        w.pixel_shape = tuple(d * n for n in w.pixel_shape)
    return w


def resample_image(image, image_wcs: WCS, target_wcs: WCS, shape) -> np.ndarray:
    """``image`` (surface brightness) on ``target_wcs`` of ``shape`` by bicubic interpolation; NaN off the image.

    NaN pixels are filled with the image's median before the interpolation (a cubic spline
    spreads a NaN over whole rows) and every output pixel they reach is NaN again.
    """
    from reproject import reproject_interp  # noqa: PLC0415

    image = np.asarray(image, dtype=np.float64)
    bad = ~np.isfinite(image)
    filled = np.where(bad, np.nanmedian(image) if not bad.all() else 0.0, image)
    kw = {"shape_out": tuple(shape)}
    out, _ = reproject_interp((filled, image_wcs.celestial), target_wcs, order="bicubic", **kw)
    if bad.any():
        reach, _ = reproject_interp((bad.astype(np.float64), image_wcs.celestial), target_wcs, order="bilinear", **kw)
        out[~(reach == 0)] = np.nan
    return out


def phase_align(image, reference, *, upsample: int = 20) -> tuple[np.ndarray, tuple[float, float]]:
    """``image`` shifted onto ``reference`` by phase cross-correlation; returns it and the shift ``(dy, dx)`` applied.

    NaN pixels are set to the image's median for the correlation.
    """
    from skimage.registration import phase_cross_correlation  # noqa: PLC0415

    def _filled(a):
        a = np.asarray(a, dtype=np.float64)
        return np.where(np.isfinite(a), a, np.nanmedian(a))

    shift, _, _ = phase_cross_correlation(_filled(reference), _filled(image), upsample_factor=upsample)
    moved = scipy.ndimage.shift(_filled(image), shift, order=3, mode="nearest")
    moved[~np.isfinite(scipy.ndimage.shift(np.where(np.isfinite(image), 0.0, np.nan), shift, order=0, cval=np.nan))] = np.nan
    return moved, (float(shift[0]), float(shift[1]))


def common_field(cube, images, factor: int, *, cube_name="cube", image_names=None):
    """``(y0, y1, x0, x1)`` in spaxels: the largest rectangle, shrunk from the edges, where all data are finite.

    Raises an :class:`~mosaic.exceptions.InputError` naming the image when an image does not
    overlap the cube at all.
    """
    d = int(factor)
    good = np.all(np.isfinite(cube), axis=0)
    if not good.any():
        msg = f"{cube_name}: no spaxel has a finite spectrum"
        raise InputError(msg)
    names = image_names or [f"image {i}" for i in range(len(images))]
    for name, img in zip(names, images, strict=True):
        fin = np.isfinite(img)
        blocks = fin[: d * good.shape[0], : d * good.shape[1]].reshape(good.shape[0], d, good.shape[1], d).all(axis=(1, 3))
        if not (blocks & good).any():
            msg = f"{name}: does not overlap the IFU cube {cube_name}; fusion needs images that cover the cube's field"
            raise InputError(msg)
        good &= blocks
    y0, y1, x0, x1 = 0, good.shape[0], 0, good.shape[1]
    while True:
        window = good[y0:y1, x0:x1]
        if window.size and window.all():
            return y0, y1, x0, x1
        if y1 - y0 <= 2 or x1 - x0 <= 2:
            msg = f"{cube_name}: the cube and images share no rectangle of valid spaxels larger than 2 x 2"
            raise InputError(msg)
        # drop the edge row or column with the most bad spaxels
        edges = {"top": (~window[0]).sum(), "bottom": (~window[-1]).sum(), "left": (~window[:, 0]).sum(), "right": (~window[:, -1]).sum()}
        worst = max(edges, key=edges.get)
        if worst == "top":
            y0 += 1
        elif worst == "bottom":
            y1 -= 1
        elif worst == "left":
            x0 += 1
        else:
            x1 -= 1


def psf_cubes(wavelengths, *, factor: int, spaxel_arcsec: float, size: int = 21, n_samples: int = 12, slicer_sigma_arcsec: float = 0.03):
    """NIRCam and NIRSpec PSF cubes ``(n_wave, size, size)`` on the fine grid, each plane summing to 1.

    NIRCam: the JWST-like monochromatic PSF (:func:`mosaic.psf.model.psf_monochromatic`).
    NIRSpec: the same widened by the ``factor x factor`` spaxel and a Gaussian of
    ``slicer_sigma_arcsec`` for the slicer. Both are computed at ``n_samples`` wavelengths across
    the range and interpolated linearly in wavelength between them (PSFs change slowly).
    """
    w = np.asarray(wavelengths, dtype=np.float64)
    d = int(factor)
    pix = spaxel_arcsec / d
    size = int(size) | 1
    big = size + 2 * d
    big += 1 - big % 2
    yy, xx = np.mgrid[:big, :big] - big // 2
    slicer = np.exp(-(yy**2 + xx**2) * pix**2 / (2 * slicer_sigma_arcsec**2))
    box = np.ones((d, d)) if d % 2 else np.pad(np.ones((d, d)), ((0, 1), (0, 1)))
    nodes = np.linspace(w.min(), w.max(), max(2, min(int(n_samples), w.size)))
    m_nodes, h_nodes = [], []
    cut = (big - size) // 2
    for lam in nodes:
        mono = psf_monochromatic(lam, pixel_scale_arcsec=pix, size=big, oversample=3)
        core = mono[cut : cut + size, cut : cut + size]
        m_nodes.append(core / core.sum())
        h = scipy.signal.fftconvolve(scipy.signal.fftconvolve(mono, box, mode="same"), slicer, mode="same")[cut : cut + size, cut : cut + size]
        h = np.clip(h, 0.0, None)
        h_nodes.append(h / h.sum())
    m_nodes, h_nodes = np.array(m_nodes), np.array(h_nodes)
    idx = np.clip(np.searchsorted(nodes, w) - 1, 0, len(nodes) - 2)
    t = ((w - nodes[idx]) / (nodes[idx + 1] - nodes[idx]))[:, None, None]
    psf_m = (1 - t) * m_nodes[idx] + t * m_nodes[idx + 1]
    psf_h = (1 - t) * h_nodes[idx] + t * h_nodes[idx + 1]
    return psf_m, psf_h
