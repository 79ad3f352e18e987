"""PSF models and operators.

:mod:`mosaic.psf.model` computes a JWST-like NIRCam PSF from Fraunhofer diffraction of a
segmented pupil (matrix Fourier transform, band- and pixel-integrated).
"""

from mosaic.psf.model import (
    BANDS,
    PRIMARY_DIAMETER_M,
    SEGMENT_FLAT_TO_FLAT_M,
    SEGMENT_PITCH_M,
    STRUT_ANGLES_DEG,
    fwhm_arcsec,
    jwst_psf,
    psf_monochromatic,
    pupil,
    spike_angles_deg,
)

__all__ = [
    "BANDS",
    "PRIMARY_DIAMETER_M",
    "SEGMENT_FLAT_TO_FLAT_M",
    "SEGMENT_PITCH_M",
    "STRUT_ANGLES_DEG",
    "pupil",
    "psf_monochromatic",
    "jwst_psf",
    "spike_angles_deg",
    "fwhm_arcsec",
]
