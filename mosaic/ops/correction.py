"""One UPDC correction pass through an exposure cut-out, in a single compiled loop.

A pair's correction blots the model window through each exposure pixel's overlaps (the mock
``m``), forms the pixel's correction ``x`` from its data ``g``, ``m`` and its weight ``w`` (the
Richardson-Lucy ratio or the difference, damped or not) and, when errors are propagated, its
scaled variances, then drizzles them back through the same overlaps. Everything after the blot
depends on the pixel alone, so one loop does it all: each pixel's overlaps are computed once and
used at once, with no table of them written in a blot pass and read back in a drizzle pass, and
pixels without weight are skipped (they neither mock nor add).

The numbers are those of the separate passes (:func:`mosaic.ops.overlap.blot_sums`, the
correction in NumPy as :func:`mosaic.coadd.forward.pair_correction` writes it for the
interpolating blot, :func:`mosaic.ops.overlap.drizzle_sums`): the same areas, walked in the same
order, and the same operations on them, so the same sums to the bit; with damping, to 1e-13
(its power may take another path in NumPy than here). A test holds them to both.
"""

from __future__ import annotations

import numba
import numpy as np

from mosaic.ops.overlap import _BLOCK, _output, _pixel_overlaps
from mosaic.ops.scalars import finite_or_zero

__all__ = ["correction_pass"]


@numba.njit(nogil=True, cache=True)
def _add(out, p, jj, ii, weight, v):
    if v != 0.0 and np.isfinite(v):  # as drizzle_sums: NaN and infinities count as 0
        out[p, jj, ii] += weight * v


@numba.njit(nogil=True, cache=True)
def _pass_kernel(xc, yc, image, w, sci, v0, v1, v2, ratio, pedestal, mock_floor, damping, power, variances, mock, out):
    ny_out, nx_out = image.shape
    ny, nx = w.shape
    low, acc = np.empty(16), np.empty(16)
    d2 = damping * damping
    for jb in range(0, ny, _BLOCK):
        for ib in range(0, nx, _BLOCK):
            for j in range(jb, min(jb + _BLOCK, ny)):
                for i in range(ib, min(ib + _BLOCK, nx)):
                    mock[j, i] = 0.0
                    wj = w[j, i]
                    if not wj > 0.0:
                        continue
                    finite, jac, i0, ni, j0, nj, low, acc = _pixel_overlaps(xc, yc, j, i, ny_out, nx_out, low, acc)
                    if not finite or jac == 0.0:
                        continue
                    # the blot: the area-weighted mean of the window under the pixel
                    s = 0.0
                    k = 0
                    for jj in range(j0, j0 + nj):
                        for ii in range(i0, i0 + ni):
                            a = acc[k]
                            k += 1
                            if a != 0.0:
                                s += a * image[jj, ii]
                    m = s / jac
                    mock[j, i] = m
                    # the correction (pair_correction's NumPy, one pixel at a time)
                    g = float(sci[j, i])
                    va = finite_or_zero(v0[j, i])
                    vb = finite_or_zero(v1[j, i])
                    vc = finite_or_zero(v2[j, i])
                    total = 0.0 + va + vb + vc
                    u = 1.0
                    if damping > 0.0:
                        z = (g - m) ** 2 / (d2 * total) if total > 0.0 else np.inf
                        if z < 1.0:
                            u = z ** (power - 1.0) * (power - (power - 1.0) * z)
                    if ratio:
                        r = max(g + pedestal, 0.0) / (m + pedestal) if m + pedestal > mock_floor else 1.0
                        x = wj * (1.0 + u * (r - 1.0)) if damping > 0.0 else wj * r
                        against = m + pedestal
                    else:
                        x = wj * u * (g - m)
                        against = m
                    sa = sb = sc = 0.0
                    if variances:
                        wu = wj * u
                        if ratio:
                            ok = wu > 0 and against > mock_floor
                            scale = (wu * wu) / (against * against) if ok else 0.0
                        else:
                            ok = wu > 0
                            scale = wu * wu if ok else 0.0
                        if ok:
                            sa, sb, sc = va * scale, vb * scale, vc * scale
                    # the drizzle back through the same overlaps
                    k = 0
                    for jj in range(j0, j0 + nj):
                        for ii in range(i0, i0 + ni):
                            a = acc[k]
                            k += 1
                            if a == 0.0:
                                continue
                            f = a / jac
                            _add(out, 0, jj, ii, f, x)
                            if variances:
                                f2 = f * f
                                _add(out, 1, jj, ii, f2, sa)
                                _add(out, 2, jj, ii, f2, sb)
                                _add(out, 3, jj, ii, f2, sc)


def correction_pass(
    xc, yc, window, w, sci, components, *, correction: str, pedestal: float, mock_floor: float, damping: float,
    damping_power: float, variances: bool, out=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Blot ``window`` through a cut-out's pixels, correct them and drizzle the corrections back.

    Parameters
    ----------
    xc, yc : numpy.ndarray
        ``(4, ny, nx)`` corners of the cut-out's pixels in the window frame.
    window : numpy.ndarray
        The window of ``B f``; NaN pixels count as 0.
    w : numpy.ndarray
        ``(ny, nx)`` correction weights; pixels with ``w <= 0`` are skipped.
    sci : numpy.ndarray
        ``(ny, nx)`` data ``g``.
    components : sequence of 3 arrays or None
        VAR_POISSON, VAR_RNOISE, VAR_FLAT of the cut-out (None, NaN and infinities count as 0).
    correction, pedestal, mock_floor, damping :
        As :func:`mosaic.coadd.forward.pair_correction`.
    damping_power : float
        ``K`` of the damping factor (:data:`mosaic.coadd.forward.DAMPING_POWER`).
    variances : bool
        Also drizzle each component's ``w² u² v / (m + s)²`` (``w² u² v`` for the difference)
        with squared weights.
    out : numpy.ndarray, optional
        Float64 ``(1 + 3 * variances, *window.shape)`` running sums to add into.

    Returns
    -------
    mock, out : numpy.ndarray
        The mock ``m`` of every pixel (0 where ``w <= 0`` or a corner is not finite), and the
        sums: ``D(x)``, then with ``variances`` the three ``D²`` planes.
    """
    if correction not in ("ratio", "difference"):
        msg = f"correction {correction!r} is not supported; expected 'ratio' or 'difference'"
        raise ValueError(msg)
    xc = np.ascontiguousarray(xc, dtype=np.float64)
    yc = np.ascontiguousarray(yc, dtype=np.float64)
    w = np.ascontiguousarray(w, dtype=np.float64)
    shape = w.shape
    if xc.shape != (4, *shape) or yc.shape != xc.shape:
        msg = f"pixel corners have shapes {xc.shape} and {yc.shape}; expected two arrays of shape {(4, *shape)}"
        raise ValueError(msg)
    planes = []
    for name, a in zip(("sci", "var_poisson", "var_rnoise", "var_flat"), [sci, *components], strict=True):
        a = np.zeros(shape) if a is None else np.ascontiguousarray(a, dtype=np.float64)
        if a.shape != shape:
            msg = f"{name} has shape {a.shape}; expected the cut-out's {shape}"
            raise ValueError(msg)
        planes.append(a)
    image = np.ascontiguousarray(window, dtype=np.float64)
    if not np.isfinite(image).all():  # a model window has none, as a rule: no cleaned copy for every pair
        image = np.where(np.isfinite(image), image, 0.0)
    out = _output(out, (4 if variances else 1, *image.shape))
    mock = np.empty(shape)
    _pass_kernel(
        xc, yc, image, w, *planes, correction == "ratio", float(pedestal), float(mock_floor), float(damping),
        float(damping_power), bool(variances), mock, out,
    )
    return mock, out
