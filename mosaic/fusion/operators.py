"""Forward models of imaging-spectroscopy fusion (seed 003, eqs. 4-5) and their adjoints.

The fused cube ``X`` has shape ``(n_wave, ny, nx)`` on the fine (NIRCam) grid; NIRCam images
``Y_m`` are ``(n_filter, ny, nx)`` on the same grid; the IFU cube ``Y_h`` is
``(n_wave, ny // d, nx // d)`` on the coarse grid, ``d`` the integer pixel ratio.

- ``NIRCam(X) = L_m W_m(X)``: each wavelength plane convolved with its NIRCam PSF, then the
  planes summed with the filter throughputs ``L_m`` (``(n_filter, n_wave)``).
- ``NIRSpec(X) = L_h W_h(X) S``: each plane convolved with its NIRSpec PSF, multiplied by the
  IFU throughput ``L_h`` (one value per wavelength, 1 after the pipeline's flat field), and
  sampled every ``d`` fine pixels starting at ``offset`` (by default the middle fine pixel of
  each spaxel, ``d // 2``).

Convolutions are periodic (FFT) on the fine grid, as in the seed (appendix B), so the problem
decouples in Fourier (see :mod:`mosaic.fusion.solve`). PSFs are odd-sided with their centre on
the middle pixel and need not be symmetric: ``(psf * x)[n] = sum_m psf[m] x[n - m + c]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.fft

__all__ = ["FusionOperators", "transfer_functions", "check_psf_cube", "sampling_phase"]

#: bytes of transfer functions an operator keeps instead of recomputing them per call
_CACHE_BYTES = 256 * 2**20


def check_psf_cube(psfs, n_wave: int, shape, name: str) -> np.ndarray:
    """``psfs`` as a float64 ``(n_wave, py, px)`` array of odd, finite PSFs no larger than ``shape``."""
    psfs = np.asarray(psfs, dtype=np.float64)
    if psfs.ndim == 2:
        psfs = np.broadcast_to(psfs, (n_wave, *psfs.shape))
    if psfs.ndim != 3 or psfs.shape[0] != n_wave:
        msg = f"{name}: got PSFs of shape {psfs.shape!r}; expected ({n_wave}, py, px), one per wavelength"
        raise ValueError(msg)
    if psfs.shape[1] % 2 == 0 or psfs.shape[2] % 2 == 0:
        msg = f"{name}: PSF sides must be odd so that they have a centre pixel; got {psfs.shape[1:]!r}"
        raise ValueError(msg)
    if psfs.shape[1] > shape[0] or psfs.shape[2] > shape[1]:
        msg = f"{name}: PSF {psfs.shape[1:]!r} is larger than the fine grid {tuple(shape)!r}; crop it"
        raise ValueError(msg)
    if not np.all(np.isfinite(psfs)):
        msg = f"{name}: PSFs have NaN or infinite values"
        raise ValueError(msg)
    return psfs


def transfer_functions(psfs: np.ndarray, shape) -> np.ndarray:
    """The 2-D FFTs of PSFs ``(n, py, px)`` placed with their centre on pixel (0, 0) of ``shape``.

    Multiplying an image's FFT by it is the periodic convolution with the PSF.
    """
    n, py, px = psfs.shape
    padded = np.zeros((n, *shape), dtype=np.float64)
    padded[:, :py, :px] = psfs
    padded = np.roll(padded, (-(py // 2), -(px // 2)), axis=(1, 2))
    return scipy.fft.fft2(padded, axes=(1, 2))


def sampling_phase(shape, offset) -> np.ndarray:
    """``exp(2 pi i (nu_y o_y / ny + nu_x o_x / nx))`` on the fine frequency grid ``shape``.

    The factor by which sampling at ``offset`` (rather than at 0) multiplies each fine
    frequency's contribution to the coarse spectrum.
    """
    fy = np.arange(shape[0])[:, None] * offset[0] / shape[0]
    fx = np.arange(shape[1])[None, :] * offset[1] / shape[1]
    return np.exp(2j * np.pi * (fy + fx))


@dataclass
class FusionOperators:
    """NIRCam and NIRSpec forward models on one fine grid, with their adjoints.

    Parameters
    ----------
    psf_m, psf_h : ndarray
        NIRCam and NIRSpec PSFs on the fine grid, ``(n_wave, py, px)`` (or one 2-D PSF for all
        wavelengths), odd sides, centre on the middle pixel.
    throughput : ndarray
        ``L_m``, ``(n_filter, n_wave)``.
    factor : int
        ``d``, fine pixels per IFU spaxel along each axis.
    coarse_shape : tuple of int
        ``(ny, nx)`` of the IFU grid; the fine grid is ``d`` times that.
    offset : tuple of int, optional
        Fine pixel sampled in each spaxel's ``d x d`` block (default ``(d // 2, d // 2)``).
    ifu_throughput : ndarray, optional
        ``L_h`` as one factor per wavelength (default 1).
    """

    psf_m: np.ndarray
    psf_h: np.ndarray
    throughput: np.ndarray
    factor: int
    coarse_shape: tuple
    offset: tuple | None = None
    ifu_throughput: np.ndarray | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        d = int(self.factor)
        if d != self.factor or d < 1:
            msg = f"factor (fine pixels per IFU spaxel) must be a positive integer; got {self.factor!r}"
            raise ValueError(msg)
        self.factor = d
        self.coarse_shape = tuple(int(s) for s in self.coarse_shape)
        self.throughput = np.atleast_2d(np.asarray(self.throughput, dtype=np.float64))
        n_wave = self.throughput.shape[1]
        self.psf_m = check_psf_cube(self.psf_m, n_wave, self.shape, "NIRCam PSF")
        self.psf_h = check_psf_cube(self.psf_h, n_wave, self.shape, "NIRSpec PSF")
        self.offset = (d // 2, d // 2) if self.offset is None else tuple(int(o) for o in self.offset)
        if not all(0 <= o < d for o in self.offset):
            msg = f"offset must lie in [0, {d}) on each axis; got {self.offset!r}"
            raise ValueError(msg)
        lh = np.ones(n_wave) if self.ifu_throughput is None else np.asarray(self.ifu_throughput, float)
        if lh.shape != (n_wave,):
            msg = f"ifu_throughput: got shape {lh.shape!r}; expected ({n_wave},)"
            raise ValueError(msg)
        self.ifu_throughput = lh

    @property
    def n_wave(self) -> int:
        return self.throughput.shape[1]

    @property
    def n_filter(self) -> int:
        return self.throughput.shape[0]

    @property
    def shape(self) -> tuple:
        """The fine grid ``(ny, nx)``."""
        return (self.coarse_shape[0] * self.factor, self.coarse_shape[1] * self.factor)

    def otf(self, which: str, sl: slice = slice(None)) -> np.ndarray:
        """Transfer functions ``(n, ny, nx)`` of the ``'m'`` (NIRCam) or ``'h'`` (NIRSpec) PSFs in ``sl``."""
        psfs = self.psf_m if which == "m" else self.psf_h
        n_bytes = 16 * psfs.shape[0] * self.shape[0] * self.shape[1]
        if n_bytes > _CACHE_BYTES:
            return transfer_functions(psfs[sl], self.shape)
        if which not in self._cache:
            self._cache[which] = transfer_functions(psfs, self.shape)
        return self._cache[which][sl]

    def _check(self, x, shape, what):
        x = np.asarray(x, dtype=np.float64)
        if x.shape != tuple(shape):
            msg = f"{what}: got shape {x.shape!r}; expected {tuple(shape)!r}"
            raise ValueError(msg)
        return x

    def nircam(self, cube) -> np.ndarray:
        """``L_m W_m(X)``: ``(n_wave, ny, nx)`` -> ``(n_filter, ny, nx)``."""
        cube = self._check(cube, (self.n_wave, *self.shape), "cube")
        spec = scipy.fft.fft2(cube, axes=(1, 2)) * self.otf("m")
        return scipy.fft.ifft2(np.tensordot(self.throughput, spec, axes=1), axes=(1, 2)).real

    def nircam_adjoint(self, images) -> np.ndarray:
        """``W_m^T L_m^T``: ``(n_filter, ny, nx)`` -> ``(n_wave, ny, nx)``."""
        images = self._check(images, (self.n_filter, *self.shape), "images")
        spec = np.tensordot(self.throughput.T, scipy.fft.fft2(images, axes=(1, 2)), axes=1)
        return scipy.fft.ifft2(spec * np.conj(self.otf("m")), axes=(1, 2)).real

    def nirspec(self, cube) -> np.ndarray:
        """``L_h W_h(X) S``: ``(n_wave, ny, nx)`` -> ``(n_wave, ny / d, nx / d)``."""
        cube = self._check(cube, (self.n_wave, *self.shape), "cube")
        blurred = scipy.fft.ifft2(scipy.fft.fft2(cube, axes=(1, 2)) * self.otf("h"), axes=(1, 2)).real
        d, (oy, ox) = self.factor, self.offset
        return blurred[:, oy::d, ox::d] * self.ifu_throughput[:, None, None]

    def nirspec_adjoint(self, cube_lr) -> np.ndarray:
        """``S^T W_h^T L_h^T``: ``(n_wave, ny / d, nx / d)`` -> ``(n_wave, ny, nx)``."""
        cube_lr = self._check(cube_lr, (self.n_wave, *self.coarse_shape), "IFU cube")
        d, (oy, ox) = self.factor, self.offset
        up = np.zeros((self.n_wave, *self.shape))
        up[:, oy::d, ox::d] = cube_lr * self.ifu_throughput[:, None, None]
        return scipy.fft.ifft2(scipy.fft.fft2(up, axes=(1, 2)) * np.conj(self.otf("h")), axes=(1, 2)).real
