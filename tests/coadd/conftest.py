"""Small dithered, SIP-distorted NIRCam exposures written as _cal.fits files, and a reference drizzle.

Geometry is real: the NRCB5 SIP header from ``mosaic/data`` cropped to a small detector taken
from near a corner of the 2048² array (where the distortion is strongest), dithered by shifting
CRVAL and rolled by rotating the CD matrix. Pixel values are stars on a sky pedestal with seeded
noise, in MJy/sr, with per-pixel variances.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from drizzle.resample import Drizzle
from drizzle.utils import calc_pixmap, estimate_pixel_scale_ratio

from mosaic.io.cal import DQ, write_cal
from mosaic.ops.drizzle import weight_map

SHAPE = (200, 220)
#: detector pixel (x, y) where the cut-out starts in the 2048² NRCB5 array
CORNER = (1600, 1700)
#: dithers: (dx, dy) arcsec, roll deg
DITHERS = [(0.0, 0.0, 0.0), (1.3, 0.7, 0.4), (-0.9, 1.6, -0.6), (2.1, -1.2, 1.1), (0.4, -2.0, -1.3)]


def sip_header() -> fits.Header:
    text = resources.files("mosaic").joinpath("data/nrcb5_sip_wcs.hdr").read_text()
    return fits.Header.fromstring(text, sep="\n")


def exposure_wcs(dx_arcsec=0.0, dy_arcsec=0.0, roll_deg=0.0, *, shape=SHAPE, corner=CORNER, offset_deg=(0.0, 0.0)) -> WCS:
    """A small detector's SIP WCS, dithered by (dx, dy) arcsec and rolled by ``roll_deg``."""
    h = sip_header()
    h["NAXIS1"], h["NAXIS2"] = shape[1], shape[0]
    h["WCSNAX1"], h["WCSNAX2"] = shape[1], shape[0]
    h["CRPIX1"] -= corner[0]
    h["CRPIX2"] -= corner[1]
    dec = h["CRVAL2"]
    h["CRVAL1"] += dx_arcsec / 3600.0 / np.cos(np.deg2rad(dec)) + offset_deg[0]
    h["CRVAL2"] += dy_arcsec / 3600.0 + offset_deg[1]
    t = np.deg2rad(roll_deg)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    cd = rot @ np.array([[h["CD1_1"], h["CD1_2"]], [h["CD2_1"], h["CD2_2"]]])
    h["CD1_1"], h["CD1_2"], h["CD2_1"], h["CD2_2"] = cd[0, 0], cd[0, 1], cd[1, 0], cd[1, 1]
    w = WCS(h)
    w.pixel_shape = (shape[1], shape[0])
    return w


def pixel_areas_sr(wcs: WCS, shape) -> np.ndarray:
    """True solid angle of every detector pixel, from its four distorted corners on the sphere."""
    ny, nx = shape
    yc, xc = np.mgrid[0 : ny + 1, 0 : nx + 1].astype(float) - 0.5
    ra, dec = np.deg2rad(wcs.all_pix2world(xc, yc, 0))
    v = np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)
    # a pixel is tiny: the planar area spanned by its diagonals is its solid angle to ~1e-13
    d1 = v[1:, 1:] - v[:-1, :-1]
    d2 = v[1:, :-1] - v[:-1, 1:]
    return 0.5 * np.linalg.norm(np.cross(d1, d2), axis=-1)


def star_image(wcs: WCS, shape, stars, *, sigma_arcsec=0.08) -> np.ndarray:
    """Surface brightness (MJy/sr) of Gaussian stars given as (ra, dec, flux in MJy).

    Each star is integrated over pixels (by 5 x 5 sub-sampling) and divided by the pixel's true
    area, so that ``sum(sci * area) == flux`` for a star well inside the detector.
    """
    ny, nx = shape
    sub = 5
    off = (np.arange(sub) + 0.5) / sub - 0.5
    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
    xs = (xx[..., None, None] + off[None, None, None, :]).reshape(ny, nx, -1)
    ys = (yy[..., None, None] + off[None, None, :, None]).reshape(ny, nx, -1)
    ra, dec = wcs.all_pix2world(xs.ravel(), ys.ravel(), 0)
    ra, dec = ra.reshape(xs.shape), dec.reshape(xs.shape)
    flux_px = np.zeros(shape)
    s = np.deg2rad(sigma_arcsec / 3600.0)
    for ra0, dec0, f in stars:
        dx = np.deg2rad((ra - ra0) * np.cos(np.deg2rad(dec0)))
        dy = np.deg2rad(dec - dec0)
        g = np.exp(-0.5 * (dx * dx + dy * dy) / s**2) / (2 * np.pi * s * s)
        flux_px += f * g.mean(axis=-1)
    return flux_px


@dataclass
class Field:
    paths: list
    wcs: list
    truth_stars: list
    sky: float
    shape: tuple


def make_field(
    folder: Path,
    *,
    dithers=DITHERS,
    shape=SHAPE,
    band="F200W",
    seed=0,
    noise=True,
    sky=0.3,
    stars=None,
    nan_box=None,
    flag_box=None,
    offset_deg=(0.0, 0.0),
    names=None,
) -> Field:
    """Write one cal file per dither into ``folder``; returns their paths and WCSs."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    w0 = exposure_wcs(shape=shape)
    if stars is None:
        # stars placed on the sky at fixed detector positions of the first exposure
        pos = [(60.3, 70.7, 5e-11), (140.6, 120.2, 2e-11), (100.1, 40.4, 1e-11)]
        stars = []
        for x, y, f in pos:
            ra, dec = w0.all_pix2world(x * shape[1] / SHAPE[1], y * shape[0] / SHAPE[0], 0)
            stars.append((float(ra), float(dec), f))
    paths, wcss = [], []
    for k, (dx, dy, roll) in enumerate(dithers):
        w = exposure_wcs(dx, dy, roll, shape=shape, offset_deg=offset_deg)
        sci = star_image(w, shape, stars) + sky
        var_rnoise = np.full(shape, (0.01 * (1 + 0.3 * k)) ** 2, dtype=np.float32)
        var_poisson = (np.abs(sci) * 1e-3).astype(np.float32)
        var_flat = (np.abs(sci) * 1e-4) ** 2
        if noise:
            sci = sci + rng.normal(0.0, np.sqrt(var_rnoise + var_poisson))
        dq = np.zeros(shape, dtype=np.uint32)
        if nan_box is not None and k == 0:
            sci[nan_box] = np.nan
        if flag_box is not None and k == 1:
            dq[flag_box] |= DQ["DO_NOT_USE"]
        name = names[k] if names else f"jw01000{k:03d}_nrcb5_cal.fits"
        p = write_cal(
            folder / name,
            sci=sci.astype(np.float32),
            err=np.sqrt(var_rnoise + var_poisson + var_flat).astype(np.float32),
            dq=dq,
            var_poisson=var_poisson,
            var_rnoise=var_rnoise,
            var_flat=var_flat.astype(np.float32),
            wcs=w,
            meta={
                "TELESCOP": "JWST", "INSTRUME": "NIRCAM", "FILTER": band, "DETECTOR": "NRCB5",
                "EFFEXPTM": 100.0 + 10 * k, "PHOTMJSR": 1.0, "PIXAR_SR": 9.3e-14, "BUNIT": "MJy/sr",
            },
            overwrite=True,
        )
        paths.append(p)
        wcss.append(w)
    return Field(paths=paths, wcs=wcss, truth_stars=stars, sky=sky, shape=tuple(shape))


def reference_drizzle(exposures, grid, *, pixfrac=1.0, kernel="square", weight="ivm", variance=True, pixel_scale_ratio=None):
    """One whole-output run of ``drizzle.resample.Drizzle`` over the exposures: the reference."""
    n = exposures.sizes["exposure"]
    d = Drizzle(kernel=kernel, out_shape=grid.shape, begin_ctx_id=0, max_ctx_id=n - 1)
    shape = (exposures.sizes["y"], exposures.sizes["x"])
    for k in range(n):
        w = exposures.attrs["wcs"][k]
        psr = pixel_scale_ratio or estimate_pixel_scale_ratio(w, grid.wcs)
        pixmap = calc_pixmap(w, grid.wcs, shape)
        e = exposures.isel(exposure=k).compute()
        wt = weight_map(e["good"].values, e["var_rnoise"].values, weight=weight, exptime=float(e["exptime"]))
        sci = np.where(wt > 0, e["sci"].values, 0.0).astype(np.float32)
        data2 = [e[v].values for v in ("var_poisson", "var_rnoise", "var_flat")] if variance else None
        d.add_image(
            sci, exptime=1.0, pixmap=pixmap, data2=data2, weight_map=wt, pixfrac=pixfrac,
            iscale=1.0, pixel_scale_ratio=psr, in_units="cps",
        )
    return d


# the helpers as fixtures: test modules get them without importing this file by name
@pytest.fixture(scope="session")
def field_factory():
    """:func:`make_field`: write a dithered set of cal files into a folder."""
    return make_field


@pytest.fixture(scope="session")
def drizzle_reference():
    """:func:`reference_drizzle`: one whole-output run of the drizzle package."""
    return reference_drizzle


@pytest.fixture(scope="session")
def true_pixel_areas():
    """:func:`pixel_areas_sr`: every detector pixel's true solid angle."""
    return pixel_areas_sr


@pytest.fixture(scope="session")
def field(tmp_path_factory):
    """Five dithered, rolled, SIP-distorted exposures with noise; one has NaN and one flagged pixels."""
    return make_field(
        tmp_path_factory.mktemp("field"),
        nan_box=(slice(20, 30), slice(150, 165)),
        flag_box=(slice(100, 108), slice(10, 30)),
    )
