"""Field runs as jobs of a real ``mosaic serve``: equal to ``mosaic run``, cancellable, and a killed
service loses nothing finished and reports what it did not finish."""

from __future__ import annotations

import io
import json
import signal
import time

import numpy as np
import pytest
from astropy.io import fits
from matplotlib import image as mimage

from mosaic.config import field_from_mapping
from mosaic.io.store import Store
from mosaic.pipeline import run_field

from .conftest import Service

#: drizzle, one UPDC iteration and its catalogue: a quick whole run
QUICK = {
    "field": "tiny",
    "bands": {"F200W": {"inputs": "sim/*_cal.fits", "psf": "sim"}},
    "grid": {"tile": 128},
    "updc": {"iterations": 1, "save": [1]},
    "catalogs": {"enabled": True, "threshold": 3.0, "npixels": 5, "iterations": [1]},
    "products": {"previews": True},
}


def _wait(http, run_id, until, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = http.get(f"/runs/{run_id}").json()
        if until(job):
            return job
        time.sleep(0.25)
    raise AssertionError(f"run {run_id} still {job['status']} at {job.get('step')} after {timeout} s: {job.get('log')}")


@pytest.fixture
def field_service(live):
    return live


def test_run_equals_mosaic_run_and_survives_a_killed_service(field_service, tmp_path):
    root, data, service = field_service.root, field_service.data, field_service.service
    r = service.http.post("/runs", json={"config": QUICK})
    assert r.status_code == 201, r.text
    quick = r.json()["id"]
    job = _wait(service.http, quick, lambda j: j["status"] in ("complete", "failed", "cancelled"))
    assert job["status"] == "complete", job
    assert job["progress"] == 1.0 and len(job["log"]) <= 40
    log = service.http.get(f"/runs/{quick}", params={"log_lines": 2000}).json()["log"]
    assert any("drizzle: done" in line for line in log) and any("previews: done" in line for line in log)
    steps = {s["step"]: s["status"] for s in job["summary"]["bands"][0]["steps"]}
    assert steps["drizzle"] == steps["updc"] == steps["catalogs"] == "done" and steps["destripe"] == "off"

    # the reference: mosaic run's own function on the same config, here, into another store
    reference = field_from_mapping({**QUICK, "products": {**QUICK["products"], "outdir": str(tmp_path / "ref")}}, base=data)
    report = run_field(reference, start_cluster=False, store=Store(tmp_path / "ref.zarr"))
    assert report.ok
    images = {i["path"].split("/")[-1]: i["id"] for i in job["images"]}
    got = fits.getdata(io.BytesIO(service.http.get(f"/images/{images['tiny_f200w_drizzle_i2d.fits']}/file").content), "SCI")
    want = fits.getdata(tmp_path / "ref" / "tiny_f200w_drizzle_i2d.fits", "SCI")
    np.testing.assert_array_equal(got, want)
    from mosaic.viz.preview import write_preview

    png = service.http.get(f"/preview/{images['tiny_f200w_drizzle_i2d.fits']}", params={"max_size": 128})
    np.testing.assert_array_equal(mimage.imread(io.BytesIO(png.content)),
                                  mimage.imread(write_preview(tmp_path / "p.png", tmp_path / "ref" / "tiny_f200w_drizzle_i2d.fits", max_size=128)))
    (cat,) = job["catalogs"]
    table = service.http.get(f"/catalogs/{cat['id']}").json()
    from astropy.table import Table

    ref_cat = Table.read(next((tmp_path / "ref" / "catalogs").glob("*.ecsv")))
    flux = [c["name"] for c in table["columns"]].index("kron_flux")
    assert table["n_rows"] == len(ref_cat) > 2
    np.testing.assert_allclose([row[flux] for row in table["rows"]], np.asarray(ref_cat["kron_flux"]), rtol=1e-10)

    # a long run, killed with the service while it iterates
    slow = {**QUICK, "field": "slow", "updc": {"enabled": True, "iterations": 200, "save": [200]}, "catalogs": {"enabled": False}}
    r = service.http.post("/runs", json={"config": slow})
    assert r.status_code == 201, r.text
    slow_id = r.json()["id"]
    running = _wait(service.http, slow_id, lambda j: j["step"] == "updc" or j["status"] in ("complete", "failed"))
    assert running["status"] == "running" and 0 < running["progress"] < 1
    service.kill(signal.SIGKILL)

    again = field_service.service = Service(data, root / "store.zarr", args=["--max-upload-mb", "1"], log=root / "serve2.log")
    killed = again.http.get(f"/runs/{slow_id}").json()
    assert killed["status"] == "failed" and "service stopped" in killed["error"] and "updc" in killed["error"]
    kept = again.http.get(f"/runs/{quick}").json()
    assert kept["status"] == "complete" and kept["images"] == job["images"]
    assert again.http.get(f"/catalogs/{cat['id']}").json()["rows"] == table["rows"]
    listed = {r["id"]: r["status"] for r in again.http.get("/runs").json()["runs"]}
    assert listed == {quick: "complete", slow_id: "failed"}


def test_page_starts_a_run_shows_progress_and_a_preview(field_service):
    from .conftest import Browser

    service = field_service.service
    page = Browser(service.url)
    try:
        page.wait("document.querySelectorAll('#algorithm option').length > 0 && document.querySelector('#status').textContent.includes('cluster')")
        # drizzle and one UPDC iteration: several steps, long enough for the page's 1.5-s refresh to
        # see the run part-way (a drizzle-only run of this field can end between two refreshes)
        config = json.dumps({**QUICK, "field": "page", "catalogs": {"enabled": False}, "products": {"previews": False}})
        page.evaluate(f"document.querySelector('#run-config').value = {json.dumps(config)}; document.querySelector('#run-form button').click(); 1")
        row = "[...document.querySelectorAll('#runs li')].find(li => li.querySelector('b').textContent === 'page')"
        seen = set()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            state = page.evaluate(f"(() => {{ const li = {row}; return li ? [li.querySelector('span').textContent, li.querySelector('progress').value] : null; }})()")
            if state is not None:
                seen.add((state[0], state[1]))
                if state[0] in ("complete", "failed", "cancelled"):
                    break
            time.sleep(0.2)
        assert state is not None and state[0] == "complete", (state, page.evaluate(f"{row}.textContent"))
        assert any(status == "running" and 0 <= value < 1 for status, value in seen), seen  # progress was shown
        run_id = page.evaluate(f"{row}.dataset.id")
        job = service.http.get(f"/runs/{run_id}").json()
        shown = job["images"][-1]
        # the page shows the run's last product with its preview, drawn by the browser
        page.wait(f"document.querySelector('#viewer-title').textContent === {json.dumps(shown['path'])}")
        src = page.wait("document.querySelector('#preview').naturalWidth > 0 && document.querySelector('#preview').src")
        assert f"/preview/{shown['id']}?stretch=asinh" in src
        assert page.errors == []
    finally:
        page.close()


def test_cancel_then_retry_resumes_from_the_store(field_service):
    root, service = field_service.root, field_service.service
    config = {**QUICK, "field": "cancelled", "preprocessing": {"outliers": {"enabled": True}}, "updc": {"enabled": False},
              "catalogs": {"enabled": False}, "products": {"previews": False}}
    run_id = service.http.post("/runs", json={"config": config}).json()["id"]
    _wait(service.http, run_id, lambda j: j["step"] == "drizzle" or j["status"] not in ("queued", "running"))
    twice = service.http.post("/runs", json={"config": config})
    assert twice.status_code == 409 and run_id in twice.json()["error"]
    r = service.http.delete(f"/runs/{run_id}")
    assert r.status_code == 200 and r.json()["status"] in ("cancelling", "cancelled")
    job = _wait(service.http, run_id, lambda j: j["status"] in ("complete", "failed", "cancelled"))
    assert job["status"] == "cancelled", job
    manifest = Store(root / "store.zarr").manifest("cancelled", "F200W")
    assert manifest["pipeline/outliers"]["state"] == "complete"
    assert manifest.get("pipeline/drizzle", {}).get("state") != "complete" and "error" in job and "drizzle" in job["error"]
    retried = service.http.post(f"/runs/{run_id}/retry")
    assert retried.status_code == 201, retried.text
    job = _wait(service.http, run_id, lambda j: j["status"] in ("complete", "failed", "cancelled"))
    assert job["status"] == "complete" and job["attempts"] == 2
    steps = {s["step"]: s["status"] for s in job["summary"]["bands"][0]["steps"]}
    assert steps["outliers"] == "resumed" and steps["drizzle"] == "done"
    assert service.http.post(f"/runs/{run_id}/retry").status_code == 409


def test_cancel_stops_a_long_step_inside_it(field_service):
    """DELETE during a 500-iteration UPDC step ends the run in seconds, not at the step's end."""
    root, service = field_service.root, field_service.service
    config = {**QUICK, "field": "stopped", "updc": {"iterations": 500, "save": [500]}, "catalogs": {"enabled": False},
              "products": {"previews": False}}
    run_id = service.http.post("/runs", json={"config": config}).json()["id"]
    _wait(service.http, run_id, lambda j: j["step"] == "updc" or j["status"] in ("complete", "failed", "cancelled"))
    time.sleep(1.0)  # inside the iterations
    t0 = time.monotonic()
    assert service.http.delete(f"/runs/{run_id}").status_code == 200
    job = _wait(service.http, run_id, lambda j: j["status"] in ("complete", "failed", "cancelled"), timeout=60)
    took = time.monotonic() - t0
    assert job["status"] == "cancelled" and "during F200W updc" in job["error"], job
    log = service.http.get(f"/runs/{run_id}", params={"log_lines": 2000}).json()["log"]
    assert not any("updc: done" in line for line in log)
    manifest = Store(root / "store.zarr").manifest("stopped", "F200W")
    assert manifest["pipeline/drizzle"]["state"] == "complete"
    assert manifest.get("pipeline/updc", {}).get("state") != "complete"
    assert took < 30, took


def test_bad_configs_are_422_naming_the_key(field_service):
    root, service = field_service.root, field_service.service
    outside = {**QUICK, "bands": {"F200W": {"inputs": str(root / "elsewhere" / "*_cal.fits"), "psf": "sim"}}}
    for config, words in (
        ({**QUICK, "grid": {"tile": 128, "pixels": 3}}, "pixels"),
        ({**QUICK, "bands": {"F200W": {"inputs": "../elsewhere/*_cal.fits", "psf": "sim"}}}, "outside the data directory"),
        (outside, "bands.F200W"),
        ({**QUICK, "updc": {"method": "magic"}}, "updc.method"),
    ):
        r = service.http.post("/runs", json={"config": config})
        assert r.status_code == 422 and words in r.json()["error"], (config, r.text)
    assert service.http.post("/runs", json={"config": [1, 2]}).status_code == 422
    assert service.http.delete("/runs/run-nope").status_code == 404
