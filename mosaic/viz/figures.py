"""Figures of a report that an astronomer can read: images on one stated stretch, with sky axes,
a scale bar in arcsec, north and east arrows from the WCS and a colour bar in physical units.

- :func:`pixel_scale_arcsec`, :func:`north_east`, :func:`scale_bar_arcsec`: what the WCS says
  about a pixel (size, the directions of north and east in the pixel frame);
- :class:`SharedStretch`: one asinh stretch between stated limits, taken from a reference image
  (the drizzle mosaic) and applied unchanged to every image compared with it; :func:`shared_rgb`
  the same for colour composites, channel by channel;
- :func:`image_panels`, :func:`rgb_panels`, :func:`residual_panels`, :func:`pair_panels`,
  :func:`plot_convergence` draw the figures (matplotlib, returned open).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from astropy.visualization import AsinhStretch
from astropy.wcs.utils import proj_plane_pixel_scales

__all__ = [
    "SharedStretch",
    "image_panels",
    "north_east",
    "pair_panels",
    "pixel_scale_arcsec",
    "plot_convergence",
    "residual_panels",
    "rgb_panels",
    "scale_bar_arcsec",
    "shared_rgb",
]

log = logging.getLogger(__name__)

#: lengths a scale bar may have (arcsec)
_NICE = (0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)


def pixel_scale_arcsec(wcs) -> float:
    """The mean side of a pixel at the WCS reference point (arcsec)."""
    return float(np.mean(proj_plane_pixel_scales(wcs.celestial)) * 3600.0)


def scale_bar_arcsec(width_arcsec: float, *, fraction: float = 0.2) -> float:
    """The largest round length (arcsec) no longer than ``fraction`` of the width."""
    if not width_arcsec > 0:
        msg = f"width_arcsec must be positive; got {width_arcsec!r}"
        raise ValueError(msg)
    fits = [n for n in _NICE if n <= fraction * width_arcsec]
    return fits[-1] if fits else _NICE[0]


def north_east(wcs, x: float, y: float, *, step_arcsec: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors ``(dx, dy)`` pointing north and east at pixel ``(x, y)``, from the WCS (distortion included)."""
    ra, dec = (float(v) for v in wcs.pixel_to_world_values(x, y))
    d = step_arcsec / 3600.0
    north = np.array(wcs.world_to_pixel_values(ra, dec + d), dtype=float) - (x, y)
    east = np.array(wcs.world_to_pixel_values(ra + d / np.cos(np.deg2rad(dec)), dec), dtype=float) - (x, y)
    return north / np.hypot(*north), east / np.hypot(*east)


@dataclass(frozen=True)
class SharedStretch:
    """An asinh stretch between fixed limits, the same for every image it is applied to.

    Attributes
    ----------
    vmin, vmax : float
        Values shown black and white (image units).
    a : float
        Asinh softening (astropy's ``AsinhStretch(a)``: linear below about ``a`` of the range).
    source : str
        Where the limits come from (said in the captions).
    """

    vmin: float
    vmax: float
    a: float = 0.1
    source: str = ""

    @classmethod
    def from_reference(cls, image, *, percent=(0.5, 99.9), a: float | None = None, name: str = "the reference image") -> SharedStretch:
        """Limits at the ``percent`` percentiles of ``image``'s finite pixels.

        The softening ``a`` is by default the noise's: 3 sigma of the pixels (half their
        16th-84th percentile spread, the sky's in a field that is mostly sky) over the range,
        within ``[1e-4, 0.1]``, so the sky's noise is shown linearly and the sources
        logarithmically.
        """
        finite = np.asarray(image, dtype=np.float64)
        finite = finite[np.isfinite(finite)]
        if finite.size == 0:
            msg = f"{name} has no finite pixel; no stretch can be taken from it"
            raise ValueError(msg)
        lo, hi, p16, p84 = (float(v) for v in np.percentile(finite, [*percent, 16, 84]))
        if not hi > lo:
            hi = lo + max(abs(lo), 1.0) * 1e-6
        if a is None:
            a = float(np.clip(1.5 * (p84 - p16) / (hi - lo), 1e-4, 0.1))
        return cls(lo, hi, a, f"the {percent[0]:g}th and {percent[1]:g}th percentiles of {name}")

    def ticks(self, n: int = 5) -> np.ndarray:
        """Colour-bar ticks evenly spaced in the stretched value, rounded to two significant digits."""
        y = np.linspace(0.0, 1.0, n)
        v = self.vmin + (self.vmax - self.vmin) * np.asarray(AsinhStretch(self.a).inverse(y))
        return np.array([float(f"{t:.2g}") for t in v])

    def norm(self):
        """A matplotlib normaliser: clipped to the limits, then astropy's ``AsinhStretch(a)``; NaN and masked
        pixels stay masked (shown in the colour map's "bad" colour), which astropy's clipping
        ``ImageNormalize`` does not do for the masked arrays matplotlib hands it."""
        return _AsinhNorm(self.vmin, self.vmax, self.a)

    def describe(self, unit: str = "", *, source: bool = True) -> str:
        """E.g. ``asinh stretch, a = 0.1, from -0.02 to 3.1 MJy/sr (the 0.5th and 99.9th percentiles of the drizzle mosaic)``."""
        u = f" {unit}" if unit else ""
        text = f"asinh stretch, a = {self.a:.2g}, from {self.vmin:.3g} to {self.vmax:.3g}{u}"
        return text + (f" ({self.source})" if source and self.source else "")


def _asinh_norm_class():
    from matplotlib.colors import Normalize  # noqa: PLC0415

    class AsinhNorm(Normalize):
        def __init__(self, vmin, vmax, a):
            super().__init__(vmin=vmin, vmax=vmax, clip=True)
            self.a = a

        def __call__(self, value, clip=None):
            data = np.ma.masked_invalid(np.ma.asarray(value, dtype=np.float64))
            x = np.clip((data.filled(self.vmin) - self.vmin) / (self.vmax - self.vmin), 0.0, 1.0)
            y = np.arcsinh(x / self.a) / np.arcsinh(1.0 / self.a)  # astropy's AsinhStretch(a)
            out = np.ma.array(y, mask=np.ma.getmaskarray(data))
            return out if np.ndim(value) else out[()]

        def inverse(self, value):
            y = np.asarray(value, dtype=np.float64)
            return self.vmin + (self.vmax - self.vmin) * self.a * np.sinh(y * np.arcsinh(1.0 / self.a))

    return AsinhNorm


def _AsinhNorm(vmin, vmax, a):  # noqa: N802 - a class made on first use (matplotlib imported lazily)
    global _ASINH_NORM
    if _ASINH_NORM is None:
        _ASINH_NORM = _asinh_norm_class()
    return _ASINH_NORM(vmin, vmax, a)


_ASINH_NORM = None


def shared_rgb(channels: Mapping, reference, *, percent=(0.5, 99.9), a: float | None = None) -> tuple[dict, list[SharedStretch]]:
    """8-bit RGB pixels of ``{label: (3, ny, nx) channels}``, every channel on the stretch of ``reference``'s.

    Returns ``({label: (ny, nx, 3) uint8}, [red, green, blue stretches])``; NaN pixels are :data:`NO_DATA`.
    """
    ref = np.asarray(channels[reference], dtype=np.float64)
    stretches = [SharedStretch.from_reference(ref[c], percent=percent, a=a, name=f"{reference}'s {n} channel") for c, n in enumerate(("red", "green", "blue"))]
    out = {}
    for label, ch in channels.items():
        ch = np.asarray(ch, dtype=np.float64)
        scaled = np.stack([np.asarray(st.norm()(np.nan_to_num(c, nan=st.vmin))) for st, c in zip(stretches, ch, strict=True)], axis=-1)
        pixels = np.round(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)
        pixels[~np.isfinite(ch).all(axis=0)] = (143, 163, 184)  # NO_DATA
        out[label] = pixels
    return out, stretches


# -- decorations ------------------------------------------------------------------------------------

#: colour of pixels without data in the image panels
NO_DATA = "#8fa3b8"


def _outline(width: float = 2.5):
    from matplotlib import patheffects  # noqa: PLC0415

    return [patheffects.withStroke(linewidth=width, foreground="k")]


def _decorate(ax, wcs, shape, *, colour: str = "w") -> None:
    """Scale bar (lower left), N/E arrows (upper right) and axes in arcsec from the centre, on an image in pixel coordinates."""
    from matplotlib.ticker import FixedLocator, FuncFormatter  # noqa: PLC0415

    ny, nx = shape
    scale = pixel_scale_arcsec(wcs)
    outline = _outline() if colour == "w" else None
    line_outline = _outline(5) if colour == "w" else None
    length = scale_bar_arcsec(nx * scale)
    px = length / scale
    x0, y0 = 0.06 * nx, 0.07 * ny
    ax.plot([x0, x0 + px], [y0, y0], "-", color=colour, lw=3, solid_capstyle="butt", path_effects=line_outline)
    ax.text(x0, y0 + 0.03 * ny, f"{length:g} arcsec", color=colour, ha="left", va="bottom", fontsize=11, fontweight="bold",
            path_effects=outline)
    cx, cy = 0.8 * nx, 0.76 * ny
    north, east = north_east(wcs, cx, cy)
    arm = 0.1 * min(nx, ny)
    for vec, name in ((north, "N"), (east, "E")):
        ax.annotate("", xy=(cx + arm * vec[0], cy + arm * vec[1]), xytext=(cx, cy),
                    arrowprops={"arrowstyle": "-|>", "color": colour, "lw": 2, "path_effects": outline})
        ax.text(cx + 1.4 * arm * vec[0], cy + 1.4 * arm * vec[1], name, color=colour, ha="center", va="center", fontsize=11,
                fontweight="bold", path_effects=outline)
    # ticks every round number of arcsec from the image's centre
    step = scale_bar_arcsec(nx * scale, fraction=0.3)
    for axis, n in ((ax.xaxis, nx), (ax.yaxis, ny)):
        c = (n - 1) / 2
        k = np.arange(-np.floor(c * scale / step), np.floor(c * scale / step) + 1)
        axis.set_major_locator(FixedLocator(c + k * step / scale))
        axis.set_major_formatter(FuncFormatter(lambda v, _, c=c: f"{(v - c) * scale:.3g}"))
    ax.tick_params(labelsize=9)
    ax.set_xlim(-0.5, nx - 0.5)
    ax.set_ylim(-0.5, ny - 0.5)


def _row(n: int, *, panel: float, extra_width: float = 0.0, extra_height: float = 0.0, bottom: float = 0.0):
    """A figure with ``n`` square image axes in a row, placed by hand (no layout engine: fast)."""
    import matplotlib.pyplot as plt  # noqa: PLC0415

    left, gap, top, label = 0.75, 0.3, 0.35, 0.55
    width = left + n * panel + (n - 1) * gap + 0.2 + extra_width
    height = bottom + label + panel + top + extra_height
    fig = plt.figure(figsize=(width, height))
    axes = [fig.add_axes([(left + i * (panel + gap)) / width, (bottom + label) / height, panel / width, panel / height]) for i in range(n)]
    for i, ax in enumerate(axes):
        ax.set_xlabel("x offset (arcsec)", fontsize=10)
        if i == 0:
            ax.set_ylabel("y offset (arcsec)", fontsize=10)
        else:
            ax.tick_params(labelleft=False)
    return fig, axes


def _colourbar(fig, mappable, axes, *, label: str, ticks=None, below: bool = False):
    """A colour bar beside (or below) a row of axes."""
    x0, y0, _, h = axes[0].get_position().bounds
    x1 = axes[-1].get_position().x1
    if below:
        cax = fig.add_axes([x0 + 0.1 * (x1 - x0), 0.06, 0.8 * (x1 - x0), 0.035])
        bar = fig.colorbar(mappable, cax=cax, orientation="horizontal", ticks=ticks)
    else:
        cax = fig.add_axes([x1 + 0.012, y0, 0.012, h])
        bar = fig.colorbar(mappable, cax=cax, ticks=ticks)
    bar.set_label(label, fontsize=10)
    if ticks is not None:
        bar.ax.set_yticklabels([f"{t:.3g}" for t in ticks]) if not below else bar.ax.set_xticklabels([f"{t:.3g}" for t in ticks])
    bar.ax.tick_params(labelsize=9)
    return bar


def _cmap(name: str):
    import matplotlib as mpl  # noqa: PLC0415

    return mpl.colormaps[name].with_extremes(bad=NO_DATA)


def image_panels(images: Mapping, wcs, stretch: SharedStretch, *, unit: str = "MJy/sr", cmap: str = "gray", panel: float = 3.5):
    """A row of images on one grid, all on ``stretch``, with axes in arcsec, scale bar, N/E arrows and one colour bar.

    Pixels without data (NaN) are shown in :data:`NO_DATA`.
    """
    fig, axes = _row(len(images), panel=panel, extra_width=1.3)
    norm = stretch.norm()
    im = None
    for ax, (label, image) in zip(axes, images.items(), strict=True):
        im = ax.imshow(np.asarray(image, dtype=float), origin="lower", cmap=_cmap(cmap), norm=norm, interpolation="nearest")
        _decorate(ax, wcs, np.shape(image))
        ax.set_title(label, fontsize=11)
    _colourbar(fig, im, axes, label=f"surface brightness ({unit})" if unit else "value", ticks=stretch.ticks())
    return fig


def rgb_panels(pixels: Mapping, wcs, *, panel: float = 4.6):
    """A row of RGB composites (``{label: (ny, nx, 3) uint8}``) with axes in arcsec, scale bar and N/E arrows."""
    fig, axes = _row(len(pixels), panel=panel)
    for ax, (label, rgb) in zip(axes, pixels.items(), strict=True):
        ax.imshow(rgb, origin="lower", interpolation="nearest")
        _decorate(ax, wcs, rgb.shape[:2])
        ax.set_title(label, fontsize=11)
    return fig


def residual_panels(data, mocks: Mapping, wcs, stretch: SharedStretch, *, limit: float, unit: str = "MJy/sr", panel: float = 3.0):
    """One exposure: its data, the last mock (on ``stretch``), then data minus each mock (linear, ``±limit``).

    ``mocks`` is ``{label: mock}`` in the exposure's pixels; ``wcs`` the exposure's WCS.
    """
    labels = list(mocks)
    fig, axes = _row(2 + len(labels), panel=panel, bottom=0.9)
    norm = stretch.norm()
    shape = np.shape(data)
    im = axes[0].imshow(np.asarray(data, dtype=float), origin="lower", cmap=_cmap("gray"), norm=norm, interpolation="nearest")
    axes[0].set_title("data", fontsize=11)
    axes[1].imshow(np.asarray(mocks[labels[-1]], dtype=float), origin="lower", cmap=_cmap("gray"), norm=norm, interpolation="nearest")
    axes[1].set_title(f"mock, {labels[-1]}", fontsize=11)
    res = None
    for ax, label in zip(axes[2:], labels, strict=True):
        diff = np.asarray(data, dtype=float) - np.asarray(mocks[label], dtype=float)
        res = ax.imshow(diff, origin="lower", cmap=_cmap("RdBu_r"), vmin=-limit, vmax=limit, interpolation="nearest")
        ax.set_title(f"data - mock, {label}", fontsize=11)
    for i, ax in enumerate(axes):
        _decorate(ax, wcs, shape, colour="k" if i >= 2 else "w")
    _colourbar(fig, im, axes[:2], label=f"data, mock ({unit})", ticks=stretch.ticks(), below=True)
    _colourbar(fig, res, axes[2:], label=f"data - mock ({unit})", below=True)
    return fig


def pair_panels(cutouts: Mapping, positions, pixel_scale: float, *, panel: float = 3.0):
    """Cut-outs around a close pair, each on a linear scale from 0 to its own peak, in arcsec from the centre.

    ``cutouts`` is ``{label: 2-D array}`` (odd sides, the pair's centre in the middle pixel);
    ``positions`` the true ``(dx, dy)`` offsets of the pair's members from that pixel (pixels).
    """
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

    n = len(cutouts)
    fig, axes = _row(n, panel=panel)
    dx, dy = (np.asarray(v, dtype=float) * pixel_scale for v in positions)
    for ax, (label, cut) in zip(axes, cutouts.items(), strict=True):
        cut = np.asarray(cut, dtype=float)
        hy, hx = (cut.shape[0] - 1) / 2, (cut.shape[1] - 1) / 2
        extent = [(-hx - 0.5) * pixel_scale, (hx + 0.5) * pixel_scale, (-hy - 0.5) * pixel_scale, (hy + 0.5) * pixel_scale]
        peak = np.nanmax(cut) if np.isfinite(cut).any() else 1.0
        ax.imshow(cut, origin="lower", cmap=_cmap("magma"), vmin=0.0, vmax=peak if peak > 0 else 1.0, extent=extent, interpolation="nearest")
        ax.plot(dx, dy, "+", color="c", ms=14, mew=2)
        ax.set_title(label, fontsize=11)
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.yaxis.set_major_locator(MaxNLocator(5))
        ax.tick_params(labelsize=9)
    return fig


def plot_convergence(convergence, fwhm=None, *, truth_fwhm: float | None = None, recorded: Mapping | None = None):
    """χ²/N per iteration (left) and, given a table of ``iteration, median_fwhm`` (arcsec), the FWHM (right).

    ``recorded`` (``{iteration: χ²/N}``, e.g. every iteration's value kept by UPDC) is drawn as a line beside the table's points.
    """
    import matplotlib.pyplot as plt  # noqa: PLC0415

    n = 1 if fwhm is None else 2
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 4.0), squeeze=False)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.13, top=0.96, wspace=0.25)
    a1 = axes[0][0]
    if recorded:
        a1.plot(list(recorded), list(recorded.values()), "-", color="0.6", lw=2, label="χ²/N kept by UPDC, every iteration")
    a1.plot(convergence["iteration"], convergence["chi2_per_pixel"], "o-", label="χ²/N (mean)")
    if "robust_chi2" in convergence.colnames:
        a1.plot(convergence["iteration"], convergence["robust_chi2"], "s--", label="median-based χ²/N")
    a1.axhline(1.0, color="k", lw=0.8, ls=":", label="pure noise")
    a1.set_yscale("log")
    a1.set_xlabel("UPDC iteration")
    a1.set_ylabel("χ² per data pixel (against ERR)")
    a1.legend()
    if fwhm is not None:
        a2 = axes[0][1]
        a2.plot(fwhm["iteration"], fwhm["median_fwhm"], "o-", label="isolated stars (median)")
        if truth_fwhm is not None:
            a2.axhline(truth_fwhm, color="k", lw=0.8, ls=":", label="truth PSF")
        a2.set_xlabel("UPDC iteration")
        a2.set_ylabel("FWHM (arcsec)")
        a2.set_ylim(bottom=0)
        a2.legend()
    return fig
