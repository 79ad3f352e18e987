"""A simulated field for the UPDC benchmarks: written once, read back as ``mosaic updc`` reads it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["UPDCField", "simulate_updc_field"]


@dataclass
class UPDCField:
    """The simulated field, its exposures (:func:`mosaic.io.cal.read_exposures`), a cut-out reader
    straight from the files (``CalCutouts``) and the seconds the simulation took."""

    field: object
    exposures: object
    reader: object
    seconds: float


def simulate_updc_field(folder: Path, *, size: int, n_exposures: int, psf_size: int, n_stars: int, n_pairs: int) -> UPDCField:
    """Simulate ``n_exposures`` noisy exposures of ``size``² (seed 1) into ``folder/field`` and open them."""
    from mosaic.cli.drizzle import CalCutouts
    from mosaic.io.cal import read_exposures
    from mosaic.simulate import SimConfig, simulate_field

    t0 = time.perf_counter()
    cfg = SimConfig(size=size, psf_size=psf_size, n_exposures=n_exposures, seed=1, n_stars=n_stars, n_pairs=n_pairs)
    field = simulate_field(Path(folder) / "field", cfg, overwrite=True)
    seconds = time.perf_counter() - t0
    exposures = read_exposures(field.exposures)
    reader = CalCutouts(exposures["path"].values, exposures.attrs["bad_bits"])
    return UPDCField(field=field, exposures=exposures, reader=reader, seconds=seconds)
