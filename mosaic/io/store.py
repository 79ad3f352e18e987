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
renamed to ``<name>`` and recorded in the manifest. A crash leaves at most a temporary group
that no reader looks at; a re-run asks :meth:`Store.is_complete` and skips what is done. Arrays
are written chunk by chunk by the tasks that compute them (dask's ``to_zarr``), so no process
ever holds a whole mosaic. The store lives on a filesystem path (local or shared, as on HPC).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr
import zarr

__all__ = ["Store"]

log = logging.getLogger(__name__)

_MANIFEST_KEY = "mosaic_manifest"


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

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

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
        meta = self._group_metadata(field, band)
        meta.setdefault("attributes", {})[_MANIFEST_KEY] = manifest
        path = self.group_path(field, band) / "zarr.json"
        tmp = path.with_name(f".zarr.json.{uuid.uuid4().hex}")
        with tmp.open("w") as fh:
            json.dump(meta, fh, indent=1)
        os.replace(tmp, path)

    def mark_complete(self, field: str, band: str, name: str, **info) -> None:
        """Record a product as complete, with any JSON-able ``info``."""
        manifest = self.manifest(field, band)
        manifest[name] = {"completed": time.strftime("%Y-%m-%dT%H:%M:%S"), **info}
        self._write_manifest(field, band, manifest)

    def is_complete(self, field: str, band: str, name: str) -> bool:
        """Whether a product was written whole (recorded and present on disk)."""
        return name in self.manifest(field, band) and self.product_path(field, band, name).exists()

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
        encoding = {v: {"chunks": _chunks_of(ds[v])} for v in ds.data_vars}
        pending = _PendingProduct(self, field, band, name, tmp, final)
        if compute:
            ds.to_zarr(str(tmp), mode="w", encoding=encoding, consolidated=False, zarr_format=3)
            pending.commit()
            return final
        # metadata and in-memory data now; the lazy data by the returned tasks
        ds.to_zarr(str(tmp), mode="w", compute=False, encoding=encoding, consolidated=False, zarr_format=3)
        group = zarr.open_group(str(tmp), mode="r+", zarr_format=3)
        lazy = [v for v in ds.variables if isinstance(ds[v].data, da.Array)]
        sources = [ds[v].data.astype(group[v].dtype) for v in lazy]
        writes = da.store(sources, [group[v] for v in lazy], lock=False, compute=False) if lazy else ()
        return (list(writes) if isinstance(writes, tuple) else [writes]), pending

    def read_product(self, field: str, band: str, name: str) -> xr.Dataset:
        """A complete product as a lazy dataset."""
        if not self.is_complete(field, band, name):
            msg = f"{self.path}: product {field}/{band}/{name} is not complete; complete ones: {sorted(self.manifest(field, band))}"
            raise KeyError(msg)
        return xr.open_zarr(str(self.product_path(field, band, name)), consolidated=False, zarr_format=3)

    def clean_temporaries(self) -> list[Path]:
        """Remove temporary groups left by interrupted writes; returns what was removed."""
        removed = [p for p in self.path.rglob(".*.tmp-*") if p.is_dir()]
        for p in removed:
            shutil.rmtree(p, ignore_errors=True)
        return removed


class _PendingProduct:
    """A written temporary group waiting to be renamed to its final name."""

    def __init__(self, store, field, band, name, tmp, final):
        self.store, self.field, self.band, self.name = store, field, band, name
        self.tmp, self.final = tmp, final

    def commit(self, **info) -> Path:
        if self.final.exists():
            shutil.rmtree(self.final)
        os.replace(self.tmp, self.final)
        self.store.mark_complete(self.field, self.band, self.name, **info)
        log.info("store: %s/%s/%s complete", self.field, self.band, self.name)
        return self.final


def _to_dataset(arrays: dict) -> xr.Dataset:
    vars_ = {}
    for k, a in arrays.items():
        dims = ("y", "x") if np.ndim(a) == 2 else tuple(f"dim_{i}" for i in range(np.ndim(a)))
        vars_[k] = (dims, a)
    return xr.Dataset(vars_)


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
