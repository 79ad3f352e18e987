"""Quick-look PNG previews of images (astropy's interval and stretch classes)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from astropy.visualization import (
    AsinhStretch,
    ImageNormalize,
    LinearStretch,
    LogStretch,
    PercentileInterval,
    SqrtStretch,
    ZScaleInterval,
)

from mosaic.registry import algorithm

__all__ = ["STRETCHES", "write_png"]

STRETCHES = {"asinh": AsinhStretch, "linear": LinearStretch, "log": LogStretch, "sqrt": SqrtStretch}


@algorithm("display")
def write_png(path, image, *, stretch: str = "asinh", interval: str = "percentile", percent: float = 99.5, cmap: str = "gray") -> Path:
    """Write a 2-D image as a PNG (north up: row 0 at the bottom), NaNs shown black.

    Parameters
    ----------
    stretch : {"asinh", "linear", "log", "sqrt"}
    interval : {"percentile", "zscale"}
    """
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # noqa: PLC0415

    if stretch not in STRETCHES:
        msg = f"stretch {stretch!r} unknown; expected one of {sorted(STRETCHES)}"
        raise ValueError(msg)
    intervals = {"percentile": lambda: PercentileInterval(percent), "zscale": ZScaleInterval}
    if interval not in intervals:
        msg = f"interval {interval!r} unknown; expected one of {sorted(intervals)}"
        raise ValueError(msg)
    data = np.asarray(image, dtype=float)
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        msg = "image has no finite pixel; nothing to show"
        raise ValueError(msg)
    vmin, vmax = intervals[interval]().get_limits(finite)
    norm = ImageNormalize(vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1.0, stretch=STRETCHES[stretch](), clip=True)
    rgba = plt.get_cmap(cmap)(norm(np.nan_to_num(data, nan=vmin)))
    rgba[~np.isfinite(data)] = (0.0, 0.0, 0.0, 1.0)
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.part.png")
    plt.imsave(tmp, rgba, origin="lower")
    os.replace(tmp, path)
    return path
