"""Per-block pieces of exact robust statistics: value selection, moments, radix histograms.

Arrays in, small arrays out; nothing here knows about dask. :mod:`mosaic.image.stats` maps these
over the blocks of a huge image and combines the results, so that a median or a percentile is
*exact* (the very order statistic numpy would return) without ever gathering the image.

*How an exact order statistic is found blockwise.* Every finite float is mapped to an unsigned
integer key of the same width whose order is the order of the floats
(:func:`sortable_keys`: flip all bits of negatives, set the sign bit of positives). The k-th
smallest value is then the k-th smallest key, found digit by digit, most significant first
(radix selection): one pass histograms the top 16 bits of every key (:func:`key_histogram`),
the cumulative counts say which 16-bit digit the k-th key starts with and its rank among the
keys that share it, the next pass histograms the next 16 bits of only those keys, and so on. A
float32 key is settled in two passes and a float64 key in four, whatever the distribution; as
soon as the keys sharing the prefix found so far are few they are gathered
(:func:`key_select`) and the k-th is picked with :func:`numpy.partition`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "DIGIT_BITS",
    "Selection",
    "biweight_sums",
    "count_values",
    "key_bits",
    "key_histogram",
    "key_select",
    "keys_to_values",
    "moments",
    "select_values",
    "sortable_keys",
    "value_dtype",
]

#: bits of a key settled per histogram pass (65536 bins)
DIGIT_BITS = 16


@dataclass(frozen=True)
class Selection:
    """Which values of a block take part, and how they are transformed.

    A value takes part when it is finite, not masked and ``lo <= x <= hi``; with ``center``
    set, the value used is ``|x - center|`` in float64 (for the median absolute deviation).
    """

    lo: float = -np.inf
    hi: float = np.inf
    center: float | None = None


def value_dtype(dtype) -> np.dtype:
    """The float type values are selected in: float32 stays float32, anything else float64."""
    dtype = np.dtype(dtype)
    return dtype if dtype == np.float32 else np.dtype(np.float64)


def select_values(block, mask=None, selection: Selection = Selection()) -> np.ndarray:
    """The 1-D array of ``block``'s values that ``selection`` keeps (see :class:`Selection`)."""
    x = np.asarray(block)
    x = x.astype(value_dtype(x.dtype), copy=False).ravel()
    keep = np.isfinite(x)
    if mask is not None:
        keep &= ~np.asarray(mask, dtype=bool).ravel()
    if selection.lo > -np.inf:
        keep &= x >= selection.lo
    if selection.hi < np.inf:
        keep &= x <= selection.hi
    x = x[keep]
    if selection.center is not None:
        x = np.abs(x.astype(np.float64) - selection.center)
    return x


def key_bits(dtype) -> int:
    """Width in bits of the keys of values of ``dtype`` (32 for float32, else 64)."""
    return 32 if value_dtype(dtype) == np.float32 else 64


def sortable_keys(values) -> np.ndarray:
    """Unsigned integer keys ordered as the (finite) float ``values`` are."""
    v = np.ascontiguousarray(values)
    if v.dtype == np.float32:
        u, sign = v.view(np.uint32), np.uint32(1 << 31)
    else:
        u, sign = v.astype(np.float64, copy=False).view(np.uint64), np.uint64(1 << 63)
    return np.where((u & sign) != 0, ~u, u | sign)


def keys_to_values(keys, dtype) -> np.ndarray:
    """The floats of ``dtype`` whose :func:`sortable_keys` are ``keys``."""
    dtype = value_dtype(dtype)
    utype, sign = (np.uint32, np.uint32(1 << 31)) if dtype == np.float32 else (np.uint64, np.uint64(1 << 63))
    k = np.asarray(keys, dtype=utype)
    u = np.where((k & sign) != 0, k & ~sign, ~k)
    return u.view(dtype)


def _prefix_match(keys, prefix: int, shift: int, bits: int):
    if shift >= bits:
        return keys
    k = keys.dtype.type
    return keys[(keys >> k(shift)) == k(prefix)]


def key_histogram(values, *, prefix: int, shift: int, digit_bits: int = DIGIT_BITS) -> np.ndarray:
    """Counts of the next ``digit_bits``-bit digit of the keys of ``values`` that share ``prefix``.

    Parameters
    ----------
    values : ndarray
        1-D finite float32 or float64 values.
    prefix : int
        The key bits settled so far (``key >> shift == prefix``); any value when
        ``shift`` is the key width.
    shift : int
        How many low bits of the key are still open.
    digit_bits : int
        Width of the digit counted: bits ``shift - digit_bits .. shift - 1``.

    Returns
    -------
    ndarray of int64, shape ``(2**digit_bits,)``
    """
    bits = key_bits(values.dtype)
    keys = _prefix_match(sortable_keys(values), prefix, shift, bits)
    k = keys.dtype.type
    digits = (keys >> k(shift - digit_bits)) & k((1 << digit_bits) - 1)
    return np.bincount(digits.astype(np.intp), minlength=1 << digit_bits).astype(np.int64)


def key_select(values, *, prefix: int, shift: int) -> np.ndarray:
    """The ``values`` whose keys share ``prefix`` (``key >> shift == prefix``)."""
    bits = key_bits(values.dtype)
    keys = sortable_keys(values)
    if shift >= bits:
        return np.asarray(values)
    k = keys.dtype.type
    return np.asarray(values)[(keys >> k(shift)) == k(prefix)]


def count_values(values) -> np.ndarray:
    """``[count, sum]`` of ``values`` in float64 (the first pass of a mean)."""
    v = np.asarray(values, dtype=np.float64)
    return np.array([v.size, v.sum()], dtype=np.float64)


def moments(values, mean: float) -> np.ndarray:
    """``[sum((x - mean)**2)]`` in float64: the second pass of a two-pass variance."""
    d = np.asarray(values, dtype=np.float64) - mean
    return np.array([np.dot(d, d)], dtype=np.float64)


def biweight_sums(values, *, location: float, mad: float, c: float) -> np.ndarray:
    """The sums behind astropy's biweight location and scale, over ``|u| < 1``.

    With ``d = x - location`` and ``u = d / (c * mad)``: ``[sum(d w), sum(w), sum(d² (1-u²)⁴),
    sum((1-u²)(1-5u²)), n]`` where ``w = (1-u²)²`` and ``n`` counts every value (astropy's
    ``modify_sample_size=False``).
    """
    d = np.asarray(values, dtype=np.float64) - location
    u = d / (c * mad)
    inside = np.abs(u) < 1
    d, u2 = d[inside], u[inside] ** 2
    one = 1.0 - u2
    w = one**2
    return np.array([np.dot(d, w), w.sum(), np.dot(d * d, w * w), np.dot(one, 1.0 - 5.0 * u2), values.size], dtype=np.float64)
