"""A field's run: for every band, the steps in order, recorded in the store so a re-run resumes.

The store's manifest of each field/band holds the run's status (``pipeline/run``: ``started``,
``complete`` or ``failed`` with the error text and the step that failed) and one record per
step (``pipeline/<step>``, see :mod:`mosaic.pipeline.steps`). A band whose status is complete
for the same configuration and inputs, with all its files on disk, is not touched again; a band
that was killed or failed continues with its first step that is not complete. One band
failing does not stop the others.

Before anything is allocated, every band is planned (:func:`plan_band`: the output grid from
the headers, bytes of products and staging, memory per tile task) and refused beyond the limits
of :mod:`mosaic.io.plan`; ``mosaic run --check`` runs the same plan. The store is driven by one
process at a time: a run holds the store's lock (:meth:`mosaic.io.store.Store.writing`), and a
second writer is refused. Temporary groups left by a killed run are removed when its field/band
starts again, and a product or checkpoint whose checksums no longer match is recomputed.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mosaic.config import ConfigError, FieldConfig
from mosaic.pipeline.steps import STEPS, BandRun, Step, digest, file_token

__all__ = ["BandReport", "FieldReport", "PlanRefusedError", "StepRow", "check_config", "format_table", "plan_band", "run_band", "run_field"]

log = logging.getLogger(__name__)

STATUS = "pipeline/run"

#: (module, function) of the colour composite: ``fn(path, {band: (data, wcs)}, mapping=..., max_size=...) -> Path``
RGB_FUNCTION = ("mosaic.viz.rgb", "write_rgb")


class PlanRefusedError(ConfigError):
    """A band refused by its pre-flight plan (:func:`plan_band`): beyond a limit, or inputs that would pass one."""


@dataclass
class StepRow:
    """One step of one band in the summary.

    Attributes
    ----------
    step : str
    status : str
        ``done`` (computed now), ``resumed`` (complete before: read back, not redone),
        ``off`` (disabled), ``failed``.
    seconds : float
    detail : str
    products : dict
    """

    step: str
    status: str
    seconds: float = 0.0
    detail: str = ""
    products: dict = field(default_factory=dict)


@dataclass
class BandReport:
    """What happened to one band of a field.

    Attributes
    ----------
    field, band : str
    status : str
        ``complete``, ``resumed`` (complete before, nothing done) or ``failed``.
    seconds : float
    rows : list of StepRow
    error : str or None
        ``"<ExceptionType>: <message>"`` of a failure.
    failed_step : str or None
    """

    field: str
    band: str
    status: str
    seconds: float = 0.0
    rows: list = field(default_factory=list)
    error: str | None = None
    failed_step: str | None = None

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    @property
    def products(self) -> dict:
        """``{"<step>/<name>": path}`` of every file this band has."""
        return {f"{r.step}/{k}": v for r in self.rows for k, v in r.products.items()}


@dataclass
class FieldReport:
    """The bands of a field run, with a summary table (:meth:`table`)."""

    field: str
    bands: list = field(default_factory=list)
    seconds: float = 0.0
    rgb: StepRow | None = None

    @property
    def ok(self) -> bool:
        return all(b.ok for b in self.bands) and (self.rgb is None or self.rgb.status != "failed")

    def failures(self) -> list[BandReport]:
        return [b for b in self.bands if not b.ok]

    def table(self) -> str:
        """The summary: per band, every step's status, time and what it made."""
        rows = []
        for b in self.bands:
            if not b.rows:
                rows.append([b.band, "-", b.status, f"{b.seconds:.1f}", b.error or ""])
            for r in b.rows:
                rows.append([b.band, r.step, r.status, f"{r.seconds:.1f}" if r.status != "off" else "", r.detail])
        n_ok = sum(b.ok for b in self.bands)
        head = f"field {self.field}: {n_ok}/{len(self.bands)} band(s) complete in {self.seconds:.1f} s"
        lines = [head, format_table(["band", "step", "status", "seconds", "detail"], rows)]
        if self.rgb is not None:
            rows.append(["-", "rgb", self.rgb.status, f"{self.rgb.seconds:.1f}", self.rgb.detail])
        products = [[b.band, k, v] for b in self.bands for k, v in b.products.items()]
        if self.rgb is not None and self.rgb.products:
            products.append(["-", "rgb", self.rgb.products["rgb"]])
        if products:
            lines += ["products:", format_table(["band", "product", "path"], products)]
        for b in self.failures():
            lines.append(f"FAILED {self.field}/{b.band} at {b.failed_step or 'start'}: {b.error}")
        return "\n".join(lines)


def format_table(header: list[str], rows: list[list]) -> str:
    """A plain-text table with aligned columns."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _available(module: str, function: str) -> bool:
    import importlib  # noqa: PLC0415

    try:
        return hasattr(importlib.import_module(module), function)
    except ImportError:
        return False


def check_config(config: FieldConfig, steps: tuple[Step, ...] = STEPS, *, plan: bool = False) -> None:
    """Check what a config asks of the steps: options they take, functions that exist; and plan every band.

    Parameters
    ----------
    config : FieldConfig
    steps : tuple of Step
    plan : bool
        Also plan every band (:func:`plan_band`: reads the exposures' and PSFs' headers), as
        ``mosaic run --check`` does and every run does before it starts.

    Raises
    ------
    ConfigError
        Naming the file and the key (``preprocessing.outliers.snr``), or the band and the
        exposures a plan refuses.
    """
    prefix = f"{config.source}: " if config.source is not None else ""
    try:
        for step in steps:
            step.check(config)
        if config.products.rgb is not None and not _available(*RGB_FUNCTION):
            raise ConfigError(f"products.rgb: needs {'.'.join(RGB_FUNCTION)}, which this installation lacks; expected null")
    except ConfigError as err:
        raise ConfigError(f"{prefix}{err}") from None
    if plan:
        for band in config.bands:
            log.info("plan: %s", plan_band(config, band).describe())


def plan_band(config: FieldConfig, band: str):
    """The pre-flight plan of one band (:class:`mosaic.io.plan.RunPlan`), checked against the limits.

    Reads headers only: the exposures' (a truncated file, a broken WCS, exposures that stretch
    the grid past ``mosaic.limits.max-grid-side`` are refused by name) and the PSFs' (one that
    cannot be normalised is refused by name).

    Raises
    ------
    PlanRefusedError
        Naming the config file, the band, what passes which limit, and the exposures to blame.
    ConfigError
        For inputs that cannot be read (named).
    """
    from mosaic.exceptions import InputError, LimitError  # noqa: PLC0415
    from mosaic.io.plan import plan_run  # noqa: PLC0415
    from mosaic.pipeline.steps import psf_for_exposures  # noqa: PLC0415

    prefix = f"{config.source}: bands.{band}" if config.source is not None else f"bands.{band}"
    try:
        bcfg = config.bands[band]
        paths = bcfg.exposure_paths(f"bands.{band}.inputs")
        psfs = psf_for_exposures(paths, band, bcfg.psf, where=f"bands.{band}.psf")
        grid, scale, exposure_pixels = _planned_grid(config, paths)
        psf_size = _psf_side(sorted(set(psfs)), scale)
        u = config.updc
        plan = plan_run(
            grid, name=f"{config.field}/{band}", n_exposures=len(paths), drizzle=config.drizzle.enabled,
            iterations=u.iterations if u.enabled else 0, saved=len(u.saved()) if u.enabled else 0, psf_size=psf_size,
            exposure_pixels=exposure_pixels,
        )
        plan.check(outdir=config.outdir, store=config.store_path, worker_memory=_worker_memory(config))
    except LimitError as err:
        raise PlanRefusedError(f"{prefix}: {err}") from None
    except (InputError, OSError) as err:
        raise ConfigError(f"{prefix}: {err}") from None
    return plan


def _worker_memory(config: FieldConfig) -> int | None:
    """A worker's memory limit in bytes where the config gives one as a size (else None: unknown here)."""
    from dask.utils import parse_bytes  # noqa: PLC0415

    spec = dict(config.cluster or {})
    value = spec.get("memory_limit", spec.get("memory"))
    if isinstance(value, str) and value != "auto":
        try:
            total = parse_bytes(value)
        except ValueError:
            return None
        # jobqueue's memory is per job, shared by its processes
        return total // int(spec.get("processes", 1)) if "memory" in spec and isinstance(spec.get("processes"), int) else total
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def _planned_grid(config: FieldConfig, paths):
    """The output grid of a band from headers alone, its pixel scale (arcsec) and the exposures' pixels in all."""
    from astropy.io import fits  # noqa: PLC0415

    from mosaic.io.cal import _check_scales, exposure_header_info  # noqa: PLC0415
    from mosaic.io.grid import MosaicGrid, max_grid_side  # noqa: PLC0415

    g = config.grid
    infos = [exposure_header_info(p) for p in paths]
    _check_scales(infos)
    if g.header is not None:
        grid = MosaicGrid.from_header(fits.Header.fromstring(g.header.read_text(), sep="\n"), tile=g.tile, halo=g.halo)
        if max(grid.shape) > max_grid_side():
            raise ConfigError(
                f"grid.header: {g.header} describes a {grid.shape[0]:,} x {grid.shape[1]:,} grid; expected at most "
                f"{max_grid_side():,} a side (dask config mosaic.limits.max-grid-side)"
            )
    else:
        grid = MosaicGrid.from_exposures(
            [i["wcs"] for i in infos], [i["shape"] for i in infos], psr=g.psr, rotation_deg=g.rotation, tile=g.tile, halo=g.halo,
            names=[i["path"] for i in infos],
        )
    return grid, grid.pixel_scale_arcsec, sum(int(i["shape"][0]) * int(i["shape"][1]) for i in infos)


def _psf_side(paths, scale_arcsec: float) -> int:
    """The largest PSF side on the output grid, each PSF checked (:func:`mosaic.psf.files.check_psf`)."""
    from mosaic.psf.files import check_psf  # noqa: PLC0415

    side = 0
    for p in paths:
        n, psf_scale = check_psf(p)
        side = max(side, int(round(n * psf_scale / scale_arcsec)) if psf_scale else n)
    return side


def _band_token(config: FieldConfig, run: BandRun) -> str:
    c = config
    return digest(
        c.bands[run.band], c.grid, c.preprocessing, c.drizzle, c.updc, c.catalogs, c.products.outdir, c.products.previews,
        run.exposure_token, file_token(sorted(set(run.psf_paths))),
        # fusion runs in the field's last band; configs without it keep their tokens
        *((c.fusion,) if c.fusion.enabled and run.band == list(c.bands)[-1] else ()),
        # likewise restore: enabling it reopens a complete band for that step alone
        *((c.restore,) if c.restore.enabled else ()),
    )


def _exists(products: dict, data: dict | None = None) -> bool:
    """Whether every product file (and every exposure a step made, ``data["paths"]``) is there."""
    paths = [*products.values(), *(data or {}).get("paths", [])]
    return all(Path(p).exists() for p in paths)


def _clean_temporaries(run: BandRun) -> None:
    """Remove what a killed run of this field/band left half-written (never looked at by readers)."""
    group = run.store.group_path(run.field, run.band)
    for p in group.rglob(".*.tmp-*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
    if run.outdir.is_dir():
        for p in run.outdir.rglob(f".{run.stem}*.part*"):
            p.unlink(missing_ok=True)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def _run_step(step: Step, run: BandRun) -> StepRow:
    if not step.enabled(run):
        return StepRow(step.name, "off")
    key = f"pipeline/{step.name}"
    token = digest(step.name, step.settings(run))
    record = run.store.manifest(run.field, run.band).get(key)
    same = record is not None and record.get("token") == token and not run.overwrite
    if same and record.get("state") == "complete" and not step.always_run and _exists(record.get("products", {}), record.get("data")):
        run.tokens[step.name] = token
        step.restore(run, record.get("data", {}))
        log.info("%s/%s %s: complete in the store, not redone", run.field, run.band, step.name)
        return StepRow(step.name, "resumed", 0.0, record.get("detail", ""), dict(record.get("products", {})))
    overwrite = run.overwrite or (record is not None and record.get("token") != token)
    run.store.mark_complete(run.field, run.band, key, state="started", token=token, started=_now())
    log.info("%s/%s %s: %s", run.field, run.band, step.name, "resuming" if same else ("redoing" if overwrite else "starting"))
    t0 = time.perf_counter()
    outcome = step.run(run, resume=same, overwrite=overwrite)
    seconds = time.perf_counter() - t0
    run.tokens[step.name] = token
    step.restore(run, outcome.state)
    run.store.mark_complete(
        run.field, run.band, key, state="complete", token=token, products=outcome.products, detail=outcome.detail,
        data=outcome.state, seconds=round(seconds, 3),
    )
    status = "resumed" if outcome.resumed else "done"
    log.info("%s/%s %s: %s in %.1f s (%s)", run.field, run.band, step.name, status, seconds, outcome.detail)
    return StepRow(step.name, status, seconds, outcome.detail, dict(outcome.products))


def run_band(
    config: FieldConfig, band: str, store, *, client=None, overwrite: bool = False, steps: tuple[Step, ...] = STEPS
) -> BandReport:
    """Run one band of a field; a failure is recorded and reported, not raised.

    Parameters
    ----------
    config : FieldConfig
    band : str
        One of ``config.bands``.
    store : mosaic.io.store.Store
    client : distributed.Client, optional
        The cluster (default: the current client, or threads here).
    overwrite : bool
        Redo every step.
    steps : tuple of Step
        The steps, in order.

    Returns
    -------
    BandReport
    """
    t0 = time.perf_counter()
    report = BandReport(config.field, band, "failed")
    current = None
    held = contextlib.ExitStack()
    try:
        run = BandRun.start(config, band, store, client=client, overwrite=overwrite)
        held.enter_context(store.writing(config.field, band))  # one writer per field/band, for the whole band
        _recompute_damaged(config, band, store)
        token = _band_token(config, run)
        status = store.manifest(config.field, band).get(STATUS, {})
        if status.get("status") == "complete" and status.get("token") == token and not overwrite:
            rows, whole = _recorded_rows(run, steps)
            if whole:
                report.rows = rows
                report.status = "resumed"
                log.info("%s/%s: complete in the store (%s), not redone", config.field, band, status.get("finished"))
                return report
        _clean_temporaries(run)
        started = _now()
        store.mark_complete(config.field, band, STATUS, status="started", token=token, started=started)
        for step in steps:
            if not step.listed(run):
                continue
            current = step.name
            report.rows.append(_run_step(step, run))
        current = None
        report.seconds = time.perf_counter() - t0
        store.mark_complete(
            config.field, band, STATUS, status="complete", token=token, started=started, finished=_now(),
            seconds=round(report.seconds, 3),
        )
        report.status = "complete"
    except Exception as err:  # one band's failure is reported; the others go on
        report.seconds = time.perf_counter() - t0
        report.error = f"{type(err).__name__}: {err}"
        report.failed_step = current
        if current is not None:
            report.rows.append(StepRow(current, "failed", 0.0, report.error))
        log.error("%s/%s failed%s: %s", config.field, band, f" at {current}" if current else "", report.error)
        log.debug("traceback of the failure", exc_info=True)
        from mosaic.io.store import StoreLockedError  # noqa: PLC0415

        if not isinstance(err, StoreLockedError):  # the other writer's record is not ours to change
            try:
                store.mark_complete(config.field, band, STATUS, status="failed", error=report.error, step=current, finished=_now())
            except Exception:  # the store itself may be what failed
                log.exception("%s/%s: could not record the failure in %s", config.field, band, store.path)
    finally:
        held.close()
    return report


def _recompute_damaged(config: FieldConfig, band: str, store) -> None:
    """Forget the products whose files no longer match their checksums, and reopen the steps that made them."""
    damaged = store.damaged(config.field, band)
    if not damaged:
        return
    manifest = store.manifest(config.field, band)
    for name, what in damaged.items():
        log.warning("%s/%s: %s is damaged in %s (%s); recomputing it", config.field, band, name, store.path, what)
        store.forget(config.field, band, name)
        head = name.split("/")[0]
        step = "updc" if head == config.updc.method else head
        record = manifest.get(f"pipeline/{step}")
        if record is not None and record.get("state") == "complete":
            store.mark_complete(config.field, band, f"pipeline/{step}", **{**record, "state": "started"})


def _recorded_rows(run: BandRun, steps) -> tuple[list[StepRow], bool]:
    """The rows of a complete band from its step records, and whether all their files are there."""
    manifest = run.store.manifest(run.field, run.band)
    rows, whole = [], True
    for step in steps:
        if not step.listed(run):
            continue
        if not step.enabled(run):
            rows.append(StepRow(step.name, "off"))
            continue
        rec = manifest.get(f"pipeline/{step.name}", {})
        # the detail recorded when the step was computed, said to be from then
        detail = f"from the store (made then: {rec['detail']})" if rec.get("detail") else "from the store"
        rows.append(StepRow(step.name, "resumed", 0.0, detail, dict(rec.get("products", {}))))
        whole = whole and rec.get("state") == "complete" and _exists(rec.get("products", {}), rec.get("data"))
    return rows, whole


def _band_image(config: FieldConfig, store, band: str):
    """``(lazy sky-subtracted image, WCS)`` of a band's last saved iteration (or its drizzle mosaic)."""
    from astropy.io import fits  # noqa: PLC0415
    from astropy.wcs import WCS  # noqa: PLC0415

    u = config.updc
    if u.enabled:
        ds = store.read_product(config.field, band, f"{u.method}/iter_{max(u.saved()):02d}")
        sky = float(store.manifest(config.field, band)[f"{u.method}/iter_00"].get("background", 0.0))
    else:
        ds, sky = store.read_product(config.field, band, "drizzle"), 0.0
    text = ds.attrs.get("wcs_header")
    wcs = WCS(fits.Header.fromstring(text, sep="\n")).celestial if text else None
    return ds["sci"].data - np.float32(sky), wcs


def _rgb(config: FieldConfig, store, report: FieldReport) -> StepRow | None:
    """The field's colour composite (``products.rgb``) from the bands that are complete."""
    import importlib  # noqa: PLC0415

    wanted = config.products.rgb
    if wanted is None:
        return None
    path = config.outdir / "previews" / f"{config.field}_rgb.png"
    if wanted == "paper":
        from mosaic.viz.rgb import PAPER_MAPPING  # noqa: PLC0415

        mapping = {b: PAPER_MAPPING[b] for b in config.bands if b in PAPER_MAPPING}
    else:
        mapping = dict(zip(wanted, [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)], strict=True))
    status = {b.band: b.status for b in report.bands}
    if not all(status.get(b) in ("complete", "resumed") for b in mapping):
        return StepRow("rgb", "off", detail=f"needs the bands {sorted(mapping)} complete")
    if path.exists() and all(status[b] == "resumed" for b in mapping):
        return StepRow("rgb", "resumed", products={"rgb": str(path)})
    t0 = time.perf_counter()
    try:
        write_rgb = getattr(importlib.import_module(RGB_FUNCTION[0]), RGB_FUNCTION[1])
        path.parent.mkdir(parents=True, exist_ok=True)
        images = {b: _band_image(config, store, b) for b in mapping}
        write_rgb(path, images, mapping=mapping, max_size=2048)
    except Exception as err:  # the bands are done; a failed composite is reported, not raised
        log.error("%s rgb failed: %s: %s", config.field, type(err).__name__, err)
        return StepRow("rgb", "failed", time.perf_counter() - t0, f"{type(err).__name__}: {err}")
    return StepRow("rgb", "done", time.perf_counter() - t0, " ".join(f"{b}={c}" for b, c in mapping.items()), {"rgb": str(path)})


def run_field(
    config: FieldConfig,
    *,
    client=None,
    start_cluster: bool = True,
    overwrite: bool = False,
    bands=None,
    store=None,
) -> FieldReport:
    """Run a field: every band (or ``bands``), each through the steps, resumable.

    Parameters
    ----------
    config : FieldConfig
        From :func:`mosaic.config.load_field`.
    client : distributed.Client, optional
        Run on this cluster.
    start_cluster : bool
        Without ``client``: start the config's cluster (:func:`mosaic.cluster.cluster_client`)
        for the run; False computes on the current client, or with threads here.
    overwrite : bool
        Redo every step of every band.
    bands : sequence of str, optional
        Only these bands.
    store : mosaic.io.store.Store, optional
        Default: ``config.store_path``.

    Returns
    -------
    FieldReport
        Its :meth:`~FieldReport.table` is also logged.

    Raises
    ------
    ConfigError
        For options the steps cannot take or bands the config lacks (nothing is run).
    """
    from contextlib import nullcontext  # noqa: PLC0415

    from mosaic.io.store import Store  # noqa: PLC0415

    check_config(config)
    chosen = list(config.bands) if bands is None else [str(b).upper() for b in bands]
    missing = [b for b in chosen if b not in config.bands]
    if missing:
        raise ConfigError(f"bands {missing}: not in the config of field {config.field!r}; expected some of {sorted(config.bands)}")
    t0 = time.perf_counter()
    report = FieldReport(config.field)
    planned = []
    for band in chosen:  # before any allocation; a refused band fails alone
        try:
            log.info("plan: %s", plan_band(config, band).describe())
        except PlanRefusedError as err:
            log.error("%s/%s refused: %s", config.field, band, err)
            report.bands.append(BandReport(config.field, band, "failed", error=f"{type(err).__name__}: {err}", failed_step="plan"))
            continue
        except ConfigError as err:  # unreadable inputs: the step that reads them fails and records why
            log.debug("%s/%s: not planned: %s", config.field, band, err)
        planned.append(band)
    if not planned:
        report.seconds = time.perf_counter() - t0
        log.info("%s", report.table())
        return report
    store = store if store is not None else Store(config.store_path)
    config.outdir.mkdir(parents=True, exist_ok=True)
    if client is None and start_cluster:
        from mosaic.cluster import cluster_client  # noqa: PLC0415

        context = cluster_client(dict(config.cluster) if config.cluster is not None else None)
    else:
        context = nullcontext(client)
    log.info("field %s: bands %s -> %s (store %s)", config.field, planned, config.outdir, store.path)
    with contextlib.ExitStack() as held:
        for band in planned:  # a second writer of a band is refused now, before the cluster starts
            held.enter_context(store.writing(config.field, band))
        active = held.enter_context(context)
        for band in planned:
            report.bands.append(run_band(config, band, store, client=active, overwrite=overwrite))
        report.rgb = _rgb(config, store, report)
    report.seconds = time.perf_counter() - t0
    log.info("%s", report.table())
    return report
