"""The application served by uvicorn in a thread: token authentication and a service without a cluster."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import pytest

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

from mosaic.exceptions import InputError  # noqa: E402
from mosaic.service.app import Settings, create_app  # noqa: E402

from .conftest import free_port, write_image  # noqa: E402


@contextmanager
def serving(app):
    """An httpx client on ``app`` served by uvicorn on 127.0.0.1 in a thread of this process."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.config.port}", timeout=60) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def app(tmp_path):
    (tmp_path / "data").mkdir()
    write_image(tmp_path / "data" / "a.fits")
    return create_app(Settings(data_dir=tmp_path / "data", store=tmp_path / "s.zarr", token="s3cret"))


def test_token_is_required_except_for_the_page(app):
    with serving(app) as http:
        assert http.get("/").status_code == 200 and http.get("/static/app.js").status_code == 200
        for path in ("/health", "/images", "/algorithms", "/runs"):
            r = http.get(path)
            assert r.status_code == 401 and "token" in r.json()["error"], path
        assert http.get("/images", headers={"Authorization": "Bearer wrong"}).status_code == 401
        images = http.get("/images", headers={"Authorization": "Bearer s3cret"}).json()["images"]
        assert [i["path"] for i in images] == ["a.fits"]
        png = http.get(f"/preview/{images[0]['id']}", params={"token": "s3cret", "max_size": 32})
        assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_a_cluster_runs_are_refused_clearly(app):
    with serving(app) as http:
        auth = {"Authorization": "Bearer s3cret"}
        assert http.get("/health", headers=auth).json()["cluster"] is False
        r = http.post("/runs", json={"config": {"field": "x"}}, headers=auth)
        assert r.status_code == 503 and "cluster" in r.json()["error"]
        r = http.post("/process", json={"image": "img-x", "algorithm": "median"}, headers=auth)
        assert r.status_code == 404 and "GET /images" in r.json()["error"]


def test_a_data_directory_that_is_not_one(tmp_path):
    from mosaic.exceptions import InputError

    with pytest.raises(InputError, match="not a directory"):
        create_app(Settings(data_dir=tmp_path / "missing", store=tmp_path / "s.zarr"))


def test_results_uploads_and_cache_expire_past_the_age_limit(tmp_path):
    """Old results, uploads and cached previews go at start-up and at each sweep; fresh ones and the data stay."""
    import os

    data, state = tmp_path / "data", tmp_path / "state"
    (data / "uploads" / "old").mkdir(parents=True)
    for d in ("results", "cache"):
        (state / d).mkdir(parents=True)
    kept_data = write_image(data / "a.fits")
    hour = 3600.0
    now = time.time()
    aged = {
        data / "uploads" / "old" / "u.fits": 3 * hour,
        data / "uploads" / "new.fits": 0.5 * hour,
        state / "results" / "r.ecsv": 2.5 * hour,
        state / "results" / "s.fits": 1.0 * hour,
        state / "cache" / "p.png": 5 * hour,
    }
    for path, age in aged.items():
        if path.suffix == ".fits":
            write_image(path)
        else:
            path.write_text("x")
        os.utime(path, (now - age, now - age))
    os.utime(kept_data, (now - 100 * hour, now - 100 * hour))  # the data directory's own images never expire
    app = create_app(Settings(data_dir=data, store=tmp_path / "s.zarr", state_dir=state, max_age_hours=2.0))
    left = {p for p in aged if p.exists()}
    assert left == {p for p, age in aged.items() if age < 2 * hour}
    assert kept_data.exists() and not (data / "uploads" / "old").exists()  # emptied folders go too
    with serving(app) as http:
        listed = {i["path"] for i in http.get("/images").json()["images"]}
        assert listed == {"a.fits", "uploads/new.fits", "s.fits"}
        assert http.get("/health").json()["max_age_hours"] == 2.0
    # a later sweep: the fresh upload has aged meanwhile
    os.utime(data / "uploads" / "new.fits", (now - 3 * hour, now - 3 * hour))
    assert app.state.expirer.sweep() == [data / "uploads" / "new.fits"]
    app.state.expirer.stop()
    with pytest.raises(InputError, match="max-age-hours"):
        create_app(Settings(data_dir=data, store=tmp_path / "s.zarr", state_dir=state, max_age_hours=-1.0))
