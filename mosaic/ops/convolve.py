"""FFT convolution of one block with an odd PSF: the operator ``B`` and its adjoint ``B*``.

Arrays in, arrays out, on the array module of the input (NumPy through :mod:`scipy.fft`, CuPy
through :mod:`cupy.fft`); nothing here knows about dask. The PSF's centre is its middle pixel,
and an image is zero outside its bounds, so ``fft_convolve(x, psf)`` equals
``scipy.signal.fftconvolve(x, psf, mode="same")``; the adjoint is the correlation, i.e. the
convolution with the PSF flipped on both axes.

*How.* The PSF is placed in a padded array with its centre on pixel ``(0, 0)`` (wrapped
around), so its real FFT ``H`` is a *centred* transfer function: ``irfft(rfft(x) * H)`` at
index ``k`` is the linear convolution at output pixel ``k`` of the ``"same"`` frame, and the
adjoint is the same product with ``conj(H)`` (the flip of a real PSF). Circular wrap-around
only lands on discarded pixels when each padded axis is at least ``n + r`` (``"same"``),
``n + 2r`` (``"full"``) or ``n`` (``"valid"``) for an image axis ``n`` and PSF radius ``r``;
:func:`good_fft_shape` picks the next fast length above that. A :class:`PreparedPSF` keeps
``H`` per padded shape and device so that iterations (and the tiles of a graph, which share one
padded shape) transform the PSF once.

*Precision.* Transforms are computed in float64 (complex128) whatever the input, and the result
is cast back to the input's floating type (float32 in, float32 out). FFT round-off is global:
it is about ``eps * log2(N) * max|x|`` on *every* pixel, so in float32 a bright star
(peak 1e4) would put ~1e-3 of noise on faint sky pixels and into the Richardson-Lucy ratios
formed there. In float64 the only error left is the final rounding to float32 (half an ulp of
each pixel's own value), so the result equals the exact convolution to float32 round-off. The
price is about 1.7x the time of a float32 transform and twice its transient memory.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import scipy.fft

from mosaic.registry import algorithm

try:  # CuPy is optional: without it every array is a NumPy array
    import cupy
except ImportError:  # pragma: no cover - depends on the environment
    cupy = None

__all__ = [
    "MODES",
    "PreparedPSF",
    "array_module",
    "fft_convolve",
    "good_fft_shape",
    "psf_halo",
    "result_dtype",
    "to_host",
]

#: output frames of :func:`fft_convolve`, as in :func:`scipy.signal.fftconvolve`
MODES = ("same", "full", "valid")

#: transfer functions kept per :class:`PreparedPSF` (one per padded shape and device)
_CACHE_SIZE = 4


def array_module(x):
    """The array module (``numpy`` or ``cupy``) that ``x`` belongs to."""
    if cupy is not None:
        return cupy.get_array_module(x)
    return np


def to_host(x) -> np.ndarray:
    """``x`` as a NumPy array: copied from the GPU if it is a CuPy array."""
    if array_module(x) is not np:
        return x.get()
    return np.asarray(x)


def _fft_module(xp):
    return scipy.fft if xp is np else xp.fft


def _check_psf(psf) -> None:
    if psf.ndim != 2:
        msg = f"PSF must be 2-D; got an array of shape {psf.shape!r}; expected (ny, nx)"
        raise ValueError(msg)
    if any(s % 2 == 0 for s in psf.shape):
        msg = f"PSF sides must be odd so that it has a centre pixel; got shape {psf.shape!r}"
        raise ValueError(msg)
    if not np.issubdtype(psf.dtype, np.floating) and not np.issubdtype(psf.dtype, np.integer):
        msg = f"PSF must be real; got dtype {psf.dtype!r}; expected a float or integer array"
        raise ValueError(msg)


def psf_halo(psf_shape) -> int:
    """Halo (in pixels) a tile needs for a convolution with a PSF of ``psf_shape``.

    It is the PSF radius, ``size // 2`` of the larger odd side: pixels farther than that
    from a tile do not reach it. This is the one place where a PSF's halo is decided.

    Parameters
    ----------
    psf_shape : tuple of int
        ``(ny, nx)`` of the PSF, both odd.

    Returns
    -------
    int
    """
    shape = tuple(int(s) for s in psf_shape)
    if len(shape) != 2 or min(shape) < 1 or any(s % 2 == 0 for s in shape):
        msg = f"PSF shape must be two odd positive sizes; got {tuple(psf_shape)!r}"
        raise ValueError(msg)
    return max(shape) // 2


def _min_fft_length(n: int, p: int, mode: str) -> int:
    r = p // 2
    if mode == "same":
        # the centred PSF must also fit, so that its pixels do not fold onto each other
        return max(n + r, p)
    if mode == "full":
        return n + 2 * r
    return n


def _check_mode(mode: str, image_shape, psf_shape) -> None:
    if mode not in MODES:
        msg = f"mode must be one of {MODES}; got {mode!r}"
        raise ValueError(msg)
    if mode == "valid" and any(n < p for n, p in zip(image_shape, psf_shape, strict=True)):
        msg = (
            f"mode 'valid' needs an image at least as large as the PSF; got image {tuple(image_shape)!r} "
            f"and PSF {tuple(psf_shape)!r}"
        )
        raise ValueError(msg)


def good_fft_shape(image_shape, psf_shape, *, mode: str = "same") -> tuple[int, int]:
    """Smallest fast real-FFT shape for which :func:`fft_convolve` is exact.

    Parameters
    ----------
    image_shape, psf_shape : tuple of int
        ``(ny, nx)`` of the image and of the (odd) PSF.
    mode : {"same", "full", "valid"}
        Output frame, as in :func:`fft_convolve`.

    Returns
    -------
    tuple of int
        Per axis ``scipy.fft.next_fast_len`` of ``n + r`` (same), ``n + 2r`` (full) or ``n``
        (valid), for an image axis ``n`` and PSF radius ``r``.
    """
    _check_mode(mode, image_shape, psf_shape)
    return tuple(
        scipy.fft.next_fast_len(_min_fft_length(int(n), int(p), mode), real=True)
        for n, p in zip(image_shape, psf_shape, strict=True)
    )


class PreparedPSF:
    """An odd PSF with its transfer functions cached per padded shape and device.

    Parameters
    ----------
    psf : array_like
        2-D PSF with odd sides, centred on its middle pixel (NumPy or CuPy). It is used as
        given: normalise it beforehand if the convolution should conserve flux.

    Notes
    -----
    The cache holds up to four transfer functions, each ``fft_shape[0] * (fft_shape[1] // 2
    + 1)`` complex128 values, and is shared by the threads that use the object (a lock guards
    it). Pickling drops the cache: a dask worker that receives the object builds its own.
    """

    def __init__(self, psf):
        if isinstance(psf, PreparedPSF):
            psf = psf.psf
        xp = array_module(psf)
        psf = xp.asarray(psf)
        _check_psf(psf)
        if not bool(xp.all(xp.isfinite(psf))):
            msg = "PSF has NaN or infinite values; expected finite values"
            raise ValueError(msg)
        self.psf = psf.astype(np.float64, copy=False)
        self._cache: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    @property
    def shape(self) -> tuple[int, int]:
        """``(ny, nx)`` of the PSF."""
        return tuple(self.psf.shape)

    @property
    def radius(self) -> tuple[int, int]:
        """PSF radius per axis, ``(ny // 2, nx // 2)``."""
        return tuple(s // 2 for s in self.psf.shape)

    def __repr__(self) -> str:
        return f"PreparedPSF(shape={self.shape!r}, cached={len(self._cache)})"

    def __getstate__(self):
        return {"psf": self.psf}

    def __setstate__(self, state):
        self.psf = state["psf"]
        self._cache = OrderedDict()
        self._lock = threading.Lock()

    def transfer(self, fft_shape, xp=np):
        """Real FFT of the PSF centred on pixel ``(0, 0)`` of a ``fft_shape`` array.

        Parameters
        ----------
        fft_shape : tuple of int
            Padded shape, at least the PSF's on each axis.
        xp : module
            ``numpy`` or ``cupy``: where the transfer function lives.

        Returns
        -------
        array
            ``(fft_shape[0], fft_shape[1] // 2 + 1)`` complex128, cached.
        """
        fft_shape = tuple(int(s) for s in fft_shape)
        if len(fft_shape) != 2 or any(s < p for s, p in zip(fft_shape, self.shape, strict=True)):
            msg = f"fft_shape must be at least the PSF shape {self.shape!r} on each axis; got {fft_shape!r}"
            raise ValueError(msg)
        device = int(xp.cuda.runtime.getDevice()) if xp is not np else None
        key = (fft_shape, xp.__name__, device)
        with self._lock:
            found = self._cache.get(key)
            if found is not None:
                self._cache.move_to_end(key)
                return found
        psf = xp.asarray(self.psf)
        ry, rx = self.radius
        padded = xp.zeros(fft_shape, dtype=np.float64)
        padded[: psf.shape[0], : psf.shape[1]] = psf
        # centre pixel to (0, 0): the product with H then needs no shift of the output frame
        padded = xp.roll(padded, (-ry, -rx), axis=(0, 1))
        h = _fft_module(xp).rfft2(padded)
        with self._lock:
            self._cache[key] = h
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return h


def result_dtype(dtype) -> np.dtype:
    """Floating type of a convolution of an image of ``dtype``: float32 stays float32.

    Float16 and float32 give float32, float64 stays float64, integers and booleans give
    float64; complex types are refused (a ``ValueError``).
    """
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.floating):
        return np.result_type(dtype, np.float32)
    if np.issubdtype(dtype, np.integer) or dtype == np.bool_:
        return np.dtype(np.float64)
    msg = f"image must be real; got dtype {dtype!r}; expected a float or integer array"
    raise ValueError(msg)


@algorithm("convolution")
def fft_convolve(image, psf, *, adjoint: bool = False, mode: str = "same", fft_shape=None):
    """Linear convolution of an image with an odd, centred PSF, by real FFTs.

    Parameters
    ----------
    image : array
        2-D NumPy or CuPy array; zero outside its bounds.
    psf : array or PreparedPSF
        PSF with odd sides, centred on its middle pixel. Pass a :class:`PreparedPSF` to reuse
        its transfer function across calls.
    adjoint : bool, optional
        Apply ``B*`` instead of ``B``: correlate, i.e. convolve with the flipped PSF.
    mode : {"same", "full", "valid"}, optional
        Output frame, as in :func:`scipy.signal.fftconvolve`: the image's own shape (centred),
        the whole support ``n + p - 1``, or the pixels that need no zero padding ``n - p + 1``.
    fft_shape : tuple of int, optional
        Padded transform shape, at least :func:`good_fft_shape`; tiles that share one shape
        share one cached transfer function.

    Returns
    -------
    array
        On the image's array module; float32 for float32 (or float16) input, float64 for
        float64 or integer input. Computed in float64 (see the module notes).

    Examples
    --------
    >>> import numpy as np
    >>> psf = np.array([[0.0, 0.25, 0.0], [0.25, 0.5, 0.0], [0.0, 0.0, 0.0]])
    >>> fft_convolve(np.eye(3, dtype=np.float32), psf).dtype
    dtype('float32')
    """
    xp = array_module(image)
    image = xp.asarray(image)
    prepared = psf if isinstance(psf, PreparedPSF) else PreparedPSF(psf)
    if image.ndim != 2:
        msg = f"image must be 2-D; got an array of shape {image.shape!r}; expected (ny, nx)"
        raise ValueError(msg)
    out_dtype = result_dtype(image.dtype)
    _check_mode(mode, image.shape, prepared.shape)
    need = tuple(
        _min_fft_length(n, p, mode) for n, p in zip(image.shape, prepared.shape, strict=True)
    )
    if fft_shape is None:
        fft_shape = good_fft_shape(image.shape, prepared.shape, mode=mode)
    fft_shape = tuple(int(s) for s in fft_shape)
    if len(fft_shape) != 2 or any(s < m for s, m in zip(fft_shape, need, strict=True)):
        msg = f"fft_shape {fft_shape!r} is too small for mode {mode!r}; expected at least {need!r}"
        raise ValueError(msg)

    fft = _fft_module(xp)
    h = prepared.transfer(fft_shape, xp)
    spectrum = fft.rfft2(image.astype(np.float64, copy=False), s=fft_shape)
    if adjoint:
        # X conj(H) = conj(conj(X) H), in place: no second spectrum-sized array
        xp.conjugate(spectrum, out=spectrum)
        spectrum *= h
        xp.conjugate(spectrum, out=spectrum)
    else:
        spectrum *= h
    circular = fft.irfft2(spectrum, s=fft_shape)
    del spectrum

    (ny, nx), (ry, rx) = image.shape, prepared.radius
    if mode == "same":
        out = circular[:ny, :nx]
    elif mode == "valid":
        out = circular[ry : ny - ry, rx : nx - rx]
    else:
        # the full frame starts r pixels before the image: those pixels wrapped to the end
        out = xp.roll(circular, (ry, rx), axis=(0, 1))[: ny + 2 * ry, : nx + 2 * rx]
    return out.astype(out_dtype)
