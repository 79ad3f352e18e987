"""The true sky: a source table (Sersic galaxies, stars, close pairs) and its rendering.

The truth lives on a *fine grid*, a tangent-plane grid finer than the output grid. Any region of
it can be rendered on its own and gives the same pixels as the whole grid would, so exposures
and the truth image are rendered block by block with bounded memory.

Surface brightness is in MJy/sr; fluxes in the table are in µJy. Galaxies are Sersic profiles
truncated at ``R_TRUNC`` effective radii (elliptical radius), integrated over sub-pixels;
stars are points shared between the four nearest fine pixels (cloud-in-cell), which keeps their
flux and centroid exactly.
"""

from __future__ import annotations

import numpy as np
from astropy.modeling.models import Sersic2D
from astropy.table import Table
from matplotlib.path import Path as PolygonPath
from scipy.special import gamma, gammainc, gammaincinv

__all__ = [
    "R_TRUNC",
    "apply_colours",
    "make_sources",
    "render",
    "sersic_norm",
    "icl_model",
    "ujy_to_mjysr",
]

#: galaxies are truncated at this many effective radii
R_TRUNC = 8.0
_AB_ZERO_UJY = 3631e6


def ujy_to_mjysr(flux_ujy, pixel_area_sr: float):
    """Surface brightness (MJy/sr) of a flux (µJy) spread over one pixel of ``pixel_area_sr``."""
    return np.asarray(flux_ujy) * 1e-12 / pixel_area_sr


def mag_to_ujy(mag):
    return _AB_ZERO_UJY * 10.0 ** (-0.4 * np.asarray(mag))


def sersic_norm(n, r_eff, ellip) -> np.ndarray:
    """Flux of a Sersic profile of unit surface brightness at ``r_eff``, truncated at R_TRUNC r_eff."""
    n = np.asarray(n, dtype=float)
    b = gammaincinv(2.0 * n, 0.5)
    total = 2.0 * np.pi * n * np.asarray(r_eff) ** 2 * (1.0 - np.asarray(ellip)) * np.exp(b) * b ** (-2.0 * n) * gamma(2.0 * n)
    return total * gammainc(2.0 * n, b * R_TRUNC ** (1.0 / n))


#: wavelength (µm) at which the source table's fluxes are given: F200W's centre
REFERENCE_WAVELENGTH_UM = 0.5 * (1.755 + 2.226)


def apply_colours(sources: Table, band: str, *, rng: np.random.Generator) -> Table:
    """Fluxes in ``band`` from power-law spectra ``f_nu ~ lambda^beta`` through the reference wavelength.

    Stars (and both members of a pair alike) are blue, ``beta`` in [-2, -0.5] (Rayleigh-Jeans
    is -2); galaxies redder, ``beta`` in [-0.5, 1.5]. In F200W fluxes are unchanged. Adds a
    ``beta`` column; ``flux`` and ``mag`` become the band's.
    """
    from mosaic.psf.model import BANDS  # noqa: PLC0415

    lo, hi = BANDS[band.upper()]
    stretch = 0.5 * (lo + hi) / REFERENCE_WAVELENGTH_UM
    kind = np.asarray(sources["kind"])
    beta = np.where(kind == "galaxy", rng.uniform(-0.5, 1.5, len(sources)), rng.uniform(-2.0, -0.5, len(sources)))
    pair_id = np.asarray(sources["pair_id"])
    for p in np.unique(pair_id[pair_id >= 0]):
        beta[pair_id == p] = beta[np.flatnonzero(pair_id == p)[0]]
    out = sources.copy()
    factor = stretch**beta
    out["flux"] = out["flux"] * factor
    out["mag"] = out["mag"] - 2.5 * np.log10(factor)
    out["beta"] = beta
    return out


def make_sources(
    region_poly: np.ndarray,
    *,
    rng: np.random.Generator,
    fine_scale_arcsec: float,
    fwhm_arcsec: float,
    n_galaxies: int,
    n_stars: int,
    n_pairs: int,
    star_poly: np.ndarray | None = None,
    mag_range_galaxies: tuple[float, float] = (22.0, 29.0),
    mag_range_stars: tuple[float, float] = (19.5, 24.0),
) -> Table:
    """Draw a source table on the fine grid.

    Parameters
    ----------
    region_poly : (n, 2) array
        Polygon (fine-grid x, y) inside which sources are placed (the covered sky).
    star_poly : (n, 2) array, optional
        Polygon for stars and pairs (the well-covered sky); default ``region_poly``.
    fwhm_arcsec : float
        PSF FWHM; pairs are 0.5-1.0 FWHM apart (one pair exactly 0.7 FWHM, equal fluxes)
        and isolated stars have no other source within 8 FWHM.

    Returns
    -------
    astropy.table.Table
        id, kind (star, pair, galaxy), x, y (fine-grid pixels), flux (µJy), mag (AB), sersic_n,
        r_eff (fine px), ellip, theta (rad), isolated, pair_id.
    """
    star_poly = region_poly if star_poly is None else star_poly
    fwhm_px = fwhm_arcsec / fine_scale_arcsec
    rows: list[dict] = []

    def draw_in(poly, n, *, min_sep=0.0, avoid=()):
        path = PolygonPath(poly)
        lo, hi = poly.min(axis=0), poly.max(axis=0)
        pts: list[np.ndarray] = []
        tries = 0
        while len(pts) < n and tries < 200 * max(n, 1):
            tries += 1
            p = lo + rng.random(2) * (hi - lo)
            if not path.contains_point(p):
                continue
            others = list(avoid) + pts
            if min_sep and others and np.min(np.hypot(*(np.asarray(others) - p).T)) < min_sep:
                continue
            pts.append(p)
        return pts

    # isolated stars first, then pairs, both kept apart from everything else
    sep = 8.0 * fwhm_px
    inset = _shrink(star_poly, sep)
    stars = draw_in(inset, n_stars, min_sep=2 * sep)
    pair_centres = draw_in(inset, n_pairs, min_sep=2 * sep, avoid=stars)
    for p in stars:
        mag = rng.uniform(*mag_range_stars)
        rows.append({"kind": "star", "x": p[0], "y": p[1], "mag": mag, "isolated": True, "pair_id": -1})
    for i, c in enumerate(pair_centres):
        d = 0.7 * fwhm_px if i == 0 else rng.uniform(0.5, 1.0) * fwhm_px
        ang = rng.uniform(0.0, np.pi)
        mag = rng.uniform(mag_range_stars[0], mag_range_stars[0] + 1.5)
        dmag = 0.0 if i == 0 else rng.uniform(0.0, 0.5)
        for s, m in ((-0.5, mag), (0.5, mag + dmag)):
            rows.append(
                {
                    "kind": "pair",
                    "x": c[0] + s * d * np.cos(ang),
                    "y": c[1] + s * d * np.sin(ang),
                    "mag": m,
                    "isolated": False,
                    "pair_id": i,
                }
            )
    point_xy = [np.array([r["x"], r["y"]]) for r in rows]
    gal_xy = draw_in(region_poly, n_galaxies, min_sep=0.0)
    # keep galaxies off the stars' isolation radius
    gal_xy = [p for p in gal_xy if not point_xy or np.min(np.hypot(*(np.asarray(point_xy) - p).T)) > sep]
    # number counts rise steeply towards faint magnitudes (dN/dm ~ 10^(0.3 m))
    lo, hi = mag_range_galaxies
    u = rng.random(len(gal_xy))
    k = 0.3 * np.log(10.0)
    mags = np.log(np.exp(k * lo) + u * (np.exp(k * hi) - np.exp(k * lo))) / k
    for p, m in zip(gal_xy, mags, strict=True):
        r_eff_arcsec = float(np.clip(rng.lognormal(np.log(0.12) - 0.25 * (m - 25.0), 0.4), 0.03, 1.0))
        rows.append(
            {
                "kind": "galaxy",
                "x": p[0],
                "y": p[1],
                "mag": m,
                "sersic_n": float(rng.uniform(0.5, 4.0)),
                "r_eff": r_eff_arcsec / fine_scale_arcsec,
                "ellip": float(rng.uniform(0.0, 0.7)),
                "theta": float(rng.uniform(0.0, np.pi)),
                "isolated": False,
                "pair_id": -1,
            }
        )
    names = ["id", "kind", "x", "y", "flux", "mag", "sersic_n", "r_eff", "ellip", "theta", "isolated", "pair_id"]
    cols = {k: [] for k in names}
    for i, r in enumerate(rows):
        cols["id"].append(i + 1)
        for k in names[1:]:
            if k == "flux":
                cols[k].append(float(mag_to_ujy(r["mag"])))
            else:
                cols[k].append(r.get(k, 0.0 if k != "kind" else ""))
    t = Table(cols)
    t["flux"].unit = "uJy"
    t["r_eff"].unit = "pix"
    t["x"].unit = t["y"].unit = "pix"
    t["theta"].unit = "rad"
    return t


def _shrink(poly: np.ndarray, d: float) -> np.ndarray:
    """Move a convex polygon's vertices towards its centre by ``d`` (capped at half the size)."""
    c = poly.mean(axis=0)
    v = poly - c
    r = np.hypot(v[:, 0], v[:, 1])
    return c + v * (np.maximum(r - d, 0.25 * r) / np.maximum(r, 1e-9))[:, None]


def icl_model(shape_fine: tuple[int, int], *, amplitude: float, r_eff_px: float, centre, ellip=0.3, theta=0.5) -> dict:
    """Parameters of a smooth intracluster-light component (an n=1 Sersic), for :func:`render`."""
    return {
        "amplitude": float(amplitude),
        "r_eff": float(r_eff_px),
        "x": float(centre[0]),
        "y": float(centre[1]),
        "ellip": float(ellip),
        "theta": float(theta),
        "shape": tuple(shape_fine),
    }


def render(
    sources: Table,
    region: tuple[slice, slice],
    *,
    pixel_area_sr: float,
    icl: dict | None = None,
    n_sub: int = 3,
) -> np.ndarray:
    """Render the truth (MJy/sr) on a ``(y, x)`` region of the fine grid.

    The result for any region equals the corresponding cut of the whole grid's rendering.
    """
    (ys, xs) = region
    y0, x0 = ys.start, xs.start
    ny, nx = ys.stop - ys.start, xs.stop - xs.start
    img = np.zeros((ny, nx), dtype=np.float64)
    kinds = np.asarray(sources["kind"])
    sx, sy = np.asarray(sources["x"], float), np.asarray(sources["y"], float)
    flux = np.asarray(sources["flux"], float)

    # points: cloud-in-cell on the four nearest pixel centres
    pts = kinds != "galaxy"
    if np.any(pts):
        fx, fy = np.floor(sx[pts]), np.floor(sy[pts])
        dx, dy = sx[pts] - fx, sy[pts] - fy
        sb = ujy_to_mjysr(flux[pts], pixel_area_sr)
        for oy, ox, w in ((0, 0, (1 - dy) * (1 - dx)), (0, 1, (1 - dy) * dx), (1, 0, dy * (1 - dx)), (1, 1, dy * dx)):
            iy, ix = fy.astype(int) + oy - y0, fx.astype(int) + ox - x0
            ok = (iy >= 0) & (iy < ny) & (ix >= 0) & (ix < nx)
            np.add.at(img, (iy[ok], ix[ok]), (sb * w)[ok])

    gal = np.flatnonzero(kinds == "galaxy")
    if gal.size:
        n = np.asarray(sources["sersic_n"], float)
        re = np.asarray(sources["r_eff"], float)
        el = np.asarray(sources["ellip"], float)
        th = np.asarray(sources["theta"], float)
        for i in gal:
            rmax = R_TRUNC * re[i] + 1.0
            gx0, gx1 = int(np.floor(sx[i] - rmax)), int(np.ceil(sx[i] + rmax)) + 1
            gy0, gy1 = int(np.floor(sy[i] - rmax)), int(np.ceil(sy[i] + rmax)) + 1
            cx0, cx1 = max(gx0, x0), min(gx1, x0 + nx)
            cy0, cy1 = max(gy0, y0), min(gy1, y0 + ny)
            if cx0 >= cx1 or cy0 >= cy1:
                continue
            amp = ujy_to_mjysr(flux[i], pixel_area_sr) / sersic_norm(n[i], re[i], el[i])
            img[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] += _sersic_pixels(
                (cy0, cy1, cx0, cx1), sx[i], sy[i], amp, re[i], n[i], el[i], th[i], n_sub=n_sub if re[i] > 2 else 3 * n_sub
            )

    if icl is not None and icl["amplitude"] > 0:
        yy, xx = np.mgrid[y0 : y0 + ny, x0 : x0 + nx]
        model = Sersic2D(amplitude=icl["amplitude"], r_eff=icl["r_eff"], n=1.0, x_0=icl["x"], y_0=icl["y"], ellip=icl["ellip"], theta=icl["theta"])
        img += model(xx, yy)
    return img


def _sersic_pixels(box, x0, y0, amp, r_eff, n, ellip, theta, *, n_sub: int) -> np.ndarray:
    """Pixel-averaged truncated Sersic surface brightness over a box (y0, y1, x0, x1)."""
    by0, by1, bx0, bx1 = box
    off = (np.arange(n_sub) + 0.5) / n_sub - 0.5
    yy = (np.arange(by0, by1)[:, None] + off[None, :]).ravel()
    xx = (np.arange(bx0, bx1)[:, None] + off[None, :]).ravel()
    Y, X = np.meshgrid(yy, xx, indexing="ij")
    c, s = np.cos(theta), np.sin(theta)
    dx, dy = X - x0, Y - y0
    a = dx * c + dy * s
    b = -dx * s + dy * c
    r = np.sqrt(a**2 + (b / (1.0 - ellip)) ** 2)
    bn = gammaincinv(2.0 * n, 0.5)
    v = amp * np.exp(-bn * ((r / r_eff) ** (1.0 / n) - 1.0))
    v[r > R_TRUNC * r_eff] = 0.0
    ny, nx = by1 - by0, bx1 - bx0
    return v.reshape(ny, n_sub, nx, n_sub).mean(axis=(1, 3))
