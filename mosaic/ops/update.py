"""One tile of a UPDC (or Landweber) update and its variances, in one compiled pass.

:func:`mosaic.coadd.updc._update_block` writes the update with array operations, so that the same
lines run on NumPy and CuPy tiles; on the CPU that is about a hundred passes over the tile, each
with a temporary of its size (0.27 s for a 1024² tile with errors, against 0.030 s here; 11 s of
worker time in a flagship iteration). :func:`update_tile` takes each pixel once, with the same operations in
the same order, so its planes are those of the array version to the bit; a test holds them so.

Per pixel (``s`` the pedestal, ``lam`` the margin prior where a pixel has no data):

- ``f``: the stored iterate, ``fill`` where it is not finite on the support (0 off it), at
  least ``(PEDESTAL_FLOOR - 1) s`` on the support; ``h = f + s``;
- ``h' = h q`` with ``q = (N + lam) / (den + lam)`` (Richardson-Lucy) or ``h' = h + tau N /
  (den + lam)`` (Landweber), where the normalisation is above its floor;
- ``h`` kept where ``h'`` would be negative (eq. 2) or the pixel cannot be updated; NaN off the
  support;
- each variance ``(|q| sqrt(V) + |h| sqrt(var N) / den)²`` (``(sqrt(V) + |tau| sqrt(var N) /
  den)²``), kept where ``h`` is; ERR the root of their sum on the support; WHT iteration 0's,
  scaled by the read-noise variances' ratio.
"""

from __future__ import annotations

import numba
import numpy as np

from mosaic.ops.scalars import finite_or_zero

__all__ = ["update_tile"]


@numba.njit(nogil=True, cache=True)
def _positive_part(v):
    """``np.maximum(v, 0.0)``: NaN stays NaN."""
    return 0.0 if v < 0.0 else v


@numba.njit(nogil=True, cache=True)
def _kernel(
    sci, sci0, den, num, prev0, prev1, prev2, back0, back1, back2, wht0, rn0, multiplicative, tau, den_floor, fill, pedestal,
    floor, lam_margin, noise_aware, errors, out,
):
    ny, nx = sci.shape
    nan = np.nan
    for j in range(ny):
        for i in range(nx):
            covered = np.isfinite(sci0[j, i])
            d = float(den[j, i])
            ok = d > den_floor
            support = covered or ok
            s = float(sci[j, i])
            if np.isfinite(s):
                f = s
            elif support:
                f = fill
            else:
                f = 0.0
            if pedestal > 0 and support:
                f = max(f, floor)
            h = f + pedestal
            lam = 0.0 if (covered or not noise_aware) else lam_margin
            n = float(num[j, i])
            q = 1.0
            if multiplicative:
                if ok:
                    q = (n + lam) / (d + lam)
                h_new = h * q
            else:
                h_new = h + (tau * n / (d + lam) if ok else 0.0)
            keep = (h_new < 0 and (multiplicative or not noise_aware)) or not ok
            out[0, j, i] = np.float32(((h if keep else h_new) - pedestal) if support else nan)
            if not errors:
                continue
            safe = d if d > 0 else 1.0
            total = 0.0
            new1 = 0.0
            for c in range(3):
                if c == 0:
                    v, vn = finite_or_zero(float(prev0[j, i])), float(back0[j, i])
                elif c == 1:
                    v, vn = finite_or_zero(float(prev1[j, i])), float(back1[j, i])
                else:
                    v, vn = finite_or_zero(float(prev2[j, i])), float(back2[j, i])
                if multiplicative:
                    sigma = abs(q) * np.sqrt(_positive_part(v)) + abs(h) * np.sqrt(_positive_part(vn)) / safe
                else:
                    sigma = np.sqrt(_positive_part(v)) + abs(tau) * np.sqrt(_positive_part(vn)) / safe
                new = v if keep else sigma * sigma
                out[1 + c, j, i] = np.float32(new if support else nan)
                total = new if c == 0 else total + new
                if c == 1:
                    new1 = new
            out[4, j, i] = np.float32(np.sqrt(_positive_part(total)) if support else nan)
            w0, r0 = finite_or_zero(float(wht0[j, i])), finite_or_zero(float(rn0[j, i]))
            good = covered and new1 > 0 and r0 > 0
            ratio = r0 / new1 if good else 1.0
            out[5, j, i] = np.float32(w0 * ratio if covered else 0.0)


def update_tile(
    sci, sci0, den, num, *rest, multiplicative: bool, tau: float, den_floor: float, fill: float, errors: bool, pedestal: float,
    noise_aware: bool, floor: float, lam_margin: float,
) -> np.ndarray:
    """:func:`mosaic.coadd.updc._update_block` of NumPy tiles: the stacked float32 planes.

    ``rest`` (with ``errors``): the iterate's three variances, the three back-projected ones,
    iteration 0's WHT and VAR_RNOISE. ``floor`` is ``(PEDESTAL_FLOOR - 1) s`` and
    ``lam_margin`` the margin prior's weight.

    Raises
    ------
    ValueError
        When a plane is not 2-D of ``sci``'s shape, or ``rest`` does not hold 8 planes with
        ``errors`` (none without).
    """
    planes = [sci, sci0, den, num, *rest]
    shape = np.shape(sci)
    want = 12 if errors else 4
    if len(planes) != want or len(shape) != 2 or any(np.shape(p) != shape for p in planes):
        msg = f"update planes have shapes {[np.shape(p) for p in planes]}; expected {want} 2-D planes of one shape"
        raise ValueError(msg)
    if not errors:
        dummy = np.zeros((1, 1))
        planes += [dummy] * 8
    out = np.empty((6 if errors else 1, *shape), dtype=np.float32)
    _kernel(
        *(np.asarray(p) for p in planes), bool(multiplicative), float(tau), float(den_floor), float(fill), float(pedestal),
        float(floor), float(lam_margin), bool(noise_aware), bool(errors), out,
    )
    return out
