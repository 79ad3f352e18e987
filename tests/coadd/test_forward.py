"""UPDC's tiled forward/back-projection graphs against a whole-image NumPy reference.

The reference applies the operators to whole exposures and the whole grid: the ``drizzle``
package's own pixel maps, ``scipy.signal.fftconvolve`` for ``B`` and ``B^*``, the linear drizzle
and exact blot on the whole grid, and the ``drizzle`` package's squared-weight co-add for the
variances. Tiled graphs must equal it to 1e-5 (float64 graphs, float32 inputs) on awkward tilings.
"""

from __future__ import annotations

import dataclasses

import dask
import dask.array as da
import numpy as np
import pytest
from dask.callbacks import Callback
from drizzle.resample import Drizzle
from drizzle.utils import calc_pixmap
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from scipy.signal import fftconvolve

from mosaic.coadd.drizzle import drizzle_mosaic
from mosaic.coadd.forward import (
    TILE_PARTS,
    Pair,
    _pixmap,
    backproject,
    data_residual,
    normalisation,
    plan_forward,
    release_pixel_maps,
    split_pairs,
)
from mosaic.coadd.updc import ExposureSource, prepare_psfs
from mosaic.io.cal import read_exposures
from mosaic.io.grid import MosaicGrid
from mosaic.ops.drizzle import blot_exact, blot_interp, drizzle_linear, weight_map
from mosaic.psf.files import read_psf
from mosaic.simulate import SimConfig, simulate_field

RTOL = 1e-5
VARS = ("var_poisson", "var_rnoise", "var_flat")


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """Three noisy 96² exposures with sky (no cosmic rays or hot pixels), PSF of 31² on the grid."""
    from mosaic.simulate.detector import DetectorModel

    det = DetectorModel(cosmic_ray_rate=0.0, hot_fraction=0.0, one_over_f=0.0)
    cfg = SimConfig(size=96, psf_size=31, n_exposures=3, seed=7, n_galaxies=6, n_stars=3, n_pairs=1, icl=False, detector=det)
    return simulate_field(tmp_path_factory.mktemp("forward"), cfg)


@pytest.fixture(scope="module")
def exposures(sim):
    return read_exposures(sim.exposures)


@pytest.fixture(scope="module")
def psf(sim):
    return read_psf(sim.psf)[0]


@pytest.fixture(scope="module")
def image(sim, exposures):
    """A positive mosaic to mock: the truth blurred a little, on the sky."""
    from astropy.io import fits

    truth = fits.getdata(sim.truth_image).astype(np.float64)
    return fftconvolve(truth, np.ones((3, 3)) / 9, mode="same") + 0.15


def reference(f, exposures, grid, psfs, *, blot="exact", correction="ratio", weight="ivm", mock_floor=0.0):
    """Whole-image ``N``, ``den``, ``var`` and residual of one back-projection (NumPy, float64)."""
    shape = (exposures.sizes["y"], exposures.sizes["x"])
    num = np.zeros(grid.shape)
    den = np.zeros(grid.shape)
    var = [np.zeros(grid.shape) for _ in VARS]
    resid, npix = 0.0, 0
    for k in range(exposures.sizes["exposure"]):
        e = exposures.isel(exposure=k).compute()
        pixmap = calc_pixmap(exposures.attrs["wcs"][k], grid.wcs, shape)
        p = psfs[k] / psfs[k].sum()
        c = fftconvolve(f, p, mode="same")
        m = blot_exact(c, pixmap, normalize=False) if blot == "exact" else blot_interp(c, pixmap, fillval=0.0).astype(float)
        w = weight_map(e["good"].values, e["var_rnoise"].values, weight=weight, exptime=float(e["exptime"])).astype(float)
        use = w > 0
        g = np.where(use, e["sci"].values, 0.0)
        m = np.where(use, m, 0.0)
        ok = use & (m > mock_floor)
        x = w * np.where(ok, g / np.where(ok, m, 1), 1.0) if correction == "ratio" else w * (g - m)
        flipped = p[::-1, ::-1]
        num += fftconvolve(drizzle_linear(x, pixmap, grid.shape), flipped, mode="same")
        den += fftconvolve(drizzle_linear(w, pixmap, grid.shape), flipped, mode="same")
        ix, iy = np.floor(pixmap[..., 0] + 0.5), np.floor(pixmap[..., 1] + 0.5)
        own = use & (ix >= 0) & (ix < grid.shape[1]) & (iy >= 0) & (iy < grid.shape[0])
        resid += float(np.sum(w[own] * (g[own] - m[own]) ** 2))
        npix += int(own.sum())
        # squared drizzle weights from the drizzle package itself: var * wht^2 = sum (a w / J)^2 v
        scale = np.where(ok, 1.0 / np.where(ok, m, 1) ** 2, 0.0) if correction == "ratio" else use.astype(float)
        data2 = [np.where(ok if correction == "ratio" else use, np.nan_to_num(e[v].values) * scale, 0).astype(np.float32) for v in VARS]
        d = Drizzle(kernel="square", out_shape=grid.shape, fillval=0.0)
        wt = np.where(ok if correction == "ratio" else use, w, 0).astype(np.float32)
        d.add_image(np.zeros(shape, np.float32), exptime=1.0, pixmap=pixmap, data2=data2, weight_map=wt, pixfrac=1.0, in_units="cps")
        for acc, v2 in zip(var, d.out_img2, strict=True):
            acc += fftconvolve(np.nan_to_num(v2 * d.out_wht.astype(float) ** 2), flipped**2, mode="same")
    return {"num": num, "den": den, "var": var, "resid": resid, "npix": npix}


@pytest.fixture(scope="module")
def whole(sim, exposures, psf, image):
    """The reference back-projection of ``image`` (it does not depend on the tiling)."""
    return reference(image, exposures, sim.grid, [psf] * 3, mock_floor=1e-6)


def assert_close(got, ref, what):
    """``got == ref`` to RTOL of the reference's largest value (FFT round-off is global)."""
    got = np.asarray(got, dtype=np.float64)
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=RTOL * np.abs(ref).max(), err_msg=what)


@settings(max_examples=1, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ty=st.integers(40, 300), tx=st.integers(40, 300))
@example(ty=1000, tx=1000)  # one tile
@example(ty=97, tx=61)  # awkward sizes, short edge tiles, a PSF (31²) wider than a core
def test_backproject_equals_whole_image(sim, exposures, psf, image, whole, ty, tx):
    grid = sim.grid.with_tiling((ty, tx))
    groups = prepare_psfs(psf, exposures.sizes["exposure"])
    plan = plan_forward(exposures, grid, groups)
    source = ExposureSource(exposures, variances=True)
    bp = backproject(image, plan, source, variances=True, mock_floor=1e-6)
    den = normalisation(plan, ExposureSource(exposures))
    num, den, *var, resid = dask.compute(bp.num, den, *bp.var, bp.resid, scheduler="threads")
    ref = whole
    assert_close(num, ref["num"], "N")
    assert_close(den, ref["den"], "den")
    for v, rv, name in zip(var, ref["var"], VARS, strict=True):
        assert_close(v, rv, name)
    np.testing.assert_allclose(resid[0], ref["resid"], rtol=RTOL)
    assert resid[1] == ref["npix"] > 0.9 * 3 * 88**2


@pytest.mark.parametrize("correction", ["ratio", "difference"])
def test_interpolating_blot_and_corrections(sim, exposures, psf, image, correction):
    grid = sim.grid.with_tiling((83, 120))
    plan = plan_forward(exposures, grid, prepare_psfs(psf, 3), blot="interp", weight="uniform")
    bp = backproject(image, plan, ExposureSource(exposures), correction=correction)
    num, resid = dask.compute(bp.num, bp.resid)
    ref = reference(image, exposures, grid, [psf] * 3, blot="interp", correction=correction, weight="uniform")
    assert_close(num, ref["num"], "N")
    np.testing.assert_allclose(resid[0], ref["resid"], rtol=RTOL)


def test_psf_groups_share_convolutions(sim, exposures, psf, image):
    # exposures 0 and 2 share a PSF, exposure 1 has a broader one
    other = fftconvolve(psf, np.ones((3, 3)) / 9, mode="same")
    psfs = [psf, other, psf.copy()]
    groups = prepare_psfs(psfs, 3)
    assert [g.exposures for g in groups] == [(0, 2), (1,)]
    grid = sim.grid.with_tiling((128, 150))
    plan = plan_forward(exposures, grid, groups)
    bp = backproject(image, plan, ExposureSource(exposures))
    # one forward and one adjoint convolution per group, not per exposure
    layers = [n for n in bp.num.__dask_graph__().layers if n.startswith("convolve-halo")]
    assert len(layers) == 2 * len(groups)
    ref = reference(image, exposures, grid, psfs)
    assert_close(bp.num.compute(), ref["num"], "N")


def test_mock_of_the_truth_fits_noiseless_data(tmp_path):
    # the forward model's units and geometry: the truth, mocked, reproduces noiseless exposures
    cfg = SimConfig(size=96, psf_size=31, n_exposures=2, seed=2, n_galaxies=4, n_stars=3, n_pairs=1, noiseless=True, icl=False)
    field = simulate_field(tmp_path, cfg)
    from astropy.io import fits

    exposures = read_exposures(field.exposures)
    truth = fits.getdata(field.truth_image).astype(np.float64) + cfg.background
    plan = plan_forward(exposures, field.grid, prepare_psfs(read_psf(field.psf)[0], 2), weight="uniform")
    source = ExposureSource(exposures)
    (fit, n), (flat, _) = dask.compute(data_residual(truth, plan, source), data_residual(np.full(truth.shape, cfg.background), plan, source))
    # residual of the truth below 1 % of that of a sky-only model (the signal's own power)
    assert n > 0.9 * 2 * 88**2
    assert fit < 0.01 * flat


class _LargestResult(Callback):
    def __init__(self, skip):
        super().__init__()
        self.largest = 0
        self.skip = skip

    def _posttask(self, key, result, dsk, state, worker_id):
        name = key[0] if isinstance(key, tuple) else str(key)
        # the input array, and the final gathering of the result that compute() returns
        if name == self.skip or name.startswith("finalize"):
            return
        items = result.values() if isinstance(result, dict) else [result]
        n = sum(getattr(a, "nbytes", 0) for a in items if isinstance(a, np.ndarray))
        self.largest = max(self.largest, n)


def test_tasks_hold_tiles_not_the_mosaic(sim, exposures, psf, image):
    grid = sim.grid.with_tiling((48, 48))
    plan = plan_forward(exposures, grid, prepare_psfs(psf, 3))
    f = da.from_array(image, chunks=grid.chunks, name="mosaic-input")
    bp = backproject(f, plan, ExposureSource(exposures))
    with _LargestResult(skip="mosaic-input") as cb:
        dask.compute(bp.num, scheduler="sync")
    mosaic_bytes = np.prod(grid.shape) * 8
    # windows (tile + blot halo)^2 in float64, or cut-outs (sci, good, var_rnoise) of an exposure
    assert cb.largest <= max((48 + 2 * 9) ** 2 * 8, 96 * 96 * 9)
    assert cb.largest < 0.25 * mosaic_bytes


@pytest.mark.parametrize("method", ["updc", "landweber"])
def test_one_iteration_equals_whole_image(sim, exposures, psf, method):
    from mosaic.coadd.updc import updc

    # pedestal=None: eq. 1-2 as printed (the noise-aware update is checked in test_updc_noise.py)
    result = updc(exposures, sim.grid.with_tiling((70, 130)), psf, n_iterations=1, method=method, background=None, pedestal=None)
    it0, it1 = (ds.compute() for ds in result.iterations)
    covered = np.isfinite(it0["sci"].values)
    den0 = reference(np.zeros(sim.grid.shape), exposures, sim.grid, [psf] * 3)["den"]
    ok = den0 > 1e-6 * den0.max()
    # pixels the data reach but do not cover start at the fill value
    support = covered | ok
    f0 = np.where(covered, it0["sci"].values, np.where(ok, result.fill, 0.0)).astype(np.float64)
    ref = reference(f0, exposures, sim.grid, [psf] * 3, correction="ratio" if method == "updc" else "difference")
    den = np.where(ok, ref["den"], 1.0)
    f1 = f0 * ref["num"] / den if method == "updc" else f0 + ref["num"] / den
    keep = (f1 < 0) | ~ok
    f1 = np.where(keep, f0, f1)
    scale = np.abs(f0).max()
    np.testing.assert_allclose(it1["sci"].values[support], f1[support], rtol=RTOL, atol=RTOL * scale)
    assert np.isnan(it1["sci"].values[~support]).all()
    assert np.isfinite(it1["sci"].values[support & ~covered]).any()
    # app. A: each variance carried with squared kernels through the update, the new term
    # adding coherently (in standard deviation) to the carried one
    for name, var_n in zip(VARS, ref["var"], strict=True):
        v0 = np.nan_to_num(it0[name].values.astype(np.float64))
        if method == "updc":
            q = np.where(ok, ref["num"] / den, 1.0)
            v1 = (np.abs(q) * np.sqrt(v0) + np.abs(f0) * np.sqrt(np.maximum(var_n, 0)) / den) ** 2
        else:
            v1 = (np.sqrt(v0) + np.sqrt(np.maximum(var_n, 0)) / den) ** 2
        v1 = np.where(keep, v0, v1)
        np.testing.assert_allclose(it1[name].values[covered], v1[covered], rtol=1e-4, atol=1e-4 * v1.max())
    np.testing.assert_allclose(result.residuals[0], ref["resid"], rtol=RTOL)


def test_residual_sum_does_not_hold_every_pair(sim, exposures, psf, image):
    # the residual's final task must depend on each tile's two numbers, not on the tiles' sums
    grid = sim.grid.with_tiling((48, 48))
    plan = plan_forward(exposures, grid, prepare_psfs(psf, 3))
    bp = backproject(da.from_array(image, chunks=grid.chunks), plan, ExposureSource(exposures))
    from dask.core import get_dependencies

    graph = dict(bp.resid.__dask_graph__())
    parts = list(get_dependencies(graph, (bp.resid.name, 0)))
    assert len(parts) == len(plan.pairs) > 1
    assert all(str(p[0]).endswith("-residual-tile") for p in parts)
    assert all(len(get_dependencies(graph, p)) == 1 for p in parts)
    total = bp.resid.compute(scheduler="sync")
    assert total.shape == (2,) and total[1] > 0


def test_pairs_of_a_tile_run_as_at_most_two_tasks(sim, exposures, psf, image):
    # a tile's pairs run in at most TILE_PARTS tasks, each keeping one running sum, the runs
    # added by one task per tile: no task per pair, and the runs hold every pair once
    from dask.core import get_dependencies

    grid = sim.grid.with_tiling((48, 48))
    plan = plan_forward(exposures, grid, prepare_psfs(psf, 3))
    bp = backproject(da.from_array(image, chunks=grid.chunks), plan, ExposureSource(exposures))
    graph = dict(bp.num.__dask_graph__())
    tasks = {k for k in graph if isinstance(k, tuple) and str(k[0]).endswith("-tile-pairs")}
    assert {k[2:] for k in tasks} == {t for t, pairs in plan.pairs.items() if pairs}
    assert max(len(pairs) for pairs in plan.pairs.values()) > 1  # some tile has several pairs
    assert not any(str(k[0] if isinstance(k, tuple) else k).endswith("-pair") for k in graph)
    split = 0
    for k in tasks:
        parts = [d for d in get_dependencies(graph, k) if str(d[0]).endswith("-tile-pairs-part")]
        assert len(parts) <= TILE_PARTS
        assert len(parts) != 1  # one run is the tile's task itself
        split += len(parts) > 1
    assert split > 0
    # the numbers do not depend on how a tile's pairs are cut into runs
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("mosaic.coadd.forward.TILE_PARTS", 1)
        whole = backproject(da.from_array(image, chunks=grid.chunks), plan, ExposureSource(exposures))
        assert not any(str(k[0]).endswith("-tile-pairs-part") for k in dict(whole.num.__dask_graph__()) if isinstance(k, tuple))
        got_whole = dask.compute(whole.num, whole.resid, scheduler="sync")
    got = dask.compute(bp.num, bp.resid, scheduler="sync")
    np.testing.assert_allclose(got[0], got_whole[0], rtol=1e-12, atol=1e-12 * np.abs(got_whole[0]).max())
    np.testing.assert_allclose(got[1], got_whole[1], rtol=1e-12)


@given(
    pixels=st.lists(st.integers(0, 10_000), min_size=1, max_size=40),
    parts=st.integers(1, 5),
)
@settings(max_examples=200, deadline=None)
def test_split_pairs_cuts_runs_of_about_equal_pixels_in_order(pixels, parts):
    # the runs hold every pair once, in order, at most `parts` of them, none empty; run j closes
    # at the first pair that finds the runs so far holding their share j / parts of the pixels
    pairs = [Pair(k, (0, 0), (slice(0, 1), slice(0, n)), (slice(0, 1), slice(0, 1)), (slice(0, 1), slice(0, 1))) for k, n in enumerate(pixels)]
    runs = split_pairs(pairs, parts)
    assert [p for run in runs for p in run] == pairs
    assert 1 <= len(runs) <= parts and all(runs)
    total, done = sum(pixels), 0
    for j, run in enumerate(runs, start=1):
        for i, p in enumerate(run):
            if i > 0 and j < parts:  # a pair that did not open a new run found the share not reached
                assert done < total * j / parts
            done += p.cut[1].stop
        if j < len(runs):  # a closed run holds its share
            assert done >= total * j / parts


def test_pairs_read_their_own_cut_outs_and_let_go_of_tile_sums(sim, exposures, psf, image):
    # with a reader, a tile's task reads each cut-out itself when its pair's turn comes: no cut-out
    # is a task of its own, which the scheduler would read ahead of the tile and hold; and a tile's
    # arrays are taken from its sum after its residual, so the sum goes when they do, not at the graph's end
    from dask.core import get_dependencies

    from mosaic.cli.drizzle import CalCutouts

    grid = sim.grid.with_tiling((40, 56))
    plan = plan_forward(exposures, grid, prepare_psfs(psf, 3))
    reader = CalCutouts(exposures["path"].values, exposures.attrs["bad_bits"])
    f = da.from_array(image, chunks=grid.chunks)
    bp = backproject(f, plan, ExposureSource(exposures, reader=reader, variances=True), variances=True)
    graph = dict(bp.num.__dask_graph__())
    pairs = {k for k in graph if isinstance(k, tuple) and str(k[0]).endswith("-tile-pairs")}
    assert len(pairs) == len([t for t, p in plan.pairs.items() if p])
    runs = {k for k in graph if isinstance(k, tuple) and str(k[0]).endswith("-tile-pairs-part")}
    allowed = ("-window", "-tile-pairs-part")
    assert all(str(d[0] if isinstance(d, tuple) else d).endswith(allowed) for k in pairs | runs for d in get_dependencies(graph, k))
    blocks = [k for k in graph if isinstance(k, tuple) and str(k[0]).endswith("-num-0")]
    assert len(blocks) == grid.n_tiles[0] * grid.n_tiles[1]
    for k in blocks:
        after = [d for d in get_dependencies(graph, k) if str(d[0]).endswith("-residual-tile")]
        assert [d[2:] for d in after] in ([k[1:]], [])  # its own tile's residual (none on a tile no pair reaches)
    assert sum(1 for k in blocks for d in get_dependencies(graph, k) if str(d[0]).endswith("-residual-tile")) == len(plan.pairs)
    # the numbers are those of the whole-image operators
    num, resid, *var = dask.compute(bp.num, bp.resid, *bp.var)
    ref = reference(image, exposures, grid, [psf] * 3)
    assert_close(num, ref["num"], "N")
    np.testing.assert_allclose(resid[0], ref["resid"], rtol=RTOL)
    for name, v, r in zip(VARS, var, ref["var"], strict=True):
        assert_close(v, r, name)


def test_staged_back_projection_is_the_same_to_the_bit(tmp_path, sim, exposures, psf, image):
    # staged, the iterate, its convolution and the tiles' sums go through disk: the numbers must
    # not change, and no pair window or adjoint convolution may wait for a tile in memory
    from dask.core import get_dependencies

    grid = sim.grid.with_tiling((97, 61))
    plan = plan_forward(exposures, grid, prepare_psfs(psf, 3))
    source = ExposureSource(exposures, variances=True)
    f = da.from_array(image, chunks=grid.chunks)
    kept = backproject(f, plan, source, variances=True, mock_floor=1e-6)
    staged = backproject(f, plan, source, variances=True, mock_floor=1e-6, staging=tmp_path / "s")
    got = dask.compute(staged.num, *staged.var, staged.resid, scheduler="threads")
    for a, b in zip(got, dask.compute(kept.num, *kept.var, kept.resid, scheduler="threads"), strict=True):
        np.testing.assert_array_equal(a, b)
    graph = dict(staged.num.__dask_graph__())
    # the pair tasks read their windows themselves, from the staged iterate (beside the exposures'
    # cut-outs), and the adjoint convolutions read the staged sums
    pairs = [k for k in graph if isinstance(k, tuple) and str(k[0]).endswith(("-tile-pairs", "-tile-pairs-part"))]
    adjoint = [k for k in graph if isinstance(k, tuple) and str(k[0]).startswith("convolve-staged")]
    assert pairs and adjoint
    assert not any(isinstance(k, tuple) and str(k[0]).endswith("-window") for k in graph)
    for k in pairs:  # what a pair task waits for, up to the staged arrays: never the iterate in memory
        seen, todo = set(), [k]
        while todo:
            for d in get_dependencies(graph, todo.pop()):
                if d not in seen and not (isinstance(d, tuple) and str(d[0]).startswith("staged-")):
                    seen.add(d)
                    todo.append(d)
        assert not any(isinstance(d, tuple) and d[0] == f.name for d in seen), k
    assert any(str(d[0]).startswith("staged-") for k in pairs for d in get_dependencies(graph, k) if isinstance(d, tuple))
    for k in adjoint:
        assert all(str(d[0]).startswith("staged-") for d in get_dependencies(graph, k) if isinstance(d, tuple))
    for label in ("f", "bf-0", "num-0", "var0-0", "var1-0", "var2-0"):
        assert len(list((tmp_path / "s").glob(f"*/{label}/0.0.npy"))) == 1, label
    den = normalisation(plan, ExposureSource(exposures), staging=tmp_path / "s")
    np.testing.assert_array_equal(den.compute(), normalisation(plan, ExposureSource(exposures)).compute())
    np.testing.assert_array_equal(
        data_residual(f, plan, source, staging=tmp_path / "s").compute(), data_residual(f, plan, source).compute(),
    )


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ty=st.integers(31, 170), tx=st.integers(29, 170), groups=st.booleans())
def test_normalisation_pass_drizzles_iteration_zero_like_the_drizzle_package(sim, exposures, psf, ty, tx, groups):
    """The normalisation's pass over the pairs also drizzles the data (square kernel, pixfrac 1):
    the planes equal ``drizzle_mosaic`` (the ``drizzle`` package, whole exposures) on any tiling
    and with several PSF groups, to its float32 sums; the context bits exactly."""
    grid = sim.grid.with_tiling((ty, tx))
    psfs = [psf, psf[::-1].copy(), psf] if groups else psf
    plan = plan_forward(exposures, grid, prepare_psfs(psfs, exposures.sizes["exposure"]))
    den, planes = normalisation(plan, ExposureSource(exposures), drizzle=True)
    ref = drizzle_mosaic(exposures, grid).compute(scheduler="sync")
    got = dask.compute(planes, scheduler="sync")[0]
    np.testing.assert_allclose(den.compute(scheduler="sync"), normalisation(plan, ExposureSource(exposures)).compute(), rtol=1e-12)
    for name in ("sci", "wht", "err", "var_poisson", "var_rnoise", "var_flat"):
        want = ref[name].values.astype(np.float64)
        np.testing.assert_array_equal(np.isfinite(got[name]), np.isfinite(want), err_msg=name)
        ok = np.isfinite(want)
        np.testing.assert_allclose(got[name][ok], want[ok], rtol=0, atol=2e-6 * np.abs(want[ok]).max(), err_msg=name)
    np.testing.assert_array_equal(got["con"], ref["con"].values)


@pytest.fixture(scope="module")
def rotated(tmp_path_factory, field_factory):
    """Three SIP exposures rolled 0, 35 and 70 degrees against each other (the grid follows the first)."""
    f = field_factory(tmp_path_factory.mktemp("rotated"), dithers=[(0.0, 0.0, 0.0), (1.1, -0.6, 35.0), (-0.8, 0.9, 70.0)])
    ds = read_exposures(f.paths)
    grid = MosaicGrid.from_exposures(ds.attrs["wcs"], [f.shape] * 3, psr=0.5)
    return ds, grid


@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ty=st.integers(97, 260), tx=st.integers(89, 260))
def test_mapping_only_the_reaching_columns_changes_nothing(rotated, ty, tx):
    """Pairs map only the exposure columns that can reach their tile (row by row, NaN elsewhere):
    every pass (back-projection with variances, residual, normalisation and iteration 0's drizzle)
    is the same to the bit as with the whole cut-out box mapped, on rotated exposures and awkward
    tilings, and the rotated cut-outs map far fewer pixels."""
    ds, grid = rotated
    grid = grid.with_tiling((ty, tx))
    yy, xx = np.mgrid[: grid.shape[0], : grid.shape[1]]
    image = 0.3 + np.exp(-((yy - grid.shape[0] / 2) ** 2 + (xx - grid.shape[1] / 3) ** 2) / 400.0)
    psf = np.exp(-(np.arange(-7, 8)[:, None] ** 2 + np.arange(-7, 8)[None] ** 2) / 6.0)
    by_rows = plan_forward(ds, grid, prepare_psfs(psf, 3))
    boxes = dataclasses.replace(by_rows, pairs={t: [dataclasses.replace(p, columns=None) for p in ps] for t, ps in by_rows.pairs.items()})
    assert all(p.columns is not None for ps in by_rows.pairs.values() for p in ps)

    def passes(plan):
        source = ExposureSource(ds, variances=True)
        bp = backproject(image, plan, source, variances=True, mock_floor=1e-6, pedestal=0.05, damping=1.0)
        den, planes = normalisation(plan, ExposureSource(ds), drizzle=True)
        return dask.compute(bp.num, *bp.var, bp.resid, bp.chi2, data_residual(image, plan, source, chi2=True), den, planes, scheduler="sync")

    got = passes(by_rows)
    release_pixel_maps()  # nothing kept from the first passes
    want = passes(boxes)
    for a, b in zip(got[:-1], want[:-1], strict=True):
        np.testing.assert_array_equal(a, b)
    for name in want[-1]:
        np.testing.assert_array_equal(got[-1][name], want[-1][name], err_msg=name)
    assert np.abs(got[0]).max() > 0


def test_rotated_cut_outs_map_only_the_pixels_that_reach_their_tile(rotated):
    """The exposure rolled 35 degrees against the grid maps under 3/4 of its cut-out boxes' pixels."""
    ds, grid = rotated
    plan = plan_forward(ds, grid.with_tiling((120, 120)), prepare_psfs(np.ones((5, 5)), 3))

    def mapped(k, by_rows):
        n = 0
        for p in (p for ps in plan.pairs.values() for p in ps if p.exposure == k):
            pm = _pixmap(plan.wcs[k], plan.grid_wcs, p.cut, (p.window[1].start, p.window[0].start), p.columns if by_rows else None)
            n += int(np.isfinite(pm[..., 0]).sum())
        return n

    assert mapped(1, True) < 0.75 * mapped(1, False)
