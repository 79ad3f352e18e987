"""The tiled drizzle mosaic against one whole-output run of the drizzle package, and its science."""

from __future__ import annotations

import argparse
import warnings

import dask
import numpy as np
import pytest
import xarray as xr
from astropy.io import fits
from dask.core import get_dependencies
from drizzle.utils import calc_pixmap
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mosaic.cli.drizzle import add_parser
from mosaic.coadd.drizzle import (
    blot_to_exposure,
    drizzle_mosaic,
    exposure_cutouts,
    exposure_wcs,
)
from mosaic.exceptions import InputError, NoOverlapWarning
from mosaic.io.cal import CalCutouts, read_exposures
from mosaic.io.grid import MosaicGrid
from mosaic.io.store import Store
from mosaic.ops.drizzle import KERNELS, blot_exact, blot_interp, kernel_radius

SHAPE = (200, 220)
#: the grid's +y axis along the detectors' (NRCB5 is rolled by about 70 deg)
ROTATION = 70.0
RTOL = 1e-5
#: of a plane's largest value: what a product may differ by from the drizzle package's
PEAK_TOL = 1e-6
VARS = ("var_poisson", "var_rnoise", "var_flat")


@pytest.fixture(scope="module")
def exposures(field):
    assert field.shape == SHAPE
    return read_exposures(field.paths)


@pytest.fixture(scope="module")
def grid(exposures):
    shapes = [SHAPE] * exposures.sizes["exposure"]
    return MosaicGrid.from_exposures(exposures.attrs["wcs"], shapes, psr=0.5, rotation_deg=ROTATION, tile=10_000)


@pytest.fixture(scope="module")
def reference(exposures, grid, drizzle_reference):
    return drizzle_reference(exposures, grid)


def assert_equals_reference(mosaic: xr.Dataset, ref, *, variance=True, scale_atol=False):
    """Tiled mosaic == whole-output Drizzle: SCI, WHT, VAR_* to RTOL, or PEAK_TOL of the plane's
    largest value; CON exactly.

    The square kernel's maps are mosaic's compiled TAN-SIP (within 1.2e-8 pixel of astropy's,
    tests/ops/test_tan_sip.py): a sliver of overlap at a footprint's edge (a weight of 1e-3)
    then moves by a relative 1e-5, far below the peak. ``scale_atol``: allow RTOL of the
    largest value instead, for kernels with negative lobes (lanczos) whose weights cancel, so
    that a pixel's value is a small difference.
    """
    tol = RTOL if scale_atol else PEAK_TOL
    sci, wht = mosaic["sci"].values, mosaic["wht"].values
    np.testing.assert_array_equal(np.isnan(sci), np.isnan(ref.out_img))
    covered = ~np.isnan(ref.out_img)
    assert covered.mean() > 0.5
    np.testing.assert_allclose(sci[covered], ref.out_img[covered], rtol=RTOL, atol=tol * np.nanmax(np.abs(ref.out_img)))
    np.testing.assert_allclose(wht, ref.out_wht, rtol=RTOL, atol=tol * np.nanmax(np.abs(ref.out_wht)))
    np.testing.assert_array_equal(mosaic["con"].values, ref.out_ctx)
    if variance:
        for name, ref_var in zip(VARS, ref.out_img2, strict=True):
            var = mosaic[name].values
            np.testing.assert_array_equal(np.isnan(var), np.isnan(ref_var))
            np.testing.assert_allclose(var[covered], ref_var[covered], rtol=RTOL, atol=PEAK_TOL * np.nanmax(ref_var))
        err = np.sqrt(sum(mosaic[v].values.astype(float) for v in VARS))
        np.testing.assert_allclose(mosaic["err"].values[covered], err[covered], rtol=1e-6)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ty=st.integers(40, 460), tx=st.integers(40, 620))
@example(ty=440, tx=590)  # one tile: the whole grid
@example(ty=53, tx=1000)  # strips that cut every exposure
@example(ty=97, tx=61)  # awkward sizes, short edge tiles
def test_tiled_equals_whole_output_drizzle(exposures, grid, reference, ty, tx):
    g = grid.with_tiling((ty, tx))
    mosaic = drizzle_mosaic(exposures, g)
    assert mosaic["sci"].data.chunks == g.chunks
    assert mosaic["con"].data.chunks[1:] == g.chunks
    assert_equals_reference(mosaic.compute(scheduler="sync"), reference)


def test_threaded_scheduler(exposures, grid, reference):
    # exposures chunked in regions, several exposures a chunk: cut-outs come from several blocks
    chunked = exposures.chunk({"exposure": 2, "y": 64, "x": 90})
    mosaic = drizzle_mosaic(chunked, grid.with_tiling((113, 157)))
    # several runs: tasks share WCS objects, which must not race (astropy WCS is not thread-safe)
    for _ in range(3):
        assert_equals_reference(mosaic.compute(scheduler="threads", num_workers=4), reference)


@pytest.mark.parametrize("processes", [False, True], ids=["threads", "processes"])
def test_distributed_scheduler(exposures, grid, reference, processes):
    distributed = pytest.importorskip("distributed")
    # cut-outs read straight from the files on the workers, as `mosaic drizzle` does
    reader = CalCutouts(exposures["path"].values, exposures.attrs["bad_bits"])
    mosaic = drizzle_mosaic(exposures, grid.with_tiling((150, 128)), cutout_reader=reader)
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=processes, dashboard_address=":0") as cluster,
        distributed.Client(cluster),
    ):
        result = mosaic.compute()
    assert_equals_reference(result, reference)


@pytest.mark.parametrize("kernel", KERNELS)
def test_every_kernel_equals_the_package(exposures, grid, kernel, drizzle_reference):
    pixfrac = 0.8 if kernel in ("square", "turbo", "gaussian") else 1.0
    with warnings.catch_warnings():
        # the drizzle package says so for gaussian and lanczos (from C, as a bare Warning)
        warnings.filterwarnings("ignore", "Kernel '.*' is not a flux-conserving kernel")
        ref = drizzle_reference(exposures, grid, pixfrac=pixfrac, kernel=kernel, variance=False)
        mosaic = drizzle_mosaic(exposures, grid.with_tiling((101, 137)), pixfrac=pixfrac, kernel=kernel, variance=False)
        assert set(mosaic.data_vars) == {"sci", "wht", "err", "con"}
        result = mosaic.compute(scheduler="sync")
    assert_equals_reference(result, ref, variance=False, scale_atol=kernel.startswith("lanczos"))


@pytest.mark.parametrize("weight", ["exptime", "uniform"])
def test_weights_equal_the_package(exposures, grid, weight, drizzle_reference):
    ref = drizzle_reference(exposures, grid, weight=weight)
    mosaic = drizzle_mosaic(exposures, grid.with_tiling((128, 128)), weight=weight)
    assert_equals_reference(mosaic.compute(scheduler="sync"), ref)


def test_file_cutouts_equal_the_exposure_arrays(exposures, field):
    reader = CalCutouts(field.paths, exposures.attrs["bad_bits"])
    for k, region in ((0, (slice(15, 40), slice(140, 170))), (1, (slice(95, 120), slice(0, 35))), (4, (slice(0, 200), slice(0, 220)))):
        got = reader(k, region)
        for name in ("sci", "good", "var_poisson", "var_rnoise", "var_flat"):
            want = exposures[name][(k, *region)].values
            np.testing.assert_array_equal(got[name], want)
            assert got[name].dtype == want.dtype


def test_graph_has_one_task_per_tile_reading_only_its_exposures(exposures, grid):
    g = grid.with_tiling((64, 64))
    # a block per exposure: a task's inputs name its exposures
    one_each = exposures.assign({v: exposures[v].chunk({"exposure": 1}) for v in exposures.data_vars})
    # building the graph computes nothing
    with dask.config.set(scheduler=_no_compute):
        mosaic = drizzle_mosaic(one_each, g)
    graph = dict(mosaic["sci"].data.__dask_graph__())
    tasks = {k for k in graph if isinstance(k, tuple) and str(k[0]).startswith("drizzle-tile-")}
    wcs = exposure_wcs(exposures)
    reach = kernel_radius("square", pixel_scale_ratio=0.5)
    cut = exposure_cutouts(wcs, SHAPE, g, margin=reach + 1.0)
    want = {ti: {k for k in range(len(wcs)) if ti in cut[k]} for ti in (t.index for t in g.tiles())}
    assert {k[1:] for k in tasks} == {ti for ti, ks in want.items() if ks}
    sci_name = one_each["sci"].data.name
    for key in tasks:
        reads = {d[1] for d in get_dependencies(graph, key) if isinstance(d, tuple) and d[0] == sci_name}
        assert reads == want[key[1:]]
    # tiles see only the exposures that touch them
    assert any(0 < len(ks) < len(wcs) for ks in want.values())


def _no_compute(*args, **kwargs):
    raise AssertionError("drizzle_mosaic computed something while building the graph")


# -- science -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clean_field(tmp_path_factory, field_factory):
    return field_factory(tmp_path_factory.mktemp("clean"), noise=False, sky=0.0)


def _aperture(shape, x, y, r):
    yy, xx = np.indices(shape)
    return (xx - x) ** 2 + (yy - y) ** 2 < r * r


@pytest.mark.parametrize("psr", [0.5, 1.0])
def test_flux_is_conserved(clean_field, psr, true_pixel_areas):
    """A star's flux (sum of SCI x true pixel solid angle) is the same in exposures and mosaic."""
    ds = read_exposures(clean_field.paths)
    n = ds.sizes["exposure"]
    g = MosaicGrid.from_exposures(ds.attrs["wcs"], [SHAPE] * n, psr=psr, rotation_deg=ROTATION, tile=96)
    mosaic = drizzle_mosaic(ds, g).compute(scheduler="sync")
    sci_out = np.nan_to_num(mosaic["sci"].values).astype(np.float64)
    radius_arcsec = 1.0
    areas = [true_pixel_areas(w, SHAPE) for w in clean_field.wcs]
    # the test data make the honest choice matter: true pixel areas differ from PIXAR_SR by >1%
    assert abs(np.mean(areas[0]) / 9.3e-14 - 1) > 0.01
    for ra, dec, _ in clean_field.truth_stars:
        x, y = g.wcs.all_world2pix(ra, dec, 0)
        ap = _aperture(g.shape, x, y, radius_arcsec / g.pixel_scale_arcsec)
        flux_mosaic = sci_out[ap].sum() * g.pixel_area_sr
        flux_exp = []
        for k, w in enumerate(clean_field.wcs):
            xe, ye = w.all_world2pix(ra, dec, 0)
            r = radius_arcsec / 0.063
            if not (r < xe < SHAPE[1] - 1 - r and r < ye < SHAPE[0] - 1 - r):
                continue
            ap_e = _aperture(SHAPE, xe, ye, r)
            flux_exp.append((ds["sci"][k].values[ap_e].astype(np.float64) * areas[k][ap_e]).sum())
        assert len(flux_exp) >= 3
        np.testing.assert_allclose(flux_mosaic, np.mean(flux_exp), rtol=1e-3)


def test_nan_and_flagged_pixels_get_zero_weight(exposures, grid, field):
    g = grid.with_tiling((120, 200))
    wcs = exposure_wcs(exposures)
    for k, box in ((0, (slice(20, 30), slice(150, 165))), (1, (slice(100, 108), slice(10, 30)))):
        alone = drizzle_mosaic(exposures.isel(exposure=[k]), g).compute(scheduler="sync")
        sci, wht = alone["sci"].values, alone["wht"].values
        # no NaN leaks into covered pixels, and the bad box leaves a hole of zero weight
        np.testing.assert_array_equal(np.isnan(sci), wht == 0)
        cy, cx = (box[0].start + box[0].stop) / 2 - 0.5, (box[1].start + box[1].stop) / 2 - 0.5
        pm = calc_pixmap(wcs[k], g.wcs, SHAPE)
        ox, oy = pm[int(cy), int(cx)]
        assert wht[int(round(oy)), int(round(ox))] == 0
        good_px = pm[60, 60]
        assert wht[int(round(good_px[1])), int(round(good_px[0]))] > 0
    mosaic = drizzle_mosaic(exposures, g).compute(scheduler="sync")
    covered = mosaic["wht"].values > 0
    assert np.isfinite(mosaic["sci"].values[covered]).all()
    pm0 = calc_pixmap(wcs[0], g.wcs, SHAPE)
    ox, oy = pm0[24, 157]
    con = mosaic["con"].values[0, int(round(oy)), int(round(ox))]
    assert con & 1 == 0 and con != 0  # exposure 0 did not contribute there, others did


def test_exposure_off_the_grid_is_skipped_with_a_warning(field, tmp_path, exposures, grid, reference, field_factory):
    far = field_factory(tmp_path, dithers=[(0.0, 0.0, 0.0)], offset_deg=(0.5, 0.0), names=["far_away_cal.fits"])
    ds = read_exposures([*field.paths, *far.paths])
    with pytest.warns(NoOverlapWarning, match="far_away_cal.fits"):
        mosaic = drizzle_mosaic(ds, grid.with_tiling((200, 200)))
    assert mosaic.attrs["exposures_used"] == [0, 1, 2, 3, 4]
    assert_equals_reference(mosaic.compute(scheduler="sync"), reference)
    with pytest.warns(NoOverlapWarning), pytest.raises(InputError, match="none of the 1 exposures"):
        drizzle_mosaic(read_exposures(far.paths), grid)


def test_mixed_bands_are_an_error(field, tmp_path, field_factory):
    other = field_factory(tmp_path, dithers=[(0.0, 0.0, 0.0)], band="F444W", names=["f444w_cal.fits"])
    ds = read_exposures([*field.paths, *other.paths], single_band=False)
    shapes = [SHAPE] * ds.sizes["exposure"]
    g = MosaicGrid.from_exposures(ds.attrs["wcs"], shapes, psr=0.5)
    with pytest.raises(InputError, match=r"mix filters \['F200W', 'F444W'\].*f444w_cal.fits"):
        drizzle_mosaic(ds, g)


def test_bad_options_name_the_allowed_values(exposures, grid):
    with pytest.raises(ValueError, match="kernel 'boxy' is not supported; expected one of"):
        drizzle_mosaic(exposures, grid, kernel="boxy")
    with pytest.raises(ValueError, match=r"weight 'ivn' is not supported; expected one of \('ivm'"):
        drizzle_mosaic(exposures, grid, weight="ivn")
    with pytest.raises(ValueError, match="pixfrac must be a number above 0.001"):
        drizzle_mosaic(exposures, grid, pixfrac=0.0)


def test_context_works_past_32_exposures(tmp_path, field_factory, drizzle_reference):
    rng = np.random.default_rng(3)
    n = 34
    dithers = [(float(a), float(b), 0.0) for a, b in rng.uniform(-0.4, 0.4, size=(n, 2))]
    small = (24, 28)
    f = field_factory(tmp_path, dithers=dithers, shape=small, noise=False, sky=1.0)
    ds = read_exposures(f.paths)
    g = MosaicGrid.from_exposures(ds.attrs["wcs"], [small] * n, psr=0.5, rotation_deg=ROTATION, tile=(31, 37))
    ref = drizzle_reference(ds, g)
    mosaic = drizzle_mosaic(ds, g).compute(scheduler="sync")
    assert mosaic["con"].shape == (2, *g.shape)
    assert mosaic["con"].dtype == np.int32
    assert_equals_reference(mosaic, ref)
    # exposure 33 is bit 1 of plane 1, exposure 31 the sign bit of plane 0
    con = mosaic["con"].values
    assert np.any(con[1] & 2) and np.any(con[0] < 0)


# -- blot ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["exact", "interp"])
def test_blot_to_exposure_equals_whole_image_blot(exposures, grid, method):
    g = grid.with_tiling((90, 110))
    image = drizzle_mosaic(exposures, g, variance=False)["sci"].data
    whole = image.compute(scheduler="sync")
    k = 2
    wcs = exposure_wcs(exposures)[k]
    blotted = blot_to_exposure(image, g, wcs, SHAPE, method=method, rows_per_chunk=70)
    assert blotted.chunks == ((70, 70, 60), (SHAPE[1],))
    got = blotted.compute(scheduler="sync")
    pm = calc_pixmap(wcs, g.wcs, SHAPE)
    if method == "exact":
        want = blot_exact(whole, pm)
        np.testing.assert_allclose(got, want, rtol=1e-6)
    else:
        want = blot_interp(whole, pm)
        # tblot works in float32 positions: a region's origin shifts them by < 1e-3 px
        np.testing.assert_allclose(got, want, rtol=1e-3)
    # the mock reproduces the exposure (noise aside) where it is well covered
    sci = exposures["sci"][k].values
    inner = (slice(10, -10), slice(10, -10))
    resid = (got - sci)[inner]
    assert np.nanmedian(np.abs(resid)) < 0.05


# -- command line -------------------------------------------------------------------------------


def _parse(argv):
    parser = argparse.ArgumentParser(prog="mosaic")
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_writes_i2d_and_store(field, tmp_path, exposures, grid, reference):
    out = tmp_path / "field_i2d.fits"
    store_path = tmp_path / "store.zarr"
    argv = ["drizzle", *map(str, field.paths), "--out", str(out), "--tile", "150", "--rotation", str(ROTATION)]
    args = _parse([*argv, "--store", str(store_path), "--field", "deep"])
    assert args.func(args) == 0
    with fits.open(out) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "SCI", "ERR", "CON", "WHT", "VAR_POISSON", "VAR_RNOISE", "VAR_FLAT"]
        sci = hdul["SCI"].data
        np.testing.assert_array_equal(np.isnan(sci), np.isnan(reference.out_img))
        ok = ~np.isnan(sci)
        np.testing.assert_allclose(sci[ok], reference.out_img[ok], rtol=RTOL)
        np.testing.assert_array_equal(hdul["CON"].data, reference.out_ctx)
        assert hdul[0].header["FILTER"] == "F200W"
        assert hdul["SCI"].header["CRVAL1"] == pytest.approx(grid.wcs.wcs.crval[0])
    store = Store(store_path)
    assert store.is_complete("deep", "F200W", "drizzle")
    prod = store.read_product("deep", "F200W", "drizzle")
    np.testing.assert_array_equal(prod["sci"].values, sci)
    # a second run refuses to overwrite, with one clear error
    args = _parse(argv)
    with pytest.raises(InputError, match="exists; pass --overwrite"):
        args.func(args)


@pytest.mark.parametrize("workers", [0, 2])
def test_cli_file_only_equals_the_lazy_mosaic_written_by_write_i2d(field, tmp_path, exposures, grid, reference, workers):
    # without a store, `mosaic drizzle` runs the tile tasks on worker processes that write into
    # the file (no dask): the file must be the one write_i2d makes of drizzle_mosaic, bit for bit
    from mosaic.io.products import write_i2d

    out = tmp_path / "direct_i2d.fits"
    argv = ["drizzle", *map(str, field.paths), "--out", str(out), "--tile", "53", "--rotation", str(ROTATION), "--workers", str(workers)]
    args = _parse(argv)
    assert args.func(args) == 0
    g = grid.with_tiling(53)  # two of its 108 tiles get no exposure
    ref_file = write_i2d(tmp_path / "lazy_i2d.fits", drizzle_mosaic(exposures, g), g)
    with fits.open(out) as got, fits.open(ref_file) as want:
        assert [h.name for h in got] == [h.name for h in want]
        for a, b in zip(got, want, strict=True):
            assert list(a.header.items()) == list(b.header.items()), a.name
            if b.data is not None:
                np.testing.assert_array_equal(a.data, b.data, err_msg=a.name)
        sci = got["SCI"].data
        ok = ~np.isnan(reference.out_img)
        np.testing.assert_array_equal(np.isnan(sci), ~ok)
        np.testing.assert_allclose(sci[ok], reference.out_img[ok], rtol=RTOL)
        np.testing.assert_array_equal(got["CON"].data, reference.out_ctx)
    assert not list(tmp_path.glob(".direct_i2d.fits.part-*"))
    with pytest.raises(InputError, match="exists; pass --overwrite"):
        args.func(args)


def test_pickled_wcs_is_exact_parsed_once_and_a_private_copy_per_task(exposures, monkeypatch):
    """A WCS sent to a worker maps pixels as the original does (17 digits, SIP kept); a process
    parses each header once, and every task still gets its own copy."""
    import pickle  # noqa: PLC0415

    from mosaic.coadd.drizzle import _portable_from_header, _PortableWCS  # noqa: PLC0415

    original = exposures.attrs["wcs"][0]
    portable = _PortableWCS(original)
    blob = pickle.dumps(portable)
    # the header is written once per wrapper (every task of a pass pickles it again): a spy
    # counts astropy's header writes, and lets each one through
    calls, to_header = [], type(original).to_header
    monkeypatch.setattr(type(original), "to_header", lambda self, *a, **k: calls.append(1) or to_header(self, *a, **k))
    assert pickle.dumps(portable) == blob and calls == []
    assert pickle.dumps(_PortableWCS(original)) == blob and calls == [1]
    _portable_from_header.cache_clear()
    first, second = pickle.loads(blob), pickle.loads(blob)
    info = _portable_from_header.cache_info()
    assert (info.misses, info.hits) == (1, 1)
    a, b = first.get(), second.get()
    assert a is not b and a is not original
    y, x = np.mgrid[0:original.pixel_shape[1]:97, 0:original.pixel_shape[0]:89].astype(float)
    np.testing.assert_array_equal(np.array(a.pixel_to_world_values(x, y)), np.array(original.pixel_to_world_values(x, y)))
    assert a.sip is not None and a.pixel_shape == original.pixel_shape


@pytest.mark.parametrize("threads", [1, 8])
@pytest.mark.parametrize("tile", [(23, 31), (17, 90)], ids=str)
def test_cutouts_skip_only_tiles_out_of_reach(exposures, grid, tile, threads, monkeypatch):
    """Tiles beyond an exposure's footprint are not searched: the cut-outs are those of a search
    of every tile of the grid, one exposure after the other or on threads."""
    from mosaic.coadd import drizzle  # noqa: PLC0415
    from mosaic.coadd.drizzle import exposure_cutouts, exposure_wcs  # noqa: PLC0415
    from mosaic.ops.pixmap import cutout_rows_for_region, lattice_pixmap  # noqa: PLC0415

    monkeypatch.setattr(drizzle, "PLAN_THREADS", threads)
    tiled = grid.with_tiling(tile)
    wcs_list, shape = exposure_wcs(exposures), (exposures.sizes["y"], exposures.sizes["x"])
    got = exposure_cutouts(wcs_list, shape, tiled, margin=2.5, step=8, rows=True)
    for w, cuts in zip(wcs_list, got, strict=True):
        lattice = lattice_pixmap(w, tiled.wcs, shape, step=8)
        every = {t.index: cutout_rows_for_region(lattice, t.core, margin=2.5) for t in tiled.tiles()}
        every = {k: v for k, v in every.items() if v is not None}
        assert sorted(cuts) == sorted(every)
        for k, c in cuts.items():
            assert c.region == every[k].region
            np.testing.assert_array_equal(c.lo, every[k].lo)
            np.testing.assert_array_equal(c.hi, every[k].hi)
    assert any(len(cuts) < len(tiled.tiles()) for cuts in got)  # some tile was out of an exposure's reach
