"""The files the service serves: images and catalogues under its folders, by stable ids.

Three roots hold files: the **data** directory (given by the operator; uploads go to its
``uploads/`` folder), the service's **results** folder (what ``POST /process`` made) and its
**runs** folder (the products of field runs). A file's id is a hash of its root and its path
inside it, so ids survive a restart without being stored.

:func:`confined` is the one gate for a path a client names: relative, no ``..``, no NUL, and
once symlinks are resolved still inside the root; anything else is a :class:`PathRefused`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

__all__ = ["FITS_SUFFIXES", "CATALOG_SUFFIXES", "FileIndex", "Entry", "PathRefused", "UploadRefused", "confined",
           "image_metadata", "safe_name", "store_upload"]

log = logging.getLogger(__name__)

FITS_SUFFIXES = (".fits", ".fit", ".fts")
CATALOG_SUFFIXES = (".ecsv", ".parquet")


class PathRefused(ValueError):
    """A client named a path outside the data directory (or not a file there)."""


class UploadRefused(ValueError):
    """An upload that is too large or not a FITS image; ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


def confined(root: Path, name: str) -> Path:
    """The file ``name`` inside ``root``, refusing every way out of it.

    Parameters
    ----------
    root : Path
        The directory (resolved).
    name : str
        A relative path with ``/`` separators, as a client sends it.

    Returns
    -------
    Path
        Resolved, inside ``root``, an existing regular file.

    Raises
    ------
    PathRefused
        Absolute, with ``..``, a NUL or a backslash, a symlink leading out, or no such file.
    """
    if not isinstance(name, str) or not name or "\x00" in name or "\\" in name:
        raise PathRefused(f"path {name!r} is not allowed; expected a relative path inside the data directory")
    pure = PurePosixPath(name)
    if pure.is_absolute() or re.match(r"^[A-Za-z]:", name) or any(p == ".." for p in pure.parts):
        raise PathRefused(f"path {name!r} is not allowed; expected a relative path inside the data directory, without '..'")
    candidate = root.joinpath(*pure.parts)
    try:
        real = candidate.resolve(strict=True)
    except (FileNotFoundError, OSError):
        raise PathRefused(f"path {name!r}: no such file in the data directory") from None
    if not real.is_relative_to(root):
        raise PathRefused(f"path {name!r} leads outside the data directory (a symlink); refused")
    if not real.is_file():
        raise PathRefused(f"path {name!r} is not a file in the data directory")
    return real


def _id(kind: str, root_name: str, rel: str) -> str:
    digest = hashlib.sha1(f"{root_name}:{rel}".encode()).hexdigest()[:12]
    return f"{kind}-{digest}"


@dataclass(frozen=True)
class Entry:
    """A file the service knows: its id, where it lives and its path relative to its root."""

    id: str
    root: str
    path: Path
    rel: str


class FileIndex:
    """Images and catalogues under the service's roots, by id.

    Parameters
    ----------
    roots : mapping of str to Path
        Root name (``data``, ``results``, ``runs``) to folder.
    """

    def __init__(self, roots: dict[str, Path]):
        self.roots = {k: Path(v).resolve() for k, v in roots.items()}
        self._recent: dict[tuple, tuple[float, dict]] = {}
        self._lock = threading.Lock()
        for r in self.roots.values():
            r.mkdir(parents=True, exist_ok=True)

    def entry(self, root: str, path: Path) -> Entry:
        """The entry of a file inside ``root``."""
        base = self.roots[root]
        rel = Path(path).resolve().relative_to(base).as_posix()
        kind = "img" if Path(rel).suffix.lower() in FITS_SUFFIXES else "cat"
        return Entry(_id(kind, root, rel), root, base / rel, rel)

    def scan(self, suffixes) -> list[Entry]:
        """Every file with one of ``suffixes`` under the roots (hidden names and symlinks out skipped)."""
        out = []
        for name, base in self.roots.items():
            for dirpath, dirnames, filenames in os.walk(base):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for f in sorted(filenames):
                    if f.startswith(".") or not f.lower().endswith(tuple(suffixes)):
                        continue
                    p = Path(dirpath) / f
                    real = p.resolve()
                    if not real.is_relative_to(base) or not real.is_file():
                        continue  # a symlink leading out of the root is never served
                    out.append(self.entry(name, p))
        return out

    def find(self, file_id: str, suffixes) -> Entry | None:
        """The entry with this id, or None (the folders are walked again at most once a second)."""
        key = tuple(suffixes)
        now = time.monotonic()
        with self._lock:
            seen = self._recent.get(key)
        if seen is None or now - seen[0] > 1.0 or file_id not in seen[1]:
            entries = {e.id: e for e in self.scan(suffixes)}
            with self._lock:
                self._recent[key] = (now, entries)
        else:
            entries = seen[1]
        entry = entries.get(file_id)
        return entry if entry is not None and entry.path.is_file() else None


def image_metadata(entry: Entry) -> dict:
    """``GET /images/{id}``: shape, dtype, band, units, extensions and the WCS footprint."""
    from mosaic.io.images import read_fits_image  # noqa: PLC0415

    image = read_fits_image(entry.path)
    wcs = image.wcs
    footprint = None
    if wcs is not None:
        ny, nx = image.data.shape
        corners = wcs.pixel_to_world_values([0, nx - 1, nx - 1, 0], [0, 0, ny - 1, ny - 1])
        footprint = [[float(ra), float(dec)] for ra, dec in zip(*corners, strict=True)]
        footprint = footprint if all(math.isfinite(v) for c in footprint for v in c) else None
    return {
        "id": entry.id,
        "path": entry.rel,
        "root": entry.root,
        "bytes": entry.path.stat().st_size,
        "extension": image.ext,
        "extensions": list(image.names),
        "shape": list(image.data.shape),
        "dtype": str(image.data.dtype),
        "band": image.band,
        "units": image.keyword("BUNIT"),
        "wcs": wcs is not None,
        "footprint": footprint,
    }


def safe_name(filename: str | None) -> str:
    """A FITS file name from an uploaded one: its last component, only ``[A-Za-z0-9._-]``."""
    base = PurePosixPath(str(filename or "").replace("\\", "/")).name
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".")
    if not stem.lower().endswith(FITS_SUFFIXES):
        raise UploadRefused(f"file name {filename!r}: expected a FITS file name ending in one of {list(FITS_SUFFIXES)}")
    return stem


def store_upload(chunks, folder: Path, filename: str, *, max_bytes: int) -> Path:
    """Write an upload to ``folder`` under a hidden temporary name, check it, then rename it.

    Parameters
    ----------
    chunks : iterable of bytes
        The upload's body.
    folder : Path
        Where it goes (created).
    filename : str
        The client's name for it (reduced by :func:`safe_name`).
    max_bytes : int
        Larger uploads are refused (HTTP 413) and nothing is kept.

    Returns
    -------
    Path
        The kept file (a new name when one of the same name exists).

    Raises
    ------
    UploadRefused
        Too large, or not a FITS file with a 2-D image.
    """
    from mosaic.io.images import read_fits_image  # noqa: PLC0415

    name = safe_name(filename)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".upload-{uuid.uuid4().hex}.part"
    size = 0
    try:
        with tmp.open("wb") as fh:
            for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise UploadRefused(f"upload {filename!r} is larger than the limit of {max_bytes} bytes", status=413)
                fh.write(chunk)
        try:
            image = read_fits_image(tmp)
        except Exception as err:  # astropy raises several kinds for bytes that are not FITS
            log.info("upload %s refused: %s: %s", name, type(err).__name__, err)
            raise UploadRefused(f"upload {filename!r} is not a FITS file with a 2-D image; expected FITS with an image extension") from None
        log.info("upload %s: %d bytes, %s %s", name, size, image.ext, image.data.shape)
        final = folder / name
        if final.exists():
            final = folder / f"{Path(name).stem}-{uuid.uuid4().hex[:6]}{Path(name).suffix}"
        os.replace(tmp, final)
        return final
    finally:
        tmp.unlink(missing_ok=True)
