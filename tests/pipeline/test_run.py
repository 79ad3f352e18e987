"""``mosaic run``: the products equal the library calls they wrap; re-runs redo only what changed."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from mosaic.cli import main
from mosaic.coadd.drizzle import drizzle_mosaic
from mosaic.coadd.updc import updc
from mosaic.config import field_from_mapping
from mosaic.io.cal import read_exposures
from mosaic.io.grid import MosaicGrid
from mosaic.io.store import Store
from mosaic.pipeline import run_field

from .conftest import field_mapping, write_yaml

OPTIONS = {
    "preprocessing": {"outliers": {"enabled": True, "snr": [5.0, 4.0]}},
    "drizzle": {"pixfrac": 0.8, "kernel": "turbo"},
    "updc": {"iterations": 2, "save": [2]},
    "catalogs": {"enabled": True, "threshold": 3.0, "npixels": 5},
    "products": {"outdir": "out", "previews": True},
}


def _config(tmp_path, tiny_field, **changes):
    raw = field_mapping(tiny_field, **OPTIONS)
    for key, value in changes.items():
        raw[key] = {**raw.get(key, {}), **value}
    return field_from_mapping(raw, base=tmp_path)


@pytest.fixture(scope="module")
def first(tmp_path_factory, tiny_field):
    base = tmp_path_factory.mktemp("run")
    config = _config(base, tiny_field)
    report = run_field(config, start_cluster=False)
    return base, config, report


def _rows(report):
    return {r.step: r for r in report.bands[0].rows}


def test_products_equal_the_library_calls(first, tiny_field, tmp_path):
    base, config, report = first
    assert report.ok
    rows = _rows(report)
    assert [r.status for r in rows.values()] == ["done", "off", "off", "off", "done", "done", "done", "done"]
    assert list(rows) == ["outliers", "destripe", "background", "skymatch", "drizzle", "updc", "catalogs", "previews"]
    # the reference: the same library calls by hand, outside the pipeline
    from mosaic.prep.outliers import clean_exposures

    cleaned = clean_exposures(sorted(tiny_field.exposures), tmp_path / "prep", snr=(5.0, 4.0))
    ds = read_exposures(cleaned)
    grid = MosaicGrid.from_exposures(ds.attrs["wcs"], [(ds.sizes["y"], ds.sizes["x"])] * ds.sizes["exposure"], psr=0.5, tile=128)
    want = drizzle_mosaic(ds, grid, pixfrac=0.8, kernel="turbo")["sci"].values
    got = fits.getdata(config.outdir / "tiny_f200w_drizzle_i2d.fits", "SCI")
    np.testing.assert_array_equal(got, want)
    result = updc(ds, grid, str(tiny_field.psf), n_iterations=2)
    got = fits.getdata(config.outdir / "tiny_f200w_updc_iter02_i2d.fits", "SCI")
    np.testing.assert_array_equal(got, result.product(2)["sci"].values)
    # the cleaned exposures the pipeline drizzled are the reference's, to the bit
    for a, b in zip(cleaned, sorted((config.outdir / "prep" / "f200w" / "outliers").glob("*_crf.fits")), strict=True):
        np.testing.assert_array_equal(fits.getdata(a, "SCI"), fits.getdata(b, "SCI"))
    # the catalogue finds the sources photutils finds on the whole image, with the same threshold
    # (3 x the measured noise: ERR times the scale the catalogue reports, checked in tests/catalog/test_noise.py)
    from astropy.table import Table
    from photutils.segmentation import detect_sources

    with fits.open(config.outdir / "tiny_f200w_updc_iter02_i2d.fits") as hdul:
        sci, err, wht = (hdul[e].data.astype(np.float64) for e in ("SCI", "ERR", "WHT"))
    good = np.isfinite(sci) & (wht > 0)
    catalog = Table.read(config.outdir / "catalogs" / "tiny_f200w_updc_iter02_cat.ecsv")
    k = catalog.meta["noise_scale"]
    assert catalog.meta["noise"] == "measured" and 0.5 < k < 2.0
    # an iterate's noise is not the drizzle's: its flux errors are left as photutils gives them
    assert "UPDC iteration 2" in catalog.meta["flux_err_model"]
    segm = detect_sources(np.where(good, sci, 0.0), 3.0 * k * np.where(good & (err > 0), err, np.inf), n_pixels=5, mask=~good)
    assert len(catalog) == segm.n_labels > 3
    assert sorted(p.name for p in (config.outdir / "previews").glob("*.png")) == [
        "tiny_f200w_drizzle.png", "tiny_f200w_updc_iter02.png",
    ]
    status = Store(config.store_path).manifest("tiny", "F200W")["pipeline/run"]
    assert status["status"] == "complete"
    table = report.table()
    assert "field tiny: 1/1 band(s) complete" in table and "updc: computed 0-2; from the store none" in table


def test_rerun_redoes_only_what_changed(first, tiny_field):
    base, config, _ = first
    store = Store(config.store_path)
    drizzle_file = config.outdir / "tiny_f200w_drizzle_i2d.fits"
    stamp = drizzle_file.stat().st_mtime_ns
    iter1 = store.manifest("tiny", "F200W")["updc/iter_01"]["completed"]

    again = run_field(config, start_cluster=False)
    assert again.bands[0].status == "resumed"
    assert {r.status for r in again.bands[0].rows} == {"resumed", "off"}
    assert drizzle_file.stat().st_mtime_ns == stamp

    # another pixfrac: the drizzle mosaic and the previews are redone, not the outliers or UPDC
    changed = run_field(_config(base, tiny_field, drizzle={"pixfrac": 1.0}), start_cluster=False)
    rows = _rows(changed)
    assert [rows[s].status for s in ("outliers", "drizzle", "updc", "catalogs", "previews")] == ["resumed", "done", "resumed", "resumed", "done"]
    assert rows["updc"].detail == "updc: computed none; from the store 0-2"
    assert drizzle_file.stat().st_mtime_ns != stamp

    # more iterations continue the run
    longer = run_field(_config(base, tiny_field, drizzle={"pixfrac": 1.0}, updc={"iterations": 3, "save": [2, 3]}), start_cluster=False)
    assert _rows(longer)["updc"].detail == "updc: computed 3; from the store 0-2"
    assert store.manifest("tiny", "F200W")["updc/iter_01"]["completed"] == iter1
    assert (config.outdir / "tiny_f200w_updc_iter03_i2d.fits").exists()

    # thresholds in units of the ERR as it is (catalogs.noise), independent flux errors
    # (catalogs.flux_errors): only the catalogues are redone
    from astropy.table import Table

    settings = {"drizzle": {"pixfrac": 1.0}, "updc": {"iterations": 3, "save": [2, 3]}}
    err_noise = run_field(_config(base, tiny_field, catalogs={"noise": "err", "flux_errors": "independent"}, **settings), start_cluster=False)
    rows = _rows(err_noise)
    assert [rows[s].status for s in ("outliers", "drizzle", "updc", "catalogs")] == ["resumed", "resumed", "resumed", "done"]
    for n in (2, 3):
        meta = Table.read(config.outdir / "catalogs" / f"tiny_f200w_updc_iter{n:02d}_cat.ecsv").meta
        assert meta["noise"] == "err"
        assert "as asked" in meta["flux_err_model"]


def test_cli_check_and_errors(tmp_path, tiny_field, capsys):
    path = write_yaml(tmp_path / "f.yaml", field_mapping(tiny_field))
    assert main(["run", str(path), "--check"]) == 0
    assert not (tmp_path / "out").exists()
    bad = write_yaml(tmp_path / "bad.yaml", {**field_mapping(tiny_field), "updc": {"method": "wiener"}})
    assert main(["run", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "mosaic run: error: " in err and "updc.method: got 'wiener'; expected one of ('updc', 'landweber', 'rl')" in err
    missing = write_yaml(tmp_path / "m.yaml", field_mapping(tiny_field, bands={"F200W": {"inputs": "nowhere/*_cal.fits", "psf": "x"}}))
    assert main(["run", str(missing), "--check"]) == 1
    assert "bands.F200W.inputs: " in capsys.readouterr().err


def test_two_bands_and_their_colour_composite(tmp_path, tiny_field):
    from dataclasses import replace

    from mosaic.simulate import simulate_field

    blue = simulate_field(tmp_path / "f150w", replace(tiny_field.config, band="F150W"))
    bands = {
        "F200W": {"inputs": f"{tiny_field.outdir}/*_cal.fits", "psf": str(tiny_field.psf)},
        "F150W": {"inputs": f"{blue.outdir}/*_cal.fits", "psf": str(blue.psf)},
    }
    raw = field_mapping(tiny_field, bands=bands, updc={"enabled": False}, products={"outdir": "out", "previews": True, "rgb": "paper"})
    report = run_field(field_from_mapping(raw, base=tmp_path), start_cluster=False)
    assert report.ok and [b.band for b in report.bands] == ["F200W", "F150W"]
    assert report.rgb.status == "done" and report.rgb.detail == "F200W=(0.0, 1.0, 0.0) F150W=(0.0, 0.0, 1.0)"
    import matplotlib.image

    pixels = matplotlib.image.imread(report.rgb.products["rgb"])
    assert pixels.shape[:2] == fits.getdata(tmp_path / "out" / "tiny_f200w_drizzle_i2d.fits", "SCI").shape
    # the paper's colours: F200W green, F150W blue, no band red
    assert pixels[..., 0].max() == 0 and pixels[..., 1].max() > 0.9 and pixels[..., 2].max() > 0.9
    assert run_field(field_from_mapping(raw, base=tmp_path), start_cluster=False).rgb.status == "resumed"


def test_background_step_flattens_the_exposures_as_the_library_call(tmp_path, tiny_field):
    from mosaic.prep.background import flatten_background

    config = _config(
        tmp_path, tiny_field, preprocessing={"outliers": False, "background": {"enabled": True, "box_size": 16}},
        updc={"iterations": 1, "save": [1]}, catalogs={"enabled": False}, products={"outdir": "out", "previews": False},
    )
    report = run_field(config, start_cluster=False)
    rows = _rows(report)
    assert rows["background"].status == "done"
    made = sorted(p for p in (tmp_path / "out").rglob("*_bkg.fits"))
    want = flatten_background(sorted(tiny_field.exposures), tmp_path / "ref", box_size=16)
    assert [p.name for p in made] == [p.name for p in want]
    for a, b in zip(made, want, strict=True):
        np.testing.assert_array_equal(fits.getdata(a, "SCI"), fits.getdata(b, "SCI"))


def test_skymatch_step_matches_the_exposures_as_the_library_call(tmp_path, tiny_field):
    from mosaic.prep.skymatch import match_skies

    off = {"enabled": False}
    config = _config(
        tmp_path, tiny_field, preprocessing={"outliers": False, "skymatch": {"enabled": True, "box_size": 16}},
        drizzle=off, updc=off, catalogs=off, products={"outdir": "out", "previews": False},
    )
    report = run_field(config, start_cluster=False)
    assert _rows(report)["skymatch"].status == "done"
    made = sorted(p for p in (tmp_path / "out").rglob("*_skm.fits"))
    want = match_skies(sorted(tiny_field.exposures), tmp_path / "ref", box_size=16)
    assert [p.name for p in made] == [p.name for p in want]
    for a, b in zip(made, want, strict=True):
        np.testing.assert_array_equal(fits.getdata(a, "SCI"), fits.getdata(b, "SCI"))
        assert fits.getheader(a)["SKYMATCH"] == fits.getheader(b)["SKYMATCH"]


def test_updc_damping_and_pedestal_from_the_config_reach_the_iteration(tmp_path, tiny_field):
    off = {"enabled": False}
    config = _config(tmp_path, tiny_field, preprocessing={"outliers": off}, drizzle=off, catalogs=off,
                     products={"previews": False}, updc={"damping": 2.0, "pedestal": 0.5})
    assert run_field(config, start_cluster=False).ok
    got = fits.getdata(config.outdir / "tiny_f200w_updc_iter02_i2d.fits", "SCI")
    ds = read_exposures(sorted(tiny_field.exposures))
    grid = MosaicGrid.from_exposures(ds.attrs["wcs"], [(ds.sizes["y"], ds.sizes["x"])] * ds.sizes["exposure"], psr=0.5, tile=128)
    want = updc(ds, grid, str(tiny_field.psf), n_iterations=2, damping=2.0, pedestal=0.5).product(2)["sci"].values
    np.testing.assert_array_equal(got, want)
    # and the options matter: the defaults give another image
    plain = updc(ds, grid, str(tiny_field.psf), n_iterations=2).product(2)["sci"].values
    assert not np.allclose(got, plain, equal_nan=True)


def test_updc_starts_from_the_drizzle_step_product(tmp_path, tiny_field, monkeypatch):
    """With pixfrac 1 and the square kernel the band is drizzled once: UPDC's iteration 0 is the
    drizzle step's product, and its iterations are those of the library's run from that product,
    to the bit (and of its run from the files to float32 round-off)."""
    import mosaic.coadd.drizzle
    import mosaic.coadd.updc

    calls = []
    real = mosaic.coadd.drizzle.drizzle_mosaic

    def counted(*args, **kwargs):
        calls.append(kwargs.get("pixfrac"))
        return real(*args, **kwargs)

    monkeypatch.setattr(mosaic.coadd.drizzle, "drizzle_mosaic", counted)
    monkeypatch.setattr(mosaic.coadd.updc, "drizzle_mosaic", counted)
    config = _config(
        tmp_path, tiny_field, drizzle={"pixfrac": 1.0, "kernel": "square"}, updc={"iterations": 1, "save": [1]},
        preprocessing={"outliers": {"enabled": False}}, catalogs={"enabled": False}, products={"outdir": "out", "previews": False},
    )
    report = run_field(config, start_cluster=False)
    assert report.ok
    assert calls == [1.0]  # the drizzle step's; UPDC drizzled nothing
    store = Store(config.store_path)
    drizzle = store.read_product("tiny", "F200W", "drizzle")
    it0 = store.read_product("tiny", "F200W", "updc/iter_00")
    for v in ("sci", "err", "wht"):
        np.testing.assert_array_equal(it0[v].values, drizzle[v].values)
    ds = read_exposures(sorted(tiny_field.exposures))
    grid = MosaicGrid.from_exposures(ds.attrs["wcs"], [(ds.sizes["y"], ds.sizes["x"])] * ds.sizes["exposure"], psr=0.5, tile=128)
    monkeypatch.setattr(mosaic.coadd.updc, "drizzle_mosaic", real)
    result = updc(ds, grid, str(tiny_field.psf), n_iterations=1)
    got = fits.getdata(config.outdir / "tiny_f200w_updc_iter01_i2d.fits", "SCI")
    # the library drizzles its own iteration 0 in float64 (the drizzle package sums in float32)
    want = result.product(1)["sci"].values
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.nanmax(np.abs(want)))
    # and started from the same drizzle product, the same to the bit
    again = updc(ds, grid, str(tiny_field.psf), n_iterations=1, drizzled=drizzle)
    np.testing.assert_array_equal(got, again.product(1)["sci"].values)
