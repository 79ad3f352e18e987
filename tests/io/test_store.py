"""The zarr store: products written whole or not at all, a manifest for resuming."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mosaic.io.store import Store, _checksums


def _arrays(seed=0):
    rng = np.random.default_rng(seed)
    sci = rng.normal(size=(70, 90)).astype("f4")
    return sci, {"sci": da.from_array(sci, chunks=(32, 40)), "wht": da.from_array(sci**2, chunks=(32, 40))}


def test_write_read_round_trip_keeps_tile_chunks_and_wcs(tmp_path):
    store = Store(tmp_path / "s.zarr")
    sci, arrays = _arrays()
    store.write_product("field1", "f200w", "drizzle", arrays, wcs_header="CTYPE1 = 'RA---TAN'", attrs={"iteration": 0})
    assert store.is_complete("field1", "F200W", "drizzle")
    ds = store.read_product("field1", "F200W", "drizzle")
    np.testing.assert_array_equal(ds["sci"].values, sci)
    np.testing.assert_array_equal(ds["wht"].values, sci**2)
    assert ds.attrs["wcs_header"].startswith("CTYPE1") and ds.attrs["iteration"] == 0
    z = zarr.open_array(str(store.product_path("field1", "F200W", "drizzle") / "sci"))
    assert z.chunks == (32, 40)


def test_a_failed_write_leaves_no_product_and_a_rerun_completes(tmp_path):
    store = Store(tmp_path / "s.zarr")
    sci, arrays = _arrays()

    def boom(block, block_info=None):
        if block_info[None]["chunk-location"] == (1, 1):
            raise RuntimeError("killed mid-write")
        return block

    broken = {"sci": arrays["sci"].map_blocks(boom, dtype="f4")}
    with pytest.raises(RuntimeError, match="killed mid-write"):
        store.write_product("f", "F200W", "updc/iter_03", broken)
    assert not store.is_complete("f", "F200W", "updc/iter_03")
    assert not store.product_path("f", "F200W", "updc/iter_03").exists()
    with pytest.raises(KeyError, match="not complete"):
        store.read_product("f", "F200W", "updc/iter_03")
    leftovers = store.clean_temporaries()
    assert len(leftovers) == 1
    store.write_product("f", "F200W", "updc/iter_03", arrays)
    np.testing.assert_array_equal(store.read_product("f", "F200W", "updc/iter_03")["sci"].values, sci)
    assert sorted(store.manifest("f", "F200W")) == ["updc/iter_03"]


def test_complete_products_are_not_overwritten_by_accident(tmp_path):
    store = Store(tmp_path / "s.zarr")
    _, arrays = _arrays()
    store.write_product("f", "F200W", "drizzle", arrays)
    with pytest.raises(FileExistsError, match="is complete; pass overwrite=True"):
        store.write_product("f", "F200W", "drizzle", arrays)
    sci2, arrays2 = _arrays(seed=1)
    store.write_product("f", "F200W", "drizzle", arrays2, overwrite=True)
    np.testing.assert_array_equal(store.read_product("f", "F200W", "drizzle")["sci"].values, sci2)
    store.forget("f", "F200W", "drizzle")
    assert not store.is_complete("f", "F200W", "drizzle")


def test_deferred_write_commits_only_after_compute(tmp_path):
    store = Store(tmp_path / "s.zarr")
    sci, arrays = _arrays()
    ds = xr.Dataset({k: (("y", "x"), v) for k, v in arrays.items()})
    ds["sci"] = ds["sci"].chunk(7)
    ds["flag"] = (("y", "x"), da.from_array(sci > np.median(sci), chunks=5))
    writes, pending = store.write_product("f", "F444W", "drizzle", ds, compute=False)
    assert len(writes) == sum(isinstance(ds[v].data, da.Array) for v in ds.data_vars)
    assert not store.is_complete("f", "F444W", "drizzle")
    # computed beside an array that shares the data's tasks: each chunk is made once
    total, *_ = dask.compute(ds["sci"].data.sum(), *writes)
    pending.commit(n_exposures=4)
    assert store.manifest("f", "F444W")["drizzle"]["n_exposures"] == 4
    back = store.read_product("f", "F444W", "drizzle")
    np.testing.assert_array_equal(back["sci"].values, sci)
    np.testing.assert_array_equal(back["flag"].values, sci > np.median(sci))
    assert total == pytest.approx(sci.sum(dtype=np.float64), rel=1e-5)


def test_deferred_layout_writes_the_metadata_of_a_whole_write(tmp_path):
    # the deferred write lays the product out with stand-ins for its lazy variables: every
    # zarr.json (dims, dtypes, chunks, fill values, encodings, attributes) is the one a whole
    # write makes, and the data read back are the arrays'
    import json

    sci, arrays = _arrays(3)
    ds = xr.Dataset(
        {k: (("y", "x"), v, {"units": "MJy/sr"}) for k, v in arrays.items()},
        coords={"y": np.arange(70), "x": np.arange(90.0)}, attrs={"iteration": 2},
    )
    ds["con"] = (("plane", "y", "x"), da.from_array((sci > 0).astype("i4")[None], chunks=(1, 32, 40)))
    ds["sci"].encoding["_FillValue"] = np.float32(np.nan)
    whole, deferred = Store(tmp_path / "a.zarr"), Store(tmp_path / "b.zarr")
    whole.write_product("f", "F200W", "p", ds)
    writes, pending = deferred.write_product("f", "F200W", "p", ds, compute=False)
    pending.commit(dask.compute(*writes))

    def metadata(store):
        root = store.product_path("f", "F200W", "p")
        return {str(m.relative_to(root)): json.loads(m.read_text()) for m in sorted(root.rglob("zarr.json"))}

    got, ref = metadata(deferred), metadata(whole)
    assert set(got) == set(ref) and len(ref) >= 6
    assert got == ref
    back = deferred.read_product("f", "F200W", "p")
    xr.testing.assert_identical(back.compute(), whole.read_product("f", "F200W", "p").compute())
    np.testing.assert_array_equal(back["sci"].values, sci)


@pytest.mark.parametrize("name", ["", ".hidden", "a/b"])
def test_bad_names_are_refused(tmp_path, name):
    store = Store(tmp_path / "s.zarr")
    with pytest.raises(ValueError, match="name"):
        store.group_path(name or "", "F200W") if name != "a/b" else store.group_path("f", name)


def test_store_path_that_is_a_file(tmp_path):
    p = tmp_path / "file.zarr"
    p.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        Store(p)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ny=st.integers(1, 40), nx=st.integers(1, 40),
    cy=st.tuples(st.integers(1, 13), st.integers(1, 13)), cx=st.tuples(st.integers(1, 13), st.integers(1, 13)),
    zeros=st.booleans(),
)
def test_checksums_made_by_the_writing_tasks_match_the_files(tmp_path_factory, ny, nx, cy, cx, zeros):
    """The CRCs the write tasks record equal a read of every file afterwards, on regular tilings
    (each task checksums its own chunks) and on blocks longer than a chunk (checksummed at the
    commit), with
    all-zero blocks that zarr may leave unwritten; a changed byte is then found."""

    def merged_tail(n, c):
        """Blocks of ``c`` whose last two are one (longer than a chunk: not the tasks' checksums)."""
        blocks = [c] * (n // c) + ([n % c] if n % c else [])
        return tuple(blocks[:-2] + [sum(blocks[-2:])]) if len(blocks) > 1 else tuple(blocks)

    store = Store(tmp_path_factory.mktemp("crc") / "s.zarr")
    rng = np.random.default_rng(ny * 41 + nx)
    sci = np.zeros((ny, nx), "f4") if zeros else rng.normal(size=(ny, nx)).astype("f4")
    regular = da.from_array(sci, chunks=(cy[0], cx[0]))
    ds = xr.Dataset({
        "sci": (("y", "x"), regular),
        "err": (("y", "x"), da.from_array(np.abs(sci) + 1, chunks=(merged_tail(ny, cy[1]), merged_tail(nx, cx[1])))),
        "con": (("y", "x"), (sci > 0).astype("i4")),  # in memory: written at the layout
    })
    writes, pending = store.write_product("f", "F200W", "updc/iter_01", ds, compute=False)
    written = dask.compute(*writes)
    pending.commit(written)
    root = store.product_path("f", "F200W", "updc/iter_01")
    recorded = store.manifest("f", "F200W")["updc/iter_01"]["checksums"]
    assert recorded == _checksums(root)
    assert any(k.startswith("sci/c/") for k in recorded) or zeros
    back = store.read_product("f", "F200W", "updc/iter_01")
    np.testing.assert_array_equal(back["sci"].values, sci)
    np.testing.assert_array_equal(back["err"].values, np.abs(sci) + 1)
    chunk = next(root / k for k in recorded if k.startswith("err/c/"))
    raw = bytearray(chunk.read_bytes())
    raw[-1] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    assert Store(store.path).damage("f", "F200W", "updc/iter_01") is not None


@settings(max_examples=15, deadline=None)
@given(
    ny=st.integers(1, 37), nx=st.integers(1, 41), cy=st.integers(1, 17), cx=st.integers(1, 17),
    other=st.tuples(st.integers(1, 23), st.integers(1, 23)),
)
def test_variables_of_equal_blocks_are_written_by_one_task_per_block(tmp_path_factory, ny, nx, cy, cx, other):
    """A product's variables with the same blocks (the planes of one stacked array, as a UPDC
    iterate's) are written, and their chunks checksummed, by one task per block; a variable with
    other blocks by tasks of its own. The files read back equal the arrays and their recorded
    checksums a fresh read of every file."""
    store = Store(tmp_path_factory.mktemp("g") / "s.zarr")
    rng = np.random.default_rng(ny * 53 + nx)
    stack = da.from_array(rng.normal(size=(3, ny, nx)).astype("f4"), chunks=(3, cy, cx))
    odd = da.from_array(rng.integers(0, 9, size=(ny, nx)).astype("i4"), chunks=(min(other[0], ny), min(other[1], nx)))
    ds = xr.Dataset({name: (("y", "x"), a) for name, a in {"sci": stack[0], "err": stack[1], "wht": stack[2], "con": odd}.items()})
    writes, pending = store.write_product("f", "F200W", "updc/iter_01", ds, compute=False)
    # one write per block of each distinct tiling (the integer variable's may be the planes')
    blocks = {a.chunks: len(a.chunks[0]) * len(a.chunks[1]) for a in (stack[0], odd)}
    assert sorted(w.npartitions for w in writes) == sorted(blocks.values())
    pending.commit(dask.compute(*writes))
    root = store.product_path("f", "F200W", "updc/iter_01")
    assert store.manifest("f", "F200W")["updc/iter_01"]["checksums"] == _checksums(root)
    back = store.read_product("f", "F200W", "updc/iter_01")
    for name in ("sci", "err", "wht", "con"):
        np.testing.assert_array_equal(back[name].values, ds[name].values)
