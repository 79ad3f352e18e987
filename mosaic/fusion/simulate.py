"""A fusion test scene with truth: NIRCam images and a NIRSpec IFU cube of a known hyperspectral cube.

The truth cube is a sum of spatial maps times spectra on the fine (NIRCam, 0.1"/d) grid:

- a Titan-like resolved body: a limb-darkened disk whose continuum is cut by broad methane
  absorption bands, with a bright high-altitude "cloud" region that reflects inside the bands
  (a different spectrum in one region);
- a protoplanetary-disk-like object: an inclined disk of scattered starlight (a red continuum)
  with a dark mid-plane lane, and a narrow bipolar jet that emits only lines (H2 1-0 S(1), S(2),
  S(3) and Br gamma);
- a compact star with a blue continuum and Pa alpha emission;
- a nebular background with thin (0.02-0.03") filaments, continuum plus H2 and Br gamma lines.

NIRCam images are ``NIRCam(X)`` (top-hat throughputs of :mod:`mosaic.fusion.calibrate`,
monochromatic JWST-like PSFs at each IFU wavelength, :func:`mosaic.fusion.prepare.psf_cubes`)
and the IFU cube is ``NIRSpec(X)`` (the same diffraction PSF, widened by the spaxel's ``d x d``
area and a Gaussian for the slicer, then sampled every ``d`` pixels), each with Gaussian noise. The scene is periodic (the forward models are), so sources keep away from the edges.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mosaic.fusion.calibrate import throughput_matrix
from mosaic.fusion.operators import FusionOperators
from mosaic.fusion.prepare import psf_cubes

__all__ = ["FusionScene", "simulate_scene", "scene_psfs", "scene_wcs", "write_scene", "LINES_UM"]

#: emission lines in the scene (microns)
LINES_UM = {"Pa_alpha": 1.8756, "H2_S3": 1.9576, "H2_S2": 2.0338, "H2_S1": 2.1218, "Br_gamma": 2.1661}
#: the IFU spaxel (arcsec)
SPAXEL_ARCSEC = 0.1


@dataclass
class FusionScene:
    """Simulated data with their truth; ``ops`` are the forward models that made them."""

    truth: np.ndarray  # (n_wave, ny, nx), fine grid
    images: np.ndarray  # (n_filter, ny, nx)
    cube: np.ndarray  # (n_wave, ny / d, nx / d)
    wavelengths: np.ndarray  # microns
    filters: tuple
    ops: FusionOperators
    sigma_images: float
    sigma_cube: float


def _gauss(x, mu, sigma):
    return np.exp(-0.5 * ((x - mu) / sigma) ** 2)


def _spectra(w):
    """Unit-free spectra of the scene's components on wavelengths ``w`` (microns)."""
    dw = float(np.median(np.diff(w)))
    line = max(1.5 * dw, 0.002)
    methane = 1 - 0.85 * _gauss(w, 1.72, 0.05) - 0.6 * _gauss(w, 2.32, 0.08) - 0.35 * _gauss(w, 1.80, 0.03)
    titan = 0.8 * methane * (w / 2.0) ** -1
    cloud = 0.5 * (1 - 0.3 * _gauss(w, 1.72, 0.05) - 0.2 * _gauss(w, 2.32, 0.08)) * (w / 2.0) ** -0.5
    disk = 0.6 * (w / 2.0) ** 2.5
    jet = sum(a * _gauss(w, LINES_UM[n], line) for n, a in [("H2_S1", 3.0), ("H2_S2", 1.2), ("H2_S3", 2.0), ("Br_gamma", 0.8)])
    star = 1.0 * (w / 2.0) ** -2 + 2.5 * _gauss(w, LINES_UM["Pa_alpha"], line)
    ridge = 0.25 * (w / 2.0) ** 1.5 + sum(a * _gauss(w, LINES_UM[n], line) for n, a in [("H2_S1", 0.8), ("H2_S3", 0.5), ("Br_gamma", 0.3)])
    return {"titan": titan, "cloud": cloud, "disk": disk, "jet": jet, "star": star, "ridge": ridge}


def _maps(shape, pix_arcsec):
    """Spatial maps of the components on the fine grid (surface brightness, peak about 1)."""
    ny, nx = shape
    yy, xx = np.mgrid[:ny, :nx].astype(np.float64)
    # Titan-like: radius 0.35", centred in the left half
    cy, cx, r = 0.5 * ny, 0.3 * nx, 0.35 / pix_arcsec
    rho = np.hypot(yy - cy, xx - cx) / r
    disk = np.clip(1 - rho**2, 0, None)
    titan = np.sqrt(disk)
    cloud = titan * _gauss(np.hypot(yy - (cy + 0.45 * r), xx - (cx - 0.2 * r)), 0, 0.22 * r)
    # disk + jet, in the right half, inclined by 30 degrees
    cy, cx = 0.45 * ny, 0.72 * nx
    t = np.deg2rad(30.0)
    u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
    v = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
    a = 0.3 / pix_arcsec
    ppd = np.exp(-(np.hypot(u / a, v / (0.35 * a)) ** 2)) * (1 - 0.85 * _gauss(v, 0, 0.06 * a))
    jet = _gauss(u, 0, 0.04 / pix_arcsec) * (_gauss(v, 0.6 * a, 0.25 * a) + 0.6 * _gauss(v, -0.7 * a, 0.2 * a))
    # a compact star (sigma 0.02") and a nebular ridge with thin filaments across the field
    star = 3.0 * _gauss(np.hypot(yy - 0.82 * ny, xx - 0.5 * nx), 0, 0.02 / pix_arcsec)
    s = (yy - 0.15 * ny) + 0.25 * (xx - 0.5 * nx) + 0.04 * ny * np.sin(2 * np.pi * xx / nx)
    filaments = _gauss(s, 0, 0.03 / pix_arcsec) + 0.6 * _gauss(s, 0.08 * ny, 0.02 / pix_arcsec)
    ridge = 0.2 * (1 + np.cos(2 * np.pi * yy / ny)) / 2 + filaments
    return {"titan": titan, "cloud": cloud, "disk": ppd, "jet": jet, "star": star, "ridge": ridge}


def scene_psfs(wavelengths, *, factor: int, size: int = 15):
    """NIRCam and NIRSpec PSF cubes of side ``size + 2 factor`` (odd) on the fine grid (``0.1 / factor`` arcsec).

    :func:`mosaic.fusion.prepare.psf_cubes` computed at every wavelength (no interpolation).
    """
    side = (size + 2 * factor) | 1
    return psf_cubes(wavelengths, factor=factor, spaxel_arcsec=SPAXEL_ARCSEC, size=side, n_samples=len(wavelengths))


def simulate_scene(
    *,
    coarse_shape=(30, 30),
    factor: int = 3,
    n_wave: int = 120,
    wavelength_range=(1.70, 2.25),
    filters=("F182M", "F187N", "F200W", "F210M", "F212N"),
    snr_images: float = 200.0,
    snr_cube: float = 50.0,
    psf_size: int = 15,
    psfs=None,
    seed: int = 0,
) -> FusionScene:
    """Simulate the scene, its NIRCam images and IFU cube, with Gaussian noise.

    ``snr_images`` and ``snr_cube`` are the peak of the noiseless data over the noise sigma
    (the cube's peak taken over all channels). ``psfs``, the pair :func:`scene_psfs` returns
    for these wavelengths, saves computing them again.
    """
    rng = np.random.default_rng(seed)
    wavelengths = np.linspace(*wavelength_range, n_wave)
    shape = (coarse_shape[0] * factor, coarse_shape[1] * factor)
    maps, spectra = _maps(shape, SPAXEL_ARCSEC / factor), _spectra(wavelengths)
    truth = sum(np.multiply.outer(spectra[n], maps[n]) for n in maps)
    psf_m, psf_h = scene_psfs(wavelengths, factor=factor, size=psf_size) if psfs is None else psfs
    ops = FusionOperators(
        psf_m=psf_m, psf_h=psf_h, throughput=throughput_matrix(filters, wavelengths), factor=factor, coarse_shape=coarse_shape
    )
    images, cube = ops.nircam(truth), ops.nirspec(truth)
    sigma_m, sigma_h = images.max() / snr_images, cube.max() / snr_cube
    images = images + rng.normal(0.0, sigma_m, images.shape)
    cube = cube + rng.normal(0.0, sigma_h, cube.shape)
    return FusionScene(truth, images, cube, wavelengths, tuple(filters), ops, float(sigma_m), float(sigma_h))


def scene_wcs(coarse_shape, wavelengths, *, ra=83.8187, dec=-5.4194):
    """A north-up 3-D WCS for the IFU cube of a scene: 0.1" spaxels, linear wavelengths in microns."""
    from astropy.wcs import WCS  # noqa: PLC0415

    w = WCS(naxis=3)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN", "WAVE"]
    w.wcs.cunit = ["deg", "deg", "um"]
    w.wcs.crpix = [coarse_shape[1] / 2 + 0.5, coarse_shape[0] / 2 + 0.5, 1.0]
    w.wcs.crval = [ra, dec, float(wavelengths[0])]
    w.wcs.cdelt = [-SPAXEL_ARCSEC / 3600, SPAXEL_ARCSEC / 3600, float(np.mean(np.diff(wavelengths)))]
    return w


def write_scene(scene: FusionScene, out_dir) -> dict:
    """Write a scene as FITS: ``ifu_s3d.fits`` (SCI cube), one ``nircam_<filter>.fits`` per filter, ``truth.fits``.

    The images are on the fine grid (0.1"/d, aligned with the cube); returns the paths by name.
    """
    from pathlib import Path  # noqa: PLC0415

    from astropy.io import fits  # noqa: PLC0415

    from mosaic.fusion.prepare import fine_wcs  # noqa: PLC0415

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    wcs3 = scene_wcs(scene.cube.shape[1:], scene.wavelengths)
    fine = fine_wcs(wcs3, scene.ops.factor)
    paths = {"cube": out / "ifu_s3d.fits", "truth": out / "truth.fits"}
    hdr = wcs3.to_header()
    hdr["BUNIT"] = "MJy/sr"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(scene.cube.astype(np.float32), header=hdr, name="SCI")]).writeto(paths["cube"], overwrite=True)
    for name, image in zip(scene.filters, scene.images, strict=True):
        h = fine.to_header()
        h["FILTER"], h["BUNIT"] = name, "MJy/sr"
        paths[name] = out / f"nircam_{name.lower()}.fits"
        fits.HDUList([fits.PrimaryHDU(header=fits.Header({"FILTER": name})), fits.ImageHDU(image.astype(np.float32), header=h, name="SCI")]).writeto(
            paths[name], overwrite=True
        )
    th = fine.to_header()
    th["WCSAXES"] = 3
    th["CTYPE3"], th["CUNIT3"], th["CRPIX3"], th["CRVAL3"], th["CDELT3"] = "WAVE", "um", 1.0, float(scene.wavelengths[0]), float(np.mean(np.diff(scene.wavelengths)))
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(scene.truth.astype(np.float32), header=th, name="SCI")]).writeto(paths["truth"], overwrite=True)
    return paths
