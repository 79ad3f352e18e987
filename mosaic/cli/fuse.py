"""``mosaic fuse``: NIRCam images + a NIRSpec IFU cube -> a hyperspectral cube at NIRCam resolution (seed 003).

    mosaic fuse --images F182M.fits F210M.fits ... --cube IFU_s3d.fits --out FUSED.fits
                [--filters F182M F210M ...] [--factor 3] [--components 5] [--gamma 1] [--mu 1e-3]
                [--solver exact|cg] [--tile N] [--halo N] [--boundary periodic|reflect]
                [--align wcs|phase] [--no-resample] [--no-cross-calibration] [--psf-size 21]
                [--previews] [--overwrite]
"""

from __future__ import annotations

import argparse
import logging

from mosaic.cli._common import positive_float, positive_int, refuse_existing

__all__ = ["add_parser", "run"]

log = logging.getLogger(__name__)

HELP = "fuse NIRCam images with a NIRSpec IFU cube into a cube at NIRCam resolution (seed 003)"


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``fuse`` subcommand on ``subparsers``; returns its parser."""
    p = subparsers.add_parser(
        "fuse",
        help=HELP,
        description=(
            "Co-register NIRCam images with an IFU cube (the cube's grid refined FACTOR times; images "
            "resampled bicubically by WCS, or also aligned by phase cross-correlation for moving targets), "
            "cross-calibrate the filter throughputs against the cube (seed 003, eqs. 6-7), and solve objective (9) "
            "-- PCA subspace of the cube, Sobolev regulariser -- exactly in Fourier (or by conjugate gradients). "
            "Throughputs are top-hat approximations of the JDox half-power bands (F182M, F187N, F200W, F210M, F212N); "
            "PSFs are mosaic's JWST-like diffraction model at the cube's wavelengths."
        ),
    )
    p.add_argument("--images", nargs="+", required=True, metavar="IMAGE.fits", help="NIRCam images (SCI or first image HDU), one per filter")
    p.add_argument("--cube", required=True, metavar="IFU.fits", help="IFU cube with a spectral WCS (an _s3d.fits)")
    p.add_argument("--out", required=True, metavar="FUSED.fits", help="output cube")
    p.add_argument("--filters", nargs="+", metavar="FILTER", help="filter of each image (default: the FILTER keyword)")
    p.add_argument("--factor", type=positive_int, default=3, help="fine pixels per IFU spaxel and axis (default 3: 0.033\" for 0.1\" spaxels)")
    p.add_argument("--components", type=positive_int, default=5, help="principal spectra kept, k (default 5)")
    p.add_argument("--gamma", type=positive_float, default=1.0, help="weight of the IFU term (default 1)")
    p.add_argument("--mu", type=float, default=1e-3, help="weight of the Sobolev regulariser (default 1e-3)")
    p.add_argument("--solver", choices=("exact", "cg"), default="exact", help="exact Fourier blocks or conjugate gradients (default exact)")
    p.add_argument("--cg-iterations", type=positive_int, default=1000, help="CG: most iterations (default 1000)")
    p.add_argument("--tile", type=positive_int, help="solve in tiles of this many spaxels (exact solver)")
    p.add_argument("--halo", type=int, help="spaxels solved around each tile (default from the PSFs)")
    p.add_argument("--boundary", choices=("periodic", "reflect"), default="reflect", help="the field beyond its edges (default reflect)")
    p.add_argument("--align", choices=("wcs", "phase"), default="wcs", help="wcs, or also phase cross-correlation (moving targets)")
    p.add_argument("--no-resample", action="store_true", help="images are already on the fine grid: do not resample them")
    p.add_argument("--no-cross-calibration", action="store_true", help="keep the throughputs as tabulated")
    p.add_argument("--psf-size", type=positive_int, default=21, help="PSF side in fine pixels, odd (default 21)")
    p.add_argument("--previews", action="store_true", help="also write PNG previews of three planes beside the output")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run)
    return p


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
        name = filters[i] if filters else image.header.get("FILTER", image.primary.get("FILTER"))
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


def run(args) -> int:
    import numpy as np  # noqa: PLC0415

    from mosaic.exceptions import InputError  # noqa: PLC0415
    from mosaic.fusion import calibrate, prepare  # noqa: PLC0415
    from mosaic.fusion.fuse import fuse  # noqa: PLC0415
    from mosaic.fusion.operators import FusionOperators  # noqa: PLC0415
    from mosaic.fusion.products import read_cube, write_fused  # noqa: PLC0415

    out = refuse_existing(args.out, args.overwrite)
    if not args.mu >= 0:
        raise InputError(f"--mu must be 0 or more; got {args.mu}")
    d = args.factor
    cube = read_cube(args.cube)
    images = _read_images(args.images, args.filters)
    names = [n for _, n, _, _ in images]
    throughput = calibrate.throughput_matrix(names, cube.wavelengths)
    coarse = cube.data.shape[1:]
    fine = prepare.fine_wcs(cube.celestial, d)
    fine_shape = (d * coarse[0], d * coarse[1])
    planes = []
    for path, name, data, wcs in images:
        _check_ratio(path, prepare.pixel_ratio(wcs, cube.celestial), d, not args.no_resample)
        if args.no_resample:
            if data.shape != fine_shape:
                raise InputError(f"{path}: shape {data.shape} is not the fine grid {fine_shape} of the cube; drop --no-resample")
            planes.append(data)
        else:
            planes.append(prepare.resample_image(data, wcs, fine, fine_shape))
    planes = np.array(planes)
    if args.align == "phase":
        from mosaic.fusion.metrics import upsampled_ifu  # noqa: PLC0415

        reference = calibrate.band_images(upsampled_ifu(np.nan_to_num(cube.data), d), throughput)
        for f in range(len(planes)):
            planes[f], shift = prepare.phase_align(planes[f], reference[f])
            log.info("%s: shifted by (%.2f, %.2f) fine pixels", names[f], *shift)
    y0, y1, x0, x1 = prepare.common_field(cube.data, planes, d, cube_name=str(args.cube), image_names=list(args.images))
    data_cube = cube.data[:, y0:y1, x0:x1]
    planes = planes[:, d * y0 : d * y1, d * x0 : d * x1]
    log.info("fusion field: spaxels [%d:%d, %d:%d] of %s", y0, y1, x0, x1, coarse)
    factors = np.ones(len(names))
    if not args.no_cross_calibration:
        throughput, factors = calibrate.cross_calibrate(planes, data_cube, throughput)
        log.info("cross-calibration factors: %s", ", ".join(f"{n} {c:.3f}" for n, c in zip(names, factors, strict=True)))
    scale = float(np.mean(np.abs(cube.celestial.wcs.get_cdelt()[:2] if not cube.celestial.wcs.has_cd() else np.sqrt(np.abs(np.linalg.det(cube.celestial.wcs.cd))))) * 3600)
    psf_m, psf_h = prepare.psf_cubes(cube.wavelengths, factor=d, spaxel_arcsec=scale, size=min(args.psf_size, 2 * (min(planes.shape[1:]) // 2) - 1))
    ops = FusionOperators(psf_m=psf_m, psf_h=psf_h, throughput=throughput, factor=d, coarse_shape=data_cube.shape[1:])
    result = fuse(
        planes,
        data_cube,
        ops,
        n_components=args.components,
        gamma=args.gamma,
        mu=args.mu,
        solver=args.solver,
        tile=args.tile,
        halo=args.halo,
        boundary=args.boundary,
        cg_iterations=args.cg_iterations,
    )
    field_wcs = fine.deepcopy()
    field_wcs.wcs.crpix = field_wcs.wcs.crpix - np.array([d * x0, d * y0])
    extra = {"FUSEK": (args.components, "principal spectra kept"), "FUSEGAM": (args.gamma, "gamma, IFU term weight"),
             "FUSEMU": (args.mu, "mu, Sobolev weight"), "FUSESOLV": (args.solver, "solver"), "FUSEFAC": (d, "fine pixels per spaxel"),
             "FUSEPCA": (round(100 * result.subspace.explained, 3), "% of IFU variance kept by the subspace")}
    for n, c in zip(names, factors, strict=True):
        extra[f"XCAL{n[1:4]}"] = (float(c), f"cross-calibration factor of {n}")
    write_fused(out, result.cube, field_wcs, cube.wavelengths, basis=result.subspace.basis, mean=result.subspace.mean,
                header_extra=extra, bunit=cube.header.get("BUNIT"))
    log.info("wrote %s: %d wavelengths x %d x %d", out, len(cube.wavelengths), *planes.shape[1:])
    if args.previews:
        _previews(out, result.cube, cube.wavelengths)
    return 0


def _previews(out, cube, wavelengths):
    import numpy as np  # noqa: PLC0415

    from mosaic.viz.preview import write_png  # noqa: PLC0415

    for i in (len(wavelengths) // 5, len(wavelengths) // 2, 4 * len(wavelengths) // 5):
        path = out.with_name(f"{out.stem}_{wavelengths[i]:.4f}um.png")
        write_png(path, np.asarray(cube[i]))
        log.info("wrote %s", path)
