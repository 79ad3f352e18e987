"""Match the sky levels of exposures over their overlaps before coaddition; write ``_skm.fits`` files.

Each exposure's source-masked sky is measured in meshes (:func:`mosaic.ops.skymatch.sky_meshes`,
one task per exposure, on the cluster); the client maps every mesh's centre through the
exposures' WCSs into the other exposures, differences the meshes that cover the same sky, and
fits one constant per exposure to the median differences of all overlapping pairs
(:func:`mosaic.ops.skymatch.solve_offsets`). Each exposure is written with its offset subtracted
from SCI (recorded as ``SKYMATCH`` in the primary header); the variances are unchanged.

The offsets of a group of exposures linked by overlaps sum to 0: the group's mean sky is kept
(UPDC's multiplicative update needs data that stay positive). What it does not do: take out a
sky that varies across an exposure (``--flatten-background`` does, and runs first), or match
exposures that share no sky with the others (they are named in a warning and left as they are).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import dask
import numpy as np

from mosaic.exceptions import NoOverlapWarning
from mosaic.ops.skymatch import sky_meshes, solve_offsets
from mosaic.prep import check_mesh, exposure_arrays, output_paths, read_inputs, write_cleaned
from mosaic.progress import compute
from mosaic.registry import algorithm

__all__ = ["MIN_MESHES", "match_skies", "pair_differences"]

log = logging.getLogger(__name__)

#: fewest meshes two exposures must share for their sky difference to count
MIN_MESHES = 3


def _centres(shape, box: int) -> tuple[np.ndarray, np.ndarray]:
    """0-based ``(x, y)`` pixel centres of the meshes of an exposure (the last ones may be partial)."""
    ny, nx = shape
    ys = np.minimum((np.arange(-(-ny // box)) + 0.5) * box - 0.5, ny - 1.0)
    xs = np.minimum((np.arange(-(-nx // box)) + 0.5) * box - 0.5, nx - 1.0)
    y, x = np.meshgrid(ys, xs, indexing="ij")
    return x, y


def _bilinear(grid: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``grid`` (NaN where unmeasured) interpolated at fractional indices ``(u, v)`` (clamped to
    the grid), NaN where a mesh it needs is NaN."""
    my, mx = grid.shape
    u = np.clip(u, 0.0, my - 1.0)
    v = np.clip(v, 0.0, mx - 1.0)
    i0 = np.minimum(np.floor(u).astype(np.int64), max(my - 2, 0))
    j0 = np.minimum(np.floor(v).astype(np.int64), max(mx - 2, 0))
    i1, j1 = np.minimum(i0 + 1, my - 1), np.minimum(j0 + 1, mx - 1)
    fu, fv = u - i0, v - j0
    return (
        (1 - fu) * ((1 - fv) * grid[i0, j0] + fv * grid[i0, j1])
        + fu * ((1 - fv) * grid[i1, j0] + fv * grid[i1, j1])
    )


def _unit(lon, lat) -> np.ndarray:
    lon, lat = np.radians(lon), np.radians(lat)
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1)


def _may_overlap(wcss, shape) -> np.ndarray:
    """``(n, n)`` bool: whether two exposures' circles about their centres (through their farthest
    corner) meet on the sky."""
    ny, nx = shape
    xs = np.array([(nx - 1) / 2, 0, nx - 1, nx - 1, 0], dtype=float)
    ys = np.array([(ny - 1) / 2, 0, 0, ny - 1, ny - 1], dtype=float)
    centres, radii = [], []
    for w in wcss:
        u = _unit(*w.pixel_to_world_values(xs, ys))
        centres.append(u[0])
        radii.append(np.arccos(np.clip(u[1:] @ u[0], -1.0, 1.0)).max())
    centres, radii = np.array(centres), np.array(radii)
    separation = np.arccos(np.clip(centres @ centres.T, -1.0, 1.0))
    return separation <= radii[:, None] + radii[None, :]


def pair_differences(levels, wcss, shape, box: int, *, min_meshes: int = MIN_MESHES) -> list[tuple[int, int, float, int]]:
    """The sky differences of every pair of exposures that share at least ``min_meshes`` meshes.

    A mesh of exposure ``k`` is compared with ``l``'s meshes interpolated (bilinear) at its
    centre, both ways (``k`` in ``l`` and ``l`` in ``k``); ``d_kl`` is the median of
    ``level_k - level_l`` over those comparisons and its weight their number. (Taking the mesh of
    ``l`` that holds the centre instead compares skies up to half a mesh apart, the same way for
    every mesh of a pair: a background gradient then biased ``d_kl``, by 4 % of the offsets on
    a simulated field with intracluster light.)

    Parameters
    ----------
    levels : list of numpy.ndarray
        Each exposure's mesh skies (:func:`mosaic.ops.skymatch.sky_meshes`; NaN where unmeasured).
    wcss : list
        Each exposure's WCS (``pixel_to_world_values`` / ``world_to_pixel_values``).
    shape : tuple of int
        The exposures' ``(ny, nx)``.
    box : int
        Mesh side in pixels.

    Returns
    -------
    list of (k, l, d, n)
    """
    x, y = _centres(shape, box)
    sky = [w.pixel_to_world_values(x, y) for w in wcss]
    near = _may_overlap(wcss, shape)
    diffs: dict = {}
    for k, level_k in enumerate(levels):
        valid_k = np.isfinite(level_k)
        measured, lon, lat = level_k[valid_k], sky[k][0][valid_k], sky[k][1][valid_k]
        for l, level_l in enumerate(levels):
            if l == k or not near[k, l]:  # far apart: a SIP inverse would not even converge there
                continue
            # the centres of k's measured meshes, in l's pixels, and l's meshes interpolated there
            px, py = wcss[l].world_to_pixel_values(lon, lat)
            with np.errstate(invalid="ignore"):
                inside = np.isfinite(px) & np.isfinite(py) & (px > -0.5) & (px < shape[1] - 0.5) & (py > -0.5) & (py < shape[0] - 0.5)
            if not inside.any():
                continue
            d = measured[inside] - _bilinear(level_l, (py[inside] + 0.5) / box - 0.5, (px[inside] + 0.5) / box - 0.5)
            d = d[np.isfinite(d)]
            a, b = min(k, l), max(k, l)
            diffs.setdefault((a, b), []).append(d if k == a else -d)
    pairs = []
    for (a, b), parts in sorted(diffs.items()):
        d = np.concatenate(parts)
        if d.size >= 2 * min_meshes:  # each shared mesh is seen from both sides
            pairs.append((a, b, float(np.median(d)), int(d.size)))
    return pairs


def _subtract(src, dst, sci, err, dq, var_poisson, var_rnoise, var_flat, good, *, offset):
    sci = np.asarray(sci, dtype=np.float64)
    arrays = {
        "sci": np.where(np.isfinite(sci), sci - offset, np.nan).astype(np.float32), "err": np.asarray(err), "dq": np.asarray(dq),
        "var_poisson": np.asarray(var_poisson), "var_rnoise": np.asarray(var_rnoise), "var_flat": np.asarray(var_flat),
    }
    write_cleaned(src, dst, arrays, status_key="S_SKYMAT", keywords={"SKYMATCH": (float(offset), "sky offset subtracted from SCI (MJy/sr)")})


@algorithm("preprocessing")
def match_skies(paths, outdir, *, box_size: int = 64, bad_bits=None, overwrite: bool = False, client=None) -> list[Path]:
    """Subtract from each exposure its sky offset against the exposures it overlaps; write ``_skm.fits`` files.

    Parameters
    ----------
    paths : list of path-like
        ``_cal.fits`` (or ``_crf.fits``, ``_1fc.fits``, ``_bkg.fits``) exposures of one band.
    outdir : path-like
        Directory of the matched files (made if missing): ``<name>_skm.fits``.
    box_size : int
        Mesh side in detector pixels: larger than the sources, small enough that overlaps hold
        a few meshes (an overlap must hold :data:`MIN_MESHES`).
    bad_bits : int or str, optional
        DQ bits of pixels left out (default DO_NOT_USE + NON_SCIENCE).
    overwrite : bool
        Replace existing output files.
    client : distributed.Client, optional
        Compute on this cluster (default: the current client, or threads here).

    Returns
    -------
    list of Path
        The written files, in the order of ``paths``.

    Raises
    ------
    mosaic.exceptions.InputError
        No exposures, an empty one, mixed bands, or an output that exists (without ``overwrite``).
    ValueError
        A mesh smaller than 4 pixels or larger than the exposures.
    """
    check_mesh(box_size)
    paths, _, exposures = read_inputs(paths, bad_bits, single_band=True)
    shape = (exposures.sizes["y"], exposures.sizes["x"])
    box = check_mesh(box_size, shape)
    targets = output_paths(paths, outdir, "_skm", overwrite=overwrite)
    log.info("skymatch: %d exposures -> %s (meshes of %d pixels)", len(paths), outdir, box)
    meshes = [dask.delayed(sky_meshes, pure=True)(exposures["sci"].data[k], exposures["good"].data[k], box) for k in range(len(paths))]
    levels = list(compute(*meshes, description="skymatch: sky meshes", client=client))
    pairs = pair_differences(levels, exposures.attrs["wcs"], shape, box)
    offsets, group = solve_offsets(len(paths), pairs)
    alone = [str(paths[k]) for k in np.flatnonzero(np.bincount(group)[group] == 1)]
    if alone and len(paths) > 1:
        warnings.warn(
            f"{len(alone)} of {len(paths)} exposures share no measured sky ({MIN_MESHES} meshes of {box} pixels) with any other and keep their sky as it is: "
            f"{', '.join(alone[:5])}{', ...' if len(alone) > 5 else ''}",
            NoOverlapWarning, stacklevel=2,
        )
    jobs = [
        dask.delayed(_subtract, pure=True)(str(src), str(dst), *exposure_arrays(exposures, k), offset=float(offsets[k]))
        for k, (src, dst) in enumerate(zip(paths, targets, strict=True))
    ]
    compute(*jobs, description="skymatch: write", client=client)
    for dst, o in zip(targets, offsets, strict=True):
        log.info("skymatch: %s: sky offset %.4g MJy/sr subtracted", dst.name, o)
    log.info("skymatch: %d overlapping pairs, %d groups", len(pairs), len(np.unique(group)))
    return targets
