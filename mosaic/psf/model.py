"""A JWST-like NIRCam PSF from Fraunhofer diffraction of a segmented pupil.

The model is purely geometric: an unaberrated pupil of 18 hexagonal segments with gaps and
three secondary-mirror struts, propagated to the focal plane with a matrix Fourier transform
(MFT), integrated over a top-hat filter band and over each detector-like output pixel. There
are no wavefront errors, no detector effects (inter-pixel capacitance, charge diffusion) and no
field dependence; the model is meant to carry the features that matter for deconvolution tests
(the core width, the Airy-like rings and the six diffraction spikes), not to replace WebbPSF.

*Coordinates.* Arrays are indexed ``[y, x]`` (``y`` = row, ``x`` = column). Angles are position angles in the
array frame, measured counter-clockwise from the ``+x`` axis towards ``+y``. The optical axis
lies at the centre of a pupil array (index ``(n - 1) / 2`` on each axis) and on the central
pixel of every returned PSF.

*Pupil geometry.* Segments are regular hexagons with two vertices on the ``y`` axis ("pointy-top"), so their edge
normals point along 0, 60, ..., 300 degrees. They sit on a hexagonal lattice of pitch
:data:`SEGMENT_PITCH_M` (1.32 m flat-to-flat segments with 7 mm gaps in JWST) and fill the two
rings around a missing central segment. The struts run from the centre outward along
:data:`STRUT_ANGLES_DEG` = 90, 210, 330 degrees, i.e. parallel to segment edges, so that their
diffraction spikes coincide with the six spikes of the segments. This is JWST's arrangement
rotated about the optical axis and simplified: in the real telescope the lower two struts are
also parallel to segment edges, but the vertical strut adds two faint extra spikes, which this
model does not have.

*Matrix Fourier transform.* For a pupil ``P[y_j, x_k]`` sampled with spacing ``dx`` the focal-plane field at angles
``(theta_y, theta_x)`` is ``E = A_y P A_x^T`` with ``A[m, j] = exp(-2 pi i theta_m x_j /
lambda)``. Any angular pixel scale and any output size can be computed this way without FFT
padding; the cost per wavelength is ``O(n_pupil * N * (n_pupil + N))`` for ``N`` output samples
on a side. The intensity is normalised by Parseval's theorem so that each output value is the
fraction of the photons entering the pupil that falls on that pixel. Because the pupil is
point-sampled, the discrete transform repeats with an angular period ``lambda / dx``; fields of
view wider than that show wrapped-around copies of the PSF, and a warning is logged.

The DFT matrices and products are complex128: the matrices are only ``N x n_pupil``, the
products run in BLAS at about twice the cost of complex64 (about a second for a 1501-pixel
F200W PSF), and double precision keeps the far wings and the normalisation exact.
"""

from __future__ import annotations

import functools
import logging
import math
import numbers
from collections.abc import Sequence

import numpy as np

from mosaic.exceptions import InputError
from mosaic.registry import algorithm

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

log = logging.getLogger(__name__)

#: NIRCam filters as top-hat bands ``(lambda_min, lambda_max)`` in microns: the blue and red
#: half-power wavelengths of the filter + OTE + detector throughput tabulated in JWST User
#: Documentation (JDox), "NIRCam Filters".
BANDS: dict[str, tuple[float, float]] = {
    "F070W": (0.624, 0.781),
    "F090W": (0.795, 1.005),
    "F115W": (1.013, 1.282),
    "F150W": (1.331, 1.668),
    "F200W": (1.755, 2.226),
    "F277W": (2.416, 3.127),
    "F356W": (3.140, 3.980),
    "F410M": (3.866, 4.302),
    "F444W": (3.880, 4.986),
}

#: nominal JWST aperture diameter in metres, used by :func:`fwhm_arcsec`
PRIMARY_DIAMETER_M = 6.5
#: JWST segment size, flat to flat, in metres
SEGMENT_FLAT_TO_FLAT_M = 1.32
#: centre-to-centre distance of neighbouring segments in metres (segment + JWST's 7 mm gap);
#: kept fixed when ``gap_m`` changes, so a wider gap makes the segments smaller
SEGMENT_PITCH_M = SEGMENT_FLAT_TO_FLAT_M + 0.007
#: directions (degrees, counter-clockwise from +x) of the three struts, centre outward
STRUT_ANGLES_DEG = (90.0, 210.0, 330.0)

#: direction (degrees) of the first outward edge normal of every segment; the others follow
#: every 60 degrees. 0 means two vertices on the y axis ("pointy-top" hexagons).
_SEGMENT_NORMAL_DEG = 0.0
_ARCSEC_PER_RAD = 180.0 * 3600.0 / math.pi
#: bytes allowed for one row block of the complex focal-plane field
_BLOCK_BYTES = 32 * 2**20
_MIN_PUPIL_PIX = 16
_DEFAULT_GAP_M = 0.03
_DEFAULT_STRUT_WIDTH_M = 0.1
_DEFAULT_N_PUPIL = 256


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------


def _as_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _as_size(size) -> int:
    integral = isinstance(size, numbers.Integral) and not isinstance(size, bool)
    if not integral or size < 3 or size % 2 == 0:
        raise InputError(f"size must be an odd integer >= 3, got {size!r}")
    return int(size)


def _as_positive(name: str, value) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a positive finite number, got {value!r}") from None
    if not math.isfinite(out) or out <= 0.0:
        raise InputError(f"{name} must be a positive finite number, got {value!r}")
    return out


def _as_non_negative(name: str, value) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a finite number >= 0, got {value!r}") from None
    if not math.isfinite(out) or out < 0.0:
        raise InputError(f"{name} must be a finite number >= 0, got {value!r}")
    return out


def _as_offset(offset) -> tuple[float, float]:
    try:
        dy, dx = (float(v) for v in offset)
    except (TypeError, ValueError):
        raise InputError(
            f"offset must be a pair (dy, dx) of finite numbers, got {offset!r}"
        ) from None
    if not (math.isfinite(dy) and math.isfinite(dx)):
        raise InputError(f"offset must be a pair (dy, dx) of finite numbers, got {offset!r}")
    return dy, dx


def _as_band(band) -> str:
    key = band.upper() if isinstance(band, str) else band
    if key not in BANDS:
        raise InputError(f"unknown band {band!r}; allowed bands: {', '.join(BANDS)}")
    return key


# --------------------------------------------------------------------------------------------
# pupil
# --------------------------------------------------------------------------------------------


def _unit(angle_deg: float) -> np.ndarray:
    a = math.radians(angle_deg)
    return np.array([math.cos(a), math.sin(a)])


def _segment_normals() -> np.ndarray:
    """The three edge-normal directions (unit vectors, rows ``(x, y)``) of every segment."""
    return np.array([_unit(_SEGMENT_NORMAL_DEG + 60.0 * k) for k in range(3)])


def _segment_centres() -> np.ndarray:
    """Centres ``(x, y)`` in metres of the 18 segments: lattice rings 1 and 2 around the origin.

    Neighbours lie along the edge normals, at a distance of one pitch.
    """
    e1 = _unit(_SEGMENT_NORMAL_DEG)
    e2 = _unit(_SEGMENT_NORMAL_DEG + 60.0)
    centres = []
    for q in range(-2, 3):
        for r in range(-2, 3):
            ring = (abs(q) + abs(r) + abs(q + r)) // 2  # hexagonal (axial) distance
            if ring in (1, 2):
                centres.append(SEGMENT_PITCH_M * (q * e1 + r * e2))
    return np.array(centres)


def _pupil_radius_m() -> float:
    """Distance from the centre to the farthest segment vertex (for the nominal segment size)."""
    circumradius = SEGMENT_FLAT_TO_FLAT_M / math.sqrt(3.0)
    vertices = np.array(
        [circumradius * _unit(_SEGMENT_NORMAL_DEG + 30.0 + 60.0 * k) for k in range(6)]
    )
    corners = _segment_centres()[:, None, :] + vertices[None, :, :]
    return float(np.sqrt((corners**2).sum(-1)).max())


@functools.lru_cache(maxsize=8)
def _pupil_cached(n_pix: int, gap_m: float, strut_width_m: float) -> tuple[np.ndarray, float]:
    radius = _pupil_radius_m()
    # one empty pixel of margin on each side
    pixel_m = 2.0 * radius / (n_pix - 2)
    coord = (np.arange(n_pix) - (n_pix - 1) / 2.0) * pixel_m
    y, x = np.meshgrid(coord, coord, indexing="ij")
    inside = np.zeros((n_pix, n_pix), dtype=bool)
    half_flat = 0.5 * (SEGMENT_PITCH_M - gap_m)
    normals = _segment_normals()
    for cx, cy in _segment_centres():
        seg = np.ones_like(inside)
        for nx, ny in normals:
            seg &= np.abs((x - cx) * nx + (y - cy) * ny) <= half_flat
        inside |= seg
    if strut_width_m > 0.0:
        for angle in STRUT_ANGLES_DEG:
            ux, uy = _unit(angle)
            along = x * ux + y * uy
            across = -x * uy + y * ux
            inside &= ~((along >= 0.0) & (np.abs(across) <= 0.5 * strut_width_m))
    out = inside.astype(np.float64)
    out.setflags(write=False)
    return out, pixel_m


def pupil(
    n_pix: int = 256, *, gap_m: float = 0.03, strut_width_m: float = 0.1
) -> tuple[np.ndarray, float]:
    """Binary pupil of 18 hexagonal segments with gaps and three struts.

    Segments are regular hexagons (1.32 m flat to flat for JWST's 7 mm gaps) on a hexagonal
    lattice of pitch :data:`SEGMENT_PITCH_M`, filling the two rings around a missing central
    segment (about 6.6 m across). Their edges run along 90, 30 and 150 degrees (two vertices on
    the ``y`` axis). Three struts of width ``strut_width_m`` run from the centre outward along
    :data:`STRUT_ANGLES_DEG` (90, 210 and 330 degrees, 120 degrees apart, parallel to segment
    edges). A pixel is 1 where its centre lies on a segment and off the struts, else 0.

    Parameters
    ----------
    n_pix : int, optional
        Pixels on a side (at least 16). The pupil spans the array with one empty pixel of margin.
    gap_m : float, optional
        Gap between neighbouring segments in metres; the segment pitch is fixed, so the segments
        are ``SEGMENT_PITCH_M - gap_m`` flat to flat. JWST's gap is 7 mm; the default of 3 cm is
        wider so that the gaps, sampled at pixel centres, stay visible at ``n_pix=256``
        (pixels of about 2.6 cm). Gaps much narrower than a pupil pixel are only partly drawn.
    strut_width_m : float, optional
        Width of each strut in metres; 0 leaves them out.

    Returns
    -------
    pupil : numpy.ndarray
        ``(n_pix, n_pix)`` float64 array of 0 and 1, indexed ``[y, x]``, optical axis at index
        ``((n_pix - 1) / 2, (n_pix - 1) / 2)``.
    pixel_m : float
        Pupil pixel size in metres.

    Raises
    ------
    mosaic.exceptions.InputError
        (a ``ValueError``) for ``n_pix < 16``, a negative gap or strut width, or a gap as wide
        as the segment pitch.
    """
    n_pix = _as_int("n_pix", n_pix, _MIN_PUPIL_PIX)
    gap_m = _as_non_negative("gap_m", gap_m)
    strut_width_m = _as_non_negative("strut_width_m", strut_width_m)
    if gap_m >= SEGMENT_PITCH_M:
        raise InputError(
            f"gap_m must be smaller than the segment pitch {SEGMENT_PITCH_M} m, got {gap_m!r}"
        )
    array, pixel_m = _pupil_cached(n_pix, gap_m, strut_width_m)
    return array.copy(), pixel_m


def spike_angles_deg() -> np.ndarray:
    """Position angles of the six diffraction spikes of the segmented pupil.

    A straight pupil edge diffracts light perpendicular to itself, so the spikes of the
    hexagonal segments (and of the outline they make together) lie along the segments' edge
    normals. The struts run parallel to segment edges, so their spikes fall on the same angles.
    The spikes dominate the azimuthal structure beyond about 10 ``lambda / D``; closer in, the
    peaks of the segment lattice (at about ``1.15 lambda / pitch`` = 5.6 ``lambda / D``, on the
    angles half-way between the spikes) are brighter.

    Returns
    -------
    numpy.ndarray
        Six angles in degrees, sorted in ``[0, 360)``, counter-clockwise from the ``+x`` axis
        (array column) towards ``+y`` (array row); 60 degrees apart (0, 60, ..., 300 here).
    """
    angles = np.mod(_SEGMENT_NORMAL_DEG + 60.0 * np.arange(6), 360.0)
    return np.sort(angles)


def fwhm_arcsec(band: str) -> float:
    """Reference FWHM ``1.03 lambda_c / D`` of a band, in arcseconds.

    Parameters
    ----------
    band : str
        A key of :data:`BANDS` (case-insensitive).

    Returns
    -------
    float
        ``1.03 lambda_c / D`` with ``lambda_c`` the centre of the top-hat band and ``D`` =
        :data:`PRIMARY_DIAMETER_M`: the FWHM of an unobstructed circular aperture, a
        reference value only (the segmented pupil's core is within about 10 % of it).
    """
    lo, hi = BANDS[_as_band(band)]
    lam_c = 0.5 * (lo + hi) * 1e-6
    return 1.03 * lam_c / PRIMARY_DIAMETER_M * _ARCSEC_PER_RAD


# --------------------------------------------------------------------------------------------
# matrix Fourier transform
# --------------------------------------------------------------------------------------------


def _prepare_pupil(pupil_array, pupil_pixel_m) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Validate a pupil; crop it to its non-zero bounding box; return ``(P, y, x, dx)``."""
    if pupil_array is None:
        if pupil_pixel_m is not None:
            raise InputError("pupil_pixel_m was given without pupil_array")
        array, dx = _pupil_cached(_DEFAULT_N_PUPIL, _DEFAULT_GAP_M, _DEFAULT_STRUT_WIDTH_M)
    else:
        if pupil_pixel_m is None:
            raise InputError("pupil_pixel_m (metres) is required with pupil_array")
        dx = _as_positive("pupil_pixel_m", pupil_pixel_m)
        array = np.asarray(pupil_array)
        if array.ndim != 2 or min(array.shape) < 2:
            raise InputError(f"pupil_array must be a 2-D array, got shape {array.shape}")
        if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
            raise InputError(f"pupil_array must be real, got dtype {array.dtype}")
        array = array.astype(np.float64, copy=False)
        if not np.all(np.isfinite(array)):
            raise InputError("pupil_array contains non-finite values")
        if not np.any(array):
            raise InputError("pupil_array is zero everywhere")
    ny, nx = array.shape
    rows = np.flatnonzero(np.any(array != 0, axis=1))
    cols = np.flatnonzero(np.any(array != 0, axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    y = (np.arange(r0, r1) - (ny - 1) / 2.0) * dx
    x = (np.arange(c0, c1) - (nx - 1) / 2.0) * dx
    return array[r0:r1, c0:c1], y, x, dx


def _fine_positions(size: int, oversample: int, shift: float) -> np.ndarray:
    """Centres of the sub-pixels, in output pixels from the central pixel, minus ``shift``."""
    n = size * oversample
    return (np.arange(n) + 0.5) / oversample - size / 2.0 - shift


def _dft_matrix(theta_rad: np.ndarray, coord_m: np.ndarray, wavelength_m: float) -> np.ndarray:
    phase = (-2.0 * math.pi / wavelength_m) * np.multiply.outer(theta_rad, coord_m)
    return np.exp(1j * phase)


def _mft_psf(
    P: np.ndarray,
    y_m: np.ndarray,
    x_m: np.ndarray,
    dx_m: float,
    wavelength_m: float,
    scale_rad: float,
    size: int,
    oversample: int,
    offset: tuple[float, float],
) -> np.ndarray:
    """Pixel-integrated monochromatic PSF: fraction of the pupil's photons on each pixel.

    Memory: two ``(n_pupil, size * oversample)`` complex128 matrices, a row block of the
    complex field of at most :data:`_BLOCK_BYTES` and the ``(size, size)`` float64 result.
    """
    fine_scale = scale_rad / oversample
    theta_x = _fine_positions(size, oversample, offset[1]) * scale_rad
    theta_y = _fine_positions(size, oversample, offset[0]) * scale_rad
    n_fine = size * oversample

    a_x = _dft_matrix(theta_x, x_m, wavelength_m)  # (n_fine, n_x)
    t = P @ a_x.T  # (n_y, n_fine): transform along x first
    del a_x

    # fraction of photons per fine sample (Parseval): |E|^2 dx^2 dtheta^2 / (lambda^2 sum P^2)
    norm = (dx_m * fine_scale / wavelength_m) ** 2 / float(np.sum(P * P))

    out = np.empty((size, size), dtype=np.float64)
    rows_per_block = max(1, _BLOCK_BYTES // (16 * n_fine * oversample))
    for r0 in range(0, size, rows_per_block):
        r1 = min(size, r0 + rows_per_block)
        a_y = _dft_matrix(theta_y[r0 * oversample : r1 * oversample], y_m, wavelength_m)
        field = a_y @ t  # (rows * oversample, n_fine)
        intensity = field.real**2 + field.imag**2
        out[r0:r1] = intensity.reshape(r1 - r0, oversample, size, oversample).sum(axis=(1, 3))
    out *= norm
    return out


def _check_aliasing(size: int, scale_rad: float, wavelength_m: float, dx_m: float) -> None:
    """Log a warning when the field of view exceeds the MFT's period ``lambda / dx``."""
    period = wavelength_m / dx_m
    field = size * scale_rad
    if field > period:
        needed_dx = wavelength_m / field
        log.warning(
            "field of view %.4g arcsec exceeds the alias-free width lambda/pupil_pixel = %.4g "
            "arcsec at %.4g um, so the PSF wraps around at the edges; use pupil pixels <= %.3g m "
            "(n_pupil >= %d in jwst_psf)",
            field * _ARCSEC_PER_RAD,
            period * _ARCSEC_PER_RAD,
            wavelength_m * 1e6,
            needed_dx,
            math.ceil(2.0 * _pupil_radius_m() / needed_dx) + 2,
        )


def psf_monochromatic(
    wavelength_um: float,
    *,
    pixel_scale_arcsec: float,
    size: int,
    oversample: int = 4,
    pupil_array: np.ndarray | None = None,
    pupil_pixel_m: float | None = None,
    offset: Sequence[float] = (0.0, 0.0),
) -> np.ndarray:
    """Monochromatic PSF of a pupil, integrated over square output pixels.

    The field is computed with a matrix Fourier transform on a grid ``oversample`` times finer
    than the output pixels (samples at the sub-pixel centres), and the intensity is summed over
    each block of ``oversample x oversample`` samples.

    Parameters
    ----------
    wavelength_um : float
        Wavelength in microns.
    pixel_scale_arcsec : float
        Output pixel size in arcseconds (any positive value; no Nyquist constraint).
    size : int
        Output pixels on a side; odd and at least 3.
    oversample : int, optional
        Sub-samples per output pixel and axis (>= 1); 1 samples the PSF at pixel centres.
    pupil_array : numpy.ndarray, optional
        Real 2-D pupil transmission, indexed ``[y, x]``, optical axis at the array centre.
        Defaults to :func:`pupil` with ``n_pix=256`` and default gaps and struts.
    pupil_pixel_m : float, optional
        Pupil pixel size in metres; required with ``pupil_array``.
    offset : pair of float, optional
        ``(dy, dx)`` position of the PSF centre relative to the central pixel, in output pixels.

    Returns
    -------
    numpy.ndarray
        ``(size, size)`` float64; each value is the fraction of the photons entering the pupil
        that falls on that pixel (Parseval normalisation), so the sum is below 1 by the light
        falling outside the field.

    Raises
    ------
    mosaic.exceptions.InputError
        (a ``ValueError``) naming the offending value.

    Notes
    -----
    Cost ``O(n_y n_x N + N^2 n_y)`` for ``N = size * oversample``; memory two
    ``(n_pupil, N)`` complex128 matrices plus a 32 MiB row block of the field plus the output.
    A field of view wider than ``lambda / pupil_pixel_m`` wraps around (logged as a warning).
    """
    lam = _as_positive("wavelength_um", wavelength_um) * 1e-6
    scale = _as_positive("pixel_scale_arcsec", pixel_scale_arcsec) / _ARCSEC_PER_RAD
    size = _as_size(size)
    oversample = _as_int("oversample", oversample, 1)
    shift = _as_offset(offset)
    P, y, x, dx = _prepare_pupil(pupil_array, pupil_pixel_m)
    _check_aliasing(size, scale, lam, dx)
    return _mft_psf(P, y, x, dx, lam, scale, size, oversample, shift)


@algorithm("psf")
def jwst_psf(
    band: str,
    *,
    pixel_scale_arcsec: float,
    size: int,
    oversample: int = 4,
    n_wavelengths: int = 9,
    n_pupil: int = 256,
    offset: Sequence[float] = (0.0, 0.0),
) -> np.ndarray:
    """Band-integrated, pixel-integrated JWST-like PSF.

    The band is a top-hat :data:`BANDS` ``[lambda_min, lambda_max]`` split into
    ``n_wavelengths`` equal intervals, each represented by its central wavelength (midpoint
    rule). All wavelengths get the same weight in photon number (a flat photon spectrum through
    a flat throughput); each monochromatic PSF is the fraction of its photons per pixel
    (see :func:`psf_monochromatic`), computed on an ``oversample`` times finer grid and summed
    over each output pixel. The result is renormalised to sum 1 over the returned array.

    Parameters
    ----------
    band : str
        NIRCam filter, a key of :data:`BANDS` (case-insensitive).
    pixel_scale_arcsec : float
        Output pixel size in arcseconds.
    size : int
        Output pixels on a side; odd and at least 3.
    oversample : int, optional
        Sub-samples per output pixel and axis for the pixel integration (>= 1).
    n_wavelengths : int, optional
        Wavelengths sampled across the band (>= 1).
    n_pupil : int, optional
        Pupil pixels on a side (>= 16), see :func:`pupil`. The field of view
        ``size * pixel_scale_arcsec`` should not exceed ``lambda / pupil_pixel`` at the shortest
        sampled wavelength, about ``0.0309 * (n_pupil - 2) * lambda[um]`` arcsec, else the PSF
        wraps around at the edges (logged as a warning); e.g. 1501 pixels of 0.0155 arcsec in
        F200W need ``n_pupil >= 425`` (512 is a good choice).
    offset : pair of float, optional
        ``(dy, dx)`` position of the PSF centre relative to the central pixel, in output pixels.

    Returns
    -------
    numpy.ndarray
        ``(size, size)`` float64 PSF summing to 1, centred on pixel ``(size // 2, size // 2)``
        plus ``offset``.

    Raises
    ------
    mosaic.exceptions.InputError
        (a ``ValueError``) for an unknown band (listing the allowed ones), an even or too small
        ``size``, a non-positive pixel scale, ``oversample < 1`` or other bad values.

    Notes
    -----
    Time ``n_wavelengths * O(n_pupil * N * (n_pupil + N))`` with ``N = size * oversample``:
    ``size=1501, oversample=1`` takes about a second with ``n_pupil=256`` and a few seconds with
    ``n_pupil=512`` on two CPU cores. Memory: two ``(n_pupil, N)`` complex128 matrices,
    a 32 MiB row block of the field and two ``(size, size)`` float64 arrays (about 100 MiB for
    ``N = 3002``).
    """
    key = _as_band(band)
    scale = _as_positive("pixel_scale_arcsec", pixel_scale_arcsec) / _ARCSEC_PER_RAD
    size = _as_size(size)
    oversample = _as_int("oversample", oversample, 1)
    n_wavelengths = _as_int("n_wavelengths", n_wavelengths, 1)
    n_pupil = _as_int("n_pupil", n_pupil, _MIN_PUPIL_PIX)
    shift = _as_offset(offset)

    array, pixel_m = _pupil_cached(n_pupil, _DEFAULT_GAP_M, _DEFAULT_STRUT_WIDTH_M)
    P, y, x, dx = _prepare_pupil(array, pixel_m)
    lo, hi = BANDS[key]
    step = (hi - lo) / n_wavelengths
    wavelengths_m = (lo + step * (np.arange(n_wavelengths) + 0.5)) * 1e-6
    _check_aliasing(size, scale, float(wavelengths_m.min()), dx)
    log.debug("jwst_psf %s: wavelengths %s um", key, np.round(wavelengths_m * 1e6, 4))

    total = np.zeros((size, size), dtype=np.float64)
    for lam in wavelengths_m:
        total += _mft_psf(P, y, x, dx, float(lam), scale, size, oversample, shift)
    total /= total.sum()
    return total
