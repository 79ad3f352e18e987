"""Tests of mosaic.psf.model against analytic references.

References: the Airy pattern ``(2 J1(x) / x)^2`` and its encircled energy
``1 - J0(x)^2 - J1(x)^2`` for a filled circular pupil; the first zero of ``J1`` for the dark
ring; the geometry of the hexagonal segments for the spike angles; exact sub-pixel sampling
identities for offsets and pixel integration; ``1.03 lambda / D`` for the FWHM.
"""

import logging
import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.special import j0, j1, jn_zeros

from mosaic.psf import model
from mosaic.psf.model import (
    BANDS,
    PRIMARY_DIAMETER_M,
    SEGMENT_PITCH_M,
    STRUT_ANGLES_DEG,
    fwhm_arcsec,
    jwst_psf,
    psf_monochromatic,
    pupil,
    spike_angles_deg,
)

ARCSEC_PER_RAD = 180.0 * 3600.0 / math.pi
#: small pupils keep the tests fast
N_PUPIL = 128


def _lambda_over_d_arcsec(band: str) -> float:
    lo, hi = BANDS[band]
    return 0.5 * (lo + hi) * 1e-6 / PRIMARY_DIAMETER_M * ARCSEC_PER_RAD


def _angle_diff(a, b):
    """Smallest absolute difference of two angles in degrees."""
    return np.abs((np.asarray(a) - b + 180.0) % 360.0 - 180.0)


# ---------------------------------------------------------------------------------------------
# circular pupil: Airy pattern
# ---------------------------------------------------------------------------------------------

DISK_N = 256
DISK_R_PIX = 120.0
DISK_D_M = 6.5
DISK_PIXEL_M = DISK_D_M / (2.0 * DISK_R_PIX)
WAVELENGTH_UM = 2.0
LOD_ARCSEC = WAVELENGTH_UM * 1e-6 / DISK_D_M * ARCSEC_PER_RAD


@pytest.fixture(scope="module")
def disk():
    c = (DISK_N - 1) / 2.0
    y, x = np.mgrid[:DISK_N, :DISK_N]
    return (((y - c) ** 2 + (x - c) ** 2) <= DISK_R_PIX**2).astype(np.float64)


def _radius_lod(size: int, scale_arcsec: float) -> np.ndarray:
    c = size // 2
    y, x = np.mgrid[:size, :size]
    return np.hypot(y - c, x - c) * scale_arcsec / LOD_ARCSEC


def _airy(x):
    x = np.asarray(x, dtype=float)
    out = np.ones_like(x)
    nz = x != 0
    out[nz] = (2.0 * j1(x[nz]) / x[nz]) ** 2
    return out


def test_airy_pattern_at_pixel_centres(disk):
    # oversample=1 samples the intensity at pixel centres: compare with (2 J1(x)/x)^2,
    # x = pi D theta / lambda, both normalised at the peak
    size, scale = 101, LOD_ARCSEC / 10.0
    psf = psf_monochromatic(
        WAVELENGTH_UM,
        pixel_scale_arcsec=scale,
        size=size,
        oversample=1,
        pupil_array=disk,
        pupil_pixel_m=DISK_PIXEL_M,
    )
    assert psf.shape == (size, size) and psf.dtype == np.float64
    reference = _airy(math.pi * _radius_lod(size, scale))
    # tolerance: the pixelated disk (R = 120 pupil pixels) differs from a circle by ~1e-4
    np.testing.assert_allclose(psf / psf.max(), reference, rtol=0, atol=2e-4)


def test_airy_peak_and_encircled_energy_are_photon_fractions(disk):
    # Parseval normalisation: the peak per pixel is A * dOmega / lambda^2 and the light
    # within radius r is 1 - J0(x)^2 - J1(x)^2 (x = pi D r / lambda)
    size, scale = 101, LOD_ARCSEC / 10.0
    psf = psf_monochromatic(
        WAVELENGTH_UM,
        pixel_scale_arcsec=scale,
        size=size,
        oversample=1,
        pupil_array=disk,
        pupil_pixel_m=DISK_PIXEL_M,
    )
    area = disk.sum() * DISK_PIXEL_M**2
    peak = area * (scale / ARCSEC_PER_RAD) ** 2 / (WAVELENGTH_UM * 1e-6) ** 2
    assert psf[size // 2, size // 2] == pytest.approx(peak, rel=1e-10)
    r = _radius_lod(size, scale)
    # radii of the first three dark rings, where the encircled energy is flat (83.8 %, 91.0 %,
    # 93.8 %), so that counting whole pixels inside the radius barely matters
    for x in jn_zeros(1, 3):
        expected = 1.0 - j0(x) ** 2 - j1(x) ** 2
        assert psf[r < x / math.pi].sum() == pytest.approx(expected, abs=1e-4)  # measured 5e-6


def test_first_dark_ring_at_1p22_lambda_over_d(disk):
    size, scale = 121, LOD_ARCSEC / 40.0
    psf = psf_monochromatic(
        WAVELENGTH_UM,
        pixel_scale_arcsec=scale,
        size=size,
        oversample=1,
        pupil_array=disk,
        pupil_pixel_m=DISK_PIXEL_M,
    )
    c = size // 2
    profile = psf[c, c:] / psf[c, c]
    i = int(np.argmin(profile[20:]) + 20)
    y0, y1, y2 = profile[i - 1 : i + 2]
    i_min = i + 0.5 * (y0 - y2) / (y0 - 2.0 * y1 + y2)  # parabola through the minimum
    r_min = i_min * scale / LOD_ARCSEC
    expected = jn_zeros(1, 1)[0] / math.pi  # 1.2197
    assert r_min == pytest.approx(expected, rel=5e-3)
    assert profile[i] < 1e-3


# ---------------------------------------------------------------------------------------------
# pupil geometry
# ---------------------------------------------------------------------------------------------


def test_pupil_has_18_hexagonal_segments_and_a_central_hole():
    p, dx = pupil(256, strut_width_m=0.0)
    assert p.shape == (256, 256) and p.dtype == np.float64
    assert set(np.unique(p)) == {0.0, 1.0}
    labels, n = ndimage.label(p)  # 4-connected: the 3 cm gaps separate the segments
    assert n == 18
    flat = SEGMENT_PITCH_M - 0.03
    hexagon_area = math.sqrt(3.0) / 2.0 * flat**2
    areas = ndimage.sum(p, labels, index=np.arange(1, n + 1)) * dx**2
    np.testing.assert_allclose(areas, hexagon_area, rtol=0.03)
    c = 128
    assert not p[c - 10 : c + 10, c - 10 : c + 10].any()  # missing central segment
    # overall extent: two rings of segments, about 6.6 m across the flats
    cols = np.flatnonzero(p.any(axis=0))
    width = (cols[-1] - cols[0] + 1) * dx
    assert width == pytest.approx(4.0 * SEGMENT_PITCH_M + flat, abs=2 * dx)


def test_pupil_struts_block_the_expected_directions():
    p_open, dx = pupil(256, strut_width_m=0.0)
    p, dx2 = pupil(256, strut_width_m=0.1)
    assert dx == dx2
    c = (256 - 1) / 2.0
    for angle in STRUT_ANGLES_DEG:
        for radius_m in (1.5, 2.5):  # on segments in rings 1 and 2
            a = math.radians(angle)
            row = int(round(c + radius_m * math.sin(a) / dx))
            col = int(round(c + radius_m * math.cos(a) / dx))
            assert p[row, col] == 0.0
    blocked = (p_open.sum() - p.sum()) * dx**2
    # three 10 cm wide struts crossing ~2.6 m of segments each
    assert 0.5 < blocked < 1.0


def test_spike_angles_are_the_segment_edge_normals():
    angles = spike_angles_deg()
    assert angles.shape == (6,)
    np.testing.assert_allclose(np.diff(angles), 60.0)
    assert 0.0 <= angles[0] < 60.0
    # struts are parallel to segment edges: their spikes (perpendicular) are spike angles too
    for strut in STRUT_ANGLES_DEG:
        assert _angle_diff(angles, strut + 90.0).min() < 1e-9


# ---------------------------------------------------------------------------------------------
# band-integrated PSF
# ---------------------------------------------------------------------------------------------


def test_jwst_psf_normalised_odd_and_centred():
    size = 51
    psf = jwst_psf(
        "F200W", pixel_scale_arcsec=0.031, size=size, oversample=2, n_wavelengths=3, n_pupil=N_PUPIL
    )
    assert psf.shape == (size, size) and psf.dtype == np.float64
    assert abs(psf.sum() - 1.0) < 1e-12
    assert np.unravel_index(np.argmax(psf), psf.shape) == (size // 2, size // 2)
    assert np.all(psf >= 0.0)
    # a real pupil gives a centro-symmetric intensity
    np.testing.assert_allclose(psf, psf[::-1, ::-1], rtol=0, atol=1e-12 * psf.max())


def test_band_name_is_case_insensitive():
    kw = dict(pixel_scale_arcsec=0.063, size=11, oversample=1, n_wavelengths=2, n_pupil=32)
    np.testing.assert_array_equal(jwst_psf("f444w", **kw), jwst_psf("F444W", **kw))


def test_six_spikes_at_spike_angles():
    # Spikes of the straight segment edges dominate the azimuthal profile outside ~10 lambda/D;
    # inside, the segment-lattice peaks (at ~1.15 lambda/pitch, between the spikes) do.
    band, samp = "F200W", 2.0
    scale = _lambda_over_d_arcsec(band) / samp
    size = 161
    psf = jwst_psf(
        band, pixel_scale_arcsec=scale, size=size, oversample=1, n_wavelengths=5, n_pupil=N_PUPIL
    )
    c = size // 2
    y, x = np.mgrid[:size, :size] - c
    r = np.hypot(y, x) / samp  # lambda_c / D
    angle = np.degrees(np.arctan2(y, x)) % 360.0
    annulus = (r >= 15.0) & (r <= 38.0)

    bin_deg = 2.0
    edges = np.arange(0.0, 360.0 + bin_deg, bin_deg)
    energy, _ = np.histogram(angle[annulus], bins=edges, weights=psf[annulus])
    count, _ = np.histogram(angle[annulus], bins=edges)
    profile = energy / count
    centres = edges[:-1] + bin_deg / 2.0
    is_max = (profile >= np.roll(profile, 1)) & (profile >= np.roll(profile, -1))
    maxima = np.flatnonzero(is_max)
    top6 = np.sort(centres[maxima[np.argsort(profile[maxima])[::-1][:6]]])
    expected = spike_angles_deg()
    for a in expected:
        assert _angle_diff(top6, a).min() <= 3.0

    on = np.zeros_like(annulus)
    between = np.zeros_like(annulus)
    for a in expected:
        on |= _angle_diff(angle, a) <= 2.0
        between |= _angle_diff(angle, a + 30.0) <= 15.0
    ratio = psf[annulus & on].mean() / psf[annulus & between].mean()
    assert ratio > 5.0  # measured ~25


def test_subpixel_offset_moves_centroid():
    band = "F200W"
    size = 101
    kw = dict(
        pixel_scale_arcsec=_lambda_over_d_arcsec(band) / 2.0,
        size=size,
        oversample=4,
        n_wavelengths=5,
        n_pupil=N_PUPIL,
    )
    centred = jwst_psf(band, **kw)
    shifted = jwst_psf(band, offset=(0.3, -0.2), **kw)
    y, x = np.mgrid[:size, :size]

    def centroid(p):
        return np.array([np.sum(p * y), np.sum(p * x)])

    np.testing.assert_allclose(centroid(centred), [size // 2, size // 2], atol=1e-9)
    # tolerance: the wings truncated at the field edge bias the centroid by ~0.007 px
    np.testing.assert_allclose(centroid(shifted) - centroid(centred), [0.3, -0.2], atol=0.02)


def test_integer_offset_is_an_exact_shift():
    kw = dict(pixel_scale_arcsec=0.02, size=31, oversample=2, n_wavelengths=3, n_pupil=64)
    centred = jwst_psf("F150W", **kw)
    shifted = jwst_psf("F150W", offset=(1.0, -2.0), **kw)
    # shifted[i, j] = centred[i - 1, j + 2] up to the normalisation over different fields
    a = shifted[1:, :-2]
    b = centred[:-1, 2:]
    np.testing.assert_allclose(a / a.sum(), b / b.sum(), rtol=1e-9, atol=1e-15)


def test_pixel_integration_equals_block_sum_of_fine_sampling():
    # jwst_psf at scale s with oversample 4 samples the sub-pixel centres (k + 1/2) s / 4 from
    # the PSF centre. The same points are the pixel centres of a size 4n + 1 PSF at scale s / 4
    # shifted by half a fine pixel, minus its first row and column.
    n, s = 21, 0.05
    kw = dict(n_wavelengths=3, n_pupil=N_PUPIL)
    coarse = jwst_psf("F277W", pixel_scale_arcsec=s, size=n, oversample=4, **kw)
    fine = jwst_psf(
        "F277W", pixel_scale_arcsec=s / 4.0, size=4 * n + 1, oversample=1, offset=(0.5, 0.5), **kw
    )
    blocks = fine[1:, 1:].reshape(n, 4, n, 4).sum(axis=(1, 3))
    blocks /= blocks.sum()
    np.testing.assert_allclose(coarse, blocks, rtol=0, atol=1e-12)


def test_row_blocks_give_the_same_psf(monkeypatch):
    kw = dict(pixel_scale_arcsec=0.031, size=25, oversample=3, n_wavelengths=2, n_pupil=64)
    kw["offset"] = (0.2, 0.1)
    whole = jwst_psf("F115W", **kw)
    monkeypatch.setattr(model, "_BLOCK_BYTES", 16 * 75 * 3 * 4)  # blocks of 4 output rows
    blocked = jwst_psf("F115W", **kw)
    np.testing.assert_allclose(blocked, whole, rtol=1e-12, atol=0)


def test_fwhm_of_f200w_close_to_1p03_lambda_over_d():
    band = "F200W"
    reference = fwhm_arcsec(band)
    lo, hi = BANDS[band]
    expected = 1.03 * 0.5 * (lo + hi) * 1e-6 / 6.5 * ARCSEC_PER_RAD
    assert reference == pytest.approx(expected, rel=1e-12)
    scale = reference / 20.0
    psf = jwst_psf(
        band, pixel_scale_arcsec=scale, size=61, oversample=1, n_wavelengths=5, n_pupil=N_PUPIL
    )
    # FWHM of the circle with the area of the region above half maximum
    area = np.count_nonzero(psf >= 0.5 * psf.max()) * scale**2
    fwhm = 2.0 * math.sqrt(area / math.pi)
    assert fwhm == pytest.approx(reference, rel=0.10)  # measured ~2 % wide


def test_bands_cover_the_nircam_filters():
    for band in ("F070W", "F090W", "F115W", "F150W", "F200W", "F277W", "F356W", "F444W", "F410M"):
        lo, hi = BANDS[band]
        centre = int(band[1:4]) / 100.0
        assert lo < centre < hi or abs(0.5 * (lo + hi) - centre) < 0.1
    assert BANDS["F200W"] == (1.755, 2.226)


def test_fov_beyond_alias_free_width_logs_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="mosaic.psf.model"):
        jwst_psf("F200W", pixel_scale_arcsec=0.2, size=31, n_wavelengths=1, n_pupil=16)
    assert any("wraps around" in rec.getMessage() for rec in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mosaic.psf.model"):
        jwst_psf("F200W", pixel_scale_arcsec=0.03, size=31, n_wavelengths=1, n_pupil=32)
    assert not caplog.records


# ---------------------------------------------------------------------------------------------
# bad inputs
# ---------------------------------------------------------------------------------------------

GOOD = dict(pixel_scale_arcsec=0.031, size=11, oversample=1, n_wavelengths=1, n_pupil=32)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(size=10), "10"),
        (dict(size=1), "size.*1"),
        (dict(size=11.0), "11.0"),
        (dict(pixel_scale_arcsec=0.0), "pixel_scale_arcsec.*0.0"),
        (dict(pixel_scale_arcsec=-0.03), "-0.03"),
        (dict(pixel_scale_arcsec=float("nan")), "nan"),
        (dict(oversample=0), "oversample.*0"),
        (dict(n_wavelengths=0), "n_wavelengths.*0"),
        (dict(n_pupil=8), "n_pupil.*8"),
        (dict(offset=(0.1,)), "offset"),
    ],
)
def test_jwst_psf_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        jwst_psf("F200W", **{**GOOD, **kwargs})


def test_unknown_band_lists_allowed_bands():
    with pytest.raises(ValueError, match="F999W") as err:
        jwst_psf("F999W", **GOOD)
    for band in BANDS:
        assert band in str(err.value)
    with pytest.raises(ValueError, match="F999W"):
        fwhm_arcsec("F999W")


def test_psf_monochromatic_rejects_bad_values(disk):
    ok = dict(
        pixel_scale_arcsec=0.05, size=11, oversample=1, pupil_array=disk, pupil_pixel_m=DISK_PIXEL_M
    )
    with pytest.raises(ValueError, match="wavelength_um.*-1"):
        psf_monochromatic(-1.0, **ok)
    with pytest.raises(ValueError, match="12"):
        psf_monochromatic(2.0, **{**ok, "size": 12})
    with pytest.raises(ValueError, match="pupil_pixel_m"):
        psf_monochromatic(2.0, **{**ok, "pupil_pixel_m": None})
    with pytest.raises(ValueError, match="pupil_pixel_m.*0"):
        psf_monochromatic(2.0, **{**ok, "pupil_pixel_m": 0.0})
    with pytest.raises(ValueError, match="zero everywhere"):
        psf_monochromatic(2.0, **{**ok, "pupil_array": np.zeros((8, 8))})
    with pytest.raises(ValueError, match="2-D"):
        psf_monochromatic(2.0, **{**ok, "pupil_array": np.ones(8)})


def test_pupil_rejects_bad_values():
    with pytest.raises(ValueError, match="n_pix.*4"):
        pupil(4)
    with pytest.raises(ValueError, match="gap_m.*-0.01"):
        pupil(64, gap_m=-0.01)
    with pytest.raises(ValueError, match="strut_width_m.*-1"):
        pupil(64, strut_width_m=-1)


def test_default_pupil_is_used_by_psf_monochromatic():
    p, dx = pupil()
    kw = dict(pixel_scale_arcsec=0.031, size=21, oversample=1)
    np.testing.assert_array_equal(
        psf_monochromatic(2.0, **kw), psf_monochromatic(2.0, pupil_array=p, pupil_pixel_m=dx, **kw)
    )
    assert model.__all__  # public API declared
