"""Small synthetic mosaics (Gaussian galaxies and stars on sky with noise, a TAN WCS) for restoration tests."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

pytest.importorskip("onnxruntime", reason="mosaic.restore inference needs onnxruntime (the 'restore' extra)")

from mosaic.restore.infer import RestorationModel  # noqa: E402


def mosaic_image(shape, *, seed: int = 0, nan_corner: bool = True) -> np.ndarray:
    """Sky 0.2 MJy/sr, noise 0.01, 25 blurred Gaussian sources of widely spread fluxes."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    img = np.full(shape, 0.2)
    for _ in range(25):
        y, x = rng.uniform(0, ny), rng.uniform(0, nx)
        s = rng.uniform(1.5, 5.0)
        img += 10 ** rng.uniform(-1.5, 1.5) * np.exp(-0.5 * ((yy - y) ** 2 + (xx - x) ** 2) / s**2)
    img += rng.normal(0, 0.01, shape)
    if nan_corner:
        img[: ny // 5, : nx // 4] = np.nan
    return img.astype(np.float32)


def tan_wcs(shape, scale_arcsec: float) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [34.46, -5.24]
    w.wcs.crpix = [shape[1] / 2, shape[0] / 2]
    w.wcs.cd = np.array([[-scale_arcsec / 3600, 0], [0, scale_arcsec / 3600]])
    return w


def write_mosaic(path, data, *, band="F200W", scale_arcsec=None, wcs=True):
    """An _i2d-like file: primary with FILTER, SCI with WCS and BUNIT."""
    scale = scale_arcsec if scale_arcsec is not None else shipped().pixel_scale_arcsec
    primary = fits.PrimaryHDU()
    if band:
        primary.header["FILTER"] = band
    header = tan_wcs(data.shape, scale).to_header() if wcs else fits.Header()
    header["BUNIT"] = "MJy/sr"
    fits.HDUList([primary, fits.ImageHDU(data, header=header, name="SCI")]).writeto(path)
    return path


_SHIPPED = []


def shipped() -> RestorationModel:
    if not _SHIPPED:
        _SHIPPED.append(RestorationModel())
    return _SHIPPED[0]


@pytest.fixture(scope="session")
def model() -> RestorationModel:
    return shipped()
