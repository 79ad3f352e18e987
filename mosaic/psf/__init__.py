"""PSF models and operators.

:mod:`mosaic.psf.model` computes a JWST-like NIRCam PSF from Fraunhofer diffraction of a
segmented pupil (matrix Fourier transform, band- and pixel-integrated); :mod:`mosaic.psf.files`
reads, validates, resamples, groups and writes PSF files.
"""

from mosaic.psf.files import psf_groups, read_psf, resample_psf, write_psf
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
    "read_psf",
    "write_psf",
    "resample_psf",
    "psf_groups",
]
