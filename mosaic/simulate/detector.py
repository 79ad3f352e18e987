"""The detector: integration over pixels, noise, cosmic rays, hot pixels, 1/f striping, DQ.

Units follow a JWST cal file: SCI in MJy/sr, ``SCI = DN/s * PHOTMJSR``, electrons
``e = DN/s * gain * exptime``. Variances follow the ramp-fitting step: ``VAR_POISSON`` from the
(measured) signal, ``VAR_RNOISE`` from the read noise, ``VAR_FLAT`` from the flat-field error.
As the current pipeline does, pixels flagged DO_NOT_USE have NaN in SCI, ERR and the variances.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.table import Table
from scipy.ndimage import map_coordinates

from mosaic.io.cal import DQ

__all__ = ["DetectorModel", "integrate_pixels", "observe"]


@dataclass(frozen=True)
class DetectorModel:
    """Detector and exposure parameters (defaults: a ~1 ks NIRCam exposure)."""

    exptime: float = 1000.0
    gain: float = 2.0  # e-/DN
    photmjsr: float = 0.2  # MJy/sr per DN/s
    read_noise: float = 12.0  # effective e- per pixel over the ramp
    flat_error: float = 0.002  # fractional
    n_amps: int = 4
    one_over_f: float = 3.0  # e- rms of the row pattern per amplifier
    cosmic_ray_rate: float = 2e-3  # fraction of pixels hit per 1000 s
    cr_flagged_fraction: float = 0.85
    hot_fraction: float = 2e-4
    hot_flagged_fraction: float = 0.6
    reference_border: int = 4


def integrate_pixels(fine: np.ndarray, xmap: np.ndarray, ymap: np.ndarray, *, n_sub: int) -> np.ndarray:
    """Mean of a fine-grid image over detector pixels.

    Parameters
    ----------
    fine : 2-D array
        Surface brightness on (a region of) the fine grid.
    xmap, ymap : 2-D arrays
        Fine-grid coordinates (of ``fine``'s pixel indices) of the detector pixel centres,
        with one extra row and column on each side (used for the local Jacobian).
    n_sub : int
        Samples per axis inside each detector pixel (bilinear interpolation of ``fine``).

    Returns
    -------
    2-D array of shape ``xmap.shape - 2``.
    """
    # local Jacobian d(fine)/d(detector) by central differences
    dxdu = 0.5 * (xmap[1:-1, 2:] - xmap[1:-1, :-2])
    dxdv = 0.5 * (xmap[2:, 1:-1] - xmap[:-2, 1:-1])
    dydu = 0.5 * (ymap[1:-1, 2:] - ymap[1:-1, :-2])
    dydv = 0.5 * (ymap[2:, 1:-1] - ymap[:-2, 1:-1])
    xc, yc = xmap[1:-1, 1:-1], ymap[1:-1, 1:-1]
    off = (np.arange(n_sub) + 0.5) / n_sub - 0.5
    acc = np.zeros(xc.shape, dtype=np.float64)
    for dv in off:
        for du in off:
            x = xc + dxdu * du + dxdv * dv
            y = yc + dydu * du + dydv * dv
            acc += map_coordinates(fine, [y.ravel(), x.ravel()], order=1, mode="constant", cval=np.nan).reshape(xc.shape)
    return acc / n_sub**2


def _one_over_f(n: int, rng: np.random.Generator) -> np.ndarray:
    """A unit-rms series with a 1/f power spectrum."""
    freqs = np.fft.rfftfreq(n)
    amp = np.zeros_like(freqs)
    amp[1:] = 1.0 / np.sqrt(freqs[1:])
    spec = amp * (rng.normal(size=freqs.size) + 1j * rng.normal(size=freqs.size))
    s = np.fft.irfft(spec, n)
    return s / s.std() if s.std() > 0 else s


def observe(signal: np.ndarray, model: DetectorModel, *, rng: np.random.Generator, noiseless: bool = False):
    """Turn the expected signal (MJy/sr, sky included) into cal-file arrays.

    Returns
    -------
    arrays : dict
        sci, err, dq, var_poisson, var_rnoise, var_flat (float32, dq uint32).
    artifacts : astropy.table.Table
        Injected cosmic rays and hot pixels: x, y, kind, flagged, amplitude (MJy/sr), snr.
    """
    ny, nx = signal.shape
    conv = model.photmjsr / (model.gain * model.exptime)  # MJy/sr per electron
    dq = np.zeros((ny, nx), dtype=np.uint32)
    b = model.reference_border
    if b:
        ref = np.zeros((ny, nx), bool)
        ref[:b], ref[-b:], ref[:, :b], ref[:, -b:] = True, True, True, True
        dq[ref] |= DQ["REFERENCE_PIXEL"] | DQ["DO_NOT_USE"]
    var_rnoise = np.full((ny, nx), (model.read_noise * conv) ** 2)
    art = Table(names=("x", "y", "kind", "flagged", "amplitude", "snr"), dtype=(int, int, "U3", bool, float, float))
    if noiseless:
        sci = signal.astype(np.float64).copy()
    else:
        electrons = rng.poisson(np.clip(signal, 0.0, None) / conv).astype(np.float64)
        electrons += rng.normal(0.0, model.read_noise, size=(ny, nx))
        if model.one_over_f > 0:
            width = nx // model.n_amps
            for a in range(model.n_amps):
                cols = slice(a * width, nx if a == model.n_amps - 1 else (a + 1) * width)
                electrons[:, cols] += model.one_over_f * _one_over_f(ny, rng)[:, None]
        sci = electrons * conv
        sigma = np.sqrt(np.clip(signal, 0.0, None) * conv + var_rnoise)
        sci, dq, art = _artifacts(sci, dq, sigma, model, rng)
    var_poisson = np.clip(sci, 0.0, None) * conv
    var_flat = (model.flat_error * sci) ** 2
    err = np.sqrt(var_poisson + var_rnoise + var_flat)
    out = {"sci": sci, "err": err, "dq": dq, "var_poisson": var_poisson, "var_rnoise": var_rnoise, "var_flat": var_flat}
    bad = (dq & DQ["DO_NOT_USE"]) != 0
    for k in ("sci", "err", "var_poisson", "var_rnoise", "var_flat"):
        out[k] = out[k].astype(np.float32)
        out[k][bad] = np.nan
    return out, art


def _artifacts(sci, dq, sigma, model: DetectorModel, rng):
    """Cosmic rays (single pixels and short tracks) and hot pixels, some flagged, some not."""
    ny, nx = sci.shape
    rows = []
    n_cr = rng.poisson(model.cosmic_ray_rate * ny * nx * model.exptime / 1000.0 / 2.0)
    for _ in range(n_cr):
        y, x = int(rng.integers(0, ny)), int(rng.integers(0, nx))
        length = int(rng.integers(1, 4))
        angle = rng.uniform(0.0, 2 * np.pi)
        flagged = bool(rng.random() < model.cr_flagged_fraction)
        for t in range(length):
            yy = int(round(y + t * np.sin(angle)))
            xx = int(round(x + t * np.cos(angle)))
            if not (0 <= yy < ny and 0 <= xx < nx):
                continue
            amp = float(sigma[yy, xx] * rng.uniform(5.0, 200.0))
            sci[yy, xx] += amp
            if flagged:
                dq[yy, xx] |= DQ["JUMP_DET"] | DQ["DO_NOT_USE"]
            rows.append((xx, yy, "cr", flagged, amp, amp / sigma[yy, xx]))
    n_hot = rng.poisson(model.hot_fraction * ny * nx)
    for _ in range(n_hot):
        y, x = int(rng.integers(0, ny)), int(rng.integers(0, nx))
        flagged = bool(rng.random() < model.hot_flagged_fraction)
        amp = float(sigma[y, x] * rng.uniform(10.0, 500.0))
        sci[y, x] += amp
        dq[y, x] |= (DQ["HOT"] | DQ["DO_NOT_USE"]) if flagged else 0
        rows.append((x, y, "hot", flagged, amp, amp / sigma[y, x]))
    art = Table(rows=rows or None, names=("x", "y", "kind", "flagged", "amplitude", "snr"), dtype=(int, int, "U3", bool, float, float))
    return sci, dq, art
