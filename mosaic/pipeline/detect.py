"""A source catalogue of an image file: read it, detect tile by tile, measure, write the products.

:func:`detect_image` is what ``mosaic detect`` and the pipeline's catalogue step run. The image
is an ``_i2d.fits`` mosaic (SCI, ERR, WHT) or a plain FITS image. Pixels that are NaN or have
zero weight are masked. The threshold is ``threshold`` times the noise per pixel, applied to the
(smoothed) image as SExtractor and photutils apply it. With ``noise="measured"`` (the default)
that noise is measured on the image itself (:func:`mosaic.catalog.noise.sky_noise`: the robust
scatter of the sky, sources masked): ERR scaled to it where there is an ERR extension (ERR gives
the shape, the sky its level), else the scatter itself (after the sky's median is removed). With
``noise="err"`` the ERR extension is taken as it is (the mosaic is sky-subtracted), else the
sigma-clipped standard deviation of a strided sample (whose clipped median is removed as the sky).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from mosaic.catalog.flux_errors import FLUX_ERRORS
from mosaic.exceptions import InputError

__all__ = ["DETECTION_ENGINES", "DETECTION_METHODS", "DETECTION_NOISE", "background_rms", "detect_image"]

log = logging.getLogger(__name__)

#: detection methods of :func:`detect_image`
DETECTION_METHODS = ("segmentation", "daofind")
#: engines of the segmentation method: photutils (tiled, equal to its whole-image calls) or SEP
DETECTION_ENGINES = ("photutils", "sep")
#: what a threshold is in units of: the noise measured on the image (:func:`mosaic.catalog.noise.sky_noise`)
#: or ERR as it is
DETECTION_NOISE = ("measured", "err")


def background_rms(sci, good, *, source: str = "the image") -> tuple[float, float]:
    """Median and robust scatter of the sky, sources masked, from a strided sample of about 1e6
    pixels (:func:`mosaic.catalog.noise.sky_noise`; a clipped median and standard deviation of
    every pixel take the sources' wings for sky and noise).

    Parameters
    ----------
    sci : array-like
        2-D image (NumPy or dask).
    good : array-like
        True where a pixel may be used.
    source : str
        What the image is (its file), named in the error.

    Returns
    -------
    median, std : float

    Raises
    ------
    mosaic.exceptions.InputError
        Too few usable pixels to measure the sky on.
    """
    from mosaic.catalog.noise import measured_sky  # noqa: PLC0415

    m = measured_sky(sci, good, source=source)
    return float(m.sky), float(m.scale)


#: an image without WHT whose exact zeros are more than this share of its finite pixels is taken
#: as padded with zeros outside its footprint (:func:`_zero_padded`)
ZERO_PADDING_FRACTION = 0.01


def _zero_padded(sci, path) -> bool:
    """Whether a floating-point image without WHT is padded with exact zeros (a mosaic's area
    outside its footprint, set to 0 by the tool that made it): more than
    :data:`ZERO_PADDING_FRACTION` of a strided sample's finite pixels are exactly 0, and its other
    pixels are not all whole numbers (an image of counts has real zeros). Then the zeros are no
    data: counted as sky they pull its median to 0 and its scatter down (20 % of zeros: the noise
    measured 12 % low; 30 %: a scatter of 0)."""
    from mosaic.catalog.noise import strided_sample  # noqa: PLC0415

    if not np.issubdtype(np.dtype(sci.dtype), np.floating):
        return False
    try:
        z, ok, _ = strided_sample(sci, np.isfinite(sci))  # the sample the noise is measured on
    except ValueError:  # too few finite pixels to tell
        return False
    sample = z[ok]
    zero = sample == 0
    if zero.mean() <= ZERO_PADDING_FRACTION or np.all(sample[~zero] == np.round(sample[~zero])):
        return False
    log.info("detect: %s has no WHT and %.0f %% of its pixels are exactly 0: taken as padding outside the footprint, not as sky",
             path, 100 * zero.mean())
    return True


#: a sky level (sources masked) beyond this many times the median ERR is removed from an image
#: with ERR before detection (:func:`_leftover_sky`)
SKY_LEFT_ERR = 0.1


def _leftover_sky(sci, good, err, path) -> float:
    """The sky level to remove from an image with ERR: the median of its sky with the sources
    masked (:func:`mosaic.catalog.noise.sky_noise`) where it is more than :data:`SKY_LEFT_ERR`
    of the median ERR (a drizzle mosaic, sky included), else 0 (a sky-subtracted product is
    used as it is). Left in, a sky of ~40 ERR made the whole image one segment."""
    from mosaic.catalog.noise import sample_step, sky_noise, strided  # noqa: PLC0415

    # the noise's strided sample of the image, its mask and ERR in one computation: each chunk of
    # the file is read once (two samples in turn read SCI and WHT twice: 3.7 -> 2.0 s on a 9587²
    # mosaic); sky_noise on the sample takes all of it (step 1), the same pixels as on the image
    z, ok, e = strided([sci, good, err], sample_step(np.shape(sci)))
    z, ok, e = z.astype(np.float64, copy=False), ok.astype(bool, copy=False), e.astype(np.float64, copy=False)
    ok &= np.isfinite(z)
    try:
        sky = float(sky_noise(z, ok, n_sample=z.size).sky)
    except ValueError as exc:
        msg = f"{path}: cannot measure the sky: {exc}"
        raise InputError(msg) from None
    typical = float(np.median(e[ok & (e > 0)])) if np.any(ok & (e > 0)) else 0.0
    if not (typical > 0 and abs(sky) > SKY_LEFT_ERR * typical):
        return 0.0
    log.info("detect: %s holds a sky of %.4g (%.1f x its median ERR): removed before detection (median of the sky, sources masked)",
             path, sky, sky / typical)
    return sky


def _measured_noise(sci, good, err, path, threshold):
    """:func:`mosaic.catalog.noise.sky_noise` of the image to threshold, logged; bad input named."""
    from mosaic.catalog.noise import sky_noise  # noqa: PLC0415

    try:
        m = sky_noise(sci, good, err=err)
    except ValueError as exc:
        msg = f"{path}: cannot measure the noise: {exc}"
        raise InputError(msg) from None
    if not (np.isfinite(m.scale) and m.scale > 0):
        msg = f"{path}: the measured noise is {m.scale!r}; expected a positive scatter of the sky (a constant image cannot be thresholded in its noise)"
        raise InputError(msg)
    if err is not None:
        log.info("detect: threshold %g x %.4g x ERR (ERR scaled to the measured noise: robust scatter/ERR %.4g over %d sky pixels)",
                 threshold, m.scale, m.scale, m.n_sky)
    else:
        log.info("detect: threshold %g x %.4g (measured noise: robust scatter of %d sky pixels)", threshold, m.scale, m.n_sky)
    return m


def _persisted(filled, det, bad, err):
    """The inputs of the catalogue passes computed once and kept (on the workers, or here).

    Each pass reads every chunk again otherwise: the file (a FITS section read costs ~0.3 s per
    1024² chunk), the masking and the smoothing, four times over.
    """
    import dask  # noqa: PLC0415

    same = det is filled or det is None
    arrays = [filled, bad] + ([] if same else [det]) + ([] if err is None else [err])
    kept = list(dask.persist(*arrays))
    filled, bad = kept[0], kept[1]
    det = (filled if det is not None else None) if same else kept[2]
    err = None if err is None else kept[-1]
    log.debug("detect: image, mask%s%s persisted", "" if same else ", smoothed image", "" if err is None else ", ERR")
    return filled, det, bad, err


def _require_sep() -> None:
    try:
        import sep  # noqa: F401, PLC0415
    except ImportError:
        msg = "engine 'sep' needs the SEP package; install it with: pip install 'mosaic[sep]' (or pip install sep)"
        raise InputError(msg) from None


#: bytes a pixel that the SEP engine's whole-image task needs (SCI, ERR and WHT read, the image,
#: noise and mask SEP gets, its filtered image, threshold and pixel buffers): its peak in the
#: catalogue benchmark at 9584² was 5.4 GiB, 63 bytes a pixel
SEP_BYTES_PER_PIXEL = 64


def _worker_memory() -> float:
    """Memory one task may use: the smallest worker's limit on a dask cluster, else what is available here."""
    import psutil  # noqa: PLC0415

    available = float(psutil.virtual_memory().available)
    try:
        from distributed import get_client  # noqa: PLC0415

        client = get_client()
    except (ImportError, ValueError):
        return available
    limits = [w.get("memory_limit") or 0 for w in client.scheduler_info().get("workers", {}).values()]
    return float(min(limits)) if limits and min(limits) > 0 else available


def _sep_whole(shape, max_pixels) -> bool:
    """Whether the SEP engine extracts the whole image in one task: when it has at most
    ``max_pixels`` pixels, or (None) when SEP on it needs at most half a worker's memory."""
    n = int(np.prod(shape))
    need = SEP_BYTES_PER_PIXEL * n
    fits = n <= max_pixels if max_pixels is not None else need <= 0.5 * _worker_memory()
    log.info("detect: SEP on %s (about %.1f GiB for SEP on the whole image)", "the whole image" if fits else "tiles", need / 2**30)
    return fits


def _sep_table(filled, bad, err, rms, image, *, threshold, n_pixels, deblend, fwhm, radii, tile, whole=False):
    """The SEP engine's catalogue: relative threshold with ERR (``threshold`` in units of ``err``),
    else absolute (``threshold * rms``).

    The filter is a plain convolution (SEP's ``filter_type="conv"``), so ``threshold`` means what
    it means for the photutils engine: the smoothed image against ``threshold`` times the
    per-pixel noise (SEP's matched filter would threshold it in units of its own, lower, noise).
    """
    from mosaic.catalog.sep_engine import sep_catalog  # noqa: PLC0415

    kernel = None
    if fwhm > 0:
        from photutils.segmentation import make_2dgaussian_kernel  # noqa: PLC0415

        kernel = make_2dgaussian_kernel(fwhm, size=max(3, int(2 * round(1.5 * fwhm) + 1))).array
    scale, unit = image.flux_scale
    return sep_catalog(
        filled, threshold if err is not None else threshold * rms, err=err, mask=bad, minarea=n_pixels, filter_kernel=kernel, filter_type="conv",
        deblend_cont=0.005 if deblend else 1.0, radii=tuple(radii), tile=tile, halo=max(64, int(n_pixels), (0 if kernel is None else kernel.shape[0]) + 4),
        wcs=image.wcs, flux_scale=scale, flux_unit=unit, whole=whole,
    )


def detect_image(path, out, *, method: str = "segmentation", threshold: float = 1.5, n_pixels: int = 10,
                 deblend: bool = False, fwhm: float = 2.0, radii=(3.0, 6.0), tile: int = 1024, require_error: bool = False,
                 regions=None, segmentation=None, store=None, field: str | None = None, overwrite: bool = False,
                 background_box: int | None = None, detection_image=None, engine: str = "photutils", noise: str = "measured",
                 sep_max_whole: int | None = None, flux_errors: str = "correlated"):
    """Detect and measure the sources of an image file and write the catalogue (and products).

    Computes on the current dask client, if any (else with threads here).

    Parameters
    ----------
    path : path-like
        ``_i2d.fits`` mosaic or FITS image.
    out : path-like
        Catalogue file, ``.ecsv`` or ``.parquet``.
    method : {"segmentation", "daofind"}
        Segmentation with photometry (:func:`mosaic.catalog.photometry.source_catalog`), or
        DAOFIND peaks (:func:`mosaic.catalog.daofind.detect_daofind`).
    threshold : float
        Detection threshold in units of the noise per pixel (see ``noise``).
    noise : {"measured", "err"}
        What ``threshold`` is in units of: the noise measured on the (background-subtracted)
        image, ERR scaled to it where there is ERR (default); or ERR as it is (else the clipped
        standard deviation of the image), the behaviour before the measured noise.
    background_box : int, optional
        Subtract a local background first (sigma-clipped meshes of this size,
        :func:`mosaic.image.background.background_2d`): what the mosaic's global sky leaves,
        such as the intracluster light, is then not detected as sources.
    n_pixels : int
        Least number of connected pixels of a segment.
    deblend : bool
        Deblend overlapping segments.
    fwhm : float
        FWHM in pixels of the Gaussian that smooths the detection image (0: none), or of the
        DAOFIND kernel (> 0).
    radii : sequence of float
        Circular aperture radii in pixels (segmentation).
    tile : int
        Tile side in pixels.
    require_error : bool
        Refuse an image without an ERR extension.
    regions : path-like, optional
        Also write a DS9 region file.
    segmentation : path-like, optional
        Also write the segmentation map as FITS (segmentation method).
    store : mosaic.io.store.Store, optional
        Also write the segmentation map into this store, as ``<field>/<band>/catalogs/segmentation``.
    field : str, optional
        Field name in the store (default: the image file's stem).
    overwrite : bool
        Replace existing outputs.
    detection_image : path-like, optional
        Dual-image mode (segmentation): find the sources on this image of the same grid (the
        drizzle mosaic), smoothed by ``fwhm``, at ``threshold`` times the noise measured on it,
        and deblend and measure them on ``path`` (a UPDC iterate):
        :func:`mosaic.catalog.dual.detect_dual`.
    engine : {"photutils", "sep"}
        Segmentation engine: photutils (:func:`mosaic.catalog.detect.detect_segmentation` and
        :func:`mosaic.catalog.photometry.source_catalog`), or SEP (SExtractor's detection,
        Kron and circular apertures, :func:`mosaic.catalog.sep_engine.sep_catalog`; needs the
        ``sep`` extra; ``fwhm`` is its Gaussian filter, ``deblend`` its deblending).
    sep_max_whole : int, optional
        The SEP engine extracts images of at most this many pixels whole, in one task (SEP
        alone: faster than tiles where the image fits in memory), larger ones in tiles; default
        (None): whole when SEP on the image needs at most half a worker's memory
        (:data:`SEP_BYTES_PER_PIXEL`); 0: always tiles. The catalogue is the same either way.
    flux_errors : {"correlated", "independent"}
        ``"correlated"`` (default): where the measured image is a drizzle mosaic (its primary
        header's RESKERN, PIXFRAC and PXSCLRT; not a UPDC iterate after iteration 0), each flux
        error is scaled for the noise the drizzle correlates between pixels
        (:func:`mosaic.catalog.flux_errors.scale_flux_errors`); elsewhere, and with
        ``"independent"``, the errors are photutils' and SEP's ``sqrt(sum ERR²)``. The
        catalogue's metadata says which (``flux_err_model``).

    Returns
    -------
    astropy.table.QTable
        The catalogue written to ``out``.
    """
    import dask.array as da  # noqa: PLC0415

    from mosaic.catalog.daofind import detect_daofind  # noqa: PLC0415
    from mosaic.catalog.detect import detect_segmentation, smooth  # noqa: PLC0415
    from mosaic.catalog.noise import sample_step, strided  # noqa: PLC0415
    from mosaic.catalog.photometry import KRON_PARAMS, source_catalog  # noqa: PLC0415
    from mosaic.io.catalogs import read_image, write_catalog, write_segmentation_fits, write_segmentation_store  # noqa: PLC0415

    if method not in DETECTION_METHODS:
        msg = f"method {method!r} is unknown; expected one of {list(DETECTION_METHODS)}"
        raise InputError(msg)
    if fwhm < 0 or (method == "daofind" and fwhm == 0):
        msg = f"fwhm {fwhm!r} is out of range; expected > 0 (>= 0 for segmentation, 0 meaning no smoothing)"
        raise InputError(msg)
    if engine not in DETECTION_ENGINES or (engine == "sep" and (method != "segmentation" or detection_image is not None)):
        msg = f"engine {engine!r} is not allowed here; expected one of {list(DETECTION_ENGINES)} ('sep' with method 'segmentation' and no detection image)"
        raise InputError(msg)
    if engine == "sep":
        _require_sep()
    if flux_errors not in FLUX_ERRORS:
        msg = f"flux_errors {flux_errors!r} is unknown; expected one of {list(FLUX_ERRORS)}"
        raise InputError(msg)
    if noise not in DETECTION_NOISE or (noise != "measured" and detection_image is not None):
        msg = f"noise {noise!r} is not allowed here; expected one of {list(DETECTION_NOISE)} ('measured' with a detection image)"
        raise InputError(msg)
    image = read_image(path, tile=tile)
    sep_whole = engine == "sep" and detection_image is None and method == "segmentation" and _sep_whole(image.sci.shape, sep_max_whole)
    if sep_whole:  # one chunk: SEP's task reads full-width row bands, with no chunks to join
        image = read_image(path, tile=max(image.sci.shape))
    if detection_image is not None:
        return _detect_dual_image(image, detection_image, out, method=method, threshold=threshold, n_pixels=n_pixels,
                                  deblend=deblend, fwhm=fwhm, radii=radii, tile=tile, regions=regions,
                                  segmentation=segmentation, store=store, field=field, overwrite=overwrite,
                                  background_box=background_box, flux_errors=flux_errors)
    if require_error and image.err is None:
        msg = f"{path}: no ERR extension to set the detection threshold; expected an _i2d.fits mosaic with ERR (updc.errors: true in a field config)"
        raise InputError(msg)
    tiles = (tile, tile)
    good = da.isfinite(image.sci)
    # the sky of an image without ERR is measured on the noise's strided sample of SCI; without
    # WHT the padding test takes that sample too, so it is read once (same pixels, same numbers)
    sky_on, sky_good = image.sci, good
    if image.wht is not None:
        good &= image.wht > 0
        sky_good = good
    else:
        (sky_on,) = strided([image.sci], sample_step(image.sci.shape))
        sky_good = np.isfinite(sky_on)
        if _zero_padded(sky_on, path):
            good &= image.sci != 0
            sky_good &= sky_on != 0
    measured = noise == "measured"
    if image.err is not None:
        # an i2d with (the shape of) its noise in ERR; a UPDC or JWST product is sky-subtracted,
        # mosaic drizzle's is not: a sky of many ERR is removed (one segment over everything else)
        sky = _leftover_sky(image.sci, good, image.err, path)
        sci = da.where(good, image.sci - sky, np.nan)
        rms = da.where(good & (image.err > 0), image.err, np.inf)
        if not measured:
            log.info("detect: threshold %g x ERR (ERR as it is)", threshold)
    elif measured:
        # a plain image gets the median of its sky removed; its noise is measured below
        sky = _measured_noise(sky_on, sky_good, None, path, threshold).sky
        sci = da.where(good, image.sci - sky, np.nan)
    else:
        # a plain image gets its sky's median removed and the sky's scatter as the noise
        sky, rms = background_rms(sky_on, sky_good, source=str(path))
        sci = da.where(good, image.sci - sky, np.nan)
        log.info("detect: threshold %g x %.4g (robust scatter of the image's sky)", threshold, rms)
    if background_box is not None:
        from mosaic.image.background import background_2d  # noqa: PLC0415

        box = int(background_box)
        if box < 4 or box > min(image.sci.shape):
            msg = f"background_box {background_box!r} is out of range; expected 4 to {min(image.sci.shape)} pixels (the image's shorter side)"
            raise InputError(msg)
        local = background_2d(da.where(good, sci, np.nan), box_size=box, filter_size=3, mask=~good, tile=max(box, tile // box * box))
        sci = sci - local.background
        log.info("detect: local background of %d px meshes subtracted", box)
    if image.wcs is None:
        log.warning("detect: %s has no celestial WCS; the catalogue has positions in pixels only (RA/Dec NaN)", path)
    # the noise scale: measured on the image to threshold (after any local background), from a
    # strided sample of the whole image, so any tiling thresholds alike; 1 for ERR as it is
    k = 1.0
    seg = None
    if method == "daofind":
        if measured:
            k = _measured_noise(sci, good, image.err, path, threshold).scale
            rms = k * rms if image.err is not None else k
        table = detect_daofind(sci, threshold * rms, fwhm=fwhm, mask=~good, tile=tiles)
        if image.wcs is not None and len(table):
            ra, dec = image.wcs.pixel_to_world_values(np.asarray(table["x_centroid"]), np.asarray(table["y_centroid"]))
            table["ra"], table["dec"] = ra, dec
            table["ra"].unit = table["dec"].unit = "deg"
    elif engine == "sep":
        filled, bad, err = da.where(good, sci, 0.0), ~good, None if image.err is None else rms
        if not sep_whole:
            filled, _, bad, err = _persisted(filled, None, bad, err)
        if measured:
            k = _measured_noise(filled, ~bad, err, path, threshold).scale
            rms = k if err is None else rms
        # with ERR, SEP's threshold is relative to it: the measured scale goes into the threshold
        # (ERR itself stays the flux errors' noise)
        table = _sep_table(filled, bad, err, rms, image, threshold=threshold * (k if err is not None else 1.0),
                           n_pixels=n_pixels, deblend=deblend, fwhm=fwhm, radii=radii, tile=tile, whole=sep_whole)
    else:
        filled = da.where(good, sci, 0.0)
        det = smooth(filled, fwhm=fwhm, tile=tiles) if fwhm > 0 else filled
        # read and smoothed once: detection, deblending and both photometry passes reuse these chunks
        filled, det, bad, err = _persisted(filled, det, ~good, image.err)
        if measured:
            k = _measured_noise(filled, ~bad, err, path, threshold).scale
            rms = k if err is None else rms
        limit = threshold * rms
        if image.err is not None:
            limit = threshold * k * da.where(~bad & (err > 0), err, np.inf)
        seg = detect_segmentation(det, limit, n_pixels=n_pixels, mask=bad, deblend=deblend, tile=tiles)
        scale, unit = image.flux_scale
        table = source_catalog(
            filled, seg, error=err, mask=bad, convolved=det if fwhm > 0 else None, wcs=image.wcs,
            radii=tuple(radii), flux_scale=scale, flux_unit=unit,
        )
    table.meta.update(image=str(path), method=method, threshold_sigma=threshold, band=image.band, noise=noise,
                      noise_scale=float(k) if image.err is not None else float(rms))
    if method == "segmentation":
        from mosaic.catalog.sep_engine import SEP_KRON_PARAMS  # noqa: PLC0415

        table.meta["engine"] = engine
        _flux_errors(table, image, flux_errors, kron_params=SEP_KRON_PARAMS if engine == "sep" else KRON_PARAMS)
    write_catalog(table, out, overwrite=overwrite)
    if regions is not None:
        scale_arcsec = None if image.pixel_area_sr is None else float(np.sqrt(image.pixel_area_sr) * 206264.806)
        write_catalog(table, regions, overwrite=overwrite, pixel_scale_arcsec=scale_arcsec)
    if seg is not None and segmentation is not None:
        write_segmentation_fits(seg.data, segmentation, wcs=image.wcs, overwrite=overwrite)
    if seg is not None and store is not None:
        field = field or Path(path).name.split(".")[0]
        write_segmentation_store(store, field, image.band, seg.data, wcs=image.wcs, overwrite=overwrite)
    log.info("detect: %d sources -> %s", len(table), out)
    return table


def _flux_errors(table, image, flux_errors: str, *, kron_params: tuple) -> None:
    """Scale ``table``'s flux errors for a drizzle's correlated noise where ``image`` is a
    drizzle mosaic and ``flux_errors`` asks for it; record in its metadata what they are.
    ``kron_params``: those of the Kron apertures the catalogue measured."""
    from mosaic.catalog.flux_errors import drizzle_noise_model, scale_flux_errors  # noqa: PLC0415

    if flux_errors == "independent":
        table.meta["flux_err_model"] = "independent pixels: sqrt(sum ERR^2) (as asked)"
        return
    model, why = drizzle_noise_model(image.primary, source=str(image.path))
    if model is None:
        table.meta["flux_err_model"] = f"independent pixels: sqrt(sum ERR^2) ({why})"
        # a resampled image (a UPDC iterate, another kernel) is known to hold correlated noise: a
        # warning; of an image without the keywords nothing is known
        resampled = image.primary is not None and "RESKERN" in image.primary
        log.log(logging.WARNING if resampled else logging.INFO,
                "detect: flux errors are sqrt(sum ERR^2), which leaves out the noise's correlation between pixels "
                "(too small on a resampled image: 1.3-1.5x at r = 2-8 px on simulated UPDC iterates; README, 'Flux errors on a drizzle mosaic'): %s", why)
        return
    applied = scale_flux_errors(table, model, kron_params=kron_params)
    table.meta.update(applied)
    factors = ", ".join(f"r = {k.removeprefix('flux_err_factor_r').replace('p', '.')} px: x{v:.3g}" for k, v in applied.items() if k != "flux_err_model")
    log.info("detect: flux errors scaled for the drizzle's correlated noise (%s)%s", model, f"; {factors}" if factors else "")


def _detect_dual_image(image, detection_path, out, *, method, threshold, n_pixels, deblend, fwhm, radii, tile, regions,
                       segmentation, store, field, overwrite, background_box, flux_errors):
    """:func:`detect_image` with ``detection_image``: detect on that file, deblend and measure on ``image``."""
    from mosaic.catalog.dual import DUAL_KRON_PARAMS, detect_dual  # noqa: PLC0415
    from mosaic.io.catalogs import read_image, write_catalog, write_segmentation_fits, write_segmentation_store  # noqa: PLC0415

    if method != "segmentation" or not fwhm > 0 or background_box is not None:
        msg = (f"a detection image needs method 'segmentation' with fwhm > 0 and no background_box; got method {method!r}, "
               f"fwhm {fwhm!r}, background_box {background_box!r}")
        raise InputError(msg)
    det = read_image(detection_path, tile=tile)
    if det.sci.shape != image.sci.shape:
        msg = f"{detection_path}: shape {det.sci.shape} differs from {image.path}'s {image.sci.shape}; expected a detection image of the same grid"
        raise InputError(msg)
    mask = None
    for im in (image, det):
        if im.wht is not None:
            mask = (im.wht <= 0) if mask is None else (mask | (im.wht <= 0))
        elif _zero_padded(im.sci, im.path):
            mask = (im.sci == 0) if mask is None else (mask | (im.sci == 0))
    scale, unit = image.flux_scale
    import dask.array as da  # noqa: PLC0415

    skies = []
    for im in (det, image):  # a drizzle mosaic's sky is left in it (see _leftover_sky)
        if skies and Path(im.path).resolve() == Path(det.path).resolve():
            skies.append(skies[0])  # the same file found and measured: its sky is measured once
            continue
        im_good = da.isfinite(im.sci) if mask is None else da.isfinite(im.sci) & ~mask
        skies.append(0.0 if im.err is None else _leftover_sky(im.sci, im_good, im.err, im.path))
    table, seg, _ = detect_dual(
        det.sci - skies[0], image.sci - skies[1], threshold=threshold, detection_err=det.err, measurement_err=image.err, mask=mask, fwhm=fwhm,
        n_pixels=n_pixels, deblend=deblend, tile=tile, wcs=image.wcs, radii=tuple(radii), flux_scale=scale, flux_unit=unit,
    )
    table.meta.update(image=str(image.path), detection_image=str(detection_path), method=method, threshold_sigma=threshold,
                      threshold_unit="measured noise of the smoothed detection image", band=image.band)
    _flux_errors(table, image, flux_errors, kron_params=DUAL_KRON_PARAMS)
    write_catalog(table, out, overwrite=overwrite)
    if regions is not None:
        scale_arcsec = None if image.pixel_area_sr is None else float(np.sqrt(image.pixel_area_sr) * 206264.806)
        write_catalog(table, regions, overwrite=overwrite, pixel_scale_arcsec=scale_arcsec)
    if segmentation is not None:
        write_segmentation_fits(seg.data, segmentation, wcs=image.wcs, overwrite=overwrite)
    if store is not None:
        field = field or Path(image.path).name.split(".")[0]
        write_segmentation_store(store, field, image.band, seg.data, wcs=image.wcs, overwrite=overwrite)
    log.info("detect: %d sources (found on %s, measured on %s) -> %s", len(table), detection_path, image.path, out)
    return table
