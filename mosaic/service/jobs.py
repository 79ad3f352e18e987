"""Field runs as jobs on the dask cluster, their state kept on disk.

``POST /runs`` takes a field config (the schema of ``mosaic run``), checks it, writes it to
``<state>/runs/<id>/config.yaml`` and submits :func:`execute_run` to the cluster as a future.
On a worker the job runs every band with :func:`mosaic.pipeline.run_band` on the worker's own
client (``worker_client``: the job's thread leaves the worker's pool while its tasks run), so
the products and each step's record go to the service's store like any ``mosaic run``.

A job's state is files in its folder, replaced whole (``os.replace``): ``job.json`` (status,
times, error, summary; written by the service), ``progress.json`` (band, step, steps done;
written by the job) and ``log.txt`` (the job's log lines). A service that starts again finds
jobs it did not see finish and marks them failed, saying so; ``POST /runs/{id}/retry`` runs
the same config again, which continues from the store (complete steps are not redone).

Cancelling (``DELETE /runs/{id}``) sets a distributed ``Event``: a queued job never starts; a
running one computes on a client of its own, and a watcher thread of the job cancels that
client's futures as soon as the event is set, so the current step stops (its computation
raises) rather than running to its end; the job is reported ``cancelled`` with the step it
stopped in. The store keeps the steps finished before; a retry redoes the stopped one.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

__all__ = ["RunCancelled", "RunConflict", "RunManager", "execute_run"]

log = logging.getLogger(__name__)

#: job statuses; the last three are final
STATUSES = ("queued", "running", "cancelling", "complete", "failed", "cancelled")
FINAL = ("complete", "failed", "cancelled")
#: keys the service sets itself in a submitted config
OVERRIDDEN = ("store", "cluster")


class RunCancelled(RuntimeError):
    """The run was cancelled before this step."""


class RunConflict(RuntimeError):
    """Another run of the same field is not finished (the store takes one run of a field at a time)."""


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


class _Watched:
    """A pipeline step that checks for cancellation and records progress before it runs."""

    def __init__(self, step, before):
        self._step = step
        self._before = before

    def __getattr__(self, name):
        return getattr(self._step, name)

    def run(self, run, **kwargs):
        self._before(run, self._step.name)
        return self._step.run(run, **kwargs)


class _ThreadFilter(logging.Filter):
    def __init__(self, ident: int):
        super().__init__()
        self.ident = ident

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread == self.ident


def _watch_cancel(client, cancel, done: threading.Event, poll: float = 0.2) -> None:
    """Until ``done``: once ``cancel`` is set, cancel every future of the job's own ``client``."""
    from distributed import Future  # noqa: PLC0415

    while not done.is_set():
        try:
            fired = cancel.wait(timeout=poll)
        except Exception:  # the client closing under us at the job's end
            return
        if fired:
            while not done.is_set():
                keys = list(client.futures)  # keys of the futures this client holds
                if keys:
                    log.info("cancelling %d tasks of the run", len(keys))
                    try:
                        client.cancel([Future(key, client=client) for key in keys], force=True)
                    except Exception:
                        return
                done.wait(poll)
            return


def execute_run(run_dir: str, raw: dict, base: str, store_path: str, cancel_name: str) -> dict:
    """Run a field config's bands on the cluster this task runs on (the job of ``POST /runs``).

    Parameters
    ----------
    run_dir : str
        The job's folder: ``progress.json`` and ``log.txt`` are written there.
    raw : dict
        The field config mapping (paths relative to ``base``), its products' folder set.
    base : str
        Folder relative paths are taken from.
    store_path : str
        The service's zarr store.
    cancel_name : str
        Name of the distributed ``Event`` that cancels the run.

    Returns
    -------
    dict
        ``{"ok", "bands": [{band, status, error, failed_step, steps, products}], "seconds"}``.
    """
    from distributed import Client, Event, get_worker, rejoin, secede  # noqa: PLC0415

    from mosaic.config import field_from_mapping  # noqa: PLC0415
    from mosaic.io.store import Store  # noqa: PLC0415
    from mosaic.pipeline import STEPS, check_config, run_band  # noqa: PLC0415

    folder = Path(run_dir)
    handler = logging.FileHandler(folder / "log.txt")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    handler.addFilter(_ThreadFilter(threading.get_ident()))
    root = logging.getLogger("mosaic")
    level = root.level
    root.addHandler(handler)
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
    t0 = time.perf_counter()
    started = _now()
    done = threading.Event()
    watcher = client = None
    where = {}
    # the job's thread leaves the worker's pool while its tasks run (as worker_client does), and
    # computes on a client of its own, whose futures are this run's only
    secede()
    try:
        config = field_from_mapping(raw, base=base)
        check_config(config)
        store = Store(store_path)
        client = Client(get_worker().scheduler.address, set_as_default=False)
        cancel = Event(cancel_name, client=client)
        watcher = threading.Thread(target=_watch_cancel, args=(client, cancel, done), name=f"cancel-{folder.name}", daemon=True)
        watcher.start()
        bands = list(config.bands)

        def before(run, step):
            if cancel.is_set():
                raise RunCancelled(f"cancelled before {run.band} {step}")
            where.update(band=run.band, step=step)
            names = [s.name for s in STEPS if s.enabled(run)]
            fraction = (bands.index(run.band) + names.index(step) / len(names)) / len(bands)
            _write_json(folder / "progress.json", {"band": run.band, "step": step, "fraction": round(fraction, 4),
                                                    "started": started, "updated": _now()})

        steps = tuple(_Watched(s, before) for s in STEPS)
        reports = []
        with client.as_current():
            for band in bands:
                if cancel.is_set():
                    raise RunCancelled(f"cancelled before band {band}")
                reports.append(run_band(config, band, store, client=client, steps=steps))
                if cancel.is_set() and reports[-1].error and not reports[-1].error.startswith("RunCancelled"):
                    raise RunCancelled(f"cancelled during {where.get('band')} {where.get('step')} (its tasks were stopped)")
        stopped = [r.error for r in reports if r.error and r.error.startswith("RunCancelled")]
        if stopped:
            raise RunCancelled(stopped[0].removeprefix("RunCancelled: "))
        summary = {
            "ok": all(r.ok for r in reports),
            "seconds": round(time.perf_counter() - t0, 3),
            "bands": [
                {"band": r.band, "status": r.status, "error": r.error, "failed_step": r.failed_step,
                 "steps": [{"step": s.step, "status": s.status, "seconds": round(s.seconds, 3), "detail": s.detail} for s in r.rows],
                 "products": r.products}
                for r in reports
            ],
        }
        _write_json(folder / "progress.json", {"band": None, "step": None, "fraction": 1.0, "started": started, "updated": _now()})
        return summary
    finally:
        done.set()
        if watcher is not None:
            watcher.join(timeout=10)
        if client is not None:
            client.close()
        rejoin()
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()


class RunManager:
    """The field runs of a service: submitted to a client, state kept in ``<folder>/<id>/``.

    Parameters
    ----------
    folder : Path
        Where the runs' folders are.
    data_dir : Path
        Inputs must lie inside it; relative paths of a config are taken from it.
    store_path : Path
        The store every run writes to.
    client : distributed.Client or None
        The cluster; without one, ``submit`` refuses.
    """

    def __init__(self, folder: Path, data_dir: Path, store_path: Path, client=None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.data_dir = Path(data_dir).resolve()
        self.store_path = Path(store_path)
        self.client = client
        self._futures: dict[str, object] = {}
        self._lock = threading.Lock()
        self._recover()

    # -- state ---------------------------------------------------------------------------------------

    def _job_file(self, run_id: str) -> Path:
        return self.folder / run_id / "job.json"

    def _recover(self) -> None:
        """Jobs a previous service did not see finish: failed, and said why."""
        for job_file in sorted(self.folder.glob("*/job.json")):
            job = _read_json(job_file)
            if job.get("status") in FINAL or not job:
                continue
            progress = _read_json(job_file.parent / "progress.json")
            where = f" during {progress['band']} {progress['step']}" if progress.get("step") else ""
            job.update(status="failed", finished=_now(),
                       error=f"the service stopped before this run finished{where}; POST /runs/{job['id']}/retry continues it from the store")
            _write_json(job_file, job)
            log.warning("run %s: %s", job["id"], job["error"])

    def _update(self, run_id: str, **changes) -> dict:
        with self._lock:
            job = _read_json(self._job_file(run_id))
            job.update(changes)
            _write_json(self._job_file(run_id), job)
            return job

    # -- checking a config ---------------------------------------------------------------------------

    def check(self, raw, products: Path) -> dict:
        """The config mapping to run: checked, inputs inside the data directory, outputs the service's.

        Raises
        ------
        mosaic.config.ConfigError
            Naming the key at fault (also for inputs outside the data directory).
        """
        from mosaic.config import ConfigError, field_from_mapping  # noqa: PLC0415
        from mosaic.pipeline import check_config  # noqa: PLC0415

        if not isinstance(raw, Mapping):
            raise ConfigError(f"config: got {type(raw).__name__}; expected a mapping (the schema of mosaic run)")
        raw = {k: v for k, v in raw.items() if k not in OVERRIDDEN}
        products_raw = raw.get("products") or {}
        if not isinstance(products_raw, Mapping):
            raise ConfigError(f"products: got {products_raw!r}; expected a mapping")
        raw["products"] = {**products_raw, "outdir": str(products)}
        config = field_from_mapping(raw, base=self.data_dir, default_name="field")
        config.check_inputs()
        for band, cfg in config.bands.items():
            paths = [*cfg.exposure_paths(f"bands.{band}.inputs"), Path(cfg.psf)]
            for p in paths:
                if not Path(p).resolve().is_relative_to(self.data_dir):
                    raise ConfigError(f"bands.{band}: {p} is outside the data directory; expected inputs under it")
        if config.grid.header is not None and not Path(config.grid.header).resolve().is_relative_to(self.data_dir):
            raise ConfigError("grid.header: outside the data directory; expected a file under it")
        check_config(config)
        return raw

    # -- submitting, watching, cancelling ------------------------------------------------------------

    def submit(self, raw, *, run_id: str | None = None) -> dict:
        """Check a config and submit its run; returns the job record."""
        if self.client is None:
            raise RuntimeError("this service runs without a cluster; start it with a cluster to run fields")
        new = run_id is None
        run_id = run_id or f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        folder = self.folder / run_id
        products = folder / "products"
        checked = self.check(raw, products)
        field = checked.get("field", "field")
        for other in self.ids():
            job = _read_json(self._job_file(other))
            if other != run_id and job.get("field") == field and job.get("status") not in FINAL:
                raise RunConflict(f"run {other} of field {field!r} is {job.get('status')}; wait for it or cancel it "
                                  f"(the store takes one run of a field at a time)")
        folder.mkdir(parents=True, exist_ok=True)
        products.mkdir(exist_ok=True)
        (folder / "progress.json").unlink(missing_ok=True)
        job = _read_json(self._job_file(run_id)) if not new else {}
        job.update(id=run_id, field=field, status="queued", submitted=_now(), started=None,
                   finished=None, error=None, summary=None, config=checked, attempts=job.get("attempts", 0) + 1)
        _write_json(self._job_file(run_id), job)
        import yaml  # noqa: PLC0415

        (folder / "config.yaml").write_text(yaml.safe_dump(checked, sort_keys=False))
        self._start(run_id, checked)
        return self.get(run_id)

    def _start(self, run_id: str, raw: dict) -> None:
        from distributed import Event  # noqa: PLC0415

        cancel_name = f"mosaic-cancel-{run_id}"
        Event(cancel_name, client=self.client).clear()
        future = self.client.submit(execute_run, str(self.folder / run_id), raw, str(self.data_dir), str(self.store_path),
                                    cancel_name, key=f"mosaic-run-{run_id}-{uuid.uuid4().hex[:6]}", pure=False, retries=0)
        with self._lock:
            self._futures[run_id] = future
        future.add_done_callback(lambda f, rid=run_id: self._finished(rid, f))
        log.info("run %s submitted", run_id)

    def _finished(self, run_id: str, future) -> None:
        try:
            status = future.status
            if status == "finished":
                summary = future.result()
                self._update(run_id, status="complete" if summary["ok"] else "failed", finished=_now(), summary=summary,
                             error=None if summary["ok"] else "; ".join(f"{b['band']}: {b['error']}" for b in summary["bands"] if b["error"]))
            elif status == "cancelled":
                self._update(run_id, status="cancelled", finished=_now(), error="cancelled before it started")
            else:
                err = future.exception()
                if isinstance(err, RunCancelled):
                    self._update(run_id, status="cancelled", finished=_now(), error=str(err))
                else:
                    self._update(run_id, status="failed", finished=_now(), error=f"{type(err).__name__}: {err}")
        except Exception as err:  # a callback must never raise into the client's loop
            log.exception("run %s: could not record its end", run_id)
            self._update(run_id, status="failed", finished=_now(), error=f"{type(err).__name__}: {err}")
        finally:
            with self._lock:
                self._futures.pop(run_id, None)
        log.info("run %s: %s", run_id, _read_json(self._job_file(run_id)).get("status"))

    def cancel(self, run_id: str) -> dict:
        """Cancel a run: a queued one at once, a running one in its current step (its tasks are cancelled)."""
        from distributed import Event  # noqa: PLC0415

        job = self.get(run_id)
        if job["status"] in FINAL:
            return job
        Event(f"mosaic-cancel-{run_id}", client=self.client).set()
        with self._lock:
            future = self._futures.get(run_id)
        if job["status"] == "queued" and future is not None and not (self.folder / run_id / "progress.json").exists():
            self.client.cancel(future)
        if _read_json(self._job_file(run_id)).get("status") not in FINAL:
            self._update(run_id, status="cancelling")
        return self.get(run_id)

    def retry(self, run_id: str) -> dict:
        """Run a finished (failed or cancelled) run's config again; complete steps are read back."""
        job = self.get(run_id)
        if job["status"] not in ("failed", "cancelled"):
            raise ValueError(f"run {run_id} is {job['status']}; expected a failed or cancelled run to retry")
        return self.submit(job["config"], run_id=run_id)

    # -- reading -------------------------------------------------------------------------------------

    def ids(self) -> list[str]:
        return sorted((p.parent.name for p in self.folder.glob("*/job.json")), reverse=True)

    def get(self, run_id: str, *, log_lines: int = 40) -> dict:
        """The job record with its progress and the tail of its log.

        Raises
        ------
        KeyError
            No such run.
        """
        if "/" in run_id or run_id.startswith(".") or not self._job_file(run_id).is_file():
            raise KeyError(f"no run is called {run_id!r}")
        job = _read_json(self._job_file(run_id))
        progress = _read_json(self.folder / run_id / "progress.json")
        if job.get("status") == "queued" and progress:
            job["status"] = "running"
        fraction = 1.0 if job.get("status") == "complete" else float(progress.get("fraction", 0.0))
        job["started"] = job.get("started") or progress.get("started")
        job["step"] = progress.get("step")
        job["band"] = progress.get("band")
        job["progress"] = round(fraction, 4)
        log_file = self.folder / run_id / "log.txt"
        lines = log_file.read_text(errors="replace").splitlines() if log_file.exists() else []
        job["log"] = lines[-log_lines:]
        return job
