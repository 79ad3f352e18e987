"""Realistic synthetic NIRCam fields with ground truth.

``simulate_field(outdir, SimConfig(...))`` writes JWST-like ``_cal.fits`` exposures (real SIP
distortion, dithers, rolls, undersampled short-wave pixels, noise, cosmic rays, hot pixels, 1/f
striping), the truth image and table, and the PSFs. Modules: ``pointing`` (geometry), ``sky``
(sources and rendering), ``detector`` (pixel integration and noise), ``field`` (the whole).
"""

from mosaic.simulate.field import (
    SimConfig,
    SimulatedField,
    flagship_config,
    simulate_field,
)

__all__ = ["SimConfig", "SimulatedField", "flagship_config", "simulate_field"]
