"""Iterative sigma clipping of a sample, on its values sorted once.

:func:`astropy.stats.sigma_clipped_stats` (``cenfunc="median"``, ``stdfunc="mad_std"``, no
axis) keeps the values within ``sigma`` MAD-based standard deviations of their median and starts
again on what it kept, until nothing changes or ``maxiters`` passes: each pass finds two medians
(of the values and of their distances to the first) by partitioning every kept value again, and
copies the kept ones out. On a sorted sample the values kept by every pass are a run of
consecutive elements, so each pass is a few look-ups:

- the median of the run ``s[a:b]`` is its middle element (the mean of the middle two when the run
  has an even length, as :func:`numpy.median` takes it);
- the distances to the median ``m`` are two sorted sequences, ``m - s[p-1], m - s[p-2], ...``
  left of the first element ``s[p] >= m`` and ``s[p] - m, s[p+1] - m, ...`` from it: their
  k-th smallest is found by bisection on how many come from the left (:func:`_kth_distance`);
- the values within the new bounds are the run between two :func:`numpy.searchsorted` positions.

The sort costs about what two of astropy's passes do, and a sample usually takes five to ten
passes. The clipped median, the bounds of every pass and so the kept values are astropy's to the
bit (the same floating-point operations on the same values); the standard deviation of the kept
values is summed in sorted order, so it may differ from astropy's in the last bits.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MAD_TO_STD", "sigma_clipped_median_std"]

#: the MAD of a normal distribution times this is its standard deviation (1 / Phi^-1(3/4), as astropy's mad_std)
MAD_TO_STD = 1.482602218505602


def _run_median(s: np.ndarray, a: int, b: int) -> float:
    """Median of the sorted run ``s[a:b]`` (NaN when empty)."""
    n = b - a
    if n <= 0:
        return float("nan")
    mid = a + n // 2
    if n % 2:
        return float(s[mid])
    return float((s[mid - 1] + s[mid]) / 2)


def _kth_distance(s: np.ndarray, a: int, p: int, b: int, m: float, k: int) -> float:
    """The ``k``-th smallest (from 0) of ``|s[i] - m|`` for ``a <= i < b``, where ``s[a:p] < m <= s[p:b]``."""
    n_left, n_right = p - a, b - p

    def left(t):  # t-th smallest distance on the left
        return m - s[p - 1 - t]

    def right(t):
        return s[p + t] - m

    # take i from the left and k + 1 - i from the right: the smallest i whose next left distance
    # is not below the last right one taken makes those the k + 1 smallest
    lo, hi = max(0, k + 1 - n_right), min(k + 1, n_left)
    while lo < hi:
        i = (lo + hi) // 2
        if left(i) < right(k - i):  # k - i = (k + 1 - i) - 1: the last right distance taken
            lo = i + 1
        else:
            hi = i
    i, j = lo, k + 1 - lo
    return float(max(left(i - 1) if i > 0 else -np.inf, right(j - 1) if j > 0 else -np.inf))


def _run_mad(s: np.ndarray, a: int, b: int, m: float) -> float:
    """Median absolute deviation of the sorted run ``s[a:b]`` from ``m`` (its median)."""
    n = b - a
    if n <= 0:
        return float("nan")
    p = int(np.searchsorted(s[a:b], m, side="left")) + a
    if n % 2:
        return _kth_distance(s, a, p, b, m, n // 2)
    return float((_kth_distance(s, a, p, b, m, n // 2 - 1) + _kth_distance(s, a, p, b, m, n // 2)) / 2)


def sigma_clipped_median_std(values, sigma: float = 3.0, maxiters: int | None = 5) -> tuple[float, float, int]:
    """Median and standard deviation of ``values`` after iterative clipping at ``sigma`` MAD-based
    standard deviations about the median: ``(median, std, n_kept)``.

    The same clipping as ``astropy.stats.sigma_clipped_stats(values, sigma=sigma,
    maxiters=maxiters, cenfunc="median", stdfunc="mad_std")``, whose median and std (the plain
    standard deviation of the kept values, ddof 0) it returns. Non-finite values are left out (no
    warning); the values are taken as float64. ``maxiters=None`` clips until nothing changes.
    With no finite value both are NaN.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    s = np.sort(v[np.isfinite(v)])
    a, b = 0, s.size
    limit = np.inf if maxiters is None else maxiters
    changed, iteration = 1, 0
    while changed and iteration < limit:
        iteration += 1
        m = _run_median(s, a, b)
        std = _run_mad(s, a, b, m) * MAD_TO_STD
        lo_value, hi_value = m - std * sigma, m + std * sigma
        if not (np.isfinite(lo_value) and np.isfinite(hi_value)):
            a2 = b2 = a  # NaN bounds keep nothing, as astropy's comparisons
        else:
            a2 = max(a, int(np.searchsorted(s, lo_value, side="left")))
            b2 = max(a2, min(b, int(np.searchsorted(s, hi_value, side="right"))))
        changed = (b - a) - (b2 - a2)
        a, b = a2, b2
    if b <= a:
        return float("nan"), float("nan"), 0
    return _run_median(s, a, b), float(np.std(s[a:b])), b - a
