"""FITS and zarr images: read lazily by sections, written whole or not at all, tile by tile.

*Reading.* :func:`read_fits_image` opens one 2-D image extension of a FITS file -- the one
named, else ``SCI`` (an ``_i2d.fits`` mosaic), else the first 2-D image HDU -- as a
:class:`FitsImage`: a dask array whose chunks are read with ``ImageHDU.section`` (only the
chunk's rows and columns leave the file; the reader is picklable, so any worker can read), the
extension's and the primary headers, and the celestial WCS. :meth:`FitsImage.extension` reads
another extension of the same file and shape (``ERR``, ``WHT``, ``DQ``) the same way.
:func:`open_image` also takes a zarr array.

*Writing.* :func:`write_fits_image` writes 2-D images as named extensions carrying a header
and/or WCS. The file is laid out first (headers written, data areas reserved as a sparse file)
under a temporary name; then each tile is written into its place by the task that computes it
(``os.pwrite`` of byte ranges), so no process holds a whole image; the file is renamed to its
final name only when every tile is in, and removed if any fails. :func:`lay_out_fits` is that
mechanism for writers of other layouts (:func:`mosaic.io.products.write_i2d`).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from astropy.io import fits

from mosaic.exceptions import InputError, MissingFileError

if TYPE_CHECKING:
    import dask.array as da

__all__ = [
    "FitsImage",
    "PendingFile",
    "celestial_wcs",
    "extension_header",
    "lay_out_fits",
    "open_image",
    "read_fits_image",
    "refuse_input_as_output",
    "write_fits_image",
]

log = logging.getLogger(__name__)

#: FITS BITPIX of the dtypes that are written as they are; others become float32 or int32
_BITPIX = {np.dtype(np.uint8): 8, np.dtype(np.int16): 16, np.dtype(np.int32): 32, np.dtype(np.float32): -32, np.dtype(np.float64): -64}
_BLOCK = 2880
# keywords that describe the data layout, not the image: never copied from a source header
_STRUCTURAL = {
    "SIMPLE", "XTENSION", "BITPIX", "NAXIS", "EXTEND", "PCOUNT", "GCOUNT", "BSCALE", "BZERO", "BLANK", "EXTNAME",
    "EXTVER", "CHECKSUM", "DATASUM", "ZIMAGE", "ZBITPIX", "ZNAXIS", "ZTENSION", "ZPCOUNT", "ZGCOUNT",
}


# -- reading ----------------------------------------------------------------------------------------------


class _FitsSection:
    """One 2-D FITS image extension as an array-like: slicing reads only the rows of that section."""

    def __init__(self, path, ext, shape, dtype):
        self.path, self.ext = str(path), ext
        self.shape, self.dtype, self.ndim = tuple(shape), np.dtype(dtype), len(shape)

    #: bytes of whole rows read at once: a band of full rows is one contiguous read, where a section
    #: of a few columns reads row by row (a 1024² chunk of a 4096² image: 0.036 s against 0.25 s)
    BAND_BYTES = 64 * 2**20

    def __getitem__(self, key):
        # no memmap of the whole file: whole rows in bands, their columns (and strides) cut out, or a section
        selected = np.broadcast_to(np.zeros((), bool), self.shape)[key].shape
        if 0 in selected:  # astropy's section cannot select nothing
            return np.empty(selected, dtype=self.dtype)
        with fits.open(self.path, memmap=False, lazy_load_hdus=True) as hdul:
            section = hdul[self.ext].section
            rows = _strided_slices(key, self.shape)
            if rows is None:
                out = np.asarray(section[key], dtype=self.dtype)
            else:
                # astropy reads a strided section pixel by pixel (a ::9 sample of a 9584² image:
                # minutes); bands of whole rows, thinned in memory, read it at disk speed
                (y0, y1, sy), (x0, x1, sx) = rows
                rows_per_band = max(1, self.BAND_BYTES // max(1, self.shape[1] * self.dtype.itemsize))
                step = max(sy, rows_per_band // sy * sy)  # a multiple of the stride: every band starts on it
                out = np.empty((len(range(y0, y1, sy)), len(range(x0, x1, sx))), dtype=self.dtype)
                for y in range(y0, y1, step):
                    band = section[y : min(y + step, y1), :][::sy, x0:x1:sx]
                    out[(y - y0) // sy : (y - y0) // sy + band.shape[0]] = band
        return out


def _strided_slices(key, shape) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
    """``((y0, y1, sy), (x0, x1, sx))`` where ``key`` is two non-empty slices of positive steps over a 2-D ``shape``, else None."""
    if not (isinstance(key, tuple) and len(key) == 2 and len(shape) == 2 and all(isinstance(k, slice) for k in key)):
        return None
    bounds = []
    for k, n in zip(key, shape, strict=True):
        start, stop, step = k.indices(n)
        if step < 1 or stop <= start:
            return None
        bounds.append((start, stop, step))
    return bounds[0], bounds[1]


def _open(path: Path):
    if not path.exists():
        msg = f"{path}: no such image; expected a FITS file"
        raise MissingFileError(msg)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*truncated.*")  # found by _check_whole, by name
            return fits.open(path, memmap=False, lazy_load_hdus=True)
    except (OSError, ValueError, TypeError, UserWarning) as err:
        msg = f"{path}: cannot be read as FITS ({' '.join(str(err).split())}); expected a FITS image"
        raise InputError(msg) from None


def _check_whole(path: Path, ext, hdu) -> None:
    """Raise :class:`InputError` when the image's data reach past the end of the file (a truncated copy)."""
    if isinstance(hdu, fits.CompImageHDU) or not isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU):
        return  # compressed images (an ImageHDU in astropy 7, sized by their uncompressed NAXISn): astropy checks their table
    h = hdu.header
    n = abs(int(h.get("BITPIX", 8))) // 8
    for k in range(1, int(h.get("NAXIS", 0)) + 1):
        n *= int(h.get(f"NAXIS{k}", 0) or 0)
    end = int(hdu.fileinfo()["datLoc"]) + n
    size = path.stat().st_size
    if end > size:
        msg = f"{path}[{ext}]: truncated: the image needs bytes up to {end:,} but the file has {size:,}; expected a whole FITS file"
        raise InputError(msg)


#: dask names of the arrays read from files here: name -> the file (to refuse writing over an input)
_SOURCES: dict[str, str] = {}


def _source_files(arrays) -> set[str]:
    """The files (resolved) that dask arrays are computed from, as far as this module read them."""
    out = set()
    for a in arrays:
        graph = getattr(a, "__dask_graph__", lambda: None)()
        if graph is None:
            continue
        names = getattr(graph, "layers", None) or {}
        for name in names:
            if name in _SOURCES:
                out.add(_SOURCES[name])
    return out


def refuse_input_as_output(path, inputs=(), arrays=()) -> None:
    """Refuse to write ``path`` when it is (resolves to) one of ``inputs`` or a file ``arrays`` are read from.

    Even with ``overwrite``: the output is renamed over its input when whole, so the input
    would be gone.

    Raises
    ------
    InputError
        Naming the file.
    """
    target = os.path.realpath(path)
    sources = {os.path.realpath(p) for p in inputs} | _source_files(arrays)
    if target in sources:
        msg = f"{path}: is an input of this command; expected another output file (writing it would destroy the input, --overwrite or not)"
        raise InputError(msg)


def _image_hdu(hdul, path: Path, ext):
    """``(key, hdu)`` of the image: ``ext``, else ``SCI``, else the first 2-D image HDU."""
    names = [h.name for h in hdul]
    if ext is None:
        ext = "SCI" if "SCI" in names else next((i for i, h in enumerate(hdul) if h.is_image and h.header.get("NAXIS") == 2), None)
        if ext is None:
            msg = f"{path}: no 2-D image; expected a SCI extension or a 2-D image HDU (extensions: {names})"
            raise InputError(msg)
    try:
        hdu = hdul[ext]
    except (KeyError, IndexError):
        msg = f"{path}: no extension {ext!r}; expected one of {names}"
        raise InputError(msg) from None
    if not hdu.is_image or not hasattr(hdu, "section") or hdu.header.get("NAXIS") != 2:
        msg = f"{path}[{ext}]: not a 2-D image (NAXIS={hdu.header.get('NAXIS')}); expected NAXIS=2"
        raise InputError(msg)
    return ext, hdu


def _lazy(path: Path, ext, hdu, tile: int, dtype) -> da.Array:
    # dask only where a lazy array is made: readers of headers and the writers' layout go without it
    import dask.array as da  # noqa: PLC0415
    from dask.base import tokenize  # noqa: PLC0415

    shape = (int(hdu.header["NAXIS2"]), int(hdu.header["NAXIS1"]))
    # the dtype the section gives (BSCALE/BZERO applied), in native byte order
    dtype = np.dtype(dtype if dtype is not None else hdu.section[0:1, 0:1].dtype).newbyteorder("=")
    stat = path.stat()
    # the name changes when the file is replaced: a cluster never serves another file's chunks
    name = "fits-" + tokenize(str(path.resolve()), ext, stat.st_mtime_ns, stat.st_size, dtype.str, tile)
    _SOURCES[name] = os.path.realpath(path)
    source = _FitsSection(path, ext, shape, dtype)
    return da.from_array(source, chunks=(tile, tile), asarray=False, lock=False, meta=np.empty((0, 0), dtype=dtype), name=name)


def celestial_wcs(header, *, path=None):
    """The celestial WCS of a header, or None where it has none (or an unreadable one, logged).

    Parameters
    ----------
    header : astropy.io.fits.Header
    path : path-like, optional
        Named in the log line about an unreadable WCS.

    Returns
    -------
    astropy.wcs.WCS or None
    """
    from astropy.wcs import WCS, FITSFixedWarning  # noqa: PLC0415

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header).celestial
        except Exception as err:  # a malformed WCS is reported as missing, with why
            log.warning("%s: WCS unreadable (%s)", path or "header", err)
            return None
    return wcs if wcs.has_celestial else None


@dataclass(frozen=True)
class FitsImage:
    """A 2-D FITS image read lazily (see :func:`read_fits_image`).

    Attributes
    ----------
    path : pathlib.Path
    ext : str or int
        The extension read.
    data : dask.array.Array
        The image, chunks read from the file by sections.
    header : astropy.io.fits.Header
        The extension's header (a copy).
    primary : astropy.io.fits.Header
        The primary header (a copy).
    names : tuple of str
        Names of all the file's HDUs.
    """

    path: Path
    ext: str | int
    data: da.Array
    header: fits.Header
    primary: fits.Header
    names: tuple[str, ...]

    @property
    def wcs(self):
        """Celestial WCS of the extension, or None (see :func:`celestial_wcs`)."""
        return celestial_wcs(self.header, path=self.path)

    def keyword(self, key: str, default=None):
        """``key`` of the extension's header, else of the primary header (where an ``_i2d.fits``
        keeps FILTER, PIXFRAC, RESKERN), else ``default``."""
        return self.header.get(key, self.primary.get(key, default))

    @property
    def band(self) -> str | None:
        """``FILTER`` of the extension, else of the primary header, else None."""
        band = self.keyword("FILTER")
        return str(band) if band else None

    def extension(self, name: str, *, dtype=None) -> da.Array | None:
        """Another image extension of the file (``ERR``, ``WHT``, ``DQ``) read like :attr:`data`.

        Parameters
        ----------
        name : str
            Extension name.
        dtype : numpy dtype, optional
            Read as this dtype (default: the file's).

        Returns
        -------
        dask.array.Array or None
            None where the file has no such extension; chunked like :attr:`data`.

        Raises
        ------
        InputError
            When the extension is not an image of the same shape.
        """
        if name == self.ext:
            return self.data if dtype is None else self.data.astype(dtype)
        if name not in self.names:
            return None
        tile = self.data.chunks[0][0]
        with _open(self.path) as hdul:
            ext, hdu = _image_hdu(hdul, self.path, name)
            try:
                _check_whole(self.path, ext, hdu)
            except (KeyError, ValueError, TypeError) as err:
                msg = f"{self.path}[{name}]: the headers cannot be read ({type(err).__name__}: {err}); expected a 2-D FITS image"
                raise InputError(msg) from None
            shape = (hdu.header["NAXIS2"], hdu.header["NAXIS1"])
            if shape != self.data.shape:
                msg = f"{self.path}[{name}]: shape {shape} differs from {self.ext} {self.data.shape}; expected one shape"
                raise InputError(msg)
            return _lazy(self.path, ext, hdu, tile, dtype)


def read_fits_image(path, *, ext=None, tile: int = 1024, dtype=None) -> FitsImage:
    """A 2-D FITS image as a lazy dask array, with its headers.

    Parameters
    ----------
    path : path-like
        FITS file. An ``_i2d.fits`` mosaic is read from ``SCI``; another file from its first 2-D
        image HDU.
    ext : str or int, optional
        Extension to read instead.
    tile : int
        Chunk side in pixels.
    dtype : numpy dtype, optional
        Read as this dtype (default: the file's, in native byte order).

    Returns
    -------
    FitsImage

    Raises
    ------
    MissingFileError
        No such file (also a ``FileNotFoundError``).
    InputError
        Not FITS, no such extension, or not a 2-D image.
    """
    path = Path(path)
    with _open(path) as hdul:
        try:
            key, hdu = _image_hdu(hdul, path, ext)
            _check_whole(path, key, hdu)
            data = _lazy(path, key, hdu, int(tile), dtype)
            image = FitsImage(path, key, data, hdu.header.copy(), hdul[0].header.copy(), tuple(h.name for h in hdul))
        except InputError:
            raise
        except Exception as err:  # a malformed header: astropy raises VerifyError, KeyError, AttributeError... by case
            msg = f"{path}: the image's headers cannot be read ({type(err).__name__}: {' '.join(str(err).split())}); expected a 2-D FITS image"
            raise InputError(msg) from None
    log.info("read %s[%s]: %d x %d %s", path, key, *data.shape, data.dtype)
    return image


def open_image(path, *, ext=None, tile: int = 1024) -> da.Array:
    """A 2-D FITS image or zarr array as a lazy dask array.

    Parameters
    ----------
    path : path-like
        A FITS file (see :func:`read_fits_image`) or a zarr array (a directory).
    ext : str or int, optional
        FITS extension, or the array's path inside a zarr group.
    tile : int
        Chunk side for FITS input (a zarr array keeps its chunks).

    Returns
    -------
    dask.array.Array
    """
    import dask.array as da  # noqa: PLC0415

    path = Path(path)
    if not path.exists():
        msg = f"{path}: no such image; expected a FITS file or a zarr array"
        raise MissingFileError(msg)
    if path.is_dir():
        try:
            data = da.from_zarr(str(path), component=ext)
        except Exception as err:  # zarr raises several kinds for a path that is not an array
            msg = f"{path}: cannot be read as a zarr array ({err}); expected a 2-D zarr array (pass ext= for a group)"
            raise InputError(msg) from None
        if data.ndim != 2:
            msg = f"{path}: zarr array has shape {data.shape!r}; expected a 2-D image"
            raise InputError(msg)
        return data
    return read_fits_image(path, ext=ext, tile=tile).data


# -- writing ---------------------------------------------------------------------------------------------


class _FitsImageTarget:
    """Write blocks of one FITS image extension in place (``os.pwrite`` of byte ranges).

    Picklable (a path and an offset), so any worker that sees the file system can write.
    """

    def __init__(self, path, offset: int, shape, dtype):
        self.path = str(path)
        self.offset = int(offset)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype).newbyteorder(">")
        self.ndim = len(self.shape)

    def __setitem__(self, key, value):
        key = key if isinstance(key, tuple) else (key,)
        sl = [k.indices(n) for k, n in zip(key, self.shape, strict=True)]
        block = np.ascontiguousarray(np.asarray(value), dtype=self.dtype)
        ny, nx = self.shape[-2:]
        (y0, y1, _), (x0, x1, _) = sl[-2:]
        item = self.dtype.itemsize
        planes = block.reshape(-1, y1 - y0, x1 - x0)
        plane_starts = list(np.ndindex(*block.shape[:-2])) or [()]
        fd = os.open(self.path, os.O_WRONLY)
        try:
            for plane, idx in zip(planes, plane_starts, strict=True):
                p = int(np.ravel_multi_index(tuple(s[0] + i for s, i in zip(sl[:-2], idx, strict=True)), self.shape[:-2])) if idx else 0
                base = self.offset + p * ny * nx * item
                if x0 == 0 and x1 == nx:
                    # whole rows are contiguous in the file: one write
                    os.pwrite(fd, plane.tobytes(), base + y0 * nx * item)
                    continue
                for r, row in enumerate(plane):
                    os.pwrite(fd, row.tobytes(), base + ((y0 + r) * nx + x0) * item)
        finally:
            os.close(fd)


class PendingFile:
    """A laid-out file waiting for its tiles; :meth:`commit` renames it into place.

    Attributes
    ----------
    writes : dask Delayed
        The tile writes (one task per tile writes it in every extension); compute them (with
        other work) before committing.
    tmp, final : pathlib.Path
        The temporary and the final name.
    """

    def __init__(self, writes, tmp: Path, final: Path, size: int = 0):
        self.writes = writes
        self.tmp = tmp
        self.final = final
        self.size = int(size)

    def commit(self) -> Path:
        """Rename the complete file to its final name (a file it replaces is removed in a thread)."""
        from mosaic.io.replace import replace_file  # noqa: PLC0415

        replace_file(self.tmp, self.final)
        log.info("wrote %s", self.final)
        return self.final

    def abort(self) -> None:
        """Remove the temporary file."""
        self.tmp.unlink(missing_ok=True)

    def compute(self, *, description: str | None = None) -> Path:
        """Compute the writes (with a progress bar), then commit; abort if any write fails."""
        from mosaic.progress import compute  # noqa: PLC0415

        try:
            compute(self.writes, description=description or f"writing {self.final.name}")
        except OSError as err:
            self.abort()
            raise _write_error(self.final, err, self.size) from None
        except BaseException:
            self.abort()
            raise
        return self.commit()


def _write_error(path: Path, err: OSError, size: int) -> Exception:
    """One line for an output that cannot be written: a full disk (with the space needed), no permission."""
    folder = Path(path).absolute().parent
    if err.errno == errno.EFBIG:
        from dask.utils import format_bytes  # noqa: PLC0415

        return InputError(f"{path}: the file needs {format_bytes(size)}, more than this process may write (ulimit -f); raise the limit or write a smaller product")
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            free = None
        from dask.utils import format_bytes  # noqa: PLC0415

        have = f"{format_bytes(free)} free" if free is not None else "free space unknown"
        what = "the disk is full" if err.errno == errno.ENOSPC else "the disk quota is exceeded"
        return InputError(f"{path}: {what}: the file needs {format_bytes(size)} ({have} on {folder}); free space or choose another output folder")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return InputError(f"{path}: cannot write in {folder} ({os.strerror(err.errno)}); expected a writable output folder")
    return InputError(f"{path}: cannot be written ({' '.join(str(err).split())}); expected a writable output folder with room for it")


def padded_size(n: int) -> int:
    """Bytes that ``n`` bytes of data take in a FITS file (whole 2880-byte blocks)."""
    return -(-n // _BLOCK) * _BLOCK


def _bitpix(dtype) -> int:
    try:
        return _BITPIX[np.dtype(dtype)]
    except KeyError:
        msg = f"dtype {np.dtype(dtype)} cannot be written as FITS here; expected one of {[str(d) for d in _BITPIX]}"
        raise ValueError(msg) from None


def extension_header(name: str, shape, dtype, source=None) -> fits.Header:
    """The header of an image extension: layout keywords, ``EXTNAME``, then ``source``'s cards.

    Parameters
    ----------
    name : str
        ``EXTNAME``.
    shape : tuple of int
        Array shape, slowest axis first.
    dtype : numpy dtype
        uint8, int16, int32, float32 or float64.
    source : astropy.io.fits.Header, optional
        Cards to copy (WCS and the rest); its layout keywords (``NAXISn``, ``BITPIX``,
        ``EXTNAME``, scaling, checksums...) are left out.

    Returns
    -------
    astropy.io.fits.Header
    """
    h = fits.Header()
    h["XTENSION"] = ("IMAGE", "image extension")
    h["BITPIX"] = _bitpix(dtype)
    h["NAXIS"] = len(shape)
    for i, n in enumerate(reversed(shape), start=1):
        h[f"NAXIS{i}"] = int(n)
    h["PCOUNT"] = 0
    h["GCOUNT"] = 1
    h["EXTNAME"] = name
    for card in (source if source is not None else fits.Header()).cards:
        key = card.keyword
        if key and key not in _STRUCTURAL and not (key.startswith("NAXIS") or key.startswith("ZNAXIS")):
            h.append(card)
    return h


def _primary_header(source, history) -> fits.Header:
    h = fits.Header()
    h["SIMPLE"] = True
    h["BITPIX"] = 8
    h["NAXIS"] = 0
    h["EXTEND"] = True
    for card in (source if source is not None else fits.Header()).cards:
        key = card.keyword
        if key and key not in _STRUCTURAL and not key.startswith("NAXIS"):
            h.append(card)
    h["ORIGIN"] = ("mosaic", "made by the mosaic package")
    for line in history:
        h.add_history(line)
    return h


def lay_out_fits(path, primary: fits.Header, extensions: Sequence[tuple[fits.Header, da.Array]]) -> PendingFile:
    """Lay out a FITS file under a temporary name: headers written, data areas reserved.

    Parameters
    ----------
    path : path-like
        Final name.
    primary : astropy.io.fits.Header
        Complete primary header (``SIMPLE``, ``NAXIS = 0``, ...).
    extensions : sequence of (Header, dask.array.Array)
        Image extensions in file order, each header made by :func:`extension_header` for its
        array's shape and dtype.

    Returns
    -------
    PendingFile
        Its ``writes`` put every tile of every array in place; then ``commit()``.
    """
    path = Path(path)
    if not path.parent.is_dir():
        msg = f"{path}: directory {path.parent} does not exist; expected an existing directory"
        raise FileNotFoundError(msg)
    for header, array in extensions:
        shape = tuple(header[f"NAXIS{i}"] for i in range(header["NAXIS"], 0, -1))
        if shape != tuple(array.shape) or header["BITPIX"] != _bitpix(array.dtype):
            msg = f"{path}[{header.get('EXTNAME')}]: header says {shape} BITPIX {header['BITPIX']}; the array is {array.shape} {array.dtype}"
            raise ValueError(msg)
    # absolute: workers in another directory write to the same file
    tmp = path.absolute().with_name(f".{path.name}.part-{uuid.uuid4().hex[:8]}")
    targets = []
    size = len(primary.tostring()) + sum(
        len(h.tostring()) + padded_size(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize) for h, a in extensions
    )
    try:
        # exclusive and random: never through a planted file or link of that name
        with open(tmp, "xb") as fh:
            if size > shutil.disk_usage(tmp.parent).free:  # refused now, not after computing every tile
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
            fh.write(primary.tostring().encode("ascii"))
            for header, array in extensions:
                fh.write(header.tostring().encode("ascii"))
                offset = fh.tell()
                # reserve the padded data area (sparse): tiles are written into it later
                fh.seek(offset + padded_size(int(np.prod(array.shape)) * np.dtype(array.dtype).itemsize))
                targets.append(_FitsImageTarget(tmp, offset, array.shape, array.dtype))
            fh.truncate()
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise _write_error(path, err, size) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return PendingFile(_tile_writes([a for _, a in extensions], targets, str(tmp)), tmp, path, size)


def _tile_writes(arrays, targets, name: str):
    """The writes of ``arrays`` into ``targets`` (the extensions of file ``name``), as one Delayed:
    one task per tile writes it into every extension of the same tiles (:func:`mosaic.io.blocks.block_writes`)."""
    import dask  # noqa: PLC0415

    from mosaic.io.blocks import block_writes  # noqa: PLC0415

    parts = block_writes(_write_tiles, arrays, targets, name="fits-write", where=name, dtype=np.int8)
    return dask.delayed(_written, pure=True)(parts)


def _write_tiles(*blocks, targets: tuple, block_info=None) -> np.ndarray:
    """Write the same block of several arrays into their ``targets``; a one-element flag."""
    region = tuple(slice(a, b) for a, b in block_info[0]["array-location"])
    for block, target in zip(blocks, targets, strict=True):
        target[region] = block
    return np.ones((1,) * len(region), dtype=np.int8)


def _written(parts) -> int:
    """How many blocks were written (what the writes compute to)."""
    return int(sum(np.size(p) for p in parts))


def write_fits_image(path, images: Mapping, *, header=None, wcs=None, primary=None, history: Sequence[str] = (),
                     overwrite: bool = False, compute: bool = True):
    """Write 2-D images as named FITS image extensions, tile by tile, whole or not at all.

    Parameters
    ----------
    path : path-like
        Output file; written under a temporary name and renamed when whole.
    images : mapping of str to array
        Extension name to image (dask, written tile by tile, or NumPy). uint8, int16, int32,
        float32 and float64 are written as they are; other floats as float32, others as int32.
    header : astropy.io.fits.Header, optional
        Header copied into every extension (WCS and the rest; layout keywords are not).
    wcs : astropy.wcs.WCS, optional
        WCS written into every extension (after ``header``'s cards, replacing its WCS keywords).
    primary : astropy.io.fits.Header, optional
        Primary header to copy (layout keywords are not).
    history : sequence of str
        HISTORY lines for the primary header.
    overwrite : bool
        Replace an existing file.
    compute : bool
        False: return the :class:`PendingFile` whose ``writes`` are to be computed before
        ``commit()`` (to compute them together with other products).

    Returns
    -------
    pathlib.Path or PendingFile

    Raises
    ------
    FileExistsError
        The file exists and ``overwrite`` is False.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        msg = f"{path}: exists; pass overwrite=True (--overwrite) to replace it"
        raise FileExistsError(msg)
    import dask.array as da  # noqa: PLC0415

    refuse_input_as_output(path, arrays=[a for a in images.values() if isinstance(a, da.Array)])
    if not images:
        msg = f"{path}: no image to write; expected a mapping of extension name to a 2-D image"
        raise ValueError(msg)
    source = fits.Header() if header is None else header.copy()
    if wcs is not None:
        source.update(wcs.to_header())
    extensions = []
    for name, image in images.items():
        image = image if isinstance(image, da.Array) else da.from_array(np.asarray(image), chunks=(1024, 1024))
        if image.ndim != 2:
            msg = f"{path}: image {name!r} has shape {image.shape}; expected a 2-D image"
            raise ValueError(msg)
        if np.dtype(image.dtype) not in _BITPIX:
            image = image.astype(np.float32 if image.dtype.kind == "f" else np.int32)
        extensions.append((extension_header(name, image.shape, image.dtype, source), image))
    pending = lay_out_fits(path, _primary_header(primary, history), extensions)
    log.info("writing %s (%s) tile by tile", path, ", ".join(images))
    return pending.compute() if compute else pending
