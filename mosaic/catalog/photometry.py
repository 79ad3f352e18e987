"""Tiled source photometry: the whole-image ``photutils.segmentation.SourceCatalog``, per tile.

Every source belongs to the tile that holds its centroid. A source's measurements read only
its segment's bounding box (centroid, shape, segment flux) and the boxes of its apertures
(Kron radius within 6 semi-major axes, the Kron aperture within ``kron_params[0] * 6`` of
them, circular apertures, neighbours masked or mirrored inside them). So the catalogue is made
in two passes over the persisted segmentation map:

1. per tile, the image moments of every segment piece in it (the weights photutils uses: the
   convolved data, negative, masked and non-finite pixels zeroed) are summed; gathered, they
   give every segment's centroid and semi-major axis, hence the region its apertures can reach;
2. per tile, the sources whose centroid it holds are measured by ``SourceCatalog`` on the
   union of those regions (clipped at the image edges, where the whole-image catalogue clips
   too); the few sources that reach further than a quarter tile beyond their tile are measured
   in tasks of their own, so one large galaxy does not grow every region of its tile.

Each value is then the whole-image value (same pixels, same arithmetic). RA/Dec come from the
image's WCS at the global centroid. Each pass is one graph: every image chunk is read once per
pass and regions are assembled from pieces of chunks (:mod:`mosaic.catalog.regions`).

Flags (bit values): ``1`` the source's Kron aperture (its segment where it has none) holds
masked or non-finite pixels; ``2`` the segment touches the image edge or its Kron aperture
reaches beyond the image.
"""

from __future__ import annotations

import logging
import warnings

import astropy.units as u
import dask
import numpy as np
from astropy.table import QTable

from mosaic.catalog.detect import Segmentation, as_tiled
from mosaic.catalog.regions import ChunkGrid, delayed_on_regions, optimize_together
from mosaic.exceptions import NoWCSWarning
from mosaic.progress import compute
from mosaic.registry import algorithm

__all__ = ["FLAGS", "KRON_PARAMS", "NoWCSWarning", "catalog_columns", "empty_catalog", "source_catalog"]

log = logging.getLogger(__name__)

#: flag bits of the ``flags`` column
FLAGS = {"masked": 1, "edge": 2}

#: Kron scale, least Kron radius and least circular radius (photutils' ``kron_params``) by default
KRON_PARAMS = (2.5, 1.4, 0.0)

#: photutils properties copied into the catalogue, and their units (``None``: the flux unit)
_PIXEL_COLUMNS = {
    "area": u.pix**2,
    "semimajor_axis": u.pix,
    "semiminor_axis": u.pix,
    "orientation": u.deg,
    "ellipticity": u.dimensionless_unscaled,
    "kron_radius": u.pix,
    "segment_flux": None,
    "segment_flux_err": None,
    "kron_flux": None,
    "kron_flux_err": None,
}


def _radius_name(r: float) -> str:
    return f"{float(r):g}".replace(".", "p")


def catalog_columns(radii=()) -> list[str]:
    """Column names of a catalogue with circular apertures of ``radii`` (pixels)."""
    cols = ["label", "parent", "x_centroid", "y_centroid", "ra", "dec", "bbox_xmin", "bbox_xmax", "bbox_ymin", "bbox_ymax"]
    cols += list(_PIXEL_COLUMNS)
    for r in radii:
        cols += [f"circ_flux_r{_radius_name(r)}", f"circ_flux_err_r{_radius_name(r)}"]
    return [*cols, "flags"]


def empty_catalog(radii=(), *, flux_unit=u.dimensionless_unscaled) -> QTable:
    """A catalogue with no rows and every column, typed and with units."""
    t = QTable()
    for name in catalog_columns(radii):
        if name in ("label", "parent", "flags") or name.startswith("bbox_"):
            t[name] = np.zeros(0, dtype=np.int64)
        else:
            unit = _unit_of(name, flux_unit)
            t[name] = np.zeros(0) * unit
    return t


def _unit_of(name, flux_unit):
    if name in ("x_centroid", "y_centroid"):
        return u.pix
    if name in ("ra", "dec"):
        return u.deg
    if name.startswith("circ_flux") or name not in _PIXEL_COLUMNS:
        return flux_unit
    unit = _PIXEL_COLUMNS[name]
    return flux_unit if unit is None else unit


def _catalog(data, segm, error, mask, convolved, kron_params, aperture_mask_method):
    from photutils.segmentation import SegmentationImage, SourceCatalog  # noqa: PLC0415

    return SourceCatalog(
        np.asarray(data, dtype=np.float64), SegmentationImage(np.asarray(segm)),
        convolved_data=None if convolved is None else np.asarray(convolved, dtype=np.float64),
        error=None if error is None else np.asarray(error, dtype=np.float64),
        mask=None if mask is None else np.asarray(mask, dtype=bool),
        kron_params=kron_params, aperture_mask_method=aperture_mask_method,
    )


def _tile_moments(seg, weights, mask, origin, bbox_origin):
    """Pass 1: raw moments ``(sum w, w x, w y, w x x, w x y, w y y)`` of the segment pieces in a tile.

    Coordinates are relative to each segment's bounding-box corner, as photutils measures them
    on its cut-out; ``weights`` are zeroed where photutils zeroes its moment data.
    """
    seg = np.asarray(seg)
    w = np.array(weights, dtype=np.float64)
    bad = ~np.isfinite(w) | (w < 0)
    if mask is not None:
        bad |= np.asarray(mask, dtype=bool)
    w[bad] = 0.0
    yy, xx = np.nonzero(seg)
    lab = seg[yy, xx]
    present, inverse = np.unique(lab, return_inverse=True)
    y = (yy + origin[0] - bbox_origin[lab - 1, 0]).astype(np.float64)
    x = (xx + origin[1] - bbox_origin[lab - 1, 1]).astype(np.float64)
    wv = w[yy, xx]
    sums = np.empty((present.size, 6))
    for col, v in enumerate((wv, wv * x, wv * y, wv * x * x, wv * x * y, wv * y * y)):
        sums[:, col] = np.bincount(inverse, weights=v, minlength=present.size)
    return present, sums


def _centroids_and_sizes(sums, bbox):
    """Global ``(x, y)`` centroids and an upper bound on the semi-major axes, from raw moments.

    The bound is the covariance's larger eigenvalue plus the ``1/12`` photutils adds to the
    diagonal of thin sources (its semi-major axis, up to rounding); NaN centroids (no positive
    weight) fall back to the bounding-box centre, with no aperture reach.
    """
    s0, sx, sy, sxx, sxy, syy = sums.T
    with np.errstate(invalid="ignore", divide="ignore"):
        cx, cy = sx / s0, sy / s0
        vxx, vyy, vxy = sxx / s0 - cx * cx, syy / s0 - cy * cy, sxy / s0 - cx * cy
    lam = 0.5 * (vxx + vyy) + np.sqrt(0.25 * (vxx - vyy) ** 2 + vxy**2)
    a = np.sqrt(np.maximum(np.nan_to_num(lam, nan=0.0), 0.0) + 1.0 / 12 + 1e-6)
    ok = np.isfinite(cx) & np.isfinite(cy)
    x = np.where(ok, cx + bbox[:, 2], 0.5 * (bbox[:, 2] + bbox[:, 3] - 1))
    y = np.where(ok, cy + bbox[:, 0], 0.5 * (bbox[:, 0] + bbox[:, 1] - 1))
    return np.column_stack([x, y]), np.where(ok, a, 0.0)


def _measure(data, segm, error, mask, convolved, origin, labels, radii, kron_params, aperture_mask_method, image_shape):
    """Pass 2: the catalogue rows of ``labels`` (global coordinates)."""
    cat = _catalog(data, segm, error, mask, convolved, kron_params, aperture_mask_method).select_labels(labels)
    y0, x0 = origin
    rows = {"label": np.asarray(labels, dtype=np.int64)}
    rows["x_centroid"] = np.atleast_1d(cat.x_centroid) + x0
    rows["y_centroid"] = np.atleast_1d(cat.y_centroid) + y0
    for name, off in (("bbox_xmin", x0), ("bbox_xmax", x0), ("bbox_ymin", y0), ("bbox_ymax", y0)):
        rows[name] = np.atleast_1d(getattr(cat, name)).astype(np.int64) + off
    for name in _PIXEL_COLUMNS:
        rows[name] = np.atleast_1d(u.Quantity(getattr(cat, name)).value).astype(np.float64)
    for r in radii:
        flux, err = cat.circular_photometry(r)
        rows[f"circ_flux_r{_radius_name(r)}"] = np.atleast_1d(u.Quantity(flux).value)
        rows[f"circ_flux_err_r{_radius_name(r)}"] = np.atleast_1d(u.Quantity(err).value)
    rows["flags"] = _flags(cat, data, mask, origin, image_shape, rows)
    return rows


def _flags(cat, data, mask, origin, image_shape, rows) -> np.ndarray:
    bad = ~np.isfinite(np.asarray(data))
    if mask is not None:
        bad |= np.asarray(mask, dtype=bool)
    any_bad = bool(bad.any())  # else no aperture or segment holds a bad pixel: no masks to make
    bad = bad.astype(np.float64)  # once: get_values wants numbers
    y0, x0 = origin
    flags = np.zeros(len(rows["label"]), dtype=np.int64)
    apertures = cat.kron_aperture if not cat.isscalar else [cat.kron_aperture]
    segments = cat.segment_cutout if not cat.isscalar else [cat.segment_cutout]
    slices = cat.slices if not cat.isscalar else [cat.slices]
    for i, (ap, seg, sl) in enumerate(zip(apertures, segments, slices, strict=True)):
        touches = rows["bbox_xmin"][i] == 0 or rows["bbox_ymin"][i] == 0
        touches |= rows["bbox_xmax"][i] == image_shape[1] - 1 or rows["bbox_ymax"][i] == image_shape[0] - 1
        if ap is not None:
            b = ap.bbox
            touches |= b.ixmin + x0 < 0 or b.iymin + y0 < 0 or b.ixmax + x0 > image_shape[1] or b.iymax + y0 > image_shape[0]
            masked = any_bad and bool(np.any(ap.to_mask(method="center").get_values(bad) > 0))
        else:
            masked = any_bad and bool(np.any(bad[sl][np.asarray(seg) > 0] > 0))
        flags[i] = FLAGS["masked"] * masked + FLAGS["edge"] * bool(touches)
    return flags


def _owner(xy: np.ndarray, tile, shape) -> np.ndarray:
    iy = np.clip(np.floor(xy[:, 1] + 0.5), 0, shape[0] - 1).astype(int) // tile[0]
    ix = np.clip(np.floor(xy[:, 0] + 0.5), 0, shape[1] - 1).astype(int) // tile[1]
    return iy * 1_000_000 + ix


def _groups(owner: np.ndarray) -> list[np.ndarray]:
    order = np.argsort(owner, kind="stable")
    bounds = np.flatnonzero(np.diff(owner[order])) + 1
    return np.split(order, bounds) if owner.size else []


def _union(boxes: np.ndarray) -> tuple[slice, slice]:
    return slice(int(boxes[:, 0].min()), int(boxes[:, 1].max())), slice(int(boxes[:, 2].min()), int(boxes[:, 3].max()))


@algorithm("catalog")
def source_catalog(
    data,
    segmentation: Segmentation,
    *,
    error=None,
    mask=None,
    convolved=None,
    wcs=None,
    radii=(),
    kron_params=KRON_PARAMS,
    aperture_mask_method: str = "correct",
    flux_scale: float = 1.0,
    flux_unit=u.dimensionless_unscaled,
) -> QTable:
    """Photometry of every segment, tile by tile, equal to ``SourceCatalog`` on the whole image.

    Parameters
    ----------
    data : array
        Background-subtracted image (NumPy or dask), as photutils' ``data``.
    segmentation : Segmentation
        From :func:`mosaic.catalog.detect.detect_segmentation` on this image.
    error : array, optional
        1-sigma errors (the ERR map); flux errors are NaN-free only where it is given.
    mask : bool array, optional
        True where pixels are bad (excluded from every measurement, flagged).
    convolved : array, optional
        The smoothed detection image, for centroids and shapes (photutils' ``convolved_data``).
    wcs : astropy.wcs.WCS, optional
        Celestial WCS of the image, for ``ra``/``dec``; without one they are NaN (with a
        :class:`NoWCSWarning`).
    radii : sequence of float
        Radii (pixels) of circular-aperture fluxes ``circ_flux_r<r>``.
    kron_params : tuple of float
        Kron scale, minimum Kron radius, minimum circular radius (photutils' ``kron_params``).
    aperture_mask_method : {"correct", "mask", "none"}
        How neighbours inside apertures are treated (photutils' ``aperture_mask_method``).
    flux_scale : float
        Factor from summed data values to ``flux_unit`` (e.g. MJy/sr times pixel area to µJy).
    flux_unit : astropy unit
        Unit of the flux columns.

    Returns
    -------
    astropy.table.QTable
        One row per segment, in label order; columns :func:`catalog_columns`.
    """
    if aperture_mask_method not in ("correct", "mask", "none"):
        msg = f"aperture_mask_method {aperture_mask_method!r} is not allowed; expected one of ('correct', 'mask', 'none')"
        raise ValueError(msg)
    radii = tuple(float(r) for r in radii)
    if any(not r > 0 for r in radii):
        msg = f"aperture radii must be positive; got {radii!r}"
        raise ValueError(msg)
    flux_unit = u.Unit(flux_unit)
    shape, tile = segmentation.shape, segmentation.tile
    if wcs is None or not getattr(wcs, "has_celestial", False):
        warnings.warn("the image has no celestial WCS; the catalogue's ra and dec are NaN", NoWCSWarning, stacklevel=2)
        wcs = None
    if segmentation.n_labels == 0:
        return empty_catalog(radii, flux_unit=flux_unit)
    img, seg, err, msk, conv = optimize_together(
        as_tiled(data, shape, tile, name="data"), segmentation.data, as_tiled(error, shape, tile, name="error"),
        as_tiled(mask, shape, tile, name="mask", dtype=bool), as_tiled(convolved, shape, tile, name="convolved"),
    )
    grids = [ChunkGrid(v) for v in (img, seg, err, msk, conv)]
    kron_params = tuple(float(k) for k in kron_params)
    bbox = segmentation.bbox

    # pass 1: moments of the segment pieces in each tile, summed per segment
    img_g, seg_g, _, msk_g, conv_g = grids
    weights_g = conv_g if conv_g.is_array else img_g
    corners = dask.delayed(np.ascontiguousarray(bbox[:, [0, 2]]))
    ey, ex = seg_g.edges
    tasks = [
        dask.delayed(_tile_moments, pure=True)(
            seg_g.blocks[i, j], weights_g.blocks[i, j], msk_g.blocks[i, j] if msk_g.is_array else None, (int(ey[i]), int(ex[j])), corners,
        )
        for i in range(len(ey) - 1)
        for j in range(len(ex) - 1)
    ]
    sums = np.zeros((segmentation.n_labels, 6))
    for present, part in compute(*tasks, description="catalog: moments"):
        np.add.at(sums, present - 1, part)
    xy, a = _centroids_and_sizes(sums, bbox)

    # pass 2: each tile measures the sources whose centroid it holds, on the region their apertures reach
    k_max = kron_params[0] * max(6.0, kron_params[1]) if len(kron_params) > 1 else kron_params[0] * 6.0
    reach = np.maximum(max(6.0, k_max) * a, max((*radii, kron_params[2] if len(kron_params) > 2 else 0.0), default=0.0)) + 2.0
    need = np.column_stack([
        np.minimum(bbox[:, 0], np.floor(xy[:, 1] - reach)), np.maximum(bbox[:, 1], np.ceil(xy[:, 1] + reach) + 1),
        np.minimum(bbox[:, 2], np.floor(xy[:, 0] - reach)), np.maximum(bbox[:, 3], np.ceil(xy[:, 0] + reach) + 1),
    ]).astype(np.int64)
    need[:, 0:2] = np.clip(need[:, 0:2], 0, shape[0])
    need[:, 2:4] = np.clip(need[:, 2:4], 0, shape[1])
    tasks = []
    for members in _work_groups(xy, need, tile, shape):
        region = _union(need[members])
        origin = (region[0].start, region[1].start)
        tasks.append(
            delayed_on_regions(
                _measure, [g.region(region) for g in grids], origin, members + 1, radii, kron_params, aperture_mask_method, shape,
            )
        )
    log.info("catalog: %d sources in %d photometry tasks", segmentation.n_labels, len(tasks))
    parts = compute(*tasks, description="catalog: photometry")
    return _assemble(parts, segmentation, wcs, radii, flux_scale, flux_unit)


def _work_groups(xy, need, tile, shape) -> list[np.ndarray]:
    """Sources grouped by the tile holding their centroid; those reaching over a quarter tile
    beyond it form extra groups (one per tile), so regions stay near tile-sized."""
    halo = max(16, max(tile) // 4)
    owner = _owner(xy, tile, shape)
    iy, ix = owner // 1_000_000, owner % 1_000_000
    far = (
        (need[:, 0] < iy * tile[0] - halo) | (need[:, 1] > (iy + 1) * tile[0] + halo)
        | (need[:, 2] < ix * tile[1] - halo) | (need[:, 3] > (ix + 1) * tile[1] + halo)
    )
    return _groups(owner * 2 + far)


def _assemble(parts, segmentation, wcs, radii, flux_scale, flux_unit) -> QTable:
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.argsort(cols["label"])
    t = QTable()
    for name in catalog_columns(radii):
        if name == "parent":
            t[name] = segmentation.parent[cols["label"][order] - 1].astype(np.int64)
        elif name in ("ra", "dec"):
            continue
        else:
            v = cols[name][order]
            if name in ("label", "flags") or name.startswith("bbox_"):
                t[name] = v.astype(np.int64)
            else:
                unit = _unit_of(name, flux_unit)
                scale = flux_scale if unit == flux_unit and name not in ("ellipticity",) else 1.0
                t[name] = v * scale * unit
    if wcs is not None:
        ra, dec = wcs.pixel_to_world_values(t["x_centroid"].value, t["y_centroid"].value)
    else:
        ra = dec = np.full(len(t), np.nan)
    t.add_column(np.asarray(ra, dtype=float) * u.deg, name="ra", index=4)
    t.add_column(np.asarray(dec, dtype=float) * u.deg, name="dec", index=5)
    return t
