"""The FastAPI application of ``mosaic serve``: the registry, images, processing, runs, a web page.

Endpoints (JSON unless said; every error is ``{"error": message, ...}`` with a 4xx/5xx status,
never a traceback):

- ``GET /algorithms``: the registry (:mod:`mosaic.registry`), with what ``/process`` can set;
- ``GET /images``, ``GET /images/{id}``, ``GET /images/{id}/file``; ``POST /images`` (upload a
  FITS file, size-limited, validated before it is kept); ``POST /images/register``
  (``{"path": "relative/to/data.fits"}``);
- ``POST /process``: one algorithm or a chain of them on one image or a batch of images;
  ``POST /background/{id}``, ``POST /detect/{id}`` are its one-step shorthands;
- ``GET /preview/{id}`` (PNG), ``GET /statistics/{id}``;
- ``GET /catalogs``, ``GET /catalogs/{id}?format=json|ecsv|parquet``;
- ``GET /runs``, ``POST /runs`` (a field config), ``GET /runs/{id}``, ``DELETE /runs/{id}``,
  ``POST /runs/{id}/retry``;
- ``GET /`` the web page, ``GET /health``.

Computations run on the service's dask client (its default client: the cluster), never on
threads of the web process beyond waiting for them.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import secrets
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from fastapi import Body, FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from mosaic.exceptions import InputError
from mosaic.service import process as processing
from mosaic.service.expiry import Expirer
from mosaic.service.files import (
    CATALOG_SUFFIXES,
    FITS_SUFFIXES,
    FileIndex,
    PathRefused,
    UploadRefused,
    confined,
    image_metadata,
    store_upload,
)
from mosaic.service.jobs import RunConflict, RunManager

__all__ = ["ServiceError", "Settings", "create_app"]

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
#: longest side a preview may be asked for
MAX_PREVIEW = 4096


@dataclass(frozen=True)
class Settings:
    """What a service serves and how.

    Attributes
    ----------
    data_dir : Path
        Images are read from here and uploads written to its ``uploads/``; nothing else is read.
    store : Path
        The zarr store of field runs.
    state_dir : Path or None
        Results, runs and caches (default ``<store>.service`` beside the store).
    max_upload_bytes : int
        Larger uploads are refused (413).
    token : str or None
        When set, every request but the page and its files needs ``Authorization: Bearer <token>``
        (or ``?token=`` for images the page shows).
    dashboard : str or None
        The dask dashboard's address, linked from the page.
    max_age_hours : float or None
        Results of ``/process``, uploads and cached previews older than this are deleted
        (:mod:`mosaic.service.expiry`); None keeps them.
    """

    data_dir: Path
    store: Path
    state_dir: Path | None = None
    max_upload_bytes: int = 256 * 2**20
    token: str | None = None
    dashboard: str | None = None
    max_age_hours: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def state(self) -> Path:
        return Path(self.state_dir) if self.state_dir is not None else Path(f"{Path(self.store)}.service")


class ServiceError(Exception):
    """An error to answer with: HTTP ``status`` and a JSON body ``{"error": message, **extra}``."""

    def __init__(self, status: int, message: str, **extra):
        super().__init__(message)
        self.status = status
        self.extra = extra


def _jsonable(v):
    if isinstance(v, float | np.floating):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple | np.ndarray):
        return [_jsonable(x) for x in v]
    return v


def _table_json(table) -> dict:
    """A catalogue as ``{"columns": [{name, unit}], "rows": [[...]]}`` (NaN as null)."""
    columns, values = [], []
    for name in table.colnames:
        col = table[name]
        if getattr(col, "ndim", 1) != 1 or not hasattr(col, "dtype") and not hasattr(col, "value"):
            continue
        unit = getattr(col, "unit", None)
        data = np.asarray(getattr(col, "value", col))
        if data.ndim != 1 or data.dtype.kind not in "biufUS":
            continue
        columns.append({"name": name, "unit": str(unit) if unit not in (None, "") else None})
        values.append([_jsonable(x.item() if hasattr(x, "item") else x) for x in data])
    rows = [list(r) for r in zip(*values, strict=True)] if values else []
    return {"columns": columns, "n_rows": len(table), "rows": rows, "meta": _jsonable({k: v for k, v in table.meta.items()
                                                                                        if isinstance(v, str | int | float)})}


class Memo:
    """Previews and statistics kept in a folder, keyed by the file's path, size, time and the request.

    Concurrent requests for one key wait for the first to make it, instead of each reading the image.
    """

    def __init__(self, folder: Path):
        self.folder = folder
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, source: Path, request: tuple, suffix: str, make) -> bytes:
        st = source.stat()
        key = hashlib.sha1(repr((str(source), st.st_size, st.st_mtime_ns, request)).encode()).hexdigest()
        path = self.folder / f"{key}{suffix}"
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if path.exists():
                os.utime(path)  # in use: its age restarts (expiry)
            else:
                tmp = self.folder / f".{key}.{uuid.uuid4().hex[:8]}{suffix}"
                try:
                    make(tmp)
                    os.replace(tmp, path)
                finally:
                    tmp.unlink(missing_ok=True)
        return path.read_bytes()


def create_app(settings: Settings, *, client=None) -> FastAPI:
    """The service's application.

    Parameters
    ----------
    settings : Settings
    client : distributed.Client, optional
        The cluster jobs and computations go to; without one, ``/runs`` refuses and image
        computations use dask's local threads.
    """
    data_dir = Path(settings.data_dir).resolve()
    if not data_dir.is_dir():
        raise InputError(f"--data {settings.data_dir}: not a directory; expected the folder of the images to serve")
    state = settings.state
    results, runs_dir, cache = state / "results", state / "runs", state / "cache"
    for d in (results, runs_dir, cache):
        d.mkdir(parents=True, exist_ok=True)
    index = FileIndex({"data": data_dir, "results": results, "runs": runs_dir})
    runs = RunManager(runs_dir, data_dir, Path(settings.store), client=client)
    memo = Memo(cache)
    expirer = None
    if settings.max_age_hours is not None:
        if not (math.isfinite(settings.max_age_hours) and settings.max_age_hours > 0):
            raise InputError(f"--max-age-hours {settings.max_age_hours}: expected a number of hours > 0")
        expirer = Expirer([results, cache, data_dir / "uploads"], settings.max_age_hours * 3600).start()

    app = FastAPI(title="mosaic service", version="1",
                  description="Algorithms of mosaic's registry on FITS images, and field runs on a dask cluster.")
    app.state.settings, app.state.index, app.state.runs, app.state.client = settings, index, runs, client
    app.state.expirer = expirer

    # -- errors ---------------------------------------------------------------------------------------

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, err: ServiceError):
        return JSONResponse({"error": str(err), **err.extra}, status_code=err.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException):
        return JSONResponse({"error": str(err.detail)}, status_code=err.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, err: RequestValidationError):
        problems = [{"where": ".".join(str(x) for x in e.get("loc", ())), "message": e.get("msg")} for e in err.errors()]
        text = "; ".join(f"{p['where']}: {p['message']}" for p in problems)
        return JSONResponse({"error": f"bad request: {text}", "problems": problems}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception):
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"error": f"internal error: {type(err).__name__}: {err}"}, status_code=500)

    @app.middleware("http")
    async def _auth(request: Request, call_next):
        if settings.token and not (request.url.path == "/" or request.url.path.startswith("/static/")):
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip() or request.query_params.get("token", "")
            if not secrets.compare_digest(given.encode(), settings.token.encode()):
                return JSONResponse({"error": "missing or wrong token; send 'Authorization: Bearer <token>'"}, status_code=401)
        return await call_next(request)

    # -- helpers --------------------------------------------------------------------------------------

    def image(file_id: str):
        entry = index.find(file_id, FITS_SUFFIXES)
        if entry is None:
            raise ServiceError(404, f"no image has id {file_id!r}; GET /images lists them")
        return entry

    def catalog(file_id: str):
        entry = index.find(file_id, CATALOG_SUFFIXES)
        if entry is None:
            raise ServiceError(404, f"no catalogue has id {file_id!r}; GET /catalogs lists them")
        return entry

    def computing(what: str):
        """Library errors about the input as 422s naming the problem."""

        class _Guard:
            def __enter__(self):
                return self

            def __exit__(self, kind, err, tb):
                if err is None or isinstance(err, ServiceError):
                    return False
                if isinstance(err, InputError | ValueError | TypeError):
                    raise ServiceError(422, f"{what}: {err}") from None
                return False

        return _Guard()

    # -- the page -------------------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/health", summary="The service is up; its cluster's dashboard")
    def health():
        return {"status": "ok", "dashboard": settings.dashboard or (client.dashboard_link if client is not None else None),
                "cluster": client is not None, "max_upload_bytes": settings.max_upload_bytes, "max_preview": MAX_PREVIEW,
                "max_age_hours": settings.max_age_hours}

    # -- algorithms -----------------------------------------------------------------------------------

    @app.get("/algorithms", summary="Every registered algorithm with typed parameters (seed 001 sec. 4.4)")
    def algorithms():
        return {"algorithms": _jsonable(processing.describe())}

    # -- images ---------------------------------------------------------------------------------------

    @app.get("/images", summary="The images: files under the data directory, results of /process, run products")
    def list_images():
        return {"images": [{"id": e.id, "path": e.rel, "root": e.root} for e in index.scan(FITS_SUFFIXES)]}

    @app.get("/images/{image_id}", summary="An image's shape, band, units and WCS footprint")
    def get_image(image_id: str):
        with computing(f"image {image_id}"):
            return image_metadata(image(image_id))

    @app.get("/images/{image_id}/file", summary="The FITS file itself")
    def get_image_file(image_id: str):
        e = image(image_id)
        return FileResponse(e.path, media_type="application/fits", filename=e.path.name)

    @app.post("/images/register", summary="An image under the data directory, by its relative path")
    def register_image(body: dict = Body(..., examples=[{"path": "field/image.fits"}])):
        name = body.get("path")
        try:
            path = confined(data_dir, name)
        except PathRefused as err:
            raise ServiceError(422 if "no such" not in str(err) else 404, str(err), parameter="path") from None
        if path.suffix.lower() not in FITS_SUFFIXES:
            raise ServiceError(422, f"path {name!r}: expected a FITS file ending in one of {list(FITS_SUFFIXES)}", parameter="path")
        with computing(f"path {name!r}"):
            return image_metadata(index.entry("data", path))

    @app.post("/images", status_code=201, summary="Upload a FITS image (size-limited, validated before it is kept)")
    def upload_image(file: UploadFile = File(...)):
        def chunks():
            while True:
                block = file.file.read(1 << 20)
                if not block:
                    return
                yield block

        try:
            path = store_upload(chunks(), data_dir / "uploads", file.filename, max_bytes=settings.max_upload_bytes)
        except UploadRefused as err:
            raise ServiceError(err.status, str(err)) from None
        return image_metadata(index.entry("data", path))

    # -- processing -----------------------------------------------------------------------------------

    def _process_one(image_id: str, steps, name: str) -> dict:
        from mosaic.io.catalogs import write_catalog  # noqa: PLC0415
        from mosaic.io.images import read_fits_image, write_fits_image  # noqa: PLC0415

        entry = image(image_id)
        with computing(f"image {image_id}"):
            src = read_fits_image(entry.path, dtype=np.float64)
            kind, result = processing.run_steps(src.data, steps, wcs=src.wcs)
            out = {"image": image_id, "result": kind, "steps": [s.operation.name for s in steps]}
            stem = f"{Path(entry.rel).stem}_{name}_{uuid.uuid4().hex[:8]}"
            if kind == "image":
                path = write_fits_image(results / f"{stem}.fits", {"SCI": result.astype(np.float32)}, header=src.header,
                                        history=[f"mosaic service: {s.operation.name} {json.dumps(s.kwargs)}" for s in steps])
                out["id"] = index.entry("results", path).id
            elif kind == "table":
                path = write_catalog(result, results / f"{stem}.ecsv")
                out["id"] = index.entry("results", path).id
                out["n_sources"] = len(result)
            else:
                value = result
                if isinstance(value, tuple):
                    value = list(value)
                out["values"] = _jsonable(np.asarray(value).tolist() if isinstance(value, np.ndarray) else value)
        return out

    def _run_process(body: dict) -> dict:
        if not isinstance(body, dict):
            raise ServiceError(422, "expected a JSON object with 'image' (or 'images') and 'algorithm' or 'steps'")
        try:
            steps = processing.parse_steps({k: v for k, v in body.items() if k in ("algorithm", "params", "steps")})
        except processing.ParameterError as err:
            raise ServiceError(422, str(err), parameter=err.parameter, allowed=err.allowed, step=err.step) from None
        unknown = sorted(set(body) - {"algorithm", "params", "steps", "image", "images"})
        if unknown:
            raise ServiceError(422, f"unknown keys {unknown}; expected 'image' or 'images', and 'algorithm' (+ 'params') or 'steps'",
                               parameter=unknown[0])
        ids = body.get("images") if "images" in body else [body.get("image")]
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise ServiceError(422, "expected 'image': an image id, or 'images': a list of image ids", parameter="image")
        for i in ids:
            image(i)  # 404 before any work
        name = "-".join(s.operation.name for s in steps)
        outputs = [_process_one(i, steps, name) for i in ids]
        return outputs[0] if "images" not in body else {"results": outputs}

    @app.post("/process", summary="Run an algorithm, or a chain of them, on an image (or a batch of images)")
    def process(body: dict = Body(..., examples=[{"image": "img-...", "steps": [
            {"algorithm": "background_2d", "params": {"box_size": 32}},
            {"algorithm": "detect_segmentation", "params": {"threshold": 5.0}}]}])):
        return _run_process(body)

    @app.post("/background/{image_id}", summary="Subtract the Background2D background (one-step /process)")
    def background(image_id: str, params: dict = Body(default={})):
        return _run_process({"image": image_id, "algorithm": "background_2d", "params": params})

    @app.post("/detect/{image_id}", summary="Detect sources (one-step /process; method: segmentation or daofind)")
    def detect(image_id: str, params: dict = Body(default={})):
        params = dict(params)
        method = params.pop("method", "segmentation")
        if method not in ("segmentation", "daofind"):
            raise ServiceError(422, f"method {method!r}: expected one of ['segmentation', 'daofind']", parameter="method",
                               allowed=["segmentation", "daofind"])
        return _run_process({"image": image_id, "algorithm": f"detect_{method}", "params": params})

    # -- results --------------------------------------------------------------------------------------

    @app.get("/preview/{image_id}", summary="A PNG preview: block means to max_size, then a stretch",
             response_class=Response, responses={200: {"content": {"image/png": {}}}})
    def preview(image_id: str, stretch: str = "asinh", interval: str = "percentile", percent: float = Query(99.5, gt=0, le=100),
                max_size: int = Query(1024, ge=8, le=MAX_PREVIEW), cmap: str = "gray"):
        from mosaic.viz.preview import preview_array, write_png  # noqa: PLC0415
        from mosaic.viz.stretch import INTERVALS, STRETCHES  # noqa: PLC0415

        for key, value, allowed in (("stretch", stretch, STRETCHES), ("interval", interval, INTERVALS)):
            if value not in allowed:
                raise ServiceError(422, f"{key} {value!r} is unknown; expected one of {list(allowed)}", parameter=key, allowed=list(allowed))
        entry = image(image_id)

        # write_preview's two halves: the block means (the costly read, kept per size) and the stretch
        def block_means(out: Path):
            np.save(out, preview_array(entry.path, max_size=max_size))

        def make(out: Path):
            small = np.load(io.BytesIO(memo.get(entry.path, ("block means", max_size), ".npy", block_means)))
            write_png(out, small, stretch=stretch, interval=interval, percent=percent, cmap=cmap)

        with computing(f"preview of {image_id}"):
            png = memo.get(entry.path, ("preview", stretch, interval, percent, max_size, cmap), ".png", make)
        return Response(png, media_type="image/png")

    @app.get("/statistics/{image_id}", summary="Robust statistics of an image (mosaic.image.stats.image_statistics)")
    def statistics(image_id: str, sigma: float = Query(3.0, gt=0), maxiters: int = Query(5, ge=1, le=100)):
        from mosaic.image.stats import image_statistics  # noqa: PLC0415
        from mosaic.io.images import read_fits_image  # noqa: PLC0415

        entry = image(image_id)

        def make(out: Path):
            stats = image_statistics(read_fits_image(entry.path).data, sigma=sigma, maxiters=maxiters)
            out.write_text(json.dumps(_jsonable(stats)))

        with computing(f"statistics of {image_id}"):
            stats = json.loads(memo.get(entry.path, ("statistics", sigma, maxiters), ".json", make))
        return {"id": image_id, **stats}

    @app.get("/catalogs", summary="The catalogues: results of /process and run products")
    def list_catalogs():
        return {"catalogs": [{"id": e.id, "path": e.rel, "root": e.root} for e in index.scan(CATALOG_SUFFIXES)]}

    @app.get("/catalogs/{catalog_id}", summary="A catalogue as JSON, ECSV or Parquet")
    def get_catalog(catalog_id: str, format: str = "json"):
        from mosaic.io.catalogs import read_catalog, write_catalog  # noqa: PLC0415

        formats = ("json", "ecsv", "parquet")
        if format not in formats:
            raise ServiceError(422, f"format {format!r} is unknown; expected one of {list(formats)}", parameter="format", allowed=list(formats))
        entry = catalog(catalog_id)
        if entry.path.suffix.lower() == f".{format}":
            media = "text/plain" if format == "ecsv" else "application/vnd.apache.parquet"
            return FileResponse(entry.path, media_type=media, filename=entry.path.name)
        table = read_catalog(entry.path)
        if format == "json":
            return {"id": catalog_id, "path": entry.rel, **_table_json(table)}
        out = cache / f".catalog-{uuid.uuid4().hex}.{format}"
        try:
            write_catalog(table, out)
            return Response(out.read_bytes(), media_type="text/plain" if format == "ecsv" else "application/vnd.apache.parquet")
        finally:
            out.unlink(missing_ok=True)

    # -- runs -----------------------------------------------------------------------------------------

    def run_or_404(run_id: str) -> dict:
        try:
            return runs.get(run_id)
        except KeyError as err:
            raise ServiceError(404, f"{err.args[0]}; GET /runs lists them") from None

    @app.get("/runs", summary="The field runs, newest first")
    def list_runs():
        out = []
        for rid in runs.ids():
            job = runs.get(rid, log_lines=0)
            out.append({k: job.get(k) for k in ("id", "field", "status", "step", "band", "progress", "submitted", "finished", "error")})
        return {"runs": out}

    @app.post("/runs", status_code=201, summary="Run a field config (the schema of `mosaic run`) on the cluster")
    def submit_run(config: dict = Body(..., embed=True)):
        from mosaic.config import ConfigError  # noqa: PLC0415

        if client is None:
            raise ServiceError(503, "this service has no cluster; start `mosaic serve` with one to run fields")
        try:
            return runs.submit(config)
        except RunConflict as err:
            raise ServiceError(409, str(err)) from None
        except (ConfigError, InputError, FileNotFoundError) as err:
            raise ServiceError(422, f"config: {err}") from None

    @app.get("/runs/{run_id}", summary="A run: status, band, step, progress fraction and the tail of its log")
    def get_run(run_id: str, log_lines: int = Query(40, ge=0, le=2000)):
        run_or_404(run_id)
        job = runs.get(run_id, log_lines=log_lines)
        job["images"] = [{"id": e.id, "path": e.rel} for e in index.scan(FITS_SUFFIXES) if e.root == "runs" and e.rel.startswith(f"{run_id}/")]
        job["catalogs"] = [{"id": e.id, "path": e.rel} for e in index.scan(CATALOG_SUFFIXES) if e.root == "runs" and e.rel.startswith(f"{run_id}/")]
        return job

    @app.delete("/runs/{run_id}", summary="Cancel a run (a running one stops before its next step)")
    def cancel_run(run_id: str):
        run_or_404(run_id)
        return runs.cancel(run_id)

    @app.post("/runs/{run_id}/retry", status_code=201, summary="Run a failed or cancelled run again; complete steps are read back")
    def retry_run(run_id: str):
        run_or_404(run_id)
        if client is None:
            raise ServiceError(503, "this service has no cluster; start `mosaic serve` with one to run fields")
        try:
            return runs.retry(run_id)
        except (ValueError, RunConflict) as err:
            raise ServiceError(409, str(err)) from None

    return app
