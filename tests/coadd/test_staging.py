"""Staging a tiled array on disk: windows read back equal the image's, and convolutions of a
staged image equal the in-memory graph (to the bit) and the whole-image scipy.signal.fftconvolve."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
from dask.core import get_dependencies
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.signal import fftconvolve

from mosaic.coadd.convolve import convolve_tiled
from mosaic.coadd.staging import stage, tile_path
from mosaic.ops.convolve import psf_halo

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def tiled_image(draw):
    """An image and regular tiles (the last ones shorter), as the mosaic grid makes them."""
    ny, nx = draw(st.integers(5, 90)), draw(st.integers(5, 90))
    ty, tx = draw(st.integers(3, ny)), draw(st.integers(3, nx))
    return (ny, nx), (ty, tx)


def _padded(image, region):
    """``region`` of ``image``, zero beyond it (the reference window)."""
    (y0, y1), (x0, x1) = ((s.start, s.stop) for s in region)
    pad = max(-y0, -x0, y1 - image.shape[0], x1 - image.shape[1], 0)
    big = np.pad(image, pad)
    return big[y0 + pad : y1 + pad, x0 + pad : x1 + pad]


@SETTINGS
@given(case=tiled_image(), data=st.data())
def test_windows_read_back_equal_the_image(tmp_path, case, data):
    shape, tile = case
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    image = rng.normal(size=shape)
    staged = stage(da.from_array(image, chunks=tile), tmp_path / "a")
    graph = dict(staged.written.__dask_graph__())
    for i in range(3):
        y0 = data.draw(st.integers(-20, shape[0] - 1))
        x0 = data.draw(st.integers(-20, shape[1] - 1))
        region = (slice(y0, y0 + data.draw(st.integers(1, 60))), slice(x0, x0 + data.draw(st.integers(1, 60))))
        graph[("window", i)] = staged.window(region)
        # the window waits for the tiles it overlaps, and for no other
        flags = {k for k in get_dependencies(graph, ("window", i))}
        expect = {
            (staged.written.name, a, b)
            for a in range(-(-shape[0] // tile[0]))
            for b in range(-(-shape[1] // tile[1]))
            if a * tile[0] < region[0].stop and (a + 1) * tile[0] > region[0].start
            and b * tile[1] < region[1].stop and (b + 1) * tile[1] > region[1].start
        }
        assert flags == expect
        got = dask.get(graph, ("window", i))
        np.testing.assert_array_equal(got, _padded(image, region))
        assert got.dtype == image.dtype


@SETTINGS
@given(case=tiled_image(), radius=st.integers(0, 25), adjoint=st.booleans(), seed=st.integers(0, 2**16))
def test_convolving_a_staged_image_equals_the_graph_in_memory(tmp_path, case, radius, adjoint, seed):
    shape, tile = case
    rng = np.random.default_rng(seed)
    image = rng.normal(size=shape)
    psf = rng.random((2 * radius + 1, 2 * radius + 1)) + 0.05
    psf /= psf.sum()
    x = da.from_array(image, chunks=tile)
    staged = convolve_tiled(stage(x, tmp_path / f"c{seed}"), psf, adjoint=adjoint)
    assert staged.chunks == x.chunks and staged.dtype == np.float64
    got = staged.compute(scheduler="threads")
    np.testing.assert_array_equal(got, convolve_tiled(x, psf, adjoint=adjoint).compute(scheduler="sync"))
    kernel = psf[::-1, ::-1] if adjoint else psf
    ref = fftconvolve(image, kernel, mode="same")
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12 * np.abs(image).max())


def test_no_tile_waits_for_its_neighbours(tmp_path):
    """Each tile of the staged image is needed by one task, its write; the convolution's tasks
    wait for one-byte flags of the tiles within the PSF's reach, not for the tiles."""
    rng = np.random.default_rng(3)
    image, psf = rng.normal(size=(70, 90)), np.full((31, 31), 1 / 31**2)
    x = da.from_array(image, chunks=(20, 25), name="image")
    staged = stage(x, tmp_path / "n")
    out = convolve_tiled(staged, psf)
    graph = dict(out.__dask_graph__())
    tiles = [k for k in graph if isinstance(k, tuple) and k[0] == "image"]
    users = {t: [k for k in graph if t in get_dependencies(graph, k)] for t in tiles}
    assert all(len(u) == 1 and u[0][0] == staged.written.name for u in users.values())
    h = psf_halo(psf.shape)
    for (name, a, b) in [k for k in graph if isinstance(k, tuple) and k[0] == out.name]:
        deps = get_dependencies(graph, (name, a, b))
        flags = {d for d in deps if isinstance(d, tuple)}
        assert {d[0] for d in flags} == {staged.written.name}
        rows = {i for i in range(4) if i * 20 < (a + 1) * 20 + h and min((i + 1) * 20, 70) > a * 20 - h}
        cols = {j for j in range(4) if j * 25 < (b + 1) * 25 + h and min((j + 1) * 25, 90) > b * 25 - h}
        assert {d[1:] for d in flags} == {(i, j) for i in rows for j in cols}
    np.testing.assert_allclose(out.compute(), fftconvolve(image, psf, mode="same"), atol=1e-12)


def test_irregular_tiles_are_refused(tmp_path):
    x = da.zeros((30, 30), chunks=((10, 15, 5), (30,)))
    with pytest.raises(ValueError, match=r"staging .*b.*not regular"):
        stage(x, tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_each_tile_is_one_whole_file(tmp_path):
    """One .npy per tile, the tile to the bit (dtype kept), and no temporary left beside them."""
    rng = np.random.default_rng(5)
    image = rng.normal(size=(23, 17)).astype(np.float32)
    staged = stage(da.from_array(image, chunks=(10, 8)), tmp_path / "t")
    staged.written.compute(scheduler="threads")
    files = sorted(p.name for p in (tmp_path / "t").iterdir())
    assert files == sorted(f"{i}.{j}.npy" for i in range(3) for j in range(3))
    tile = np.load(tile_path(staged.path, 2, 1))
    assert tile.dtype == np.float32
    np.testing.assert_array_equal(tile, image[20:23, 8:16])
