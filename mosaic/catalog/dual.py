"""Dual-image detection: find sources on one image, deblend and measure them on another.

Each image is used for what it is good at. The drizzle mosaic (UPDC iteration 0), smoothed by a
Gaussian of about the PSF's FWHM, is close to the matched filter, the best detector of isolated
sources, and its noise is what its ERR says; a UPDC iterate is sharper (it separates close
sources) but its noise is amplified and correlated. So the segments are found on the smoothed
detection image, with the threshold in units of the noise *measured* on that smoothed image
(:func:`measured_noise`), then split (``deblend_sources``) on the measurement image, where close
sources have their own peaks, and measured there (:func:`mosaic.catalog.photometry.source_catalog`).

Equal to ``deblend_sources(max(measurement, sigma), detect_sources(smoothed_detection, threshold))``
(``sigma`` the measurement image's measured noise) and
``SourceCatalog(measurement, ...)`` of photutils on the whole image, computed tile by tile.
"""

from __future__ import annotations

import logging
import warnings

import astropy.units as u
import dask.array as da
import numpy as np

from mosaic.catalog.detect import detect_segmentation, smooth
from mosaic.catalog.noise import sky_noise
from mosaic.catalog.photometry import source_catalog
from mosaic.exceptions import DeblendModeWarning

__all__ = ["DUAL_KRON_PARAMS", "detect_dual", "measured_noise"]

log = logging.getLogger(__name__)

#: Kron scale, least Kron radius and least circular radius of the dual-image catalogue by default
#: (a least Kron radius of 3, not photutils' 1.4: see :func:`detect_dual`'s ``kron_params``)
DUAL_KRON_PARAMS = (2.5, 3.0, 0.0)


def measured_noise(image, good, *, err=None, n_sample: float = 1e6):
    """The noise of ``image`` measured on its own pixels, as a map (with ``err``) or a number.

    With ``err`` the noise is ``k * err``, ``k`` the robust scatter of ``image / err`` over the
    good pixels with the sources masked (:func:`mosaic.catalog.noise.sky_noise`): the shape of the
    noise follows ``err`` (coverage), its level is measured (so smoothing, correlations and a
    mis-scaled ERR do not change what a threshold means). Without ``err``, the same scatter of
    ``image``. Sources are masked before the scatter is taken: a sigma-clipped standard deviation
    of every pixel counts the faint wings of sources as noise (on a crowded smoothed field, 18 %
    of it above 2 sigma, 1.37 times the noise against 1.02; tests/catalog/test_dual_image.py).

    Parameters
    ----------
    image : array
        2-D image (NumPy or dask), e.g. a smoothed detection image, sky-subtracted.
    good : bool array
        True where a pixel may be used.
    err : array, optional
        Per-pixel noise whose shape the result follows.
    n_sample : float
        About this many pixels (a strided sample) are used.

    Returns
    -------
    noise : float or array
        ``k * err`` (same type as ``err``), or a number.
    k : float
        The measured scale (the standard deviation itself without ``err``).
    """
    k = float(sky_noise(image, good, err=err, n_sample=n_sample).scale)
    return (k if err is None else k * err), k


def detect_dual(
    detection,
    measurement,
    *,
    threshold: float,
    detection_err=None,
    measurement_err=None,
    mask=None,
    fwhm: float = 2.0,
    deblend_fwhm: float = 0.0,
    n_pixels: int = 10,
    deblend: bool = True,
    n_levels: int = 32,
    contrast: float = 0.03,
    tile=512,
    wcs=None,
    radii=(3.0, 6.0),
    flux_scale: float = 1.0,
    flux_unit=u.dimensionless_unscaled,
    kron_params=DUAL_KRON_PARAMS,
):
    """Detect on ``detection`` (smoothed), deblend and measure on ``measurement``.

    Parameters
    ----------
    detection, measurement : array
        Two images of the same grid (NumPy or dask), sky-subtracted: e.g. the drizzle mosaic
        and a UPDC iterate.
    threshold : float
        In units of the measured noise of the smoothed detection image (:func:`measured_noise`).
    detection_err, measurement_err : array, optional
        ERR of the two images; the first shapes the noise map, the second gives the errors of
        the photometry.
    mask : bool array, optional
        True where pixels must not be used (NaN or zero-weight pixels of either image are
        masked as well).
    fwhm : float
        FWHM (pixels) of the Gaussian that smooths the detection image (about the PSF's).
    deblend_fwhm : float
        FWHM of a Gaussian that smooths the measurement image for the deblending only (0: the
        image as it is). The deblending sees that image raised to its measured noise level
        (:func:`measured_noise` without ``err``), so that its levels are exponential.
    n_pixels, deblend, n_levels, tile
        As :func:`mosaic.catalog.detect.detect_segmentation`.
    contrast : float
        Fraction of a parent's flux a child must have. Default 0.03, not photutils' 0.001:
        an iterate's dark rings and sharpened diffraction spikes make peaks of ~1 % of a
        star's flux, which a low contrast keeps as false sources (on a crowded simulated field,
        ``benchmarks/bench_updc_detection.py``, 0.001 gave more false than true detections).
    wcs, radii, flux_scale, flux_unit
        As :func:`mosaic.catalog.photometry.source_catalog`.
    kron_params : tuple of float
        Kron scale, minimum Kron radius, minimum circular radius. The minimum Kron radius is 3
        (photutils' default 1.4): a star on a sharp iterate has its Kron radius at the minimum,
        and an aperture of 2.5 x 1.4 semi-major axes (~0.12" in F200W at psr 0.5) ends inside
        the dark ring the deconvolution leaves, so its flux is the core's excess: measured up
        to 0.02 mag too bright at iteration 5 on a noiseless field, within 0.007 mag with 3.

    Returns
    -------
    table : astropy.table.QTable
        Catalogue measured on ``measurement``, with a ``detection_snr`` column: the peak of
        the smoothed detection image within each source, in measured-noise units.
    segmentation : mosaic.catalog.detect.Segmentation
    noise_scale : float
        The measured ``k`` of :func:`measured_noise`.
    """
    shapes = [tuple(a.shape) for a in (detection, measurement)]
    if shapes[0] != shapes[1]:
        msg = f"detection image shape {shapes[0]} differs from the measurement image shape {shapes[1]}; expected two images of one grid"
        raise ValueError(msg)
    if not fwhm > 0:
        msg = f"fwhm must be positive (the detection image is smoothed); got {fwhm!r}"
        raise ValueError(msg)
    tiles = (tile, tile) if np.ndim(tile) == 0 else tuple(tile)
    det_in = da.asarray(detection).rechunk(tiles).astype(np.float64)
    meas_in = da.asarray(measurement).rechunk(tiles).astype(np.float64)
    good = da.isfinite(det_in) & da.isfinite(meas_in)
    if mask is not None:
        good &= ~da.asarray(mask, chunks=tiles).astype(bool)
    det = smooth(da.where(good, det_in, 0.0), fwhm=fwhm, tile=tiles).persist()
    derr = None if detection_err is None else da.asarray(detection_err).rechunk(tiles).astype(np.float64)
    noise, k = measured_noise(det, good, err=derr)
    if derr is not None:
        noise = da.where(good & (derr > 0), noise, np.inf)
    log.info("detect: threshold %g x the measured noise of the smoothed detection image (scale %.4g)", threshold, k)
    filled = da.where(good, meas_in, 0.0)
    deb = None
    if deblend:
        deb = smooth(filled, fwhm=deblend_fwhm, tile=tiles) if deblend_fwhm > 0 else filled
        # raised to its own measured noise: the levels can then be exponential (faint neighbours
        # of bright stars get levels near their peaks); with the iterate's negative pixels they
        # would fall back to 32 linear levels, too coarse to split such a pair
        floor, _ = measured_noise(deb, good)
        deb = da.maximum(deb, floor)
    with warnings.catch_warnings(record=True) as caught:
        # a sharp, noisy measurement image has non-positive pixels in most segments, so the
        # deblending's linear levels are the rule here, not news: logged, not warned
        warnings.simplefilter("always", DeblendModeWarning)
        seg = detect_segmentation(
            det, threshold * noise, n_pixels=n_pixels, mask=~good, deblend=deblend, n_levels=n_levels,
            contrast=contrast, tile=tiles, deblend_image=deb,
        )
    for w in caught:
        if issubclass(w.category, DeblendModeWarning):
            log.info("detect: %s", w.message)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    table = source_catalog(
        filled, seg, error=measurement_err, mask=~good, wcs=wcs, radii=tuple(radii), flux_scale=flux_scale,
        flux_unit=flux_unit, kron_params=tuple(kron_params),
    )
    table["detection_snr"] = _peak_per_label(det / noise, seg, np.asarray(table["label"]))
    return table, seg, k


def _peak_per_label(snr, seg, labels: np.ndarray) -> np.ndarray:
    """Maximum of ``snr`` over each segment's pixels."""
    from scipy import ndimage  # noqa: PLC0415

    if labels.size == 0:
        return np.zeros(0)

    def block_max(s, lab):
        out = np.full(seg.n_labels + 1, -np.inf)
        present = np.unique(lab[lab > 0])
        if present.size:
            out[present] = ndimage.maximum(s, labels=lab, index=present)
        return out

    import dask  # noqa: PLC0415

    snr = da.asarray(snr).rechunk(seg.data.chunks)
    parts = [dask.delayed(block_max)(s, lab) for s, lab in zip(snr.to_delayed().ravel(), seg.data.to_delayed().ravel(), strict=True)]
    peak = np.max(np.stack(dask.compute(*parts)), axis=0)
    return peak[labels]
