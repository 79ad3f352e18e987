"""Sky matching: the constant sky offsets between overlapping exposures, as arrays.

Calibrated exposures keep their sky, and exposures of one field do not share it exactly (the
zodiacal light changes between visits, detectors and amplifiers have their own residual
pedestals): coadded as they are, each exposure's edge is a step in the mosaic. As the JWST
skymatch step does in its "match" mode, the offsets are found from the overlaps: each exposure's
sky is measured in meshes with the sources masked, the meshes of two exposures that cover the same
sky are differenced, and one offset per exposure is fitted to all the pairs' median differences.

- :func:`sky_meshes`: one exposure's source-masked sky, the median of each ``box`` x ``box`` mesh;
- :func:`solve_offsets`: the offsets ``o`` minimising ``sum_kl w_kl (o_k - o_l - d_kl)^2``,
  summing to 0 over each group of exposures linked by overlaps (the groups' mean sky is kept:
  UPDC's multiplicative update needs the sky in the data).

The graph builder that maps meshes between exposures through their WCSs is
:func:`mosaic.prep.skymatch.match_skies`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["sky_meshes", "solve_offsets"]


def sky_meshes(sci, good, box: int, *, mask_sigma: float = 2.5, grow: int = 2) -> np.ndarray:
    """The sky of each ``box`` x ``box`` mesh of an exposure: the median of its pixels that are
    good and not on a source (NaN where fewer than a quarter of the mesh, or 10 pixels, are).

    Sources are the connected groups of at least 5 pixels of the 3 x 3-smoothed image above
    ``mask_sigma`` times its robust scatter, grown by ``grow`` pixels
    (:func:`mosaic.catalog.noise.source_mask`). Returns a ``(ceil(ny / box), ceil(nx / box))``
    float64 array.
    """
    from mosaic.catalog.noise import clipped_stats, mesh_medians, source_mask  # noqa: PLC0415

    z = np.asarray(sci, dtype=np.float64)
    ok = np.asarray(good, dtype=bool) & np.isfinite(z)
    ny, nx = z.shape
    my, mx = -(-ny // box), -(-nx // box)
    if ok.sum() < 100:
        return np.full((my, mx), np.nan)
    med, _ = clipped_stats(z[ok], 3.0)
    sky = ok & ~source_mask(z, ok, med=med, mask_sigma=mask_sigma, min_pixels=5, grow=grow)
    level, count = mesh_medians(z, sky, box, my, mx)
    return np.where(count >= max(10, box * box // 4), level, np.nan)


def solve_offsets(n: int, pairs) -> tuple[np.ndarray, np.ndarray]:
    """Per-exposure sky offsets from the pairs' differences.

    Parameters
    ----------
    n : int
        Number of exposures.
    pairs : iterable of (k, l, d, w)
        Exposures ``k`` and ``l`` overlap, ``sky_k - sky_l = d`` measured with weight ``w > 0``.

    Returns
    -------
    offsets : numpy.ndarray
        ``(n,)`` float64: what to subtract from each exposure. The weighted least-squares
        solution of ``o_k - o_l = d_kl``; within each group of exposures linked by pairs the
        offsets sum to 0 (the minimum-norm solution: the group's mean sky is kept). An exposure
        in no pair gets 0.
    group : numpy.ndarray
        ``(n,)`` int: the group of each exposure (exposures in no pair are groups of their own).
    """
    pairs = [(int(k), int(l), float(d), float(w)) for k, l, d, w in pairs]
    parent = list(range(n))

    def root(k):
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for k, l, d, w in pairs:
        if not (0 <= k < n and 0 <= l < n) or k == l or not np.isfinite(d) or not w > 0:
            msg = f"pair ({k}, {l}, {d}, {w}) is not valid; expected two different exposures of {n}, a finite difference and a positive weight"
            raise ValueError(msg)
        parent[root(k)] = root(l)
    roots = [root(k) for k in range(n)]
    group = np.unique(roots, return_inverse=True)[1].astype(np.int64)
    offsets = np.zeros(n)
    if not pairs:
        return offsets, group
    a = np.zeros((len(pairs), n))
    b = np.zeros(len(pairs))
    for row, (k, l, d, w) in enumerate(pairs):
        s = np.sqrt(w)
        a[row, k], a[row, l], b[row] = s, -s, s * d
    # the minimum-norm least-squares solution has no component along the null space of the
    # differences (a constant per group): each group's offsets sum to 0
    offsets, *_ = np.linalg.lstsq(a, b, rcond=None)
    for g in np.unique(group):  # remove the rounding left along the null space
        members = group == g
        offsets[members] -= offsets[members].mean()
    return offsets, group
