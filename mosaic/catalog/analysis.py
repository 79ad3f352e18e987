"""The paper's catalogue analyses (seed 000 sec. 4.2) as tables and matplotlib figures, against a truth table where there is one.

- :func:`detections_vs_iteration`: detections per UPDC iteration at one threshold, split into
  true and false against a truth table, with their purity and completeness (fig. 13; false
  detections are never counted as a gain);
- :func:`flux_vs_truth`: measured over true flux of the matched sources, per iteration;
- :func:`magnitude_comparison`: AB magnitudes of sources matched between two iterations
  (fig. 14: iteration 0 versus 5); :func:`magnitudes_vs_truth`: measured minus true magnitude
  against the true one (fig. 14 with the truth beside it);
- :func:`plot_detections`, :func:`plot_magnitudes`, :func:`plot_magnitudes_vs_truth`,
  :func:`plot_profiles` draw them (fig. 13, 14, 16). Plot functions take an optional
  matplotlib ``Axes`` and return the figure.
"""

from __future__ import annotations

import logging

import astropy.units as u
import numpy as np
from astropy.table import QTable, Table

from mosaic.catalog.match import cross_match
from mosaic.registry import algorithm

__all__ = [
    "ab_magnitude",
    "detections_vs_iteration",
    "flux_vs_truth",
    "magnitude_comparison",
    "magnitudes_vs_truth",
    "plot_detections",
    "plot_magnitudes",
    "plot_magnitudes_vs_truth",
    "plot_profiles",
]

log = logging.getLogger(__name__)


def ab_magnitude(flux) -> np.ndarray:
    """AB magnitude of fluxes in µJy (NaN where not positive)."""
    f = u.Quantity(flux, u.uJy).value if hasattr(flux, "unit") else np.asarray(flux, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(f > 0, 23.9 - 2.5 * np.log10(np.where(f > 0, f, 1.0)), np.nan)


def _values(column) -> np.ndarray:
    return np.asarray(getattr(column, "value", column), dtype=float)


def _check_flux(table: Table, flux: str, name: str) -> None:
    if flux not in table.colnames:
        msg = f"{name} has no column {flux!r}; expected one of {table.colnames}"
        raise ValueError(msg)


@algorithm("catalog")
def detections_vs_iteration(catalogs: dict, truth: Table | None = None, *, max_sep: float = 0.1) -> QTable:
    """Detections per iteration, true and false against a truth table (fig. 13).

    Parameters
    ----------
    catalogs : dict
        ``{iteration: catalogue}`` (with ``ra``, ``dec``), all made with the same threshold.
    truth : astropy.table.Table, optional
        True sources (``ra``, ``dec``); without it only the counts are given.
    max_sep : float
        Match radius in arcsec; each true source is matched at most once (mutual nearest).

    Returns
    -------
    astropy.table.QTable
        ``iteration, n_detected`` and, with a truth table, ``n_true`` (detections matched to a
        distinct true source), ``n_false`` (the rest), ``purity`` (``n_true / n_detected``)
        and ``completeness`` (``n_true`` over the true sources). There is deliberately no
        ratio of all detections to iteration 0's: it would count false detections as gains.
    """
    if not catalogs:
        msg = "no catalogues given; expected {iteration: catalogue}"
        raise ValueError(msg)
    its = sorted(catalogs)
    n = np.array([len(catalogs[i]) for i in its])
    t = QTable({"iteration": np.array(its, dtype=int), "n_detected": n})
    if truth is not None:
        n_true = np.array([len(cross_match(catalogs[i], truth, max_sep=max_sep)) for i in its])
        t["n_true"] = n_true
        t["n_false"] = n - n_true
        with np.errstate(divide="ignore", invalid="ignore"):
            t["purity"] = np.where(n > 0, n_true / np.maximum(n, 1), np.nan)
        t["completeness"] = n_true / len(truth) if len(truth) else np.full(len(n), np.nan)
    return t


def _matched_fluxes(catalog: Table, truth: Table, *, flux: str, truth_flux: str, max_sep: float):
    """``(truth rows, measured flux, true flux)`` of the matched sources (µJy)."""
    _check_flux(catalog, flux, "catalog")
    _check_flux(truth, truth_flux, "truth")
    m = cross_match(catalog, truth, max_sep=max_sep)
    ic, it = np.asarray(m["index1"], dtype=int), np.asarray(m["index2"], dtype=int)
    return it, _values(catalog[flux])[ic], _values(truth[truth_flux])[it]


@algorithm("catalog")
def flux_vs_truth(catalogs: dict, truth: Table, *, flux: str = "kron_flux", truth_flux: str = "flux", max_sep: float = 0.1) -> QTable:
    """Measured over true flux of the sources matched to the truth, per iteration.

    Parameters
    ----------
    catalogs : dict
        ``{iteration: catalogue}`` with ``ra``, ``dec`` and ``flux`` (µJy).
    truth : astropy.table.Table
        True sources with ``ra``, ``dec`` and ``truth_flux`` (µJy).
    flux, truth_flux : str
        Flux columns (``kron_flux``: MAG_AUTO's flux, as in the paper).
    max_sep : float
        Match radius in arcsec (mutual nearest).

    Returns
    -------
    astropy.table.QTable
        ``iteration, n_matched, median_ratio, p16_ratio, p84_ratio`` (NaN without a match).
    """
    rows = []
    for i in sorted(catalogs):
        _, measured, true = _matched_fluxes(catalogs[i], truth, flux=flux, truth_flux=truth_flux, max_sep=max_sep)
        ok = np.isfinite(measured) & (true > 0)
        ratio = measured[ok] / true[ok]
        q = np.percentile(ratio, [50, 16, 84]) if ratio.size else np.full(3, np.nan)
        rows.append((i, int(ratio.size), *map(float, q)))
    names = ("iteration", "n_matched", "median_ratio", "p16_ratio", "p84_ratio")
    return QTable(rows=rows, names=names) if rows else QTable(names=names)


@algorithm("catalog")
def magnitudes_vs_truth(catalog: Table, truth: Table, *, flux: str = "kron_flux", truth_flux: str = "flux", max_sep: float = 0.1) -> QTable:
    """Measured and true AB magnitudes of the sources matched to the truth (fig. 14 against the truth).

    Returns
    -------
    astropy.table.QTable
        ``truth_index, true_mag, mag, delta_mag`` (measured minus true) and the truth's
        ``kind`` where it has one, sorted by the true magnitude.
    """
    it, measured, true = _matched_fluxes(catalog, truth, flux=flux, truth_flux=truth_flux, max_sep=max_sep)
    true_mag, mag = ab_magnitude(true), ab_magnitude(measured)
    t = QTable({"truth_index": it, "true_mag": true_mag, "mag": mag, "delta_mag": mag - true_mag})
    if "kind" in truth.colnames:
        t["kind"] = np.asarray(truth["kind"])[it].astype(str)
    t.sort("true_mag")
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
        _check_flux(cat, flux, name)
    m = cross_match(catalog_a, catalog_b, max_sep=max_sep)
    ia, ib = np.asarray(m["index1"]), np.asarray(m["index2"])
    ma = ab_magnitude(catalog_a[flux][ia]) if len(ia) else np.zeros(0)
    mb = ab_magnitude(catalog_b[flux][ib]) if len(ib) else np.zeros(0)
    return QTable({"index_a": ia, "index_b": ib, "separation": m["separation"], "mag_a": ma, "mag_b": mb, "delta_mag": mb - ma})


def _axes(ax, ncols=1, *, width=4.5, height=4.0):
    import matplotlib.pyplot as plt  # noqa: PLC0415

    if ax is None:
        fig, ax = plt.subplots(1, ncols, figsize=(width * ncols, height), layout="constrained")
        return fig, ax
    return (ax[0] if isinstance(ax, list | tuple | np.ndarray) else ax).figure, ax


def plot_detections(table: QTable, *, ax=None, label: str = ""):
    """Fig. 13: detections per iteration (left: all, true, false) and, against a truth, purity and completeness (right)."""
    fig, (a1, a2) = _axes(ax, 2)
    a1.plot(table["iteration"], table["n_detected"], "o-", label=f"{label} all".strip())
    if "n_true" in table.colnames:
        a1.plot(table["iteration"], table["n_true"], "s--", label=f"{label} true".strip())
        a1.plot(table["iteration"], table["n_false"], "x:", label=f"{label} false".strip())
        a2.plot(table["iteration"], table["purity"], "o-", label="purity (true / detected)")
        a2.plot(table["iteration"], table["completeness"], "s--", label="completeness (true / truth)")
        a2.set_ylim(0, 1.05)
        a2.legend()
    a1.set_xlabel("UPDC iteration")
    a1.set_ylabel("detections")
    a1.legend()
    a2.set_xlabel("UPDC iteration")
    a2.set_ylabel("fraction")
    return fig


def plot_magnitudes(table: QTable, *, ax=None, labels=("iteration 0", "iteration 5")):
    """Fig. 14: magnitudes in one catalogue against the other, with the diagonal."""
    fig, ax = _axes(ax)
    ax.scatter(table["mag_a"], table["mag_b"], s=12)
    finite = np.isfinite(table["mag_a"]) & np.isfinite(table["mag_b"])
    if finite.any():
        lo = float(min(np.min(table["mag_a"][finite]), np.min(table["mag_b"][finite])))
        hi = float(max(np.max(table["mag_a"][finite]), np.max(table["mag_b"][finite])))
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
    ax.set_xlabel(f"AB mag, {labels[0]}")
    ax.set_ylabel(f"AB mag, {labels[1]}")
    return fig


def plot_magnitudes_vs_truth(tables: dict, *, ax=None):
    """Measured minus true AB magnitude against the true one, one series per ``{label: table}`` (:func:`magnitudes_vs_truth`)."""
    fig, ax = _axes(ax)
    markers = "os^vD"
    for k, (name, t) in enumerate(tables.items()):
        ax.scatter(t["true_mag"], t["delta_mag"], s=22, marker=markers[k % len(markers)], alpha=0.8, label=f"{name} ({len(t)} matched)")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xlabel("true AB mag")
    ax.set_ylabel("measured - true AB mag")
    ax.legend()
    return fig


def plot_profiles(profiles: dict, *, ee_total: float, ax=None, pixel_scale: float | None = None, linthresh: float | None = None):
    """Fig. 16: radial profiles (left) and encircled energy (right) of one star, both over its true total flux.

    Parameters
    ----------
    profiles : dict
        ``{label: StarProfile}``, all in the same image units.
    ee_total : float
        The star's true total flux in those units (the sum of its pixels): the profiles and
        curves of growth are divided by it, so a curve reaches 1 only if the image holds the
        whole flux within the largest radius.
    pixel_scale : float, optional
        Arcsec per pixel: radii in arcsec (in pixels without it).
    linthresh : float, optional
        The profile axis is symmetric-logarithmic (a profile can go negative: dark rings,
        sky-subtracted noise), linear within ``±linthresh`` (default: 1e-4 of the largest value).
    """
    if not ee_total > 0:
        msg = f"ee_total must be the star's positive total flux; got {ee_total!r}"
        raise ValueError(msg)
    fig, (a1, a2) = _axes(ax, 2)
    scale, unit = (pixel_scale, "arcsec") if pixel_scale else (1.0, "pix")
    peak = max(float(np.nanmax(p.profile)) for p in profiles.values()) / ee_total
    for name, p in profiles.items():
        a1.plot(p.radius * scale, p.profile / ee_total, "-", label=name)
        a2.plot(p.cog_radius * scale, p.encircled_energy(ee_total), "-", label=name)
    a1.set_yscale("symlog", linthresh=linthresh or 1e-4 * peak)
    a1.axhline(0.0, color="k", lw=0.6)
    a2.axhline(1.0, color="k", lw=0.6, ls=":")
    a1.set_xlabel(f"radius ({unit})")
    a1.set_ylabel("mean surface brightness / true flux (per pixel)")
    a2.set_xlabel(f"radius ({unit})")
    a2.set_ylabel("encircled energy (flux within r / true flux)")
    a1.legend()
    return fig
