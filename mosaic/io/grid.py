"""The output grid: a tangent-plane WCS, its tiling into cores and halos, and the overlap index.

A :class:`MosaicGrid` is the frame every product lives on. Its tiles' *cores* partition the
grid exactly (every output pixel belongs to one core); each tile's *outer* region is the core
grown by ``halo`` pixels on every side and clipped at the grid's edges. Graph builders read
a tile's outer region, compute, and keep its core.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import dask.config
import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, WCSHDO_P17
from astropy.wcs.utils import proj_plane_pixel_scales

__all__ = ["DEFAULT_MAX_GRID_SIDE", "ExposureList", "Tile", "MosaicGrid", "balanced_tile", "footprint", "max_grid_side", "tile_starts"]

log = logging.getLogger(__name__)

#: samples along each detector edge used to trace a distorted footprint
_EDGE_SAMPLES = 33

#: the largest output grid side (pixels) planned unless dask's ``mosaic.limits.max-grid-side`` says otherwise
DEFAULT_MAX_GRID_SIDE = 50_000

#: footprints farther than this from the tangent point cannot be projected honestly (TAN diverges at 90 deg)
_MAX_TANGENT_DEG = 60.0


def max_grid_side() -> int:
    """The largest output grid side in pixels: dask config ``mosaic.limits.max-grid-side`` (default 50,000)."""
    value = dask.config.get("mosaic.limits.max-grid-side", default=DEFAULT_MAX_GRID_SIDE)
    try:
        side = int(value)
    except (TypeError, ValueError):
        side = 0
    if side < 1:
        msg = f"dask config mosaic.limits.max-grid-side: got {value!r}; expected a positive number of pixels"
        raise ValueError(msg)
    return side


@dataclass(frozen=True)
class Tile:
    """One tile of a :class:`MosaicGrid`.

    Attributes
    ----------
    index : tuple of int
        ``(row, column)`` of the tile in the tiling.
    core : tuple of slice
        ``(y, x)`` slices of the output grid that this tile owns.
    outer : tuple of slice
        The core grown by the halo, clipped at the grid edges.
    """

    index: tuple[int, int]
    core: tuple[slice, slice]
    outer: tuple[slice, slice]

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of the core."""
        return (self.core[0].stop - self.core[0].start, self.core[1].stop - self.core[1].start)

    @property
    def outer_shape(self) -> tuple[int, int]:
        """Shape of the outer (halo-grown) region."""
        return (self.outer[0].stop - self.outer[0].start, self.outer[1].stop - self.outer[1].start)

    @property
    def core_in_outer(self) -> tuple[slice, slice]:
        """Slices that cut the core out of an array covering ``outer``."""
        y0 = self.core[0].start - self.outer[0].start
        x0 = self.core[1].start - self.outer[1].start
        return (slice(y0, y0 + self.shape[0]), slice(x0, x0 + self.shape[1]))


def balanced_tile(shape: tuple[int, int], tile: int) -> tuple[int, int]:
    """The tile size, at most ``tile``, that cuts each axis of ``shape`` into as few equal tiles.

    ``tile`` 1024 on a 1390-pixel axis gives two tiles of 695 rather than 1024 and 366: tiles
    of one size take one time, so workers finish together.
    """
    return tuple(-(-int(n) // -(-int(n) // int(tile))) for n in shape)


def tile_starts(n: int, size: int) -> list[int]:
    """Start indices of tiles of ``size`` along an axis of ``n`` pixels (the last may be short)."""
    return list(range(0, n, size))


def footprint(wcs: WCS, shape: tuple[int, int], *, n_edge: int = _EDGE_SAMPLES) -> np.ndarray:
    """Sky positions (deg) traced along the edges of a detector of ``shape``.

    Distortion bends the edges, so the footprint is sampled along them rather than taken
    from the four corners alone. Returns an ``(n, 2)`` array of (RA, Dec).
    """
    ny, nx = shape
    xs = np.linspace(-0.5, nx - 0.5, n_edge)
    ys = np.linspace(-0.5, ny - 0.5, n_edge)
    x = np.concatenate([xs, np.full(n_edge, nx - 0.5), xs[::-1], np.full(n_edge, -0.5)])
    y = np.concatenate([np.full(n_edge, -0.5), ys, np.full(n_edge, ny - 0.5), ys[::-1]])
    # APE 14 call: works for astropy (SIP) WCSs and for gwcs alike
    ra, dec = wcs.pixel_to_world_values(x, y)
    return np.column_stack([ra, dec])


def _tan_wcs(crval, pixel_scale_deg: float, rotation_deg: float, crpix, shape) -> WCS:
    """A north-up (rotated by ``rotation_deg`` east of north) TAN WCS."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.cunit = ["deg", "deg"]
    w.wcs.crval = list(crval)
    w.wcs.crpix = list(crpix)
    # intermediate x points east: a +y axis at position angle t (east of north) is (sin t, cos t)
    t = -np.deg2rad(rotation_deg)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    w.wcs.cd = pixel_scale_deg * rot @ np.diag([-1.0, 1.0])
    w.wcs.radesys = "ICRS"
    w.pixel_shape = (shape[1], shape[0])
    return w


def _convex_polygons_intersect(a: np.ndarray, b: np.ndarray) -> bool:
    """Separating-axis test for two convex polygons given as ``(n, 2)`` vertex arrays."""
    for poly in (a, b):
        edges = np.roll(poly, -1, axis=0) - poly
        normals = np.column_stack([-edges[:, 1], edges[:, 0]])
        pa = a @ normals.T
        pb = b @ normals.T
        if np.any((pa.max(axis=0) < pb.min(axis=0)) | (pb.max(axis=0) < pa.min(axis=0))):
            return False
    return True


@dataclass(frozen=True)
class MosaicGrid:
    """A tangent-plane output grid with a tiling.

    Parameters
    ----------
    wcs : `~astropy.wcs.WCS`
        Celestial TAN WCS of the whole grid (no distortion).
    shape : tuple of int
        ``(ny, nx)`` of the grid.
    tile : tuple of int
        ``(ty, tx)`` core size of a tile; edge tiles may be smaller.
    halo : int
        Pixels added on every side of a core to make the tile's outer region.
    psr : float or None
        Pixel-scale ratio (output pixel / input pixel) the grid was made with, if any.
    """

    wcs: WCS
    shape: tuple[int, int]
    tile: tuple[int, int] = (1024, 1024)
    halo: int = 0
    psr: float | None = None

    def __post_init__(self):
        shape = tuple(int(s) for s in self.shape)
        tile = (self.tile, self.tile) if np.isscalar(self.tile) else tuple(self.tile)
        tile = tuple(int(t) for t in tile)
        if len(shape) != 2 or min(shape) < 1:
            msg = f"grid shape must be two positive integers; got {self.shape!r}"
            raise ValueError(msg)
        if len(tile) != 2 or min(tile) < 1:
            msg = f"tile size must be a positive integer or a pair of them; got {self.tile!r}"
            raise ValueError(msg)
        if int(self.halo) != self.halo or self.halo < 0:
            msg = f"halo must be a non-negative integer; got {self.halo!r}"
            raise ValueError(msg)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "tile", tile)
        object.__setattr__(self, "halo", int(self.halo))

    # -- construction --------------------------------------------------------------------

    @classmethod
    def from_exposures(
        cls,
        wcs_list,
        shapes,
        *,
        psr: float = 0.5,
        rotation_deg: float = 0.0,
        tile: int | tuple[int, int] = 1024,
        halo: int = 0,
        pixel_scale_arcsec: float | None = None,
        crval: tuple[float, float] | None = None,
        names=None,
        max_side: int | None = None,
    ) -> MosaicGrid:
        """The grid that covers every exposure's footprint.

        Nothing is allocated before the grid's size is known: a grid wider than ``max_side``
        on either axis, an exposure whose WCS gives no finite pixel scale or footprint, and an
        exposure too far from the others to share a tangent plane are refused with an
        :class:`~mosaic.exceptions.LimitError` naming the exposures that stretch the grid.

        Parameters
        ----------
        wcs_list : list of `~astropy.wcs.WCS`
            The exposures' WCSs (SIP distortion included).
        shapes : list of tuple
            The exposures' ``(ny, nx)``.
        psr : float
            Pixel-scale ratio: output pixel scale over the (median) input pixel scale.
        rotation_deg : float
            Position angle of the grid's +y axis, east of north (0: north up, east left).
        pixel_scale_arcsec : float, optional
            Use this output pixel scale instead of ``psr`` times the input scale.
        crval : (ra, dec), optional
            Tangent point; by default the centre of the footprints.
        names : list of str, optional
            The exposures' names (file paths) for messages; by default those a list from
            :func:`mosaic.io.cal.read_exposures` carries, else ``exposure <k>``.
        max_side : int, optional
            The largest side allowed, in output pixels (default :func:`max_grid_side`).
        """
        from mosaic.exceptions import LimitError  # noqa: PLC0415

        if len(wcs_list) == 0:
            msg = "no exposures given; expected at least one WCS to build the output grid from"
            raise ValueError(msg)
        if len(wcs_list) != len(shapes):
            msg = f"got {len(wcs_list)} WCSs but {len(shapes)} shapes; expected one shape per WCS"
            raise ValueError(msg)
        names = _exposure_names(wcs_list, names)
        limit = max_grid_side() if max_side is None else int(max_side)
        in_scales = [_local_pixel_scale_arcsec(w, shp) for w, shp in zip(wcs_list, shapes, strict=True)]
        broken = [f"{n} ({s!r} arcsec/px)" for n, s in zip(names, in_scales, strict=True) if not (np.isfinite(s) and s > 0)]
        if broken:
            msg = f"{', '.join(broken)}: the WCS gives no finite, positive pixel scale; expected a celestial WCS of the detector"
            raise LimitError(msg)
        if pixel_scale_arcsec is None:
            if not (np.isfinite(psr) and psr > 0):
                msg = f"psr must be positive; got {psr!r}"
                raise ValueError(msg)
            pixel_scale_arcsec = psr * float(np.median(in_scales))
        elif not (np.isfinite(pixel_scale_arcsec) and pixel_scale_arcsec > 0):
            msg = f"pixel_scale_arcsec must be a positive number; got {pixel_scale_arcsec!r}"
            raise ValueError(msg)

        prints = [footprint(w, s) for w, s in zip(wcs_list, shapes, strict=True)]
        broken = [n for n, p in zip(names, prints, strict=True) if not np.all(np.isfinite(p))]
        if broken:
            msg = f"{', '.join(broken)}: the WCS maps the detector's edges to no finite sky position; expected a celestial WCS of the detector"
            raise LimitError(msg)
        scale_deg = pixel_scale_arcsec / 3600.0
        reach = _check_spread(prints, names, scale_deg, limit)
        sky = np.concatenate(prints)
        if crval is None:
            vec = _radec_to_xyz(sky[:, 0], sky[:, 1]).mean(axis=0)
            crval = _xyz_to_radec(vec)
        probe = _tan_wcs(crval, scale_deg, rotation_deg, (1.0, 1.0), (1, 1))
        px, py = probe.world_to_pixel_values(sky[:, 0], sky[:, 1])
        if not (np.all(np.isfinite(px)) and np.all(np.isfinite(py))):
            msg = f"exposures {', '.join(names)}: their footprints do not project onto a tangent plane at {crval}; expected exposures within {_MAX_TANGENT_DEG:g} deg of it"
            raise LimitError(msg)
        x0, x1 = np.floor(px.min() + 0.5), np.ceil(px.max() + 0.5)
        y0, y1 = np.floor(py.min() + 0.5), np.ceil(py.max() + 0.5)
        if max(x1 - x0, y1 - y0) > limit:
            farthest = "; ".join(f"{names[k]} ({reach[k]:.3g} deg)" for k in np.argsort(-reach)[:3])
            msg = (
                f"the output grid would be {int(y1 - y0):,} x {int(x1 - x0):,} pixels at {pixel_scale_arcsec:.4g} arcsec/px (psr {psr}); "
                f"expected at most {limit:,} a side (dask config mosaic.limits.max-grid-side); farthest from the exposures' centre: "
                f"{farthest}: raise psr or the limit, or give fewer exposures"
            )
            raise LimitError(msg)
        nx, ny = int(x1 - x0), int(y1 - y0)
        # pixel (i, j) of the new grid is probe pixel (i + x0, j + y0): shift CRPIX (1-based)
        wcs = _tan_wcs(crval, scale_deg, rotation_deg, (1.0 - x0, 1.0 - y0), (ny, nx))
        log.info("output grid %d x %d at %.5f arcsec/px (psr %s)", ny, nx, pixel_scale_arcsec, psr)
        return cls(wcs=wcs, shape=(ny, nx), tile=tile, halo=halo, psr=psr)

    @classmethod
    def from_header(cls, header: fits.Header, *, tile=1024, halo: int = 0) -> MosaicGrid:
        """The grid described by a FITS header with NAXIS1/2 and a celestial WCS."""
        try:
            shape = (int(header["NAXIS2"]), int(header["NAXIS1"]))
        except KeyError as err:
            msg = f"grid header lacks {err.args[0]}; expected NAXIS1 and NAXIS2"
            raise ValueError(msg) from None
        wcs = WCS(header).celestial
        if not wcs.has_celestial:
            msg = "grid header has no celestial WCS; expected CTYPE1/2 = RA---TAN/DEC--TAN"
            raise ValueError(msg)
        wcs.pixel_shape = (shape[1], shape[0])
        psr = header.get("MOS_PSR")
        return cls(wcs=wcs, shape=shape, tile=tile, halo=halo, psr=psr)

    def to_header(self) -> fits.Header:
        """FITS header of the grid (NAXIS, WCS, pixel-scale ratio)."""
        hdr = fits.Header()
        hdr["NAXIS"] = 2
        hdr["NAXIS1"] = self.shape[1]
        hdr["NAXIS2"] = self.shape[0]
        # 17 significant digits: the grid read back is the grid written, to the last bit
        hdr.update(self.wcs.to_header(relax=WCSHDO_P17))
        if self.psr is not None:
            hdr["MOS_PSR"] = (float(self.psr), "pixel-scale ratio output/input")
        return hdr

    def padded(self, margin: int) -> MosaicGrid:
        """The same grid grown by ``margin`` pixels on every side (pixel ``(y, x)`` becomes ``(y + margin, x + margin)``).

        A deconvolution needs room outside the data's footprint for the light that the PSF
        spreads into the exposures from sources beyond their edges; without it that light piles
        up on the mosaic's edge. A margin of the PSF radius gives it room.
        """
        margin = int(margin)
        if margin < 0:
            msg = f"margin must be 0 or more pixels; got {margin!r}"
            raise ValueError(msg)
        if margin == 0:
            return self
        wcs = self.wcs.deepcopy()
        wcs.wcs.crpix = wcs.wcs.crpix + margin
        shape = (self.shape[0] + 2 * margin, self.shape[1] + 2 * margin)
        wcs.pixel_shape = (shape[1], shape[0])
        return replace(self, wcs=wcs, shape=shape)

    def with_tiling(self, tile, halo: int | None = None) -> MosaicGrid:
        """The same grid with another tile size (and halo)."""
        return replace(self, tile=tile, halo=self.halo if halo is None else halo)

    # -- geometry ------------------------------------------------------------------------

    @property
    def pixel_scale_arcsec(self) -> float:
        """Output pixel scale in arcsec."""
        return float(np.mean(proj_plane_pixel_scales(self.wcs)) * 3600.0)

    @property
    def pixel_area_sr(self) -> float:
        """Solid angle of one output pixel in steradians."""
        return float(np.deg2rad(self.pixel_scale_arcsec / 3600.0) ** 2)

    def slice_wcs(self, region: tuple[slice, slice]) -> WCS:
        """The WCS of a ``(y, x)`` region of the grid, its pixel (0, 0) at the region's start."""
        w = self.wcs.deepcopy()
        w.wcs.crpix = [w.wcs.crpix[0] - region[1].start, w.wcs.crpix[1] - region[0].start]
        w.pixel_shape = (region[1].stop - region[1].start, region[0].stop - region[0].start)
        return w

    # -- tiling --------------------------------------------------------------------------

    @property
    def n_tiles(self) -> tuple[int, int]:
        """Number of tile rows and columns."""
        return tuple(-(-n // t) for n, t in zip(self.shape, self.tile, strict=True))

    @property
    def chunks(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Dask chunks of an array on this grid, one chunk per tile core."""
        return tuple(
            tuple(min(t, n - s) for s in tile_starts(n, t))
            for n, t in zip(self.shape, self.tile, strict=True)
        )

    def tile_at(self, index: tuple[int, int]) -> Tile:
        """The tile at ``(row, column)``."""
        ty, tx = self.tile
        iy, ix = index
        nty, ntx = self.n_tiles
        if not (0 <= iy < nty and 0 <= ix < ntx):
            msg = f"tile index {index!r} outside the {nty} x {ntx} tiling"
            raise IndexError(msg)
        y0, x0 = iy * ty, ix * tx
        y1, x1 = min(y0 + ty, self.shape[0]), min(x0 + tx, self.shape[1])
        h = self.halo
        core = (slice(y0, y1), slice(x0, x1))
        outer = (
            slice(max(y0 - h, 0), min(y1 + h, self.shape[0])),
            slice(max(x0 - h, 0), min(x1 + h, self.shape[1])),
        )
        return Tile(index=(iy, ix), core=core, outer=outer)

    def tiles(self) -> list[Tile]:
        """All tiles, row by row."""
        nty, ntx = self.n_tiles
        return [self.tile_at((iy, ix)) for iy in range(nty) for ix in range(ntx)]

    # -- overlap index -------------------------------------------------------------------

    def footprint_pixels(self, wcs: WCS, shape: tuple[int, int]) -> np.ndarray:
        """An exposure's footprint traced in output pixel coordinates, ``(n, 2)`` of (x, y)."""
        sky = footprint(wcs, shape)
        x, y = self.wcs.world_to_pixel_values(sky[:, 0], sky[:, 1])
        return np.column_stack([x, y])

    def touches(self, wcs: WCS, shape: tuple[int, int], *, margin: float = 2.0) -> list[tuple[int, int]]:
        """Indices of the tiles whose outer region an exposure's footprint touches.

        The footprint's convex hull, grown by ``margin`` output pixels (for kernels that
        spill past the pixel edges), is tested against each tile's outer rectangle.
        """
        pts = self.footprint_pixels(wcs, shape)
        if not np.all(np.isfinite(pts)):
            return []
        from scipy.spatial import ConvexHull  # noqa: PLC0415  (scipy: ~1 s of start-up, needed here only)

        hull = pts[ConvexHull(pts).vertices]
        centre = hull.mean(axis=0)
        d = hull - centre
        hull = hull + margin * d / np.maximum(np.hypot(d[:, 0], d[:, 1]), 1e-9)[:, None]
        hx0, hy0 = hull.min(axis=0)
        hx1, hy1 = hull.max(axis=0)
        out = []
        for t in self.tiles():
            ys, xs = t.outer
            # pixel i spans [i - 0.5, i + 0.5]
            bx0, bx1, by0, by1 = xs.start - 0.5, xs.stop - 0.5, ys.start - 0.5, ys.stop - 0.5
            if bx1 < hx0 or bx0 > hx1 or by1 < hy0 or by0 > hy1:
                continue
            rect = np.array([[bx0, by0], [bx1, by0], [bx1, by1], [bx0, by1]])
            if _convex_polygons_intersect(hull, rect):
                out.append(t.index)
        return out

    def overlap_index(self, wcs_list, shapes) -> dict[tuple[int, int], list[int]]:
        """Which exposures touch which tile: ``{tile index: [exposure numbers]}``.

        Every tile appears, with an empty list where no exposure lands.
        """
        index = {t.index: [] for t in self.tiles()}
        for k, (w, s) in enumerate(zip(wcs_list, shapes, strict=True)):
            for ti in self.touches(w, s):
                index[ti].append(k)
        return index


class ExposureList(list):
    """A list of WCSs that knows the names (file paths) of its exposures, for messages."""

    def __init__(self, items=(), names=()):
        super().__init__(items)
        self.names = [str(n) for n in names]


def _exposure_names(wcs_list, names) -> list[str]:
    if names is None:
        names = getattr(wcs_list, "names", None)
    if names is None or len(names) != len(wcs_list):
        return [f"exposure {k}" for k in range(len(wcs_list))]
    return [str(n) for n in names]


def _check_spread(prints, names, scale_deg: float, limit: int) -> np.ndarray:
    """Refuse exposures too far from the others: beyond the tangent plane, or stretching the grid past ``limit``.

    The reference is the median of the exposures' centres (unit vectors), which a few strays
    do not move; an exposure whose footprint reaches farther from it than half the largest
    grid side (or than :data:`_MAX_TANGENT_DEG`) is named with its distance.
    """
    from mosaic.exceptions import LimitError  # noqa: PLC0415

    centres = np.array([_radec_to_xyz(p[:, 0], p[:, 1]).mean(axis=0) for p in prints])
    ref = np.median(centres, axis=0)
    if not np.linalg.norm(ref) > 0:
        ref = centres[0]
    ref = ref / np.linalg.norm(ref)
    reach = []  # farthest footprint point of each exposure from the reference, deg
    for p in prints:
        cosang = np.clip(_radec_to_xyz(p[:, 0], p[:, 1]) @ ref, -1.0, 1.0)
        reach.append(float(np.rad2deg(np.arccos(cosang.min()))))
    reach = np.array(reach)
    half = 0.5 * limit * scale_deg
    far = (reach > _MAX_TANGENT_DEG) | (reach > half)
    if far.any() and not far.all():
        order = np.argsort(-reach)
        named = [f"{names[k]} ({reach[k]:.3g} deg from the others' centre)" for k in order if far[k]]
        msg = (
            f"{len(named)} exposure(s) lie too far from the others for one output grid "
            f"(at most {half:.3g} deg from their centre at {limit:,} px a side, {scale_deg * 3600:.4g} arcsec/px): "
            f"{'; '.join(named)}; expected exposures of one field: remove them, or raise dask config mosaic.limits.max-grid-side"
        )
        raise LimitError(msg)
    if np.any(reach > _MAX_TANGENT_DEG):
        msg = (
            f"exposures {', '.join(names)} span {reach.max():.3g} deg of sky; expected one field within "
            f"{_MAX_TANGENT_DEG:g} deg of its centre (one tangent plane)"
        )
        raise LimitError(msg)
    return reach


def _local_pixel_scale_arcsec(wcs: WCS, shape) -> float:
    """Pixel scale at the detector centre, from the full (distorted) WCS (NaN where the WCS gives none)."""
    cy, cx = (shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0
    x = np.array([cx, cx + 1.0, cx])
    y = np.array([cy, cy, cy + 1.0])
    with np.errstate(invalid="ignore", over="ignore"):
        ra, dec = wcs.pixel_to_world_values(x, y)
        xyz = _radec_to_xyz(ra, dec)
        area = np.linalg.norm(np.cross(xyz[1] - xyz[0], xyz[2] - xyz[0]))
        return float(np.rad2deg(np.sqrt(area)) * 3600.0)


def _radec_to_xyz(ra, dec) -> np.ndarray:
    ra, dec = np.deg2rad(ra), np.deg2rad(dec)
    return np.column_stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])


def _xyz_to_radec(v) -> tuple[float, float]:
    v = v / np.linalg.norm(v)
    return float(np.rad2deg(np.arctan2(v[1], v[0])) % 360.0), float(np.rad2deg(np.arcsin(v[2])))

