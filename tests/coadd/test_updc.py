"""The UPDC driver: tiling invariance, checkpoints and resume, products, errors of iteration 0, bad input, CLI."""

from __future__ import annotations

import argparse
import importlib.util
import os

import numpy as np
import pytest
from astropy.io import fits

from mosaic.coadd.updc import UPDCResult, check_save, prepare_psfs, updc
from mosaic.exceptions import InputError
from mosaic.io.cal import read_exposures
from mosaic.io.grid import MosaicGrid
from mosaic.io.store import Store
from mosaic.psf.files import read_psf

RTOL = 1e-5
VARS = ("var_poisson", "var_rnoise", "var_flat")
PRODUCT_VARS = ("sci", "err", "wht", *VARS)


@pytest.fixture(scope="module")
def exposures(small_field):
    """Four noisy 128² exposures with sky, cosmic rays, hot pixels and flagged pixels."""
    return read_exposures(small_field.exposures)


@pytest.fixture(scope="module")
def psf(small_field):
    return read_psf(small_field.psf)[0]


@pytest.fixture(scope="module")
def untiled(small_field, exposures, psf):
    """One iteration on one tile: the reference of the tiled runs."""
    return updc(exposures, small_field.grid.with_tiling(2000), psf, n_iterations=1)


def assert_same(a, b, *, rtol=RTOL, names=PRODUCT_VARS):
    for name in names:
        x, y = a[name].values.astype(np.float64), b[name].values.astype(np.float64)
        np.testing.assert_array_equal(np.isnan(x), np.isnan(y), err_msg=name)
        ok = np.isfinite(y)
        np.testing.assert_allclose(x[ok], y[ok], rtol=rtol, atol=rtol * np.abs(y[ok]).max(), err_msg=name)


@pytest.mark.parametrize("tile", [(97, 61), (53, 300), (128, 40)], ids=str)
def test_tiled_iteration_equals_untiled(small_field, exposures, psf, untiled, tile):
    tiled = updc(exposures, small_field.grid.with_tiling(tile), psf, n_iterations=1)
    assert tiled.iterations[1]["sci"].data.chunks == small_field.grid.with_tiling(tile).chunks
    assert_same(tiled.iterations[1].compute(), untiled.iterations[1].compute())
    np.testing.assert_allclose(tiled.residuals, untiled.residuals, rtol=RTOL)


def _pixel_map_files(store, band) -> dict:
    """Name and size of the pixel maps kept in the run folders of ``store``'s group
    (:func:`mosaic.coadd.forward.maps_need_a_folder`)."""
    return {p.name: p.stat().st_size for d in store.group_path("field", band).glob(".*pixmaps*") for p in d.glob("*.map")}


def _plan(exposures, grid, psf):
    from mosaic.coadd import forward

    return forward.plan_forward(exposures, grid, prepare_psfs(psf, exposures.sizes["exposure"]))


def test_distributed_workers_read_their_own_cutouts(tmp_path, small_field, exposures, psf, untiled):
    """Two worker processes: each reads its own cut-outs, and the pairs' pixel maps go through the
    store's run folder (a tile's next pass may run on the other worker); results as on threads."""
    distributed = pytest.importorskip("distributed")
    from mosaic.cli.drizzle import CalCutouts
    from mosaic.coadd.forward import map_bytes

    reader = CalCutouts(exposures["path"].values, exposures.attrs["bad_bits"])
    store, band, seen = Store(tmp_path / "s.zarr"), exposures.attrs["band"], []
    grid = small_field.grid.with_tiling((150, 128))
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        distributed.Client(cluster) as client,
    ):
        result = updc(
            exposures, grid, psf, n_iterations=1, cutout_reader=reader, client=client, store=store,
            callback=lambda n, ds: seen.append(_pixel_map_files(store, band)),
        )
        tiled = result.iterations[1].compute()
    assert_same(tiled, untiled.iterations[1].compute())
    np.testing.assert_allclose(result.residuals, untiled.residuals, rtol=RTOL)
    plan = _plan(exposures, grid, psf)
    assert len(seen[-1]) == plan.n_pairs  # every pair's map, once
    # at most what the run plan counts (the cut-outs' pixels), and the files' headers
    assert 0 < sum(seen[-1].values()) <= map_bytes(plan) + 1024 * plan.n_pairs
    assert not list(store.group_path("field", band).glob(".*pixmaps*"))


def test_interpolating_blot_tiled_equals_untiled(small_field, exposures, psf):
    runs = [updc(exposures, small_field.grid.with_tiling(t), psf, n_iterations=1, blot="interp", errors=False) for t in (2000, (83, 120))]
    assert_same(runs[1].iterations[1].compute(), runs[0].iterations[1].compute(), names=("sci", "wht"))


class _Stop(Exception):
    pass


def _stop_after(k):
    def callback(n, ds):
        if n == k:
            raise _Stop

    return callback


def test_resume_after_a_stop_equals_an_uninterrupted_run(tmp_path, small_field, exposures, psf):
    grid = small_field.grid.with_tiling((120, 180))
    whole = updc(exposures, grid, psf, n_iterations=3, store=Store(tmp_path / "a.zarr"), outdir=tmp_path / "a", save=(1, 3))
    store = Store(tmp_path / "b.zarr")
    with pytest.raises(_Stop):
        updc(exposures, grid, psf, n_iterations=3, store=store, outdir=tmp_path / "b", save=(1, 3), callback=_stop_after(2))
    done = store.manifest("field", "F200W")
    assert {"updc/iter_00", "updc/iter_01", "updc/iter_02", "updc/norm"} <= set(done)
    assert "updc/iter_03" not in done
    # iteration 1's file was written by iteration 2's computation; the stop left no half-written file
    assert sorted(f.name for f in (tmp_path / "b").iterdir()) == ["updc_iter01_i2d.fits"]
    seen = []
    resumed = updc(exposures, grid, psf, n_iterations=3, store=store, outdir=tmp_path / "b", save=(1, 3), callback=lambda n, ds: seen.append(n))
    assert seen == [3]  # iterations 0-2 were read back, not recomputed
    assert store.manifest("field", "F200W")["updc/iter_02"]["completed"] == done["updc/iter_02"]["completed"]
    for n in range(4):
        assert_same(resumed.iterations[n].compute(), whole.iterations[n].compute(), rtol=1e-6)
    np.testing.assert_allclose(resumed.residuals, whole.residuals, rtol=1e-6)
    assert sorted(resumed.files) == [1, 3]
    for n in (1, 3):
        a, b = fits.getdata(whole.files[n], "SCI"), fits.getdata(resumed.files[n], "SCI")
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6 * np.nanmax(np.abs(a)))
    # a longer run continues from the store
    longer = updc(exposures, grid, psf, n_iterations=4, store=store, callback=lambda n, ds: seen.append(n))
    assert seen == [3, 4]
    assert len(longer.residuals) == 5


def test_a_run_has_one_computation_per_iteration_and_writes_its_files_inside_them(tmp_path, small_field, exposures, psf, monkeypatch):
    """Iteration 0 and the normalisation are one computation; each file is written by the next
    one (the last with the final residual): n + 2 phases for n iterations, the same products."""
    import mosaic.progress

    calls = []
    real = mosaic.progress.compute

    def counted(*collections, description="computing", **kwargs):
        calls.append(description)
        return real(*collections, description=description, **kwargs)

    grid = small_field.grid.with_tiling((120, 180))
    reference = updc(exposures, grid, psf, n_iterations=2, store=Store(tmp_path / "a.zarr"))
    monkeypatch.setattr(mosaic.progress, "compute", counted)
    run = updc(exposures, grid, psf, n_iterations=2, store=Store(tmp_path / "b.zarr"), outdir=tmp_path / "b", save=(0, 1, 2))
    assert calls == ["updc iteration 0 (drizzle)", "updc iteration 1/2", "updc iteration 2/2", "updc residual of iteration 2"]
    np.testing.assert_allclose(run.residuals, reference.residuals, rtol=1e-6)
    for n in range(3):
        want = reference.product(n)["sci"].values
        np.testing.assert_allclose(fits.getdata(run.files[n], "SCI"), want, rtol=1e-6, atol=1e-6 * np.nanmax(np.abs(want)), equal_nan=True)
    assert sorted(f.name for f in (tmp_path / "b").iterdir()) == [f"updc_iter0{n}_i2d.fits" for n in range(3)]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="finds the file of a descriptor in /proc (Linux)")
def test_a_full_disk_while_writing_a_file_is_one_error_naming_it_and_leaves_no_part(tmp_path, small_field, exposures, psf, monkeypatch):
    """The files are written inside the iterations' computations: a write that fails there is
    still the one error of a full disk, naming the file, and no temporary file stays."""
    import errno

    import mosaic.io.images

    real = os.pwrite

    def full(fd, data, offset):
        if ".updc_iter00_i2d.fits.part-" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data, offset)

    monkeypatch.setattr(mosaic.io.images.os, "pwrite", full)
    grid = small_field.grid.with_tiling((120, 180))
    with pytest.raises(InputError, match=r"updc_iter00_i2d\.fits: the disk is full"):
        updc(exposures, grid, psf, n_iterations=1, store=Store(tmp_path / "s.zarr"), outdir=tmp_path / "out", save=(0, 1))
    assert list((tmp_path / "out").iterdir()) == []


def test_other_settings_are_refused_then_overwritten(tmp_path, small_field, exposures, psf):
    store = Store(tmp_path / "s.zarr")
    grid = small_field.grid.with_tiling(2000)
    updc(exposures, grid, psf, n_iterations=0, store=store, errors=False)
    with pytest.raises(InputError, match="other settings.*overwrite=True"):
        updc(exposures, grid, psf, n_iterations=0, store=store, errors=False, weight="uniform")
    again = updc(exposures, grid, psf, n_iterations=0, store=store, errors=False, weight="uniform", overwrite=True)
    assert again.iterations[0].attrs["weight_type"] == "uniform"


def test_i2d_files_hold_the_sky_subtracted_iterations(tmp_path, small_field, exposures, psf):
    result = updc(exposures, small_field.grid.with_tiling(2000), psf, n_iterations=2, save=(0, 2), outdir=tmp_path, name="f200w")
    assert isinstance(result, UPDCResult)
    assert sorted(p.name for p in tmp_path.glob("*_i2d.fits")) == ["f200w_iter00_i2d.fits", "f200w_iter02_i2d.fits"]
    # the sky: the median of the drizzle mosaic's sky, sources masked: the pedestal plus the ICL
    # there (at most its amplitude), below the clipped median of every pixel of the noiseless
    # truth, which sits on the sources' wings (test_the_sky_removed_is_that_of_the_sky below)
    from astropy.stats import sigma_clipped_stats

    cfg = small_field.config
    truth = fits.getdata(small_field.truth_image) + cfg.background
    covered = np.isfinite(result.iterations[0]["sci"].values)
    assert cfg.background < result.background < min(cfg.background + cfg.icl_amplitude, sigma_clipped_stats(truth[covered], sigma=3.0)[1])
    with fits.open(tmp_path / "f200w_iter02_i2d.fits") as hdul:
        assert [h.name for h in hdul[1:]] == ["SCI", "ERR", "CON", "WHT", "VAR_POISSON", "VAR_RNOISE", "VAR_FLAT"]
        assert hdul[0].header["UPDCITER"] == 2
        assert hdul[0].header["BKGLEVEL"] == pytest.approx(result.background)
        it2 = result.iterations[2].compute()
        # sky subtracted; blank beyond the coverage (where the iterate's margin is)
        expected = np.where(covered, it2["sci"].values - np.float32(result.background), np.nan)
        np.testing.assert_allclose(hdul["SCI"].data, expected, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(hdul["CON"].data, result.iterations[0]["con"].values)
        # ERR: the propagated one times the blank-sky calibration, at least iteration 0's
        propagated = np.sqrt(sum(it2[v].values.astype(float) for v in VARS))
        err0 = result.iterations[0]["err"].values.astype(float)
        err = np.where(covered, np.maximum(result.err_scales[2] * propagated, err0), np.nan)
        np.testing.assert_allclose(hdul["ERR"].data, err, rtol=1e-5)
        assert hdul[0].header["ERRSCALE"] == pytest.approx(result.err_scales[2])
        np.testing.assert_allclose(np.sqrt(sum(hdul[v].data.astype(float) for v in ("VAR_POISSON", "VAR_RNOISE", "VAR_FLAT"))), err, rtol=1e-4)


@pytest.mark.parametrize(("n_galaxies", "n_stars", "within", "before"), [(250, 30, 0.05, 0.14), (600, 60, 0.12, 0.3)])
def test_the_sky_removed_is_that_of_the_sky(n_galaxies, n_stars, within, before):
    """The products' sky ("median") on a field of known sky (10, noise 1) whose galaxies and
    stars put light in 29 % and 56 % of the pixels: 0.04 and 0.10 sigma above the truth (sources
    masked; the faint wings below the mask's threshold remain), where the clipped median of every
    pixel is 0.15 and 0.35 sigma above it (1.3 and 3.1 sigma of flux in a 5-pixel aperture, taken
    off every source of every product)."""
    from astropy.stats import sigma_clipped_stats

    from mosaic.coadd.updc import _sky_levels
    from tests.skies import deep_field

    image, _ = deep_field(n_galaxies=n_galaxies, n_stars=n_stars, sky=10.0)
    image[:20] = np.nan  # an uncovered edge
    got = _sky_levels(image, "median")[0]  # [background, mock floor]
    assert 10.0 <= got < 10.0 + within
    assert sigma_clipped_stats(image[np.isfinite(image)], sigma=3.0, maxiters=10)[1] > 10.0 + before  # what it was
    assert _sky_levels(image, 3.5)[0] == 3.5 and _sky_levels(image, None)[0] == 0.0


def test_errors_of_iteration_zero_are_the_drizzle_errors(small_field, exposures, untiled, drizzle_reference):
    ref = drizzle_reference(exposures, small_field.grid)
    it0 = untiled.iterations[0].compute()
    covered = np.isfinite(ref.out_img)
    np.testing.assert_allclose(it0["sci"].values[covered], ref.out_img[covered], rtol=RTOL, atol=RTOL * np.nanmax(ref.out_img))
    err = np.sqrt(np.sum([np.nan_to_num(v.astype(float)) for v in ref.out_img2], axis=0))
    # each pixel to RTOL, or 1e-6 of the largest: the pixel maps differ from astropy's by ~1e-8
    # pixel (rounding), a large part of a sliver overlap's tiny weight at a coverage edge
    np.testing.assert_allclose(it0["err"].values[covered], err[covered], rtol=RTOL, atol=1e-6 * err[covered].max())
    np.testing.assert_allclose(it0["wht"].values, ref.out_wht, rtol=RTOL, atol=1e-6 * ref.out_wht.max())


def test_weights_follow_the_read_noise_variance(untiled):
    # app. B: WHT_n = WHT_0 * VAR_RNOISE_0 / VAR_RNOISE_n
    it0, it1 = (ds.compute() for ds in untiled.iterations)
    ok = np.isfinite(it0["sci"].values) & (it1["var_rnoise"].values > 0)
    expected = it0["wht"].values * it0["var_rnoise"].values / np.where(ok, it1["var_rnoise"].values, 1)
    np.testing.assert_allclose(it1["wht"].values[ok], expected[ok], rtol=1e-5)


def test_check_save():
    assert check_save(None, 3) == (0, 3)
    assert check_save(None, 12) == (0, 5, 10, 12)
    assert check_save([5, 0, 5], 5) == (0, 5)
    for bad in ([11], [-1], ["x"], [1.5]):
        with pytest.raises(InputError, match=r"save list .* expected iteration numbers in 0\.\.10"):
            check_save(bad, 10)


@pytest.mark.parametrize(
    ("psf", "match"),
    [
        (np.ones((4, 4)), "odd size"),
        (np.ones((5, 3)), "square"),
        (np.full((5, 5), np.nan), "NaN or infinite"),
        (np.zeros((5, 5)), "sums to 0.0"),
        ([np.ones((5, 5))] * 3, "got 3 PSFs for 4 exposures"),
    ],
)
def test_bad_psfs(psf, match):
    with pytest.raises(InputError, match=match):
        prepare_psfs(psf, 4)


def test_bad_psf_file(tmp_path):
    path = tmp_path / "psf.fits"
    fits.PrimaryHDU(np.ones((6, 6))).writeto(path)
    with pytest.raises(InputError, match="psf.fits.*even size 6"):
        prepare_psfs(path, 2)


def test_bad_options_and_no_overlap(small_field, exposures, psf):
    grid = small_field.grid
    with pytest.raises(InputError, match=r"method 'lucy' is not supported; expected one of \('updc', 'landweber', 'rl'\)"):
        updc(exposures, grid, psf, method="lucy")
    with pytest.raises(InputError, match="blot 'nearest' is not supported"):
        updc(exposures, grid, psf, blot="nearest")
    with pytest.raises(InputError, match="n_iterations -1"):
        updc(exposures, grid, psf, n_iterations=-1)
    with pytest.raises(InputError, match="background 'mode' is not supported; expected 'median', a number"):
        updc(exposures, grid, psf, background="mode")
    with pytest.raises(InputError, match="tau 2.5"):
        updc(exposures, grid, psf, method="landweber", tau=2.5)
    far = grid.wcs.deepcopy()
    far.wcs.crval = [far.wcs.crval[0] + 1.0, far.wcs.crval[1]]
    with pytest.raises(InputError, match="none of the 4 exposures .* lands on the output grid"):
        updc(exposures, MosaicGrid(far, grid.shape, tile=grid.tile, psr=0.5), psf)


def test_psf_groups_from_files(small_field):
    groups = prepare_psfs([small_field.psf] * 3 + [small_field.psf_detector], 4, pixel_scale_arcsec=small_field.grid.pixel_scale_arcsec)
    assert [g.exposures for g in groups] == [(0, 1, 2), (3,)]
    for g in groups:
        np.testing.assert_allclose(g.psf.psf.sum(), 1.0, rtol=1e-12)


# -- CLI ---------------------------------------------------------------------------------------


def _cli(argv):
    from mosaic.cli import updc as cli

    parser = argparse.ArgumentParser(prog="mosaic")
    cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["updc", *argv])
    return args.func(args)


def test_cli_writes_files_and_resumes(tmp_path, small_field):
    files = [str(p) for p in small_field.exposures]
    argv = [*files, "--psf-dir", str(small_field.outdir), "--out", str(tmp_path / "out"), "--iterations", "2", "--save", "1,2", "--tile", "150"]
    assert _cli(argv) == 0
    written = sorted(p.name for p in (tmp_path / "out").glob("*_i2d.fits"))
    assert written == ["updc_iter01_i2d.fits", "updc_iter02_i2d.fits"]
    store = Store(tmp_path / "out" / "mosaic.zarr")
    assert store.is_complete("field", "F200W", "updc/iter_02")
    first = store.manifest("field", "F200W")["updc/iter_02"]["completed"]
    assert _cli([*argv[:-4], "--iterations", "3", "--save", "3", "--tile", "150"]) == 0
    assert store.manifest("field", "F200W")["updc/iter_02"]["completed"] == first
    assert (tmp_path / "out" / "updc_iter03_i2d.fits").exists()


def test_cli_no_errors_gives_the_same_iterate_without_err(tmp_path, small_field):
    """``--no-errors``: the same SCI as the library's run with errors, and no ERR or VAR_* planes."""
    files = [str(p) for p in small_field.exposures]
    out = tmp_path / "out"
    argv = [*files, "--psf-dir", str(small_field.outdir), "--out", str(out), "--iterations", "2", "--save", "2", "--tile", "150"]
    assert _cli([*argv, "--no-errors"]) == 0
    with fits.open(out / "updc_iter02_i2d.fits") as hdul:
        names = [h.name for h in hdul]
        sci = hdul["SCI"].data.astype(np.float64)
        bkg = hdul[0].header["BKGLEVEL"]
    assert "ERR" not in names and not any(n.startswith("VAR_") for n in names)
    assert "WHT" in names
    exposures = read_exposures(small_field.exposures)
    grid = MosaicGrid.from_exposures(
        exposures.attrs["wcs"], [(exposures.sizes["y"], exposures.sizes["x"])] * exposures.sizes["exposure"], psr=0.5, tile=150,
    )
    ref = updc(exposures, grid, read_psf(small_field.psf)[0], n_iterations=2, background=bkg).product(2)
    assert "err" in ref
    expected = ref["sci"].values.astype(np.float64)
    ok = np.isfinite(expected)
    np.testing.assert_array_equal(np.isfinite(sci), ok)
    np.testing.assert_allclose(sci[ok], expected[ok], rtol=0, atol=1e-5 * np.abs(expected[ok]).max())


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--save", "0,x"], r"--save '0,x' is not a list of iteration numbers; expected e\.g\. 0,5,10"),
        (["--save", "0,12"], r"save list \(0, 12\) has 12; expected iteration numbers in 0\.\.10"),
        (["--psf", "missing.fits"], "missing.fits: no such PSF file"),
        ([], "give exactly one of --psf"),
    ],
)
def test_cli_bad_input(tmp_path, small_field, extra, match):
    argv = [str(p) for p in small_field.exposures] + ["--out", str(tmp_path), *extra]
    if "--save" in extra:
        argv += ["--psf", str(small_field.psf)]
    with pytest.raises(InputError, match=match):
        _cli(argv)


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed here")
def test_cli_array_cupy_without_cupy_writes_nothing(tmp_path, small_field):
    out = tmp_path / "out"
    argv = [str(p) for p in small_field.exposures] + ["--psf", str(small_field.psf), "--out", str(out), "--array", "cupy"]
    with pytest.raises(InputError, match="--array cupy needs CuPy, which is not installed"):
        _cli(argv)
    assert not out.exists()


def test_cli_psf_dir_needs_a_psf_per_exposure(tmp_path, small_field):
    with pytest.raises(InputError, match=r"no PSF in .*expected one of \['.*_psf\.fits', 'psf_f200w\.fits'\]"):
        _cli([str(small_field.exposures[0]), "--psf-dir", str(tmp_path), "--out", str(tmp_path / "o")])


# -- GPU -----------------------------------------------------------------------------------------


def _gpu_available() -> bool:
    if importlib.util.find_spec("cupy") is None:
        return False
    import cupy

    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except cupy.cuda.runtime.CUDARuntimeError:
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _gpu_available(), reason="needs CuPy and a CUDA GPU")
def test_one_iteration_on_cupy_equals_numpy(small_field, exposures, psf):
    import cupy
    import dask.array as da

    from mosaic.coadd.forward import backproject, normalisation, plan_forward
    from mosaic.coadd.updc import ExposureSource

    grid = small_field.grid.with_tiling((120, 150))
    plan = plan_forward(exposures, grid, prepare_psfs(psf, 4))
    source = ExposureSource(exposures, variances=True)
    f = da.from_array(np.full(grid.shape, 0.15), chunks=grid.chunks)
    on_gpu = f.map_blocks(cupy.asarray)
    results = []
    for image in (f, on_gpu):
        bp = backproject(image, plan, source, variances=True)
        den = normalisation(plan, ExposureSource(exposures), like=image)
        assert isinstance(bp.num._meta, type(image._meta)) and isinstance(den._meta, type(image._meta))
        results.append([cupy.asnumpy(a) if isinstance(a, cupy.ndarray) else a for a in da.compute(bp.num, den, *bp.var, bp.resid)])
    for a, b in zip(results[1], results[0], strict=True):
        # FFT round-off (cuFFT against pocketfft) is relative to each image's peak
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9 * np.abs(b).max())


@pytest.mark.gpu
@pytest.mark.skipif(not _gpu_available(), reason="needs CuPy and a CUDA GPU")
@pytest.mark.parametrize("method", ["updc", "landweber", "rl"])
def test_updc_on_cupy_equals_numpy(tmp_path, small_field, exposures, psf, method):
    """Whole runs with array="cupy" (convolutions, updates, errors on the GPU) give the NumPy run's products."""
    grid = small_field.grid.with_tiling((97, 61))
    on_host = updc(exposures, grid, psf, n_iterations=3, method=method)
    on_gpu = updc(exposures, grid, psf, n_iterations=3, method=method, array="cupy", store=Store(tmp_path / "s.zarr"))
    for n in (1, 3):
        a, b = on_gpu.iterations[n].compute(), on_host.iterations[n].compute()
        assert_same(a, b, rtol=1e-6, names=("sci", "wht"))
        # errors: cuFFT's and pocketfft's round-off in the convolved variances, divided by the
        # normalisation where it is near its floor (the coverage's edge), reach 1e-5 of the peak
        assert_same(a, b, rtol=1e-5, names=("err", *VARS))
    np.testing.assert_allclose(on_gpu.residuals, on_host.residuals, rtol=1e-9)


@pytest.mark.gpu
@pytest.mark.skipif(not _gpu_available() or importlib.util.find_spec("dask_cuda") is None, reason="needs CuPy, dask-cuda and a CUDA GPU")
def test_updc_on_dask_cuda_workers_equals_numpy(tmp_path, small_field, exposures, psf, untiled):
    """CuPy chunks on a dask-cuda worker (a GPU, threads for the CPU pair tasks) reading its own cut-outs."""
    from dask_cuda import LocalCUDACluster
    from distributed import Client

    from mosaic.cli.drizzle import CalCutouts

    reader = CalCutouts(exposures["path"].values, exposures.attrs["bad_bits"])
    grid = small_field.grid.with_tiling(2000)
    with LocalCUDACluster(n_workers=1, threads_per_worker=4, dashboard_address=":0", local_directory=str(tmp_path)) as cluster, Client(cluster) as client:
        on_gpu = updc(
            exposures, grid, psf, n_iterations=1, array="cupy", client=client, cutout_reader=reader, store=Store(tmp_path / "s.zarr"),
        )
        assert_same(on_gpu.iterations[1].compute(), untiled.iterations[1].compute(), rtol=1e-6)


def test_array_option_is_checked(small_field, exposures, psf):
    grid = small_field.grid.with_tiling((97, 61))
    with pytest.raises(InputError, match="array 'jax' is not supported; expected one of"):
        updc(exposures, grid, psf, n_iterations=1, array="jax")
    if importlib.util.find_spec("cupy") is None:
        with pytest.raises(InputError, match="array 'cupy' needs CuPy, which is not installed"):
            updc(exposures, grid, psf, n_iterations=1, array="cupy")


@pytest.mark.parametrize("with_store", [True, False], ids=["store", "memory"])
def test_each_pair_is_computed_once_per_pass(tmp_path, monkeypatch, small_field, exposures, psf, with_store):
    """An iteration runs every (exposure, tile) pair task once: its tiles and its residual share it;
    iteration 0's drizzle and the normalisation are one pass.

    (Computing the products and the residual in one call once let graph optimisation fuse each
    pair into its residual task while the products kept the pair task too: every pair twice.)
    """
    import collections
    import threading

    from mosaic.coadd import forward

    calls: collections.Counter = collections.Counter()
    lock = threading.Lock()
    original = forward._pair_task

    def counted(*args, kind, **kwargs):
        with lock:
            calls[kind] += 1
        return original(*args, kind=kind, **kwargs)

    monkeypatch.setattr(forward, "_pair_task", counted)
    grid = small_field.grid.with_tiling((97, 61))
    store = Store(tmp_path / "s.zarr") if with_store else None
    updc(exposures, grid, psf, n_iterations=2, store=store, final_residual=False)
    n_pairs = forward.plan_forward(exposures, grid, prepare_psfs(psf, exposures.sizes["exposure"])).n_pairs
    assert n_pairs > 4
    # iteration 0 and the normalisation in one pass ("drizzle"), then one per iteration
    assert calls == {"drizzle": n_pairs, "correction": 2 * n_pairs}


def _counting_pixel_maps(monkeypatch):
    """A counter of the pixel maps the forward model makes from now on (in this process)."""
    import collections
    import threading

    from mosaic.coadd import forward

    made: collections.Counter = collections.Counter()
    lock = threading.Lock()
    original = forward._pixmap

    def counted(*args, **kwargs):
        with lock:
            made["maps"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(forward, "_pixmap", counted)
    return made


def test_pixel_maps_are_made_once_per_run(monkeypatch, small_field, exposures, psf):
    """A pair's pixel map is made on its first pass and kept for the passes after it.

    With no room to keep them (a budget of 0 bytes) every pass makes them again, and the
    iterates are the same to the bit.
    """
    from mosaic.coadd import forward

    made = _counting_pixel_maps(monkeypatch)
    monkeypatch.setattr(forward, "_GEOMETRY", forward._GeometryCache())
    grid = small_field.grid.with_tiling((97, 61))
    n_pairs = forward.plan_forward(exposures, grid, prepare_psfs(psf, exposures.sizes["exposure"])).n_pairs
    kept = updc(exposures, grid, psf, n_iterations=2, final_residual=False)
    assert made["maps"] == n_pairs  # normalisation and two iterations: three passes
    assert forward._GEOMETRY.used == 0 and not forward._GEOMETRY.entries  # let go when the run ends
    made.clear()
    monkeypatch.setattr(forward, "GEOMETRY_CACHE_BYTES", 0)
    monkeypatch.setattr(forward, "_GEOMETRY", forward._GeometryCache())
    again = updc(exposures, grid, psf, n_iterations=2, final_residual=False)
    assert made["maps"] == 3 * n_pairs
    for v in PRODUCT_VARS:
        np.testing.assert_array_equal(again.product(2)[v].values, kept.product(2)[v].values)


def test_with_a_store_pixel_maps_are_made_once_whatever_the_worker(tmp_path, monkeypatch, small_field, exposures, psf):
    """With a store the pairs' maps are also kept in a folder of its group that every worker reads:
    with no room in any process (as when a tile's next pass runs on another worker) each map is
    still made once per run, the iterates are the same to the bit, and the folder goes at the end."""
    from mosaic.coadd import forward

    grid = small_field.grid.with_tiling((97, 61))
    n_pairs = forward.plan_forward(exposures, grid, prepare_psfs(psf, exposures.sizes["exposure"])).n_pairs
    kept = updc(exposures, grid, psf, n_iterations=2, final_residual=False)
    made = _counting_pixel_maps(monkeypatch)
    monkeypatch.setattr(forward, "GEOMETRY_CACHE_BYTES", 0)
    monkeypatch.setattr(forward, "_GEOMETRY", forward._GeometryCache())
    store = Store(tmp_path / "s.zarr")
    again = updc(exposures, grid, psf, n_iterations=2, store=store, final_residual=False)
    assert made["maps"] == n_pairs
    for v in PRODUCT_VARS:
        np.testing.assert_array_equal(again.product(2)[v].values, kept.product(2)[v].values)
    assert not list(store.group_path("field", exposures.attrs["band"]).glob(".*pixmaps*"))


def test_maps_kept_in_the_folder_are_not_also_kept_in_memory(tmp_path, monkeypatch, small_field, exposures, psf):
    """When the run shares its maps through the folder (two worker processes or more, forced
    here), no process keeps its own copy too: every pass reads them back from the folder, each
    map is still made once, and the iterates are the same to the bit."""
    from mosaic.coadd import forward
    from mosaic.coadd import updc as updc_module

    grid = small_field.grid.with_tiling((97, 61))
    kept = updc(exposures, grid, psf, n_iterations=2, final_residual=False)
    made = _counting_pixel_maps(monkeypatch)
    monkeypatch.setattr(forward, "_GEOMETRY", forward._GeometryCache())
    monkeypatch.setattr(updc_module, "maps_need_a_folder", lambda plan, client=None: True)
    store, band, held = Store(tmp_path / "s.zarr"), exposures.attrs["band"], []
    again = updc(
        exposures, grid, psf, n_iterations=2, store=store, final_residual=False,
        callback=lambda n, ds: held.append((forward._GEOMETRY.used, len(list(store.group_path("field", band).glob(".*pixmaps*/*"))))),
    )
    plan = _plan(exposures, grid, psf)
    assert made["maps"] == plan.n_pairs
    assert [used for used, _ in held] == [0, 0, 0]
    assert all(files > 0 for _, files in held)
    for v in PRODUCT_VARS:
        np.testing.assert_array_equal(again.product(2)[v].values, kept.product(2)[v].values)


def test_one_process_keeps_pixel_maps_in_memory_only(tmp_path, monkeypatch, small_field, exposures, psf):
    """On threads, with room in the process for every map, no map is written to the store's group
    (it would be bytes on disk for nothing) and each is still made once per run."""
    from mosaic.coadd import forward

    grid = small_field.grid.with_tiling((97, 61))
    made = _counting_pixel_maps(monkeypatch)
    monkeypatch.setattr(forward, "_GEOMETRY", forward._GeometryCache())
    store, band, seen = Store(tmp_path / "s.zarr"), exposures.attrs["band"], []
    plan = _plan(exposures, grid, psf)
    assert 0 < forward.map_bytes(plan) < forward.GEOMETRY_CACHE_BYTES
    updc(
        exposures, grid, psf, n_iterations=2, store=store, final_residual=False,
        callback=lambda n, ds: seen.append(list(store.group_path("field", band).glob(".*pixmaps*"))),
    )
    assert seen == [[], [], []]  # iterations 0, 1 and 2
    assert made["maps"] == plan.n_pairs


def test_forward_model_and_update_share_no_task(tmp_path, small_field, exposures, psf):
    """No tile is held from the start of an iteration to its end.

    The forward model starts from its own reading of the stored iterate and normalisation, and
    the update of a tile (one task) reads them again, after the tile's back-projection: before,
    the iterate, the normalisation and the parts of the update that need no back-projection
    were made first and held, the whole mosaic of each, until the back-projection was done.
    """
    from dask.core import get_dependencies

    from mosaic.coadd.forward import backproject, plan_forward
    from mosaic.coadd.updc import ExposureSource, _read_region, _step

    grid = small_field.grid.with_tiling((97, 61))
    store = Store(tmp_path / "s.zarr")
    it0 = updc(exposures, grid, psf, n_iterations=0, store=store).iterations[0]
    den = store.read_product("field", exposures.attrs["band"], "updc/norm")["norm"].data
    plan = plan_forward(exposures, grid, prepare_psfs(psf, exposures.sizes["exposure"]))
    source = ExposureSource(exposures, variances=True)
    ds, _ = _step(
        it0, it0, den, correct=lambda f: backproject(f, plan, source, variances=True), multiplicative=True, tau=1.0,
        den_floor=0.0, errors=True, fill=0.0, on_device=lambda a: a,
    )
    graph = dict(ds["sci"].data.__dask_graph__())

    def named(prefix):
        return [k for k in graph if isinstance(k, tuple) and str(k[0]).startswith(prefix)]

    start, update = named("updc-start"), named("updc-update")
    assert len(start) == len(update) == grid.n_tiles[0] * grid.n_tiles[1]
    forward, todo = set(), list(start)
    while todo:
        k = todo.pop()
        if k not in forward:
            forward.add(k)
            todo.extend(get_dependencies(graph, k))
    for k in update:
        deps = get_dependencies(graph, k)
        assert deps and deps.isdisjoint(forward)
        # the four back-projected planes of its tile, computed first; its tiles of the stored
        # arrays read by the task itself (their keys hold the arrays, not their data)
        tiles = [d for d in deps if isinstance(d, tuple)]
        stored = [d for d in deps if isinstance(d, str)]
        assert len(tiles) == 1 + len(VARS) and all(d[1:] == k[2:] for d in tiles)
        assert len(stored) == 6 and all(d.startswith("original-") for d in stored)
        # the iterate and iteration 0 (one product here), the normalisation, three variances,
        # WHT and VAR_RNOISE (also one of the variances): eight reads of the six arrays
        reads = [a for a in graph[k][1:] if isinstance(a, tuple) and a[0] is _read_region]
        assert len(reads) == 8 and {r[1] for r in reads} == set(stored)
        core = next(t.core for t in grid.tiles() if t.index == k[2:])
        assert all(r[2] == core for r in reads)


def test_staging_changes_no_number_and_leaves_no_folder(tmp_path, monkeypatch, small_field, exposures, psf):
    """With a store the iterations of a grid above STAGE_ABOVE_BYTES stage through a temporary
    folder of the store's group: the products equal those of the in-memory graph to the bit, and
    the folder goes after each iteration, and after a run stopped half way."""
    import mosaic.coadd.forward as forward
    import mosaic.coadd.updc as updc_module

    staged_paths = []
    real_stage = forward.stage

    def recording(a, path):
        staged_paths.append(path)
        return real_stage(a, path)

    monkeypatch.setattr(forward, "stage", recording)
    grid = small_field.grid.with_tiling((97, 61))
    kept = updc(exposures, grid, psf, n_iterations=2, store=Store(tmp_path / "a.zarr"), staging=False)
    assert staged_paths == []
    assert updc(exposures, grid, psf, n_iterations=1, store=Store(tmp_path / "c.zarr")).iterations  # "auto": a small grid
    assert staged_paths == []
    store = Store(tmp_path / "b.zarr")
    monkeypatch.setattr(updc_module, "STAGE_ABOVE_BYTES", 6 * 8 * grid.shape[0] * grid.shape[1] - 1)  # "auto": just above it
    with pytest.raises(_Stop):
        updc(exposures, grid, psf, n_iterations=2, store=store, callback=_stop_after(1))
    staged = updc(exposures, grid, psf, n_iterations=2, store=store)
    group = store.group_path("field", exposures.attrs["band"])
    assert staged_paths and all(p.is_relative_to(group) and ".updc-staging.tmp-" in str(p) for p in staged_paths)
    assert not list(group.glob(".*staging*")) and not any(p.exists() for p in staged_paths)
    for a, b in zip(kept.iterations, staged.iterations, strict=True):
        a, b = a.compute(), b.compute()
        for v in PRODUCT_VARS:
            np.testing.assert_array_equal(b[v].values, a[v].values, err_msg=v)
    assert staged.residuals == kept.residuals


def test_a_staging_folder_left_by_a_killed_run_is_a_temporary(tmp_path, small_field, exposures, psf):
    # a run killed mid-iteration cannot remove its staging folder; the store's clean-up must
    import dask.array as da

    from mosaic.coadd.staging import stage
    from mosaic.coadd.updc import _Checkpoints

    store = Store(tmp_path / "s.zarr")
    ck = _Checkpoints(store, "field", "F200W", small_field.grid)
    staging = ck.staging("updc")
    folder = staging.__enter__()  # never left, as in a killed run
    staged = stage(da.ones((8, 8), chunks=4), folder / "token" / "f")
    staged.written.compute()
    assert (folder / "token" / "f" / "1.1.npy").exists()
    assert store.clean_temporaries() == [folder]
    assert not folder.exists()
