"""A batch of fields on one cluster (``mosaic batch SURVEY.yaml``), each field/band resumable.

Every field runs through :func:`mosaic.pipeline.field.run_field` with the survey's store, so
the status of each field/band (started, complete, failed with the error text) is in the
store's manifest of that field/band. A re-run after a kill skips complete bands and continues
the others from their last complete step (and UPDC from its last complete iteration). A field
that fails is reported and the others go on; the run ends with a table of the failures.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field

from mosaic.config import ConfigError, SurveyConfig
from mosaic.pipeline.field import BandReport, FieldReport, check_config, format_table, run_field

__all__ = ["SurveyReport", "run_survey"]

log = logging.getLogger(__name__)


@dataclass
class SurveyReport:
    """The fields of a batch run.

    Attributes
    ----------
    fields : list of FieldReport
    seconds : float
    """

    fields: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.fields)

    def bands(self) -> list[BandReport]:
        return [b for f in self.fields for b in f.bands]

    def failures(self) -> list[BandReport]:
        return [b for b in self.bands() if not b.ok]

    def table(self) -> str:
        """Every field/band: status and time."""
        rows = [[b.field, b.band, b.status, f"{b.seconds:.1f}"] for b in self.bands()]
        n_ok = sum(b.ok for b in self.bands())
        head = f"survey: {n_ok}/{len(rows)} field/band(s) complete in {self.seconds:.1f} s"
        return head + "\n" + format_table(["field", "band", "status", "seconds"], rows)

    def failure_table(self) -> str:
        """The failures: field, band, the step that failed and the error."""
        rows = [[b.field, b.band, b.failed_step or "start", b.error] for b in self.failures()]
        return f"{len(rows)} failure(s):\n" + format_table(["field", "band", "step", "error"], rows)


def _failed_field(cfg, err: Exception) -> FieldReport:
    text = f"{type(err).__name__}: {err}"
    return FieldReport(cfg.field, [BandReport(cfg.field, b, "failed", error=text) for b in cfg.bands])


def run_survey(
    survey: SurveyConfig,
    *,
    client=None,
    start_cluster: bool = True,
    overwrite: bool = False,
    fields=None,
) -> SurveyReport:
    """Run the fields of a survey on one cluster.

    Parameters
    ----------
    survey : SurveyConfig
        From :func:`mosaic.config.load_survey`.
    client : distributed.Client, optional
        Run on this cluster.
    start_cluster : bool
        Without ``client``: start the survey's cluster for the run; False computes on the
        current client, or with threads here.
    overwrite : bool
        Redo every step of every field.
    fields : sequence of str, optional
        Only these fields.

    Returns
    -------
    SurveyReport
        Its tables are logged (the failures at ERROR).

    Raises
    ------
    ConfigError
        For an unknown field name or options the steps cannot take (nothing is run).
    """
    from mosaic.io.store import Store  # noqa: PLC0415

    chosen = list(survey.fields)
    if fields is not None:
        names = [f.field for f in survey.fields]
        unknown = [f for f in fields if f not in names]
        if unknown:
            raise ConfigError(f"fields {unknown}: not in {survey.source}; expected some of {names}")
        chosen = [f for f in survey.fields if f.field in set(fields)]
    for cfg in chosen:
        check_config(cfg)  # options only: each field plans its bands when it starts, and fails alone
    store = Store(survey.store)
    if client is None and start_cluster:
        from mosaic.cluster import cluster_client  # noqa: PLC0415

        context = cluster_client(dict(survey.cluster) if survey.cluster is not None else None)
    else:
        context = nullcontext(client)
    t0 = time.perf_counter()
    report = SurveyReport()
    log.info("survey %s: %d field(s) -> %s (store %s)", survey.source, len(chosen), survey.outdir, store.path)
    with context as active:

        def one(cfg) -> FieldReport:
            try:
                return run_field(cfg, client=active, start_cluster=False, overwrite=overwrite, store=store)
            except Exception as err:  # a field that cannot start is reported; the others go on
                log.error("field %s failed: %s: %s", cfg.field, type(err).__name__, err)
                return _failed_field(cfg, err)

        if survey.max_concurrent_fields > 1 and len(chosen) > 1:
            with ThreadPoolExecutor(max_workers=survey.max_concurrent_fields, thread_name_prefix="mosaic-field") as pool:
                report.fields = list(pool.map(one, chosen))
        else:
            report.fields = [one(cfg) for cfg in chosen]
    report.seconds = time.perf_counter() - t0
    log.info("%s", report.table())
    if not report.ok:
        log.error("%s", report.failure_table())
    return report
