"""The paper's catalogue analyses (seed 000 sec. 4.2) as tables and matplotlib figures.

- :func:`detections_vs_iteration`: detections per UPDC iteration at one threshold, split into
  true and false against a truth table (fig. 13: counts and growth over iteration 0);
- :func:`magnitude_comparison`: AB magnitudes of sources matched between two iterations
  (fig. 14: iteration 0 versus 5);
- :func:`plot_detections`, :func:`plot_magnitudes`, :func:`plot_profiles` draw them (fig. 13,
  14, 16). Plot functions take an optional matplotlib ``Axes`` and return the figure.
"""

from __future__ import annotations

import logging

import astropy.units as u
import numpy as np
from astropy.table import QTable, Table

from mosaic.catalog.match import cross_match
from mosaic.registry import algorithm

__all__ = ["ab_magnitude", "detections_vs_iteration", "magnitude_comparison", "plot_detections", "plot_magnitudes", "plot_profiles"]

log = logging.getLogger(__name__)


def ab_magnitude(flux) -> np.ndarray:
    """AB magnitude of fluxes in µJy (NaN where not positive)."""
    f = u.Quantity(flux, u.uJy).value if hasattr(flux, "unit") else np.asarray(flux, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(f > 0, 23.9 - 2.5 * np.log10(np.where(f > 0, f, 1.0)), np.nan)


@algorithm("catalog")
def detections_vs_iteration(catalogs: dict, truth: Table | None = None, *, max_sep: float = 0.1) -> QTable:
    """Detections per iteration, true and false against a truth table (fig. 13).

    Parameters
    ----------
    catalogs : dict
        ``{iteration: catalogue}`` (with ``ra``, ``dec``), all made with the same threshold.
    truth : astropy.table.Table, optional
        True sources (``ra``, ``dec``); without it only the counts and growth are given.
    max_sep : float
        Match radius in arcsec; each true source is matched at most once (mutual nearest).

    Returns
    -------
    astropy.table.QTable
        ``iteration, n_detected, growth`` (over the first iteration given) and, with a truth
        table, ``n_true, n_false, completeness``.
    """
    if not catalogs:
        msg = "no catalogues given; expected {iteration: catalogue}"
        raise ValueError(msg)
    its = sorted(catalogs)
    n = np.array([len(catalogs[i]) for i in its])
    t = QTable({"iteration": np.array(its, dtype=int), "n_detected": n})
    t["growth"] = n / n[0] if n[0] else np.full(len(n), np.nan)
    if truth is not None:
        n_true = np.array([len(cross_match(catalogs[i], truth, max_sep=max_sep)) for i in its])
        t["n_true"] = n_true
        t["n_false"] = n - n_true
        t["completeness"] = n_true / len(truth) if len(truth) else np.full(len(n), np.nan)
    return t


@algorithm("catalog")
def magnitude_comparison(catalog_a: Table, catalog_b: Table, *, flux: str = "kron_flux", max_sep: float = 0.1) -> QTable:
    """AB magnitudes of the sources matched between two catalogues (fig. 14).

    Parameters
    ----------
    catalog_a, catalog_b : astropy.table.Table
        Catalogues (e.g. iterations 0 and 5) with ``ra``, ``dec`` and a flux column in µJy.
    flux : str
        Flux column (``kron_flux``: SExtractor's MAG_AUTO as in the paper).
    max_sep : float
        Match radius in arcsec.
    """
    for name, cat in (("catalog_a", catalog_a), ("catalog_b", catalog_b)):
        if flux not in cat.colnames:
            msg = f"{name} has no column {flux!r}; expected one of {cat.colnames}"
            raise ValueError(msg)
    m = cross_match(catalog_a, catalog_b, max_sep=max_sep)
    ia, ib = np.asarray(m["index1"]), np.asarray(m["index2"])
    ma = ab_magnitude(catalog_a[flux][ia]) if len(ia) else np.zeros(0)
    mb = ab_magnitude(catalog_b[flux][ib]) if len(ib) else np.zeros(0)
    return QTable({"index_a": ia, "index_b": ib, "separation": m["separation"], "mag_a": ma, "mag_b": mb, "delta_mag": mb - ma})


def _axes(ax, ncols=1):
    import matplotlib.pyplot as plt  # noqa: PLC0415

    if ax is None:
        fig, ax = plt.subplots(1, ncols, figsize=(4.5 * ncols, 4))
        return fig, ax
    return (ax[0] if isinstance(ax, list | tuple | np.ndarray) else ax).figure, ax


def plot_detections(table: QTable, *, ax=None, label: str = ""):
    """Fig. 13: detections (left) and their growth over iteration 0 (right) per iteration."""
    fig, (a1, a2) = _axes(ax, 2)
    a1.plot(table["iteration"], table["n_detected"], "o-", label=f"{label} all".strip())
    if "n_true" in table.colnames:
        a1.plot(table["iteration"], table["n_true"], "s--", label=f"{label} true".strip())
        a1.plot(table["iteration"], table["n_false"], "x:", label=f"{label} false".strip())
    a1.set_xlabel("UPDC iteration")
    a1.set_ylabel("detections")
    a1.legend()
    a2.plot(table["iteration"], table["growth"], "o-", label=label or None)
    a2.set_xlabel("UPDC iteration")
    a2.set_ylabel("detections / iteration 0")
    return fig


def plot_magnitudes(table: QTable, *, ax=None, labels=("iteration 0", "iteration 5")):
    """Fig. 14: magnitudes in one catalogue against the other, with the diagonal."""
    fig, ax = _axes(ax)
    ax.scatter(table["mag_a"], table["mag_b"], s=6)
    finite = np.isfinite(table["mag_a"]) & np.isfinite(table["mag_b"])
    if finite.any():
        lo = float(min(np.min(table["mag_a"][finite]), np.min(table["mag_b"][finite])))
        hi = float(max(np.max(table["mag_a"][finite]), np.max(table["mag_b"][finite])))
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
    ax.set_xlabel(f"AB mag, {labels[0]}")
    ax.set_ylabel(f"AB mag, {labels[1]}")
    return fig


def plot_profiles(profiles: dict, *, ax=None, ee_total: float | None = None):
    """Fig. 16: normalised radial profiles (left) and encircled energy (right) of one star.

    ``profiles`` is ``{label: StarProfile}``; ``ee_total`` the common normalisation of the
    curves of growth (the drizzle image's flux within the largest radius, as in the paper).
    """
    fig, (a1, a2) = _axes(ax, 2)
    for name, p in profiles.items():
        a1.semilogy(p.radius, np.clip(p.normalized_profile, 1e-8, None), label=name)
        a2.plot(p.cog_radius, p.encircled_energy(ee_total), label=name)
    a1.set_xlabel("radius (pix)")
    a1.set_ylabel("normalised profile")
    a2.set_xlabel("radius (pix)")
    a2.set_ylabel("encircled energy")
    a1.legend()
    return fig
