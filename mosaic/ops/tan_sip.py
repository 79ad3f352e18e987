"""Pixel maps between two gnomonic (TAN) frames, the first with SIP distortion, as one compiled pass.

A pixel map takes every exposure pixel through its WCS to the sky and back through the grid's
WCS to grid pixels. astropy does that with wcslib: the SIP polynomial, the linear transform, the
TAN deprojection to native spherical angles, a rotation to celestial angles, and the same steps
backwards for the grid, each with its trigonometry, at about half a microsecond a pixel: a third
of the flagship's iteration 0.

Between two TAN frames the sky in the middle need not be visited. A point ``(x, y)`` (degrees)
of a TAN plane is the direction ``(x, y, 180/pi)`` in that projection's native frame; two
native frames differ by a fixed rotation ``M``; a direction ``(X, Y, Z)`` projects on the
second plane at ``180/pi (X, Y) / Z``. So a pixel costs the SIP polynomial, two 2x2 linear maps
and one 3x3 rotation, and no trigonometry. ``M`` is fitted once per pair of frames (orthogonal
Procrustes) to directions that astropy maps through each frame's own celestial rotation, so
LONPOLE, LATPOLE and the poles are wcslib's. The positions equal astropy's to about 1e-8 pixel
(astropy's own rounding in degrees; tested to 1e-7), not to the bit.

Only plain celestial TAN frames qualify (``RA---TAN``/``DEC--TAN`` or ``-TAN-SIP``, longitude
first, no lookup-table distortions, no projection parameters; the grid without SIP);
:func:`tan_sip_map` returns None for anything else, and callers use astropy.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["TanSipMap", "tan_sip_map"]

_DEG = 180.0 / np.pi


class TanSipMap:
    """The compiled map from one TAN(-SIP) frame's pixels to another TAN frame's pixels.

    Build it with :func:`tan_sip_map`; call it with 0-based pixel positions ``(x, y)`` (arrays
    of any shape) to get the positions in the second frame, 0-based (NaN beyond its horizon).
    """

    def __init__(self, a, b, crpix, cd, rotation, cd_inv, crpix_to):
        self.a = np.ascontiguousarray(a, dtype=np.float64)
        self.b = np.ascontiguousarray(b, dtype=np.float64)
        self.crpix = np.asarray(crpix, dtype=np.float64)
        self.cd = np.ascontiguousarray(cd, dtype=np.float64)
        self.rotation = np.ascontiguousarray(rotation, dtype=np.float64)
        self.cd_inv = np.ascontiguousarray(cd_inv, dtype=np.float64)
        self.crpix_to = np.asarray(crpix_to, dtype=np.float64)

    def __call__(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        shape = np.broadcast_shapes(x.shape, y.shape)
        xf = np.ascontiguousarray(np.broadcast_to(x, shape)).ravel()
        yf = np.ascontiguousarray(np.broadcast_to(y, shape)).ravel()
        ox, oy = np.empty(xf.size), np.empty(xf.size)
        _map_kernel(xf, yf, self.a, self.b, self.crpix, self.cd, self.rotation, self.cd_inv, self.crpix_to, ox, oy)
        return ox.reshape(shape), oy.reshape(shape)

    def rows(self, y0: int, x0: int, c0, c1, nx: int, offset=(0, 0)) -> np.ndarray:
        """The ``(ny, nx, 2)`` map of an exposure box from pixel ``(y0, x0)``, columns ``c0[j]``
        to ``c1[j]`` (box-relative, inclusive) of each row ``j`` mapped, less ``offset``; NaN
        elsewhere.

        The positions are those of a call with the same pixels to the bit (each pixel's operations
        in the same order), written straight into the map: no index arrays and no scatter.
        """
        c0 = np.ascontiguousarray(c0, dtype=np.int64)
        c1 = np.ascontiguousarray(c1, dtype=np.int64)
        out = np.empty((c0.size, int(nx), 2))
        _rows_kernel(
            int(y0), int(x0), c0, c1, self.a, self.b, self.crpix, self.cd, self.rotation, self.cd_inv, self.crpix_to,
            float(offset[0]), float(offset[1]), out,
        )
        return out


def _plain_tan(w, *, sip_allowed: bool) -> bool:
    """Whether ``w`` is a 2-axis celestial TAN frame this module reproduces."""
    from astropy.wcs import WCS  # noqa: PLC0415

    if not isinstance(w, WCS) or w.naxis != 2 or w.wcs.naxis != 2:
        return False
    if any(getattr(w, name, None) is not None for name in ("cpdis1", "cpdis2", "det2im1", "det2im2")):
        return False
    if w.sip is not None and not sip_allowed:
        return False
    c = w.wcs
    c.set()
    ctype = [str(t) for t in c.ctype]
    suffix = ("", "-SIP") if sip_allowed else ("",)
    if c.lng != 0 or c.lat != 1 or any(t[4:8] != "-TAN" or t[8:] not in suffix for t in ctype):
        return False
    if c.get_pv() or c.get_ps() or list(c.cunit) != ["deg", "deg"]:
        return False
    return bool(np.all(np.isfinite(c.crval)) and np.all(np.isfinite(w.pixel_scale_matrix)))


def _native_to_celestial(w) -> np.ndarray:
    """The rotation taking a frame's native directions ``(x, y, 180/pi)`` to celestial unit vectors.

    Fitted to directions at intermediate offsets of up to 20 degrees (a long lever against rounding), each taken to the sky by
    astropy through the frame's linear-free core (same CRVAL, LONPOLE, LATPOLE, TAN).
    """
    from astropy.wcs import WCS  # noqa: PLC0415

    core = WCS(naxis=2)
    core.wcs.ctype = [t[:8] for t in w.wcs.ctype]
    core.wcs.crval = w.wcs.crval
    core.wcs.lonpole = w.wcs.lonpole
    core.wcs.latpole = w.wcs.latpole
    core.wcs.crpix = [1.0, 1.0]  # pixel 0 (0-based) is the reference point; pixels are degrees
    core.wcs.cdelt = [1.0, 1.0]
    core.wcs.set()
    t = np.linspace(-20.0, 20.0, 9)
    ix, iy = (v.ravel() for v in np.meshgrid(t, t))
    lon, lat = core.wcs_pix2world(ix, iy, 0)
    lon, lat = np.radians(lon), np.radians(lat)
    cel = np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)
    nat = np.stack([ix, iy, np.full(ix.shape, _DEG)], axis=1)
    nat /= np.linalg.norm(nat, axis=1)[:, None]
    # orthogonal Procrustes: the rotation R minimising |R nat - cel|
    u, _, vt = np.linalg.svd(cel.T @ nat)
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


def tan_sip_map(wcs_from, wcs_to) -> TanSipMap | None:
    """The compiled map from ``wcs_from``'s pixels to ``wcs_to``'s, or None where it does not apply.

    Parameters
    ----------
    wcs_from : astropy.wcs.WCS
        A celestial TAN frame, optionally with SIP distortion (an exposure).
    wcs_to : astropy.wcs.WCS
        A celestial TAN frame without distortion (a mosaic grid).
    """
    if not (_plain_tan(wcs_from, sip_allowed=True) and _plain_tan(wcs_to, sip_allowed=False)):
        return None
    sip = wcs_from.sip
    if sip is not None:
        a, b = np.asarray(sip.a, dtype=np.float64), np.asarray(sip.b, dtype=np.float64)
        if a.shape != b.shape or not np.array_equal(sip.crpix, wcs_from.wcs.crpix):
            return None
    else:
        a = b = np.zeros((1, 1))
    rotation = _native_to_celestial(wcs_to).T @ _native_to_celestial(wcs_from)
    cd_inv = np.linalg.inv(wcs_to.pixel_scale_matrix)
    return TanSipMap(a, b, wcs_from.wcs.crpix, wcs_from.pixel_scale_matrix, rotation, cd_inv, wcs_to.wcs.crpix)


#: pixels per pass of the polynomials: their terms are taken for a run of pixels at a time, so
#: the compiler can give each term's multiply-add to a run of pixels in one SIMD instruction (one
#: pixel at a time, each polynomial is a chain of dependent multiply-adds: 3.3x slower)
_RUN = 512


@numba.njit(nogil=True, cache=True)
def _poly(c, u, v, t, s, m):
    """``s[k] = sum_pq c[p, q] u[k]^p v[k]^q`` for ``k < m`` (Horner in ``v`` within Horner in
    ``u``, each pixel's operations in the same order as one pixel at a time)."""
    n = c.shape[0]
    for k in range(m):
        s[k] = 0.0
    for p in range(n - 1, -1, -1):
        for k in range(m):
            t[k] = 0.0
        for q in range(n - 1 - p, -1, -1):
            cpq = c[p, q]
            for k in range(m):
                t[k] = t[k] * v[k] + cpq
        for k in range(m):
            s[k] = s[k] * u[k] + t[k]


@numba.njit(inline="always", nogil=True, cache=True)
def _project(fu, fv, cd, rot, cd_inv, crpix_to):
    """A distortion-corrected offset ``(fu, fv)`` (pixels) to the second frame's 0-based pixels
    (NaN beyond its horizon, or not finite)."""
    px = cd[0, 0] * fu + cd[0, 1] * fv
    py = cd[1, 0] * fu + cd[1, 1] * fv
    nx = rot[0, 0] * px + rot[0, 1] * py + rot[0, 2] * _DEG
    ny = rot[1, 0] * px + rot[1, 1] * py + rot[1, 2] * _DEG
    nz = rot[2, 0] * px + rot[2, 1] * py + rot[2, 2] * _DEG
    if not nz > 0.0:
        return np.nan, np.nan
    qx = _DEG * nx / nz
    qy = _DEG * ny / nz
    return cd_inv[0, 0] * qx + cd_inv[0, 1] * qy + crpix_to[0] - 1.0, cd_inv[1, 0] * qx + cd_inv[1, 1] * qy + crpix_to[1] - 1.0


@numba.njit(nogil=True, cache=True)
def _map_kernel(x, y, a, b, crpix, cd, rot, cd_inv, crpix_to, ox, oy):
    u, v, t, sa, sb = np.empty(_RUN), np.empty(_RUN), np.empty(_RUN), np.empty(_RUN), np.empty(_RUN)
    for start in range(0, x.size, _RUN):
        m = min(_RUN, x.size - start)
        for k in range(m):
            u[k] = x[start + k] + 1.0 - crpix[0]
            v[k] = y[start + k] + 1.0 - crpix[1]
        _poly(a, u, v, t, sa, m)
        _poly(b, u, v, t, sb, m)
        for k in range(m):
            ox[start + k], oy[start + k] = _project(u[k] + sa[k], v[k] + sb[k], cd, rot, cd_inv, crpix_to)


@numba.njit(nogil=True, cache=True)
def _rows_kernel(y0, x0, c0, c1, a, b, crpix, cd, rot, cd_inv, crpix_to, dx, dy, out):
    # the same runs of pixels through the same polynomials as _map_kernel, a row's columns at a time
    u, v, t, sa, sb = np.empty(_RUN), np.empty(_RUN), np.empty(_RUN), np.empty(_RUN), np.empty(_RUN)
    nx = out.shape[1]
    for j in range(out.shape[0]):
        lo, hi = max(c0[j], 0), min(c1[j], nx - 1)
        for i in range(nx):
            if i < lo or i > hi:
                out[j, i, 0] = np.nan
                out[j, i, 1] = np.nan
        yv = (y0 + j) + 1.0 - crpix[1]
        for start in range(lo, hi + 1, _RUN):
            m = min(_RUN, hi + 1 - start)
            for k in range(m):
                u[k] = float(x0 + start + k) + 1.0 - crpix[0]
                v[k] = yv
            _poly(a, u, v, t, sa, m)
            _poly(b, u, v, t, sb, m)
            for k in range(m):
                ox, oy = _project(u[k] + sa[k], v[k] + sb[k], cd, rot, cd_inv, crpix_to)
                out[j, start + k, 0] = ox - dx
                out[j, start + k, 1] = oy - dy
