"""The tiled convolution graph against the whole-image scipy.signal.fftconvolve.

Tolerance: a float32 result may round once per overlap-add piece, each piece bounded by
``max|x| * sum|psf|``; results must match the float64 whole-image reference to
``1e-6 * max|x| * sum|psf|`` (about 16 float32 ulps of that bound).
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
from dask.callbacks import Callback
from dask.core import flatten, get_dependencies
from hypothesis import given
from hypothesis import strategies as st
from scipy.signal import fftconvolve

from mosaic.coadd.convolve import METHODS, convolve_tiled
from mosaic.ops.convolve import PreparedPSF, psf_halo


def _psf(rng, shape):
    psf = rng.random(shape) + 0.05
    return psf / psf.sum()


def _reference(image, psf, adjoint=False):
    kernel = psf[::-1, ::-1] if adjoint else psf
    return fftconvolve(np.asarray(image, dtype=np.float64), kernel, mode="same")


def _assert_matches(out, image, psf, adjoint=False):
    ref = _reference(image, psf, adjoint)
    bound = np.abs(image).max() * np.abs(psf).sum()
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-6 * bound)


@st.composite
def axis_chunks(draw, n):
    """Awkward chunks of an axis of ``n``: 1 to 5 pieces cut at random places."""
    n_cuts = draw(st.integers(0, min(4, n - 1)))
    cuts = draw(st.lists(st.integers(1, n - 1), min_size=n_cuts, max_size=n_cuts, unique=True))
    edges = [0, *sorted(cuts), n]
    return tuple(b - a for a, b in zip(edges[:-1], edges[1:], strict=True))


@st.composite
def tiled_case(draw):
    ny, nx = draw(st.integers(20, 150)), draw(st.integers(20, 150))
    chunks = (draw(axis_chunks(ny)), draw(axis_chunks(nx)))
    r = st.integers(0, 30)
    psf_shape = (2 * draw(r) + 1, 2 * draw(r) + 1)
    return (ny, nx), chunks, psf_shape


@given(case=tiled_case(), method=st.sampled_from(METHODS), adjoint=st.booleans(), seed=st.integers(0, 2**16))
def test_tiled_equals_whole_image(case, method, adjoint, seed):
    shape, chunks, psf_shape = case
    rng = np.random.default_rng(seed)
    image = rng.normal(size=shape).astype(np.float32)
    psf = _psf(rng, psf_shape)
    result = convolve_tiled(da.from_array(image, chunks=chunks), psf, adjoint=adjoint, method=method)
    assert result.chunks == chunks
    assert result.dtype == np.float32
    out = result.compute(scheduler="synchronous")
    assert out.dtype == np.float32
    _assert_matches(out, image, psf, adjoint)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("adjoint", [False, True])
def test_psf_larger_than_chunks(method, adjoint):
    rng = np.random.default_rng(12)
    image = rng.normal(size=(300, 257)).astype(np.float32)
    psf = _psf(rng, (201, 201))  # halo 100 px on chunks of 48 and 64: reaches 3 tiles away
    x = da.from_array(image, chunks=(48, 64))
    out = convolve_tiled(x, psf, adjoint=adjoint, method=method).compute(scheduler="synchronous")
    _assert_matches(out, image, psf, adjoint)


@pytest.mark.parametrize("method", METHODS)
def test_adjoint_dot_product(method):
    rng = np.random.default_rng(21)
    x = rng.normal(size=(90, 70))
    y = rng.normal(size=(90, 70))
    psf = _psf(rng, (31, 41))
    bx = convolve_tiled(da.from_array(x, chunks=(17, 25)), psf, method=method).compute(scheduler="synchronous")
    bty = convolve_tiled(da.from_array(y, chunks=(40, 13)), psf, adjoint=True, method=method).compute(scheduler="synchronous")
    lhs, rhs = np.dot(bx.ravel(), y.ravel()), np.dot(x.ravel(), bty.ravel())
    assert abs(lhs - rhs) <= 1e-12 * np.linalg.norm(bx) * np.linalg.norm(y)


@pytest.mark.parametrize("method", METHODS)
def test_rectangular_psf_and_float64(method):
    rng = np.random.default_rng(5)
    image = rng.normal(size=(64, 80))
    psf = _psf(rng, (7, 25))
    out = convolve_tiled(da.from_array(image, chunks=(20, 30)), PreparedPSF(psf), method=method).compute(scheduler="synchronous")
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, _reference(image, psf), rtol=0, atol=1e-12 * np.abs(image).max())


class _Sizes(Callback):
    """Records the number of elements of every task's result."""

    def __init__(self):
        super().__init__()
        self.size = {}

    def _posttask(self, key, result, dsk, state, worker_id):
        self.size[key] = getattr(result, "size", 0)


@pytest.mark.parametrize("method", METHODS)
def test_task_memory_is_bounded_by_tile_and_psf(method):
    rng = np.random.default_rng(9)
    t, p = 32, 41
    image = rng.normal(size=(160, 150)).astype(np.float32)
    psf = _psf(rng, (p, p))
    result = convolve_tiled(da.from_array(image, chunks=t), psf, method=method)
    graph = dict(result.__dask_graph__())
    with _Sizes() as sizes:
        out = result.compute(scheduler="synchronous")
    _assert_matches(out, image, psf)
    bound = (t + p - 1) ** 2
    own = [k for k in sizes.size if k[0].startswith("convolve-")]
    assert max(sizes.size[k] for k in own) <= bound
    for key in flatten(result.__dask_keys__()):
        held = sum(sizes.size.get(d, 0) for d in get_dependencies(graph, key))
        assert held <= bound  # the inputs an output tile waits for: at most one padded tile
    # each output tile depends on at most (1 + 2 ceil(h / t))² input tiles
    h = psf_halo(psf.shape)
    assert len(graph) <= result.npartitions * (1 + (1 + 2 * -(-h // t)) ** 2) + 1 + result.npartitions


def test_survey_scale_graph_is_small():
    # the paper's case: 1501² PSF on 1024² tiles; built only, not computed
    x = da.zeros((9584, 9584), chunks=1024, dtype=np.float32)
    psf = np.zeros((1501, 1501))
    psf[750, 750] = 1.0
    for method in METHODS:
        y = convolve_tiled(x, psf, method=method)
        assert y.chunks == x.chunks
        layer = y.__dask_graph__().layers[y.name]
        # ≤ 9 neighbours per tile (the halo of 750 < 1024 reaches one tile each way)
        assert len(layer) <= 100 * (1 + 9) + 100 + 1


def _check_scheduler(scheduler, **kwargs):
    rng = np.random.default_rng(31)
    image = rng.normal(size=(130, 110)).astype(np.float32)
    psf = _psf(rng, (45, 45))
    x = da.from_array(image, chunks=(40, 35))
    for method in METHODS:
        for adjoint in (False, True):
            out = convolve_tiled(x, psf, adjoint=adjoint, method=method).compute(scheduler=scheduler, **kwargs)
            _assert_matches(out, image, psf, adjoint)


def test_threaded_scheduler():
    _check_scheduler("threads", num_workers=2)


def test_distributed_scheduler():
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0") as cluster,
        distributed.Client(cluster) as client,
    ):
        _check_scheduler(client)


@pytest.mark.parametrize(
    "image, psf, kwargs, error, match",
    [
        (np.ones((8, 8)), np.ones((3, 3)), {}, TypeError, "dask array"),
        (da.ones((4, 8, 8), chunks=4), np.ones((3, 3)), {}, ValueError, "2-D"),
        (da.ones((8, 8), chunks=4), np.ones((4, 4)), {}, ValueError, "odd"),
        (da.ones((8, 8), chunks=4), np.ones((3, 3)), {"method": "map_overlap"}, ValueError, "one of"),
    ],
)
def test_bad_input_raises(image, psf, kwargs, error, match):
    with pytest.raises(error, match=match):
        convolve_tiled(image, psf, **kwargs)


def test_unknown_chunks_raise():
    x = da.ones((8, 8), chunks=4)
    x = x[da.ones(8, chunks=4, dtype=bool)]  # boolean indexing: row chunks become unknown
    with pytest.raises(ValueError, match="unknown chunk"):
        convolve_tiled(x, np.ones((3, 3)))


@pytest.mark.gpu
@pytest.mark.parametrize("method", METHODS)
def test_cupy_blocks(method, cupy):
    rng = np.random.default_rng(41)
    image = rng.normal(size=(200, 170)).astype(np.float32)
    psf = _psf(rng, (61, 61))
    x = da.from_array(cupy.asarray(image), chunks=(64, 50), asarray=False)
    result = convolve_tiled(x, psf, adjoint=True, method=method)
    assert isinstance(result._meta, cupy.ndarray)
    out = result.compute(scheduler="threads")
    assert isinstance(out, cupy.ndarray)
    _assert_matches(cupy.asnumpy(out), image, psf, adjoint=True)


def test_dask_config_untouched():
    # the graph builder must not change global dask settings
    before = dask.config.get("array.chunk-size")
    convolve_tiled(da.ones((10, 10), chunks=5), np.ones((3, 3)))
    assert dask.config.get("array.chunk-size") == before
