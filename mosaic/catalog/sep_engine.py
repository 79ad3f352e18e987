"""The SEP engine: SExtractor-style detection and aperture/Kron photometry, tile by tile.

:func:`sep_catalog` gives the catalogue that SEP gives on the whole image::

    objs = sep.extract(data, threshold, err=err, mask=mask, minarea=..., clean=False)
    kr, _ = sep.kron_radius(data, x, y, a, b, theta, 6.0, mask=mask)
    sep.sum_ellipse(data, x, y, a, b, theta, 2.5 * max(kr, 3.5), err=err, mask=mask, subpix=1)
    sep.sum_circle(data, x, y, r, err=err, mask=mask)

(rows sorted by ``y`` then ``x``), while no task holds more than a tile and its halo, or one
large source and its halo. SEP's filter, threshold, 8-connected labelling and deblending only
look at a source's own pixels and the filter's reach around them, and its apertures at the
pixels they cover, so:

1. every tile grown by ``halo`` pixels is extracted by SEP; a source is *complete* there when
   its parent segment (the 8-connected union of its family's pixels) stays clear of the halo's
   outer edge by the filter's reach. The tile keeps the complete families whose first pixel (in
   raster order) lies in its core, and measures them where their apertures fit in the region;
2. every tile also reports its core's segment pixels (labels, edges: :mod:`mosaic.catalog.merge`);
   joined across seams they give every parent's bounding box, and the parents no tile kept
   (larger than the halo) are extracted again on their box grown by ``halo``;
3. sources whose apertures reach beyond their region are measured on the region they need.

SExtractor's *cleaning* is not done (``clean=False``): it merges detections up to ten
semi-major axes apart by a profile model, which couples sources beyond any fixed halo.
"""

from __future__ import annotations

import logging
import warnings

import astropy.units as u
import numpy as np
from astropy.table import QTable
from scipy import ndimage as ndi

from mosaic.catalog.detect import _tile_pair, as_tiled
from mosaic.catalog.merge import label_tile, merge_tiles, tile_summary
from mosaic.catalog.regions import ChunkGrid, delayed_on_regions, optimize_together
from mosaic.exceptions import NoDetectionsWarning, NoWCSWarning
from mosaic.progress import compute

__all__ = ["SEP_DEFAULT_KERNEL", "SEP_KRON_PARAMS", "SEP_KRON_RADIUS", "sep_catalog", "sep_columns"]

log = logging.getLogger(__name__)

#: SEP's (and SExtractor's) default 3x3 detection filter
SEP_DEFAULT_KERNEL = np.array([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]])
#: the ellipse (in units of a, b) within which the Kron radius is measured
SEP_KRON_RADIUS = 6.0
#: Kron factor and least Kron radius by default (SExtractor's ``PHOT_AUTOPARAMS``)
SEP_KRON_PARAMS = (2.5, 3.5)


def _radius_name(r: float) -> str:
    return f"{float(r):g}".replace(".", "p")


def sep_columns(radii=()) -> list[str]:
    """Column names of an SEP-engine catalogue with circular apertures of ``radii`` (pixels)."""
    cols = [
        "label", "x_centroid", "y_centroid", "ra", "dec", "bbox_xmin", "bbox_xmax", "bbox_ymin", "bbox_ymax", "area",
        "semimajor_axis", "semiminor_axis", "orientation", "segment_flux", "peak", "kron_radius", "kron_flux", "kron_flux_err",
    ]
    for r in radii:
        cols += [f"circ_flux_r{_radius_name(r)}", f"circ_flux_err_r{_radius_name(r)}"]
    return [*cols, "flags"]


_UNITS = {
    "x_centroid": u.pix, "y_centroid": u.pix, "ra": u.deg, "dec": u.deg, "area": u.pix**2, "semimajor_axis": u.pix,
    "semiminor_axis": u.pix, "orientation": u.deg, "kron_radius": u.dimensionless_unscaled,
}


# -- in the tasks ---------------------------------------------------------------------------------


def _sep_ready(a, dtype=np.float64):
    return None if a is None else np.ascontiguousarray(a, dtype=dtype)


def _extract(data, err, mask, params):
    import sep  # noqa: PLC0415

    sep.set_extract_pixstack(max(300_000, data.size))
    sep.set_sub_object_limit(max(1024, params["sub_object_limit"]))
    return sep.extract(
        data, params["threshold"], err=err, mask=mask, minarea=params["minarea"], filter_kernel=params["filter_kernel"],
        filter_type=params["filter_type"], deblend_nthresh=params["deblend_nthresh"], deblend_cont=params["deblend_cont"],
        clean=False, segmentation_map=params.get("segmentation_map", True),
    )


def _families(segmap, origin, image_shape, margin):
    """Per object of ``segmap``: its family (8-connected parent) index, and per family whether it
    is complete in this region and the global raster index of its first pixel."""
    comp, n = ndi.label(segmap > 0, structure=np.ones((3, 3), bool))
    ny, nx = segmap.shape
    flat, cflat = segmap.ravel(), comp.ravel()
    nz = np.flatnonzero(flat)
    n_obj = int(flat.max()) if flat.size else 0
    obj_family = np.zeros(n_obj, dtype=np.int64)
    _, at = np.unique(flat[nz], return_index=True)
    obj_family[flat[nz[at]] - 1] = cflat[nz[at]] - 1
    y0, x0 = origin
    lo_y = margin if y0 > 0 else 0
    lo_x = margin if x0 > 0 else 0
    hi_y = ny - margin if y0 + ny < image_shape[0] else ny
    hi_x = nx - margin if x0 + nx < image_shape[1] else nx
    complete = np.zeros(n, dtype=bool)
    first = np.zeros(n, dtype=np.int64)
    for k, sl in enumerate(ndi.find_objects(comp)):
        complete[k] = sl[0].start >= lo_y and sl[0].stop <= hi_y and sl[1].start >= lo_x and sl[1].stop <= hi_x
    cz = np.flatnonzero(cflat)
    _, at = np.unique(cflat[cz], return_index=True)
    yy, xx = np.divmod(cz[at], nx)
    first[cflat[cz[at]] - 1] = (yy + y0) * image_shape[1] + (xx + x0)
    return obj_family, complete, first


def _fits(lo, hi, origin, shape, image_shape) -> np.ndarray:
    """True where the boxes ``[lo, hi)`` (global y, x) lie in the region or meet it only at the image edge."""
    y0, x0 = origin
    ok_y = ((lo[:, 0] >= y0) | (y0 == 0)) & ((hi[:, 0] <= y0 + shape[0]) | (y0 + shape[0] == image_shape[0]))
    ok_x = ((lo[:, 1] >= x0) | (x0 == 0)) & ((hi[:, 1] <= x0 + shape[1]) | (x0 + shape[1] == image_shape[1]))
    return ok_y & ok_x


def _reach_box(x, y, reach):
    lo = np.column_stack([np.floor(y - reach) - 1, np.floor(x - reach) - 1]).astype(np.int64)
    hi = np.column_stack([np.ceil(y + reach) + 2, np.ceil(x + reach) + 2]).astype(np.int64)
    return lo, hi


def _measure(data, err, mask, objs, origin, image_shape, params):
    """Aperture and Kron photometry of ``objs`` (global coordinates) on this region.

    Returns the rows measured and, for the others (apertures reaching past the region), the
    global box ``(ymin, ymax, xmin, xmax)`` they need.
    """
    import sep  # noqa: PLC0415

    y0, x0 = origin
    x, y = objs["x"] - x0, objs["y"] - y0
    a, b, theta = objs["a"], objs["b"], objs["theta"]
    radii = params["radii"]
    k_fact, k_min = params["kron"]
    first = np.maximum(SEP_KRON_RADIUS * a, max(radii, default=0.0))
    lo, hi = _reach_box(objs["x"], objs["y"], first)
    ok = _fits(lo, hi, origin, data.shape, image_shape)
    kr = np.full(len(objs), np.nan)
    kflag = np.zeros(len(objs), dtype=np.int64)
    if ok.any():
        kr[ok], kflag[ok] = sep.kron_radius(data, x[ok], y[ok], a[ok], b[ok], theta[ok], SEP_KRON_RADIUS, mask=mask)
    r_kron = k_fact * np.maximum(np.nan_to_num(kr, nan=SEP_KRON_RADIUS), k_min)
    lo, hi = _reach_box(objs["x"], objs["y"], np.maximum(first, r_kron * a))
    ok &= _fits(lo, hi, origin, data.shape, image_shape)
    need = np.column_stack([lo[~ok, 0], hi[~ok, 0], lo[~ok, 1], hi[~ok, 1]])
    m = objs[ok]
    rows = {"x": m["x"], "y": m["y"], "kron_radius": kr[ok]}
    for name in ("xmin", "xmax", "ymin", "ymax", "npix", "a", "b", "theta", "flux", "peak"):
        rows[name] = m[name]
    flags = m["flag"].astype(np.int64) | kflag[ok]
    if ok.any():
        flux, ferr, f = sep.sum_ellipse(data, x[ok], y[ok], a[ok], b[ok], theta[ok], r_kron[ok], err=err, mask=mask, subpix=1)
        rows["kron_flux"], rows["kron_flux_err"] = flux, ferr
        flags |= f
        for r in radii:
            flux, ferr, f = sep.sum_circle(data, x[ok], y[ok], r, err=err, mask=mask)
            rows[f"circ_flux_r{_radius_name(r)}"], rows[f"circ_flux_err_r{_radius_name(r)}"] = flux, ferr
            flags |= f
    else:
        for name in ("kron_flux", "kron_flux_err", *(f"circ_flux{e}_r{_radius_name(r)}" for r in radii for e in ("", "_err"))):
            rows[name] = np.zeros(0)
    rows["flags"] = flags
    return rows, objs[~ok], need


def _to_global(objs, origin):
    y0, x0 = origin
    out = objs.copy()
    for name in ("x", "xmin", "xmax", "xpeak", "xcpeak"):
        out[name] = out[name] + x0
    for name in ("y", "ymin", "ymax", "ypeak", "ycpeak"):
        out[name] = out[name] + y0
    return out


def _extract_tile(data, err, mask, origin, core, image_shape, params):
    """Pass 1: extract a tile grown by the halo; keep its complete families first seen in its core."""
    data, err = _sep_ready(data), _sep_ready(err)
    mask = _sep_ready(mask, bool)
    objs, segmap = _extract(data, err, mask, params)
    family, complete, first = _families(segmap, origin, image_shape, params["margin"])
    (cy0, cy1), (cx0, cx1) = core
    fy, fx = np.divmod(first, image_shape[1])
    owned = complete & (fy >= cy0) & (fy < cy1) & (fx >= cx0) & (fx < cx1)
    keep = owned[family] if len(objs) else np.zeros(0, bool)
    rows, rest, need = _measure(data, err, mask, _to_global(objs[keep], origin), origin, image_shape, params)
    # the core's segment pixels, for joining parents across seams
    y0, x0 = origin
    labels, n = label_tile(segmap[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] > 0, connectivity=8)
    summary = tile_summary(labels, n, (cy0, cx0), image_shape[1])
    return rows, rest, need, first[owned], summary


def _extract_family(data, err, mask, origin, target, image_shape, params):
    """Pass 2: extract a parent larger than the halo on its own box; keep the family ``target`` (first pixel)."""
    data, err = _sep_ready(data), _sep_ready(err)
    mask = _sep_ready(mask, bool)
    objs, segmap = _extract(data, err, mask, params)
    family, complete, first = _families(segmap, origin, image_shape, params["margin"])
    hit = np.flatnonzero(first == target)
    if hit.size != 1 or not complete[hit[0]]:
        msg = f"SEP engine: the parent at raster index {target} is not whole in its region {origin} + {data.shape}"
        raise RuntimeError(msg)
    keep = family == hit[0]
    return _measure(data, err, mask, _to_global(objs[keep], origin), origin, image_shape, params)


class _Lazy:
    """Arrays handed to a task as they are: dask does not look inside, so lazy ones are computed
    there, by the task, not gathered from other workers."""

    def __init__(self, *arrays):
        self.arrays = arrays


def _extract_whole(inputs, params):
    """The whole image at once: its inputs computed here (read once, nothing moved between
    workers), then SEP on the whole image, every source measured where it is."""
    import time  # noqa: PLC0415

    import dask  # noqa: PLC0415

    t0 = time.perf_counter()
    data, err, mask = dask.compute(*inputs.arrays, scheduler="sync")
    data, err, mask = _sep_ready(data), _sep_ready(err), _sep_ready(mask, bool)
    t1 = time.perf_counter()
    objs = _extract(data, err, mask, {**params, "segmentation_map": False})
    t2 = time.perf_counter()
    rows, rest, _ = _measure(data, err, mask, objs, (0, 0), data.shape, params)
    log.debug("sep: whole image read in %.2f s, extracted in %.2f s, measured in %.2f s", t1 - t0, t2 - t1, time.perf_counter() - t2)
    if len(rest):  # pragma: no cover -- on the whole image every aperture fits (clipped at its edges)
        msg = "SEP engine: apertures did not fit the whole image"
        raise RuntimeError(msg)
    return rows


def _measure_region(data, err, mask, origin, objs, image_shape, params):
    data, err = _sep_ready(data), _sep_ready(err)
    return _measure(data, err, _sep_ready(mask, bool), objs, origin, image_shape, params)


# -- driver -----------------------------------------------------------------------------------------


def _grown(box, halo, shape):
    y0, y1, x0, x1 = box
    return (slice(max(0, y0 - halo), min(shape[0], y1 + halo)), slice(max(0, x0 - halo), min(shape[1], x1 + halo)))


def sep_catalog(
    data,
    threshold: float,
    *,
    err=None,
    mask=None,
    minarea: int = 5,
    filter_kernel=SEP_DEFAULT_KERNEL,
    filter_type: str = "matched",
    deblend_nthresh: int = 32,
    deblend_cont: float = 0.005,
    radii=(3.0, 6.0),
    kron=SEP_KRON_PARAMS,
    tile=1024,
    halo: int = 64,
    wcs=None,
    flux_scale: float = 1.0,
    flux_unit=u.dimensionless_unscaled,
    whole: bool = False,
) -> QTable:
    """Detect and measure sources with SEP, tile by tile, equal to SEP on the whole image.

    Parameters
    ----------
    data : array
        Background-subtracted image (NumPy or dask).
    threshold : float
        Detection threshold: relative (times ``err``) with ``err``, else absolute.
    err : array, optional
        1-sigma noise map, for the threshold, the matched filter and the flux errors.
    mask : bool array, optional
        True where pixels are bad (SEP: data 0, noise infinite; excluded from apertures).
    minarea : int
        Least number of pixels of a source.
    filter_kernel : array or None
        Detection filter (default SEP's 3x3); None for no filtering.
    filter_type : {"matched", "conv"}
        SEP's filter treatment.
    deblend_nthresh, deblend_cont : int, float
        SEP's deblending levels and contrast (1.0: no deblending).
    radii : sequence of float
        Circular aperture radii (pixels).
    kron : (float, float)
        Kron factor and least Kron radius: the Kron aperture is the ellipse ``kron[0] *
        max(kron_radius, kron[1])`` (SExtractor's ``PHOT_AUTOPARAMS``).
    tile : int or (int, int)
        Tile size in pixels.
    halo : int
        Pixels around each tile that its task also reads; parents larger than this are
        extracted again on their own box.
    wcs : astropy.wcs.WCS, optional
        For ``ra`` and ``dec`` (NaN without one, with a :class:`NoWCSWarning`).
    flux_scale, flux_unit
        Factor and unit of the flux columns.
    whole : bool
        Extract the whole image in one task instead (SEP alone, on one worker, which reads the
        lazy inputs itself): for images that fit in a worker's memory this is faster than tiles
        and their seams (SEP is single-threaded C; about 64 bytes a pixel).

    Returns
    -------
    astropy.table.QTable
        One row per source, ordered by ``y_centroid`` then ``x_centroid``; columns
        :func:`sep_columns`; ``flags`` are SEP's extraction and aperture flags.
    """
    import sep  # noqa: PLC0415

    if np.ndim(data) != 2:
        msg = f"data must be 2-D; got {np.ndim(data)} dimensions"
        raise ValueError(msg)
    if not (np.ndim(threshold) == 0 and np.isfinite(threshold) and threshold > 0):
        msg = f"threshold must be a positive number; got {threshold!r}"
        raise ValueError(msg)
    if int(minarea) != minarea or minarea < 1:
        msg = f"minarea must be a positive integer; got {minarea!r}"
        raise ValueError(msg)
    if filter_type not in ("matched", "conv"):
        msg = f"filter_type {filter_type!r} is not allowed; expected 'matched' or 'conv'"
        raise ValueError(msg)
    radii = tuple(float(r) for r in radii)
    if any(not r > 0 for r in radii):
        msg = f"aperture radii must be positive; got {radii!r}"
        raise ValueError(msg)
    kernel = None if filter_kernel is None else np.ascontiguousarray(filter_kernel, dtype=np.float32)
    reach = 0 if kernel is None else max(kernel.shape) // 2
    margin = reach + 2
    if int(halo) != halo or halo < max(margin, int(minarea)):
        msg = f"halo {halo!r} is too small; expected at least {max(margin, int(minarea))} pixels (the filter's reach + 2 and minarea)"
        raise ValueError(msg)
    params = {
        "threshold": float(threshold), "minarea": int(minarea), "filter_kernel": kernel, "filter_type": filter_type,
        "deblend_nthresh": int(deblend_nthresh), "deblend_cont": float(deblend_cont), "radii": radii,
        "kron": (float(kron[0]), float(kron[1])), "margin": margin, "sub_object_limit": sep.get_sub_object_limit(),
    }
    flux_unit = u.Unit(flux_unit)
    if wcs is None or not getattr(wcs, "has_celestial", False):
        warnings.warn("the image has no celestial WCS; the catalogue's ra and dec are NaN", NoWCSWarning, stacklevel=2)
        wcs = None
    shape = tuple(int(s) for s in np.shape(data))
    tile = _tile_pair(tile)
    for name, a in (("err", err), ("mask", mask)):
        if a is not None and np.ndim(a) and tuple(np.shape(a)) != shape:
            msg = f"{name} has shape {tuple(np.shape(a))}; expected the image shape {shape}"
            raise ValueError(msg)
    if whole:
        import dask  # noqa: PLC0415

        task = dask.delayed(_extract_whole, pure=False)(_Lazy(data, err, mask), params)
        (rows,) = compute(task, description="sep: extract the whole image")
        return _assemble([rows], radii, wcs, flux_scale, flux_unit)
    img, er, msk = optimize_together(
        as_tiled(data, shape, tile, name="data", dtype=np.float64), as_tiled(err, shape, tile, name="err", dtype=np.float64),
        as_tiled(mask, shape, tile, name="mask", dtype=bool),
    )
    grids = [ChunkGrid(v) for v in (img, er, msk)]
    ey, ex = (np.cumsum((0, *c)) for c in img.chunks)

    # 1. tiles with their halo
    tasks = []
    for i in range(len(ey) - 1):
        for j in range(len(ex) - 1):
            core = ((int(ey[i]), int(ey[i + 1])), (int(ex[j]), int(ex[j + 1])))
            region = _grown((core[0][0], core[0][1], core[1][0], core[1][1]), halo, shape)
            tasks.append(delayed_on_regions(
                _extract_tile, [g.region(region) for g in grids], (region[0].start, region[1].start), core, shape, params,
            ))
    results = compute(*tasks, description="sep: extract tiles")
    parts, pending = [], []
    done = set()
    summaries = {}
    for k, (rows, rest, need, firsts, summary) in enumerate(results):
        parts.append(rows)
        pending.append((rest, need))
        done.update(int(f) for f in firsts)
        summaries[divmod(k, len(ex) - 1)] = summary

    # 2. parents larger than the halo, on their own box
    merged = merge_tiles(summaries, [int(v) for v in ey[:-1]], [int(v) for v in ex[:-1]], n_pixels=1, connectivity=8)
    large = [k for k in range(merged.n_labels) if int(merged.first[k]) not in done]
    if large:
        log.info("sep: %d parents larger than the %d px halo extracted on their own boxes", len(large), halo)
        tasks = []
        for k in large:
            region = _grown(tuple(int(v) for v in merged.bbox[k]), halo, shape)
            tasks.append(delayed_on_regions(
                _extract_family, [g.region(region) for g in grids], (region[0].start, region[1].start), int(merged.first[k]), shape, params,
            ))
        for rows, rest, need in compute(*tasks, description="sep: large parents"):
            parts.append(rows)
            pending.append((rest, need))

    # 3. sources whose apertures reach past their region, on the region they need
    for _ in range(3):
        todo = [(rest, need) for rest, need in pending if len(rest)]
        if not todo:
            break
        tasks = []
        for rest, need in todo:
            for i in range(len(rest)):
                region = (slice(max(0, int(need[i, 0])), min(shape[0], int(need[i, 1]))), slice(max(0, int(need[i, 2])), min(shape[1], int(need[i, 3]))))
                tasks.append(delayed_on_regions(
                    _measure_region, [g.region(region) for g in grids], (region[0].start, region[1].start), rest[i : i + 1], shape, params,
                ))
        log.info("sep: %d sources measured on wider regions", len(tasks))
        pending = []
        for rows, rest, need in compute(*tasks, description="sep: wide apertures"):
            parts.append(rows)
            pending.append((rest, need))
    if any(len(rest) for rest, _ in pending):
        msg = "SEP engine: some apertures did not fit their regions after three widenings"
        raise RuntimeError(msg)
    return _assemble(parts, radii, wcs, flux_scale, flux_unit)


def _assemble(parts, radii, wcs, flux_scale, flux_unit) -> QTable:
    cols = {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}
    n = len(cols["x"])
    if n == 0:
        warnings.warn("no sources were found above the threshold; the catalogue is empty", NoDetectionsWarning, stacklevel=3)
    order = np.lexsort((cols["x"], cols["y"]))
    t = QTable()
    names = {
        "x_centroid": "x", "y_centroid": "y", "bbox_xmin": "xmin", "bbox_xmax": "xmax", "bbox_ymin": "ymin", "bbox_ymax": "ymax",
        "area": "npix", "semimajor_axis": "a", "semiminor_axis": "b", "segment_flux": "flux",
    }
    for name in sep_columns(radii):
        if name == "label":
            t[name] = np.arange(1, n + 1, dtype=np.int64)
        elif name in ("ra", "dec"):
            continue
        elif name == "orientation":
            t[name] = np.degrees(cols["theta"][order].astype(np.float64)) * u.deg
        else:
            v = cols[names.get(name, name)][order]
            if name == "flags" or name.startswith("bbox_"):
                t[name] = v.astype(np.int64)
            elif name in _UNITS:
                t[name] = v.astype(np.float64) * _UNITS[name]
            else:
                t[name] = v.astype(np.float64) * flux_scale * flux_unit
    if wcs is not None and n:
        ra, dec = wcs.pixel_to_world_values(t["x_centroid"].value, t["y_centroid"].value)
    else:
        ra = dec = np.full(n, np.nan)
    t.add_column(np.asarray(ra, dtype=float) * u.deg, name="ra", index=3)
    t.add_column(np.asarray(dec, dtype=float) * u.deg, name="dec", index=4)
    return t
