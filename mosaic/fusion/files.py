"""Fusion from files: NIRCam images and an IFU cube on disk -> a fused cube on disk (``mosaic fuse``, the ``fusion`` step).

Co-registration (the images resampled by WCS onto the cube's grid refined ``factor`` times,
optionally aligned by phase cross-correlation), the common field, cross-calibration of the
throughputs, PSF cubes at the cube's wavelengths, the solve (:func:`mosaic.fusion.fuse.fuse`)
and the product (:func:`mosaic.io.cubes.write_fused`).
"""

from __future__ import annotations

import logging
from pathlib import Path

__all__ = ["fuse_files"]

log = logging.getLogger(__name__)


def _read_images(paths, filters):
    from mosaic.exceptions import InputError  # noqa: PLC0415
    from mosaic.io.images import read_fits_image  # noqa: PLC0415

    if filters is not None and len(filters) != len(paths):
        msg = f"--filters: got {len(filters)} filters for {len(paths)} images; give one per image"
        raise InputError(msg)
    out = []
    for i, path in enumerate(paths):
        image = read_fits_image(path, dtype="float64")
        wcs = image.wcs
        if wcs is None:
            msg = f"{path}: no celestial WCS; fusion needs it to place the image on the cube"
            raise InputError(msg)
        name = filters[i] if filters else image.keyword("FILTER")
        if not name:
            msg = f"{path}: no FILTER keyword; name the filters with --filters"
            raise InputError(msg)
        out.append((str(path), str(name).upper(), image.data.compute(), wcs))
    return out


def _check_ratio(path, ratio, factor, resample):
    from mosaic.exceptions import InputError  # noqa: PLC0415

    if resample:
        if abs(ratio - factor) / factor > 0.25:
            log.warning("%s: spaxel / pixel = %.3f, resampled to 1/%d of a spaxel", path, ratio, factor)
        return
    if abs(ratio - round(ratio)) > 1e-3 * ratio or round(ratio) != factor:
        msg = (
            f"{path}: spaxel / pixel ratio is {ratio:.4f}, not the integer --factor {factor}; "
            "drop --no-resample so the image is resampled to 1/FACTOR of a spaxel"
        )
        raise InputError(msg)


def fuse_files(
    images,
    cube,
    out,
    *,
    filters=None,
    factor: int = 3,
    components: int = 5,
    gamma: float = 1.0,
    mu: float = 1e-3,
    solver: str = "exact",
    cg_iterations: int = 1000,
    tile: int | None = None,
    halo: int | None = None,
    boundary: str = "reflect",
    align: str = "wcs",
    resample: bool = True,
    cross_calibration: bool = True,
    psf_size: int = 21,
    previews: bool = False,
    mean: str = "projected",
) -> Path:
    """Fuse NIRCam image files with an IFU cube file into ``out`` (what ``mosaic fuse`` does).

    Parameters
    ----------
    images : sequence of path-like
        NIRCam images (SCI or the first image HDU), one per filter.
    cube : path-like
        The IFU cube with a spectral WCS.
    out : path-like
        The fused cube (FITS), written under a temporary name and renamed when whole.
    filters : sequence of str, optional
        Filter of each image (default: its FILTER keyword).
    factor, components, gamma, mu, solver, cg_iterations, tile, halo, boundary
        As for :func:`mosaic.fusion.fuse.fuse` (``factor`` fine pixels per spaxel).
    align : {"wcs", "phase"}
        WCS only, or also phase cross-correlation (moving targets).
    resample : bool
        Resample the images by WCS onto the cube's grid refined ``factor`` times.
    cross_calibration : bool
        Scale the throughputs against the cube (seed 003 eqs. 6-7).
    psf_size : int
        PSF side in fine pixels (odd).
    previews : bool
        Also write PNG previews of three planes beside ``out``.
    mean : {"projected", "data"}
        The model's mean spectrum (:func:`mosaic.fusion.objective.pca_subspace`).

    Returns
    -------
    Path
        ``out``.
    """
    import numpy as np  # noqa: PLC0415
    from astropy.wcs.utils import proj_plane_pixel_scales  # noqa: PLC0415

    from mosaic.exceptions import InputError  # noqa: PLC0415
    from mosaic.fusion import calibrate, prepare  # noqa: PLC0415
    from mosaic.fusion.fuse import fuse  # noqa: PLC0415
    from mosaic.fusion.operators import FusionOperators  # noqa: PLC0415
    from mosaic.io.cubes import read_cube, write_fused  # noqa: PLC0415

    out = Path(out)
    if not mu >= 0:
        raise InputError(f"mu must be 0 or more; got {mu}")
    d = factor
    cube_path, image_paths = cube, [str(p) for p in images]
    cube = read_cube(cube_path)
    images = _read_images(image_paths, filters)
    names = [n for _, n, _, _ in images]
    throughput = calibrate.throughput_matrix(names, cube.wavelengths)
    coarse = cube.data.shape[1:]
    fine = prepare.fine_wcs(cube.celestial, d)
    fine_shape = (d * coarse[0], d * coarse[1])
    planes = []
    for path, name, data, wcs in images:
        _check_ratio(path, prepare.pixel_ratio(wcs, cube.celestial), d, not not resample)
        if not resample:
            if data.shape != fine_shape:
                raise InputError(f"{path}: shape {data.shape} is not the fine grid {fine_shape} of the cube; drop --no-resample")
            planes.append(data)
        else:
            planes.append(prepare.resample_image(data, wcs, fine, fine_shape))
    planes = np.array(planes)
    if align == "phase":
        from mosaic.fusion.metrics import upsampled_ifu  # noqa: PLC0415

        reference = calibrate.band_images(upsampled_ifu(np.nan_to_num(cube.data), d), throughput)
        for f in range(len(planes)):
            planes[f], shift = prepare.phase_align(planes[f], reference[f])
            log.info("%s: shifted by (%.2f, %.2f) fine pixels", names[f], *shift)
    y0, y1, x0, x1 = prepare.common_field(cube.data, planes, d, cube_name=str(cube_path), image_names=image_paths)
    data_cube = cube.data[:, y0:y1, x0:x1]
    planes = planes[:, d * y0 : d * y1, d * x0 : d * x1]
    log.info("fusion field: spaxels [%d:%d, %d:%d] of %s", y0, y1, x0, x1, coarse)
    factors = np.ones(len(names))
    if not not cross_calibration:
        throughput, factors = calibrate.cross_calibrate(planes, data_cube, throughput)
        log.info("cross-calibration factors: %s", ", ".join(f"{n} {c:.3f}" for n, c in zip(names, factors, strict=True)))
    # the spaxel's side on the sky, whatever form the header gives its scale in (CD, CDELT, or a
    # PC matrix with CDELT 1, as astropy writes a CD WCS back): get_cdelt() alone read 1 deg there
    scale = float(np.mean(proj_plane_pixel_scales(cube.celestial))) * 3600.0
    psf_m, psf_h = prepare.psf_cubes(cube.wavelengths, factor=d, spaxel_arcsec=scale, size=min(psf_size, 2 * (min(planes.shape[1:]) // 2) - 1))
    ops = FusionOperators(psf_m=psf_m, psf_h=psf_h, throughput=throughput, factor=d, coarse_shape=data_cube.shape[1:])
    result = fuse(
        planes,
        data_cube,
        ops,
        n_components=components,
        gamma=gamma,
        mu=mu,
        solver=solver,
        tile=tile,
        halo=halo,
        boundary=boundary,
        cg_iterations=cg_iterations,
        mean=mean,
    )
    field_wcs = fine.deepcopy()
    field_wcs.wcs.crpix = field_wcs.wcs.crpix - np.array([d * x0, d * y0])
    extra = {"FUSEK": (components, "principal spectra kept"), "FUSEGAM": (gamma, "gamma, IFU term weight"),
             "FUSEMU": (mu, "mu, Sobolev weight"), "FUSESOLV": (solver, "solver"), "FUSEFAC": (d, "fine pixels per spaxel"),
             "FUSEPCA": (round(100 * result.subspace.explained, 3), "% of IFU variance kept by the subspace"),
             "FUSEMRNK": (result.subspace.mean_rank, "rank of the mean's projection (0: none)")}
    for n, c in zip(names, factors, strict=True):
        extra[f"XCAL{n[1:4]}"] = (float(c), f"cross-calibration factor of {n}")
    write_fused(out, result.cube, field_wcs, cube.wavelengths, basis=result.subspace.basis, mean=result.subspace.mean,
                header_extra=extra, bunit=cube.header.get("BUNIT"))
    log.info("wrote %s: %d wavelengths x %d x %d", out, len(cube.wavelengths), *planes.shape[1:])
    if previews:
        _previews(out, cube.wavelengths)
    return out


def _previews(out, wavelengths):
    """PNG previews of three planes, read from the written cube (a tiled cube is not computed again)."""
    import numpy as np  # noqa: PLC0415
    from astropy.io import fits  # noqa: PLC0415

    from mosaic.viz.preview import write_png  # noqa: PLC0415

    with fits.open(out, memmap=True) as hdul:
        sci = hdul["SCI"].data
        for i in (len(wavelengths) // 5, len(wavelengths) // 2, 4 * len(wavelengths) // 5):
            path = out.with_name(f"{out.stem}_{wavelengths[i]:.4f}um.png")
            write_png(path, np.array(sci[i], dtype=np.float64))
            log.info("wrote %s", path)
        del sci
