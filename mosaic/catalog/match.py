"""Cross-matching catalogues on the sky (UPDC iterations, bands) with astropy.

:func:`cross_match` pairs every source of one catalogue with its nearest neighbour in the
other (``match_coordinates_sky``) and keeps pairs closer than ``max_sep``; with
``mutual=True`` (the default) a pair is kept only if each is the other's nearest, so every
source is matched at most once. :func:`matches_within` lists all pairs within ``max_sep``
(``search_around_sky``), for counting crowding.
"""

from __future__ import annotations

import logging

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord, match_coordinates_sky, search_around_sky
from astropy.table import QTable, Table

from mosaic.exceptions import InputError
from mosaic.registry import algorithm

__all__ = ["cross_match", "matches_within", "sky_coords"]

log = logging.getLogger(__name__)


def sky_coords(table: Table, *, name: str = "catalogue") -> SkyCoord:
    """The ``ra``/``dec`` of a catalogue as a SkyCoord; an error naming ``name`` if it has none."""
    missing = [c for c in ("ra", "dec") if c not in table.colnames]
    if missing:
        msg = f"{name} has no {missing} column; expected ra and dec in degrees (an image with a WCS)"
        raise InputError(msg)
    ra = u.Quantity(table["ra"], u.deg) if getattr(table["ra"], "unit", None) else np.asarray(table["ra"]) * u.deg
    dec = u.Quantity(table["dec"], u.deg) if getattr(table["dec"], "unit", None) else np.asarray(table["dec"]) * u.deg
    if len(table) and not np.all(np.isfinite(ra.value) & np.isfinite(dec.value)):
        msg = f"{name} has rows without RA/Dec (NaN); expected a catalogue measured on an image with a WCS"
        raise InputError(msg)
    return SkyCoord(ra=ra, dec=dec)


def _max_sep(max_sep) -> u.Quantity:
    sep = max_sep if isinstance(max_sep, u.Quantity) else float(max_sep) * u.arcsec
    if not sep.value > 0:
        msg = f"max_sep must be positive; got {max_sep!r}"
        raise ValueError(msg)
    return sep.to(u.arcsec)


def _nearest(c1: SkyCoord, c2: SkyCoord):
    """Index in ``c2`` of each ``c1`` source's nearest neighbour, and the separation."""
    if len(c2) < 2:  # match_coordinates_sky builds a tree that needs two points
        return np.zeros(len(c1), dtype=int), c1.separation(c2[0])
    idx, d2d, _ = match_coordinates_sky(c1, c2)
    return np.asarray(idx), d2d


@algorithm("catalog")
def cross_match(table1: Table, table2: Table, *, max_sep=0.1, mutual: bool = True) -> QTable:
    """Match two catalogues on the sky: nearest neighbours closer than ``max_sep``.

    Parameters
    ----------
    table1, table2 : astropy.table.Table
        Catalogues with ``ra`` and ``dec`` (degrees).
    max_sep : float or Quantity
        Largest separation of a match (arcsec if a plain number).
    mutual : bool
        Keep a pair only if each source is the other's nearest neighbour.

    Returns
    -------
    astropy.table.QTable
        ``index1``, ``index2`` (row numbers) and ``separation`` (arcsec) of every match,
        sorted by ``index1``.
    """
    sep = _max_sep(max_sep)
    c1, c2 = sky_coords(table1, name="table1"), sky_coords(table2, name="table2")
    out = QTable({"index1": np.zeros(0, int), "index2": np.zeros(0, int), "separation": np.zeros(0) * u.arcsec})
    if len(c1) == 0 or len(c2) == 0:
        return out
    idx, d2d = _nearest(c1, c2)
    ok = d2d <= sep
    if mutual:
        back, _ = _nearest(c2, c1)
        ok &= back[idx] == np.arange(len(c1))
    i1 = np.flatnonzero(ok)
    out = QTable({"index1": i1, "index2": np.asarray(idx)[i1], "separation": d2d[i1].to(u.arcsec)})
    log.info("cross-match: %d of %d / %d sources within %s", len(out), len(c1), len(c2), sep)
    return out


@algorithm("catalog")
def matches_within(table1: Table, table2: Table, *, max_sep=0.1) -> QTable:
    """Every pair of sources closer than ``max_sep`` (arcsec if a plain number).

    Parameters
    ----------
    table1, table2 : astropy.table.Table
        Catalogues with ``ra`` and ``dec`` (degrees).
    max_sep : float or Quantity
        Largest separation.
    """
    sep = _max_sep(max_sep)
    c1, c2 = sky_coords(table1, name="table1"), sky_coords(table2, name="table2")
    if len(c1) == 0 or len(c2) == 0:
        return QTable({"index1": np.zeros(0, int), "index2": np.zeros(0, int), "separation": np.zeros(0) * u.arcsec})
    i1, i2, d2d, _ = search_around_sky(c1, c2, sep)
    order = np.lexsort((i2, i1))
    return QTable({"index1": i1[order], "index2": i2[order], "separation": d2d[order].to(u.arcsec)})
