"""The REST API of a real ``mosaic serve`` process, each answer checked against the library called directly."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from astropy.io import fits
from matplotlib import image as mimage

from mosaic import registry
from mosaic.io.images import read_fits_image


def _image_id(http, rel: str) -> str:
    images = http.get("/images").json()["images"]
    return next(i["id"] for i in images if i["path"] == rel and i["root"] == "data")


def test_algorithms_are_the_registry(served):
    service, *_ = served
    got = service.http.get("/algorithms").json()["algorithms"]
    want = registry.algorithms()
    assert [a["name"] for a in got] == [a.name for a in want]
    bkg = next(a for a in got if a["name"] == "background_2d")
    reg = registry.get("background_2d")
    assert {p["name"]: p["default"] for p in bkg["parameters"]} == {p.name: p.default for p in reg.parameters}
    params = {p["name"]: p for p in bkg["parameters"]}
    assert bkg["processable"] and params["box_size"]["settable"] and not params["mask"]["settable"]
    from mosaic.ops.background import ESTIMATORS

    assert params["estimator"]["enum"] == sorted(ESTIMATORS) == params["estimator"]["choices"]
    # a set from a numpydoc docstring reaches the API as the registry has it
    seg = {p["name"]: p for p in next(a for a in got if a["name"] == "detect_segmentation")["parameters"]}
    want_modes = next(p.choices for p in registry.get("detect_segmentation").parameters if p.name == "mode")
    assert seg["mode"]["enum"] == list(want_modes) == ["exponential", "linear", "sinh"]


def test_image_metadata_and_symlink_out_not_listed(served):
    service, data, image, outside = served
    paths = {i["path"] for i in service.http.get("/images").json()["images"]}
    assert "field/image.fits" in paths and "link.fits" not in paths
    meta = service.http.get(f"/images/{_image_id(service.http, 'field/image.fits')}").json()
    with fits.open(image) as hdul:
        assert meta["shape"] == list(hdul["SCI"].data.shape)
        assert meta["units"] == hdul["SCI"].header["BUNIT"] and meta["band"] == "F200W"
    ref = read_fits_image(image).wcs
    ny, nx = meta["shape"]
    corners = np.array(ref.pixel_to_world_values([0, nx - 1, nx - 1, 0], [0, 0, ny - 1, ny - 1])).T
    np.testing.assert_allclose(meta["footprint"], corners, rtol=0, atol=1e-12)


def test_statistics_equal_the_library(served):
    from mosaic.image.stats import image_statistics

    service, _, image, _ = served
    got = service.http.get(f"/statistics/{_image_id(service.http, 'field/image.fits')}", params={"sigma": 2.5}).json()
    want = image_statistics(read_fits_image(image).data, sigma=2.5, maxiters=5)
    for key in ("n_pixels", "n_valid", "min", "max", "mean", "median", "std", "biweight_location", "biweight_scale", "mad_std"):
        assert got[key] == pytest.approx(want[key], rel=1e-12), key
    assert {float(k): v for k, v in got["percentiles"].items()} == pytest.approx(want["percentiles"], rel=1e-12)


def test_preview_equals_the_library(served, tmp_path):
    from mosaic.viz.preview import write_preview

    service, _, image, _ = served
    r = service.http.get(f"/preview/{_image_id(service.http, 'field/image.fits')}", params={"stretch": "sqrt", "max_size": 64})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    want = mimage.imread(write_preview(tmp_path / "p.png", image, max_size=64, stretch="sqrt"))
    got = mimage.imread(io.BytesIO(r.content))
    assert got.shape == want.shape and max(got.shape[:2]) <= 64
    np.testing.assert_array_equal(got, want)


def test_chain_background_then_detect_equals_the_direct_calls(served, tmp_path):
    from mosaic.catalog.detect import detect_segmentation
    from mosaic.catalog.photometry import source_catalog
    from mosaic.image.background import background_2d

    service, _, image, _ = served
    body = {"image": _image_id(service.http, "field/image.fits"), "steps": [
        {"algorithm": "background_2d", "params": {"box_size": 32}},
        {"algorithm": "detect_segmentation", "params": {"threshold": 0.25, "n_pixels": 5}},
    ]}
    r = service.http.post("/process", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["result"] == "table"
    src = read_fits_image(image, dtype=np.float64)
    sub = src.data - background_2d(src.data, box_size=32).background
    want = source_catalog(sub, detect_segmentation(sub, 0.25, n_pixels=5), wcs=src.wcs)
    got = service.http.get(f"/catalogs/{out['id']}").json()
    assert out["n_sources"] == got["n_rows"] == len(want) > 3
    cols = [c["name"] for c in got["columns"]]
    for name in ("x_centroid", "y_centroid", "segment_flux", "ra", "dec"):
        np.testing.assert_allclose([row[cols.index(name)] for row in got["rows"]], np.asarray(want[name].value if hasattr(want[name], "value") else want[name]),
                                   rtol=1e-12)
    ecsv = service.http.get(f"/catalogs/{out['id']}", params={"format": "ecsv"})
    assert ecsv.status_code == 200 and ecsv.text.startswith("# %ECSV")
    assert out["id"] in {c["id"] for c in service.http.get("/catalogs").json()["catalogs"]}
    parquet = service.http.get(f"/catalogs/{out['id']}", params={"format": "parquet"})
    (tmp_path / "c.parquet").write_bytes(parquet.content)
    from astropy.table import Table

    np.testing.assert_allclose(Table.read(tmp_path / "c.parquet")["segment_flux"], np.asarray(want["segment_flux"]), rtol=1e-12)


def test_detect_shorthand_is_daofind(served):
    from mosaic.catalog.daofind import detect_daofind

    service, _, image, _ = served
    i = _image_id(service.http, "field/image.fits")
    r = service.http.post(f"/detect/{i}", json={"method": "daofind", "threshold": 0.3, "fwhm": 2.5})
    assert r.status_code == 200, r.text
    got = service.http.get(f"/catalogs/{r.json()['id']}").json()
    want = detect_daofind(read_fits_image(image, dtype=np.float64).data, 0.3, fwhm=2.5)
    cols = [c["name"] for c in got["columns"]]
    assert got["n_rows"] == len(want) > 3
    np.testing.assert_allclose([row[cols.index("flux")] for row in got["rows"]], np.asarray(want["flux"]), rtol=1e-12)
    bad = service.http.post(f"/detect/{i}", json={"method": "psf"})
    assert bad.status_code == 422 and bad.json()["allowed"] == ["segmentation", "daofind"]


def test_filter_result_is_an_image_equal_to_scipy(served):
    from scipy import ndimage

    service, _, image, _ = served
    r = service.http.post("/process", json={"image": _image_id(service.http, "field/image.fits"), "algorithm": "gaussian_filter",
                                            "params": {"sigma": 1.5}})
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["result"] == "image"
    got = fits.getdata(io.BytesIO(service.http.get(f"/images/{result['id']}/file").content), "SCI")
    want = ndimage.gaussian_filter(fits.getdata(image, "SCI").astype(np.float64), 1.5)
    np.testing.assert_allclose(got, want.astype(np.float32), rtol=1e-6, atol=1e-7)


def test_batch_of_values(served):
    from mosaic.image.stats import median

    service, _, image, _ = served
    i = _image_id(service.http, "field/image.fits")
    r = service.http.post("/process", json={"images": [i, i], "algorithm": "median"})
    assert r.status_code == 200, r.text
    values = [x["values"] for x in r.json()["results"]]
    want = median(fits.getdata(image, "SCI").astype(np.float64))
    assert values == [pytest.approx(want, rel=1e-12)] * 2


@pytest.mark.parametrize(("body", "parameter", "allowed"), [
    ({"algorithm": "no_such"}, "algorithm", "background_2d"),
    ({"algorithm": "stretch_image", "params": {"stretch": "loud"}}, "stretch", "asinh"),
    ({"algorithm": "detect_segmentation", "params": {"threshold": 3.0, "mode": "cubic"}}, "mode", "sinh"),
    ({"algorithm": "background_2d", "params": {"box_size": "big"}}, "box_size", None),
    ({"algorithm": "background_2d", "params": {"mask": [1, 2]}}, "mask", "box_size"),
    ({"algorithm": "background_2d", "params": {"boxsize": 3}}, "boxsize", "box_size"),
    ({"algorithm": "detect_segmentation", "params": {}}, "threshold", "threshold"),
    ({"steps": [{"algorithm": "median"}, {"algorithm": "gaussian_filter", "params": {"sigma": 1}}]}, "algorithm", None),
])
def test_bad_parameters_are_422_naming_the_parameter(served, body, parameter, allowed):
    service, *_ = served
    r = service.http.post("/process", json={"image": _image_id(service.http, "field/image.fits"), **body})
    assert r.status_code == 422, r.text
    err = r.json()
    assert err["parameter"] == parameter and parameter in err["error"]
    if allowed is not None:
        assert allowed in err["allowed"] and allowed in err["error"]
    assert "Traceback" not in r.text


def test_bad_preview_and_unknown_ids(served):
    service, *_ = served
    i = _image_id(service.http, "field/image.fits")
    r = service.http.get(f"/preview/{i}", params={"stretch": "loud"})
    assert r.status_code == 422 and r.json()["allowed"][0] == "asinh"
    assert service.http.get(f"/preview/{i}", params={"max_size": 100000}).status_code == 422
    for path in ("/images/img-000000000000", "/preview/img-000000000000", "/statistics/nope", "/catalogs/cat-0", "/runs/run-x"):
        r = service.http.get(path)
        assert r.status_code == 404 and "error" in r.json(), path
    assert service.http.get("/catalogs/x", params={"format": "xml"}).status_code == 422


def test_paths_outside_the_data_directory_are_refused(served):
    service, data, _, outside = served
    secret = fits.getdata(outside, "SCI").tobytes()
    for name in ("../outside.fits", str(outside), "link.fits", "field/../../outside.fits", "%2e%2e/outside.fits", "..\\outside.fits"):
        r = service.http.post("/images/register", json={"path": name})
        assert r.status_code in (404, 422), (name, r.text)
        assert r.json()["parameter"] == "path" and secret not in r.content
    # URL-encoded traversal in the path of a GET reaches no file
    for url in ("/images/..%2F..%2Foutside.fits", "/images/%2e%2e%2foutside.fits/file", "/preview/..%2Foutside.fits"):
        r = service.http.get(url)
        assert r.status_code == 404 and secret not in r.content, url
    ok = service.http.post("/images/register", json={"path": "field/image.fits"})
    assert ok.status_code == 200 and ok.json()["id"] == _image_id(service.http, "field/image.fits")


def test_uploads_are_limited_and_validated(served, tmp_path):
    service, data, _, outside = served
    uploads = data / "uploads"
    good = outside.read_bytes()
    r = service.http.post("/images", files={"file": ("../../sneaky name.fits", good, "application/fits")})
    assert r.status_code == 201, r.text
    meta = r.json()
    assert meta["path"] == "uploads/sneaky_name.fits" and meta["shape"] == list(fits.getdata(outside, "SCI").shape)
    assert (uploads / "sneaky_name.fits").read_bytes() == good
    before = sorted(p.name for p in uploads.iterdir())
    big = good + b"\0" * (2**20)  # over the 1 MiB limit of this service
    r = service.http.post("/images", files={"file": ("big.fits", big, "application/fits")})
    assert r.status_code == 413 and "limit" in r.json()["error"]
    r = service.http.post("/images", files={"file": ("fake.fits", b"SIMPLE  = not really FITS" * 200, "application/fits")})
    assert r.status_code == 422 and "FITS" in r.json()["error"]
    r = service.http.post("/images", files={"file": ("notes.txt", good, "text/plain")})
    assert r.status_code == 422
    assert sorted(p.name for p in uploads.iterdir()) == before  # nothing kept, no temporary left
    assert json.loads(service.http.get("/openapi.json").text)["paths"]["/images"]["post"]


def test_page_in_a_headless_browser(served, tmp_path):
    from .conftest import browse

    service, *_ = served
    i = _image_id(service.http, "field/image.fits")
    dom, console = browse(f"{service.url}/?image={i}", screenshot=tmp_path / "page.png")
    assert console == []
    assert "field/image.fits" in dom and f'src="/preview/{i}?stretch=asinh' in dom
    processable = [a["name"] for a in service.http.get("/algorithms").json()["algorithms"] if a["processable"]]
    assert all(f'<option value="{n}">' in dom for n in processable)
    assert 'name="box_size"' in dom  # the form of the first algorithm, background_2d, from the registry
    shot = mimage.imread(tmp_path / "page.png")
    assert shot.shape[:2] == (1000, 1400) and shot[..., :3].std() > 0.01  # something was drawn
