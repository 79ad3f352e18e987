"""The zarr store: one group per field and band, products written whole or not at all.

Layout (DESIGN.md)::

    STORE.zarr/
      <field>/<band>/
        zarr.json              attributes["mosaic_manifest"]: what is complete (replaced whole)
        exposures/             the exposure set (optional)
        psf/
        drizzle/               sci, wht, con, err, var_*
        updc/iter_NN/          sci, err, var_*
        catalogs/

Each product is an xarray dataset written to ``.<name>.tmp-<token>`` in its parent group, then
renamed to ``<name>`` and recorded in the manifest with the size and CRC-32 of every file it
holds (every chunk of every array). A crash leaves at most a temporary group that no reader
looks at; a re-run asks :meth:`Store.is_complete` and skips what is done. ``is_complete``
verifies: a chunk missing or of another size is found at once, a chunk whose bytes changed the
first time a :class:`Store` object (a run) looks at the product (CRC-32 at about 1 GB/s; dask
config ``mosaic.store.verify: size`` checks sizes only); a damaged product is not complete (a checkpoint
is recomputed) and :meth:`Store.read_product` refuses it by name. Arrays are written chunk by
chunk by the tasks that compute them, so no process ever holds a whole mosaic; each write task
also takes the CRC-32 of the chunk files it wrote (read back from the page cache), so that the
commit, in one process, reads only the metadata files. The store lives on a filesystem path (local or shared, as on HPC).

*One writer per field/band.* A process that writes a field/band group takes its lock,
``.mosaic-writer.lock`` in the group: a file created atomically holding the owner's host, pid
and start. Another process on any host is refused while the owner lives (other groups of the
store stay free: a batch or a service writes many fields at once); a lock whose process is
gone (same host: the pid is dead, or is another process now) is taken over with a warning. Runs
hold the lock for their whole length (:meth:`Store.writing`); a write outside one takes it
until the process ends.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import itertools
import json
import logging
import os
import shutil
import socket
import sys
import threading
import time
import uuid
import zlib
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr
import zarr

from mosaic.exceptions import InputError
from mosaic.io.blocks import block_writes

__all__ = ["DamagedProductError", "Store", "StoreLockedError"]

log = logging.getLogger(__name__)

_MANIFEST_KEY = "mosaic_manifest"
_CHECKSUMS = "checksums"
LOCK_NAME = ".mosaic-writer.lock"


class StoreLockedError(InputError):
    """Another process is writing the store."""


class DamagedProductError(InputError):
    """A product recorded as complete whose files no longer match their checksums."""


# -- the writer lock ------------------------------------------------------------------------------

#: locks this process holds: lock path -> {"depth": open writing() contexts, "sticky": taken by a write}
_HELD: dict[str, dict] = {}
_HELD_GUARD = threading.RLock()


def _start_time(pid: int) -> str | None:
    """The kernel's start time of a process (Linux), to tell a reused pid from the owner."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    now = _start_time(pid)
    return start is None or now is None or now == start


def _owner() -> dict:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "start": _start_time(os.getpid()),
        "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "command": " ".join(sys.argv)[:300],
    }


def _read_lock(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


def _mine(owner: dict | None) -> bool:
    return bool(owner) and owner.get("host") == socket.gethostname() and owner.get("pid") == os.getpid()


def _take(lock: Path, store: Path) -> None:
    """Create the lock file atomically (a whole file linked into place), or refuse."""
    for _ in range(5):
        tmp = lock.with_name(f"{lock.name}.{uuid.uuid4().hex}")
        with tmp.open("x") as fh:  # exclusive, random name
            fh.write(json.dumps(_owner()))
        try:
            os.link(tmp, lock)
            return
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        owner = _read_lock(lock)
        if owner is None:
            continue  # released meanwhile: try again
        if _mine(owner):
            return
        same_host = owner.get("host") == socket.gethostname()
        pid = owner.get("pid")
        if same_host and isinstance(pid, int) and not _alive(pid, owner.get("start")):
            log.warning("%s: taking over the lock of pid %s on %s (since %s), which is no longer running", store, pid, owner.get("host"), owner.get("since"))
            stale = lock.with_name(f"{lock.name}.stale-{uuid.uuid4().hex}")
            with contextlib.suppress(FileNotFoundError):
                os.rename(lock, stale)  # only one of several takers wins the rename
                stale.unlink(missing_ok=True)
            continue
        who = f"pid {pid} on {owner.get('host')}, since {owner.get('since')}: {owner.get('command')!r}" if owner else "an unreadable lock"
        msg = (
            f"{store}: in use by another writer ({who}); expected one writer per store: wait for it to finish or use another "
            f"store; if that process is gone{'' if same_host else ' (it ran on another host)'}, remove {lock}"
        )
        raise StoreLockedError(msg)
    msg = f"{store}: could not take the writer lock {lock}; expected to create it (is the folder writable?)"
    raise StoreLockedError(msg)


def _release(lock: str) -> None:
    path = Path(lock)
    if _mine(_read_lock(path)):
        path.unlink(missing_ok=True)


@atexit.register
def _release_all() -> None:
    with _HELD_GUARD:
        for lock in list(_HELD):
            _release(lock)
        _HELD.clear()


# -- checksums --------------------------------------------------------------------------------------

def _crc(path: Path) -> int:
    crc = 0
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            crc = zlib.crc32(block, crc)
    return crc


def _checksums(root: Path, known: dict | None = None) -> dict:
    """``{relative path: [size, crc32]}`` of every file under a product's folder; files in ``known``
    (the same form, from the tasks that wrote them) are taken from it, not read again."""
    known = known or {}
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            rel = p.relative_to(root).as_posix()
            out[rel] = known[rel] if rel in known else [p.stat().st_size, _crc(p)]
    return dict(sorted(out.items()))


def _write_blocks(*blocks, targets: tuple, root: str, variables: tuple, block_info=None) -> np.ndarray:
    """Write the same dask block of several variables into their regions of the zarr arrays
    ``targets`` (the product's ``variables`` under ``root``), then checksum the chunk files
    written: ``{relative path: [size, crc32]}`` in a one-element object array. The worker that
    wrote a chunk reads it back while it is in the page cache, so the commit does not read every
    chunk again in one process. One task writes every variable of a block (a product's planes
    are often the planes of one task's result): a task per variable and block cost the
    scheduler as much as the writes themselves."""
    sums = {}
    region = tuple(slice(a, b) for a, b in block_info[0]["array-location"])  # the same for every variable
    for block, target, var in zip(blocks, targets, variables, strict=True):
        target[region] = block
        spans = [range(r.start // c, -(-r.stop // c)) for r, c in zip(region, target.chunks, strict=True)]
        for coords in itertools.product(*spans):
            rel = f"{var}/{target.metadata.encode_chunk_key(coords)}"
            path = Path(root) / rel
            if path.exists():  # an empty chunk may not be written (zarr's write_empty_chunks)
                sums[rel] = [path.stat().st_size, _crc(path)]
    out = np.empty((1,) * len(region), dtype=object)
    out[(0,) * len(region)] = sums
    return out


def _chunk_aligned(source: da.Array, chunks: tuple) -> bool:
    """Whether every dask block of ``source`` covers whole chunks of ``chunks`` (all but the last
    block of each axis one chunk long, the last no longer): then no chunk file is written by two tasks."""
    return all(
        all(b == c for b in blocks[:-1]) and blocks[-1] <= c
        for blocks, c in zip(source.chunks, chunks, strict=True)
    )


def _verify_content() -> bool:
    """Whether a product's bytes are checked (dask config ``mosaic.store.verify``: ``content``, the
    default, or ``size``: only that every file is there with its size, for stores too large to reread)."""
    import dask.config  # noqa: PLC0415

    value = dask.config.get("mosaic.store.verify", default="content")
    if value not in ("content", "size"):
        msg = f"dask config mosaic.store.verify: got {value!r}; expected 'content' or 'size'"
        raise ValueError(msg)
    return value == "content"


def _damage(root: Path, recorded: dict, *, content: bool) -> str | None:
    """What is wrong with a product's files against their record (None: nothing)."""
    for rel, (size, crc) in recorded.items():
        p = root / rel
        try:
            st = p.stat()
        except FileNotFoundError:
            return f"{rel} is missing"
        if st.st_size != size:
            return f"{rel} has {st.st_size} bytes, not {size}"
        if content and _crc(p) != crc:
            return f"{rel} does not match its checksum"
    return None


def _check_name(kind: str, value: str) -> str:
    value = str(value)
    if not value or value.startswith(".") or "/" in value:
        msg = f"{kind} name {value!r} is not allowed; expected a non-empty name without '/' or a leading '.'"
        raise ValueError(msg)
    return value


class Store:
    """A mosaic zarr store on a filesystem path.

    Parameters
    ----------
    path : path-like
        Directory of the store (``.zarr`` by convention); created if missing.
    """

    def __init__(self, path):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            msg = f"{self.path}: exists and is not a directory; expected a zarr store directory"
            raise ValueError(msg)
        self.path.mkdir(parents=True, exist_ok=True)
        root = self.path / "zarr.json"
        if not root.exists():
            zarr.open_group(str(self.path), mode="a", zarr_format=3)
        # products this object has verified byte for byte: (path, digest of their checksums);
        # later looks only check that every file is there with its size
        self._verified: set = set()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    # -- the writer lock -----------------------------------------------------------------

    def lock_path(self, field: str, band: str) -> Path:
        """The writer's lock file of a field/band group."""
        return self.group_path(field, band) / LOCK_NAME

    @contextlib.contextmanager
    def writing(self, field: str, band: str):
        """Hold a field/band group's writer lock for a block (a run); a second writer is refused.

        Re-entrant within a process; the lock is given back when the outermost block ends,
        unless a write outside any block took it first (then at the process's end).

        Raises
        ------
        StoreLockedError
            Naming the owner (host, pid, since, command) and the lock file.
        """
        lock = self.lock_path(field, band)
        key = str(lock.absolute())
        with _HELD_GUARD:
            if key not in _HELD:
                _take(lock, self.path / field / band.upper())
                _HELD[key] = {"depth": 0, "sticky": False}
            _HELD[key]["depth"] += 1
        try:
            yield self
        finally:
            with _HELD_GUARD:
                state = _HELD.get(key)
                if state is not None:
                    state["depth"] -= 1
                    if state["depth"] <= 0 and not state["sticky"]:
                        del _HELD[key]
                        _release(key)

    def _writer(self, field: str, band: str) -> None:
        """Take a group's lock for the rest of the process, unless it is held already."""
        lock = self.lock_path(field, band)
        key = str(lock.absolute())
        with _HELD_GUARD:
            if key not in _HELD:
                _take(lock, self.path / field / band.upper())
                _HELD[key] = {"depth": 0, "sticky": True}

    def _locked_by_other(self, group: Path) -> bool:
        """Whether a live process other than this one holds a group's lock."""
        owner = _read_lock(group / LOCK_NAME)
        if not owner or _mine(owner):
            return False
        if owner.get("host") != socket.gethostname():
            return True
        pid = owner.get("pid")
        return isinstance(pid, int) and _alive(pid, owner.get("start"))

    # -- paths ---------------------------------------------------------------------------

    def group_path(self, field: str, band: str) -> Path:
        """Directory of a field/band group (created, with zarr metadata, if missing)."""
        field = _check_name("field", field)
        band = _check_name("band", band).upper()
        path = self.path / field / band
        if not (path / "zarr.json").exists():
            zarr.open_group(str(self.path), mode="a").require_group(f"{field}/{band}")
        return path

    def product_path(self, field: str, band: str, name: str) -> Path:
        """Directory of a product (``drizzle``, ``updc/iter_05``, ...)."""
        parts = [p for p in str(name).split("/") if p]
        if not parts or any(p.startswith(".") for p in parts):
            msg = f"product name {name!r} is not allowed; expected names like 'drizzle' or 'updc/iter_05'"
            raise ValueError(msg)
        return self.group_path(field, band).joinpath(*parts)

    # -- manifest ------------------------------------------------------------------------

    def manifest(self, field: str, band: str) -> dict:
        """What is complete in a field/band group: ``{product: {"completed": iso time, ...}}``."""
        meta = self._group_metadata(field, band)
        return dict(meta.get("attributes", {}).get(_MANIFEST_KEY, {}))

    def _group_metadata(self, field: str, band: str) -> dict:
        with (self.group_path(field, band) / "zarr.json").open() as fh:
            return json.load(fh)

    def _write_manifest(self, field: str, band: str, manifest: dict) -> None:
        # the manifest lives in the group's own zarr.json attributes; the file is replaced
        # whole (os.replace) so that a kill never leaves it half-written
        self._writer(field, band)
        meta = self._group_metadata(field, band)
        meta.setdefault("attributes", {})[_MANIFEST_KEY] = manifest
        path = self.group_path(field, band) / "zarr.json"
        tmp = path.with_name(f".zarr.json.{uuid.uuid4().hex}")
        with tmp.open("x") as fh:
            json.dump(meta, fh, indent=1)
        os.replace(tmp, path)

    def mark_complete(self, field: str, band: str, name: str, **info) -> None:
        """Record a product as complete, with any JSON-able ``info``."""
        manifest = self.manifest(field, band)
        manifest[name] = {"completed": time.strftime("%Y-%m-%dT%H:%M:%S"), **info}
        self._write_manifest(field, band, manifest)

    def is_complete(self, field: str, band: str, name: str) -> bool:
        """Whether a product was written whole and is intact (recorded, present, its checksums matching).

        A damaged product (a chunk missing, truncated or changed) is not complete: it is logged
        by name, and whoever made it makes it again.
        """
        entry = self.manifest(field, band).get(name)
        if entry is None or not self.product_path(field, band, name).exists():
            return False
        damage = self._damage(field, band, name, entry)
        if damage is not None:
            log.warning("%s: product %s/%s/%s is damaged (%s); it is not complete and will be recomputed", self.path, field, band, name, damage)
            return False
        return True

    def damage(self, field: str, band: str, name: str) -> str | None:
        """What is wrong with a recorded product's files (None: intact, or not recorded)."""
        entry = self.manifest(field, band).get(name)
        if entry is None:
            return None
        if not self.product_path(field, band, name).exists():
            return "its folder is missing"
        return self._damage(field, band, name, entry)

    def damaged(self, field: str, band: str) -> dict[str, str]:
        """``{product: what is wrong}`` of every damaged product of a field/band."""
        out = {}
        for name, entry in self.manifest(field, band).items():
            if _CHECKSUMS in entry:
                what = self.damage(field, band, name)
                if what is not None:
                    out[name] = what
        return out

    def _damage(self, field, band, name, entry) -> str | None:
        recorded = entry.get(_CHECKSUMS)
        if not recorded:
            return None  # written before checksums were kept
        root = self.product_path(field, band, name)
        key = (str(root), hash(json.dumps(recorded, sort_keys=True)))
        damage = _damage(root, recorded, content=key not in self._verified and _verify_content())
        if damage is None:
            self._verified.add(key)
        else:
            self._verified.discard(key)
        return damage

    def forget(self, field: str, band: str, name: str) -> None:
        """Remove a product and its manifest entry (to redo it)."""
        manifest = self.manifest(field, band)
        manifest.pop(name, None)
        self._write_manifest(field, band, manifest)
        shutil.rmtree(self.product_path(field, band, name), ignore_errors=True)

    # -- products ------------------------------------------------------------------------

    def write_product(
        self,
        field: str,
        band: str,
        name: str,
        data: xr.Dataset | dict,
        *,
        wcs_header: str | None = None,
        attrs: dict | None = None,
        overwrite: bool = False,
        compute: bool = True,
    ):
        """Write a product whole: to a temporary group, then renamed, then recorded.

        Parameters
        ----------
        data : xarray.Dataset or dict of name -> array
            Lazy (dask) arrays are written chunk by chunk by the tasks that make them.
            A dict's 2-D arrays get dims ``(y, x)``.
        wcs_header : str, optional
            FITS header text of the product's WCS, kept in the group's attributes.
        compute : bool
            With False, lay the group out now and return ``(writes, pending)``: ``writes`` the
            dask arrays whose tasks write the lazy data (compute them, with whatever else
            shares their tasks, in one call), ``pending`` to :meth:`~_PendingProduct.commit`
            after. (Not xarray's Delayed write: its graph is finalised with renamed keys, so
            arrays computed beside it would run every shared task again.)
        """
        self._writer(field, band)
        final = self.product_path(field, band, name)
        if final.exists() and not overwrite and self.is_complete(field, band, name):
            msg = f"{self.path}: product {field}/{band}/{name} is complete; pass overwrite=True to redo it"
            raise FileExistsError(msg)
        ds = data if isinstance(data, xr.Dataset) else _to_dataset(data)
        ds = ds.copy()
        ds.attrs = {**ds.attrs, **(attrs or {})}
        if wcs_header is not None:
            ds.attrs["wcs_header"] = wcs_header
        final.parent.mkdir(parents=True, exist_ok=True)
        _ensure_groups(self.path, final.parent)
        tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
        encoding = {v: {"chunks": _chunks_of(ds[v]), "compressors": _compressors()} for v in ds.data_vars}
        pending = _PendingProduct(self, field, band, name, tmp, final)
        if compute:
            ds.to_zarr(str(tmp), mode="w", encoding=encoding, consolidated=False, zarr_format=3)
            pending.commit()
            return final
        # metadata and in-memory data now; the lazy data by the returned tasks
        lazy = [v for v in ds.variables if isinstance(ds[v].data, da.Array)]
        _lay_out_zarr(ds, lazy, str(tmp), encoding)
        group = zarr.open_group(str(tmp), mode="r+", zarr_format=3)
        sources = [ds[v].data.astype(group[v].dtype) for v in lazy]
        # every chunk written as made: zarr's comparison of each chunk with the fill value (to
        # skip writing one that equals it) costs a pass over the chunk, and blosc makes an empty
        # chunk a few bytes anyway (zarr 3.1.0 has no Array.with_config: there the test stays)
        targets = [group[v].with_config({"write_empty_chunks": True}) if hasattr(group[v], "with_config") else group[v] for v in lazy]
        writes, aligned = [], []
        for v, src, target in zip(lazy, sources, targets, strict=True):
            if _chunk_aligned(src, target.chunks):
                aligned.append((str(v), src, target))
            else:
                writes.append(da.store(src, target, lock=False, compute=False))
        # the chunk-aligned variables written by one task per block, those of equal blocks together
        # (the zarr arrays go in a partial: dask walks keyword arguments for collections, and a
        # zarr array, a dataclass, field by field, 10 ms a call)
        writes += block_writes(
            functools.partial(_write_blocks, root=str(tmp)), [src for _, src, _ in aligned], [t for _, _, t in aligned],
            name="store-chunks", where=str(tmp), dtype=object, per_target={"variables": [v for v, _, _ in aligned]},
        )
        return writes, pending

    def read_product(self, field: str, band: str, name: str) -> xr.Dataset:
        """A complete product as a lazy dataset.

        Raises
        ------
        DamagedProductError
            The product is recorded but its files do not match their checksums (named, with the fix).
        KeyError
            The product is not complete.
        """
        damage = self.damage(field, band, name)
        if damage is not None:
            msg = (
                f"{self.path}: product {field}/{band}/{name} is damaged ({damage}); expected the files written with it: "
                f"run the command that made it again (a damaged product is recomputed), or pass --overwrite"
            )
            raise DamagedProductError(msg)
        if not self.is_complete(field, band, name):
            msg = f"{self.path}: product {field}/{band}/{name} is not complete; complete ones: {sorted(self.manifest(field, band))}"
            raise KeyError(msg)
        return xr.open_zarr(str(self.product_path(field, band, name)), consolidated=False, zarr_format=3)

    def clean_temporaries(self) -> list[Path]:
        """Remove temporary groups left by interrupted writes; returns what was removed.

        Groups that another live process is writing are left alone.
        """
        removed = []
        for p in self.path.rglob(".*.tmp-*"):
            parts = p.relative_to(self.path).parts
            if p.is_dir() and not (len(parts) > 2 and self._locked_by_other(self.path / parts[0] / parts[1])):
                removed.append(p)
        for p in removed:
            shutil.rmtree(p, ignore_errors=True)
        return removed


def _lay_out_zarr(ds: xr.Dataset, lazy: list, path: str, encoding: dict) -> None:
    """Write ``ds``'s zarr metadata and in-memory variables to ``path``, not the ``lazy`` ones' data.

    xarray's ``to_zarr(compute=False)`` returns the writes of the lazy variables as one delayed
    object, which it makes by materialising and optimising their whole graphs (0.2-0.4 s of the
    client's time for an iterate of UPDC, every iteration, between two computations): here
    those variables are stand-ins of the same shape, chunks, dtype, attributes and encoding
    (``da.zeros``, a graph of one layer), and the writes it returns are dropped.
    """
    stand_in = ds.copy()
    for v in lazy:
        a = ds[v].data
        stand_in[v] = ds[v].copy(data=da.zeros(a.shape, dtype=a.dtype, chunks=a.chunks))
    stand_in.to_zarr(path, mode="w", compute=False, encoding=encoding, consolidated=False, zarr_format=3)


class _PendingProduct:
    """A written temporary group waiting to be renamed to its final name."""

    def __init__(self, store, field, band, name, tmp, final):
        self.store, self.field, self.band, self.name = store, field, band, name
        self.tmp, self.final = tmp, final

    def commit(self, written=(), /, **info) -> Path:
        """Rename the group to its final name and record it complete, with ``info``.

        ``written``: the computed writes of :meth:`Store.write_product` (each the checksums of the
        chunk files its tasks wrote); the other files are checksummed here.
        """
        known = {}
        for sums in written:
            for block in np.ravel(sums) if sums is not None else ():
                known.update(block)
        sums = _checksums(self.tmp, known)
        if self.final.exists():
            shutil.rmtree(self.final)
        os.replace(self.tmp, self.final)
        self.store.mark_complete(self.field, self.band, self.name, **info, **{_CHECKSUMS: sums})
        # just read whole to make the sums: verified for this store object
        self.store._verified.add((str(self.final), hash(json.dumps(sums, sort_keys=True))))
        log.info("store: %s/%s/%s complete", self.field, self.band, self.name)
        return self.final


def _to_dataset(arrays: dict) -> xr.Dataset:
    vars_ = {}
    for k, a in arrays.items():
        dims = ("y", "x") if np.ndim(a) == 2 else tuple(f"dim_{i}" for i in range(np.ndim(a)))
        vars_[k] = (dims, a)
    return xr.Dataset(vars_)


def _compressors() -> tuple:
    """The products' codec: Blosc LZ4 on shuffled bytes. On float32 mosaics it compresses as well
    as zarr's default Zstandard (4.0 MB for 7.8 of an 8 x 512² iterate, margin included) and
    writes 3x and reads 2x faster: a checkpoint's chunks cost the tasks little CPU."""
    from zarr.codecs import BloscCodec  # noqa: PLC0415

    return (BloscCodec(cname="lz4", clevel=1, shuffle="shuffle"),)


def _chunks_of(var: xr.DataArray):
    if var.chunks is None:
        return var.shape
    return tuple(c[0] for c in var.chunks)


def _ensure_groups(root: Path, path: Path) -> None:
    """Make every directory between the store root and ``path`` a zarr group."""
    rel = path.relative_to(root)
    if str(rel) in ("", "."):
        return
    zarr.open_group(str(root), mode="a").require_group(str(rel))
