"""Flatten the background of exposures before coaddition (seed 000 sec. 2.2): gradients and ICL out, the sky level kept.

UPDC's update is multiplicative: it needs data that stay positive where the model is, so the
exposures keep their sky. What this step takes out is the *structure* of the background -- the
intracluster light, scattered-light gradients, a sky that varies across the detector -- by
subtracting a sigma-clipped mesh background (photutils ``Background2D`` on the exposure, one
task per exposure: an exposure fits in memory; :mod:`mosaic.image.background` is the tiled
version for mosaics), or the three-step ICL estimate, and adding back its median, so every
exposure keeps a flat pedestal at its own sky level. The sky is removed from
the products afterwards (``updc(background="median")``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import dask
import numpy as np

from mosaic.prep import check_mesh, exposure_arrays, output_paths, read_inputs, write_cleaned
from mosaic.progress import compute
from mosaic.registry import algorithm

__all__ = ["flatten_background", "flat_background_model"]

log = logging.getLogger(__name__)


def _mesh_background(data, mask, *, box_size: int, filter_size: int) -> np.ndarray:
    from astropy.stats import SigmaClip  # noqa: PLC0415
    from photutils.background import Background2D, MedianBackground  # noqa: PLC0415

    bkg = Background2D(
        data, box_size, filter_size=filter_size, mask=mask, sigma_clip=SigmaClip(sigma=3.0, maxiters=10),
        bkg_estimator=MedianBackground(),
    )
    return np.asarray(bkg.background, dtype=np.float64), np.asarray(bkg.background_rms, dtype=np.float64)


def flat_background_model(sci, good, *, box_size: int = 64, filter_size: int = 3, icl: bool = False) -> tuple[np.ndarray, float]:
    """The background structure of one exposure: ``(map - its median, median)``.

    ``map`` is the sigma-clipped mesh background of the good pixels (photutils ``Background2D``,
    median estimator); with ``icl`` the three steps of seed 000 sec. 2.2: that background, then
    the sources detected above it (1.5 sigma, 5 pixels, on the image smoothed by a 2-pixel
    Gaussian) and dilated by 3 pixels, then the background again with them masked. What is
    returned is what to subtract to flatten the background, and the level it keeps.
    """
    good = np.asarray(good, dtype=bool)
    data = np.where(good, np.asarray(sci, dtype=np.float64), 0.0)
    mask = ~good
    bkg, rms = _mesh_background(data, mask, box_size=box_size, filter_size=filter_size)
    if icl:
        from astropy.convolution import Gaussian2DKernel, convolve  # noqa: PLC0415
        from photutils.segmentation import detect_sources  # noqa: PLC0415
        from scipy.ndimage import binary_dilation  # noqa: PLC0415

        smoothed = convolve(np.where(good, data - bkg, np.nan), Gaussian2DKernel(2.0), boundary="extend", nan_treatment="interpolate")
        seg = detect_sources(np.nan_to_num(smoothed), 1.5 * rms, n_pixels=5, mask=mask)
        if seg is not None:
            mask = mask | binary_dilation(seg.data > 0, iterations=3)
        bkg, _ = _mesh_background(data, mask, box_size=box_size, filter_size=filter_size)
    level = float(np.median(bkg[good]))
    return bkg - level, level


def _flatten_one(src, dst, sci, err, dq, var_poisson, var_rnoise, var_flat, good, *, box_size, filter_size, icl):
    structure, level = flat_background_model(sci, good, box_size=box_size, filter_size=filter_size, icl=icl)
    sci = np.asarray(sci, dtype=np.float64)
    flat = np.where(np.isfinite(sci), sci - structure, np.nan).astype(np.float32)
    arrays = {
        "sci": flat, "err": np.asarray(err), "dq": np.asarray(dq), "var_poisson": np.asarray(var_poisson),
        "var_rnoise": np.asarray(var_rnoise), "var_flat": np.asarray(var_flat),
    }
    write_cleaned(src, dst, arrays, status_key="S_BKDSUB")
    good = np.asarray(good)
    return level, float(np.nanstd(structure[good])) if good.any() else 0.0


@algorithm("preprocessing")
def flatten_background(
    paths,
    outdir,
    *,
    box_size: int = 64,
    filter_size: int = 3,
    icl: bool = False,
    bad_bits=None,
    overwrite: bool = False,
    client=None,
) -> list[Path]:
    """Subtract the background structure of cal exposures, keeping their sky level; write ``_bkg.fits`` files.

    Parameters
    ----------
    paths : list of path-like
        ``_cal.fits`` (or ``_crf.fits``, ``_1fc.fits``) exposures.
    outdir : path-like
        Directory of the flattened files (made if missing): ``<name>_bkg.fits``.
    box_size : int
        Mesh size in detector pixels (larger than the sources, smaller than the structure).
    filter_size : int
        Median filter of the mesh (odd).
    icl : bool
        Use the three-step ICL estimate (initial background, detection, masked final background)
        instead of one masked mesh background.
    bad_bits : int or str, optional
        DQ bits of pixels left out (default DO_NOT_USE + NON_SCIENCE).
    overwrite : bool
        Replace existing output files.
    client : distributed.Client, optional
        Compute on this cluster (default: the current client, or threads here).

    Returns
    -------
    list of Path
        The written files, in the order of ``paths``.
    """
    check_mesh(box_size)
    paths, _, exposures = read_inputs(paths, bad_bits)
    check_mesh(box_size, (exposures.sizes["y"], exposures.sizes["x"]))
    targets = output_paths(paths, outdir, "_bkg", overwrite=overwrite)
    options = {"box_size": int(box_size), "filter_size": int(filter_size), "icl": bool(icl)}
    jobs = [
        dask.delayed(_flatten_one, pure=True)(str(src), str(dst), *exposure_arrays(exposures, k), **options)
        for k, (src, dst) in enumerate(zip(paths, targets, strict=True))
    ]
    log.info("background: %d exposures -> %s (box %d%s)", len(paths), outdir, box_size, ", ICL" if icl else "")
    found = compute(*jobs, description="background", client=client)
    for dst, (level, rms) in zip(targets, found, strict=True):
        log.info("background: %s: structure rms %.3g MJy/sr removed, sky level %.4g kept", dst.name, rms, level)
    return targets
