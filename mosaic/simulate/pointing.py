"""Exposure geometry: real NIRCam SIP distortion, dithers, pointings and small rolls.

The distortion comes from the real NRCB5 header shipped in ``mosaic/data`` (converted from the
pipeline's gwcs). SIP polynomials act on pixel offsets from CRPIX, so a short-wave detector keeps
them and only rescales the CD matrix to 0.031"/px; a detector smaller than 2048² (for tests)
keeps the central part of the distortion.
"""

from __future__ import annotations

from importlib import resources

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

__all__ = [
    "SW_SCALE",
    "LW_SCALE",
    "channel_of",
    "detector_of",
    "nircam_wcs",
    "dither_offsets",
    "reference_header",
    "detector_cutout_wcs",
]

#: nominal NIRCam pixel scales (arcsec / px)
SW_SCALE = 0.031
LW_SCALE = 0.063

_LW_BANDS_MIN_UM = 2.4  # filters redder than this are imaged by the long-wave channel


def reference_header() -> fits.Header:
    """The real NRCB5 SIP header (2048², 0.063"/px)."""
    text = resources.files("mosaic").joinpath("data/nrcb5_sip_wcs.hdr").read_text()
    return fits.Header.fromstring(text, sep="\n")


def channel_of(band: str) -> str:
    """``"SW"`` or ``"LW"`` from a NIRCam filter name like ``F200W`` or ``F444W``."""
    b = band.upper()
    try:
        microns = int(b[1:4]) / 100.0
    except ValueError:
        msg = f"band {band!r} is not a NIRCam filter name; expected e.g. 'F200W' or 'F444W'"
        raise ValueError(msg) from None
    return "LW" if microns > _LW_BANDS_MIN_UM else "SW"


def detector_of(band: str) -> str:
    """A plausible detector name for a band (module B)."""
    return "NRCBLONG" if channel_of(band) == "LW" else "NRCB1"


def nircam_wcs(
    *,
    channel: str = "SW",
    size: int = 2048,
    crval: tuple[float, float] | None = None,
    offset_arcsec: tuple[float, float] = (0.0, 0.0),
    roll_deg: float = 0.0,
    distortion: bool = True,
) -> WCS:
    """A NIRCam detector WCS with the real SIP distortion.

    Parameters
    ----------
    channel : {"SW", "LW"}
        Pixel scale 0.031" or 0.063".
    size : int
        Detector side in pixels (2048 for a real detector).
    crval : (ra, dec), optional
        Pointing before the offset; default the reference header's.
    offset_arcsec : (dx, dy)
        Dither offset along the detector's x and y axes, arcsec.
    roll_deg : float
        Extra rotation of the detector on the sky.
    distortion : bool
        With False, drop the SIP terms (a pure TAN detector, for tests).
    """
    if channel not in ("SW", "LW"):
        msg = f"channel {channel!r} unknown; expected one of ['SW', 'LW']"
        raise ValueError(msg)
    if int(size) != size or size < 8:
        msg = f"detector size {size!r} too small; expected an integer >= 8"
        raise ValueError(msg)
    hdr = reference_header()
    scale = (SW_SCALE if channel == "SW" else LW_SCALE) / LW_SCALE
    for k in ("CD1_1", "CD1_2", "CD2_1", "CD2_2"):
        hdr[k] = hdr[k] * scale
    hdr["NAXIS1"] = hdr["NAXIS2"] = hdr["WCSNAX1"] = hdr["WCSNAX2"] = int(size)
    hdr["CRPIX1"] = hdr["CRPIX2"] = (size + 1) / 2.0
    if crval is not None:
        hdr["CRVAL1"], hdr["CRVAL2"] = float(crval[0]), float(crval[1])
    if not distortion:
        for k in list(hdr.keys()):
            if k[:2] in ("A_", "B_"):
                del hdr[k]
        hdr["CTYPE1"], hdr["CTYPE2"] = "RA---TAN", "DEC--TAN"
    cd = np.array([[hdr["CD1_1"], hdr["CD1_2"]], [hdr["CD2_1"], hdr["CD2_2"]]])
    t = np.deg2rad(roll_deg)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    cd = rot @ cd
    hdr["CD1_1"], hdr["CD1_2"], hdr["CD2_1"], hdr["CD2_2"] = cd.ravel()
    # move the pointing by the offset, measured along the detector axes: the undistorted
    # tangent-plane position of pixel CRPIX + offset becomes the new CRVAL
    px = np.asarray(offset_arcsec, dtype=float) / (SW_SCALE if channel == "SW" else LW_SCALE)
    lin = WCS(naxis=2)
    lin.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    lin.wcs.crval = [hdr["CRVAL1"], hdr["CRVAL2"]]
    lin.wcs.crpix = [hdr["CRPIX1"], hdr["CRPIX2"]]
    lin.wcs.cd = cd
    ra, dec = lin.wcs_pix2world([[hdr["CRPIX1"] + px[0], hdr["CRPIX2"] + px[1]]], 1)[0]
    hdr["CRVAL1"], hdr["CRVAL2"] = float(ra), float(dec)
    hdr["LATPOLE"] = float(dec)
    w = WCS(hdr)
    w.pixel_shape = (int(size), int(size))
    return w


def detector_cutout_wcs(shape: tuple[int, int], *, corner: tuple[float, float] = (150, 1800), roll_deg: float = 0.0) -> WCS:
    """The real NRCB5 SIP WCS of a small ``(ny, nx)`` cut-out starting at detector pixel ``corner``.

    A cut-out away from the detector centre keeps the strong distortion of that region, which
    makes small test exposures honest about SIP. ``roll_deg`` rotates it on the sky.
    """
    h = reference_header()
    h["NAXIS1"], h["NAXIS2"] = shape[1], shape[0]
    h["CRPIX1"] -= corner[0]
    h["CRPIX2"] -= corner[1]
    t = np.deg2rad(roll_deg)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    cd = rot @ np.array([[h["CD1_1"], h["CD1_2"]], [h["CD2_1"], h["CD2_2"]]])
    h["CD1_1"], h["CD1_2"], h["CD2_1"], h["CD2_2"] = cd.ravel()
    w = WCS(h)
    w.pixel_shape = (shape[1], shape[0])
    return w


def _halton(i: int, base: int) -> float:
    f, r = 1.0, 0.0
    while i > 0:
        f /= base
        r += f * (i % base)
        i //= base
    return r


def dither_offsets(
    n_dither: int,
    *,
    size: int,
    n_pointings: tuple[int, int] = (1, 1),
    pointing_step_px: float | None = None,
    max_dither_px: float | None = None,
    rng: np.random.Generator,
    roll_sigma_deg: float = 0.1,
) -> list[tuple[tuple[float, float], float]]:
    """Offsets (detector pixels) and rolls (deg) of every exposure.

    Pointings lie on a grid ``n_pointings`` with step ``pointing_step_px`` (default 2/3 of the
    detector, so neighbours overlap); around each, ``n_dither`` dithers with integer steps of up
    to ``max_dither_px`` plus sub-pixel phases from a Halton sequence, so that the set samples
    every pixel phase as a real sub-pixel dither pattern does.
    """
    if n_dither < 1:
        msg = f"n_dither must be >= 1; got {n_dither!r}"
        raise ValueError(msg)
    step = 2.0 * size / 3.0 if pointing_step_px is None else float(pointing_step_px)
    max_d = max(2.0, 0.05 * size) if max_dither_px is None else float(max_dither_px)
    ny, nx = n_pointings
    out = []
    for py in range(ny):
        for px in range(nx):
            cx, cy = (px - (nx - 1) / 2.0) * step, (py - (ny - 1) / 2.0) * step
            for d in range(n_dither):
                frac = (_halton(d + 1, 2), _halton(d + 1, 3))
                big = rng.integers(-int(max_d), int(max_d) + 1, size=2) if d else np.zeros(2)
                off = (cx + big[0] + frac[0], cy + big[1] + frac[1])
                out.append((off, float(rng.normal(0.0, roll_sigma_deg))))
    return out
