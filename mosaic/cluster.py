"""Start or connect to a dask cluster from configuration: local, cuda, slurm, pbs or address.

One entry point, :func:`cluster_client`, yields a ``distributed.Client`` for a cluster described
by a mapping (from a run's YAML, the command line, or dask's own configuration under
``mosaic.cluster``)::

    with cluster_client({"kind": "local", "n_workers": 2, "memory_limit": "4GB"}) as client:
        ...

Kinds
-----
``local``
    ``distributed.LocalCluster``: worker processes and threads from the cores, a memory limit per
    worker, spilling to ``local_directory``.
``cuda``
    ``dask_cuda.LocalCUDACluster``: one worker per GPU, optional RMM pool (needs dask-cuda).
``slurm``, ``pbs``
    ``dask_jobqueue.SLURMCluster`` / ``PBSCluster``: workers as batch jobs, a fixed number of jobs
    (``n_jobs``) or adaptive between ``minimum_jobs`` and ``maximum_jobs`` (needs dask-jobqueue).
    Keys left out fall back to dask-jobqueue's own configuration (``jobqueue.yaml``).
``address``
    an existing scheduler, by ``address`` or ``scheduler_file``, with optional TLS files.

Every setting is checked by :func:`validate_cluster_spec`: an unknown key or a bad value raises a
``ValueError`` that names the key, the value and what is allowed.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import dask
import dask.config
from dask.utils import parse_bytes, parse_timedelta

from mosaic.exceptions import InputError

__all__ = [
    "KINDS",
    "ClusterSpec",
    "ClusterDependencyError",
    "validate_cluster_spec",
    "resolve_cluster_spec",
    "load_cluster_config",
    "cluster_client",
    "make_cluster",
    "job_script",
    "describe",
    "dashboard_listening",
    "worker_environ",
    "WORKER_MALLOC_ENV",
    "QUIET_POLLING",
    "quiet_polling",
]

log = logging.getLogger(__name__)

#: the kinds of cluster :func:`cluster_client` can start or connect to
KINDS = ("local", "cuda", "slurm", "pbs", "address")

#: dask settings of the clusters mosaic starts on this machine (local and CUDA), where the
#: user's dask config keeps distributed's default (``{key: (default, ours)}``). The scheduler
#: and the nannies run in the client's own process, beside the client building the next graph;
#: each server wakes its event loop to measure it every 20 ms and each nanny polls its worker's
#: memory every 100 ms: on 2 cores that was ~1.2 s of the client's 10 s of CPU in a 36 s
#: ``mosaic updc --workers 2`` (``benchmarks/README.md``, round 11).
QUIET_POLLING = MappingProxyType({
    "distributed.admin.tick.interval": ("20ms", "1s"),  # the "event loop was unresponsive" measure
    "distributed.admin.system-monitor.interval": ("500ms", "1s"),  # the dashboard's CPU and memory plots
    "distributed.worker.memory.monitor-interval": ("100ms", "500ms"),  # the memory limit's check
})

#: dask's setting (``distributed.nanny.pre-spawn-environ``): freed memory goes back to the OS at once
DASK_MALLOC_TRIM_THRESHOLD = 65536

#: glibc's malloc in the worker processes of the clusters mosaic starts (local and CUDA). dask's
#: 64 KiB trim threshold also freezes glibc's mmap threshold at 128 KiB: every array above it is a
#: fresh mapping whose pages fault in anew, and every freed top of the heap is handed back and
#: faulted in again. On the flagship field that was 40 % of the workers' CPU (83 M page faults;
#: 309 of 772 CPU s for iteration 0 and one UPDC iteration). With these, arrays up to 32 MiB come
#: from the heap and reuse its pages, and a worker gives back freed memory past 128 MiB at the
#: heap's top: 2.4 M faults, iteration 0 172 -> 148 s, an iteration 221 -> 142 s, for a peak of
#: 3.73 GiB instead of 2.45 (``benchmarks/README.md``, flagship section). Two malloc arenas per
#: worker instead of glibc's eight per core: zarr's and dask's threads each took an arena of their
#: own, each kept its freed pieces, and ten flagship iterations peaked at 4.30 GiB of all processes
#: (largest worker 2.04); with two, 3.49 GiB (1.66), at the same speed (71 and 73 s an iteration).
#: A value the site's dask config sets (other than dask's own 64 KiB trim threshold) is kept.
WORKER_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": 32 << 20, "MALLOC_TRIM_THRESHOLD_": 128 << 20, "MALLOC_ARENA_MAX": 2}

#: where the dashboard of a cluster mosaic starts listens unless ``dashboard_address`` says otherwise:
#: this host only (reach it through ssh -L or JupyterHub's proxy); ':8787' listens on every interface
DEFAULT_DASHBOARD = "127.0.0.1:8787"


class ClusterDependencyError(InputError, ImportError):
    """The configured kind of cluster needs a package that is not installed."""


# --- value checks ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Check:
    """One setting: a predicate on the value and the words for what is expected."""

    ok: Any
    expected: str


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _bytes_ok(v) -> bool:
    if _is_int(v):
        return v > 0
    if isinstance(v, str):
        try:
            return parse_bytes(v) > 0
        except (ValueError, TypeError):
            return False
    return False


def _time_ok(v) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, (int, float)):
        return v > 0
    if isinstance(v, str):
        try:
            return parse_timedelta(v) > 0
        except (ValueError, KeyError, TypeError):
            return False
    return False


# SLURM and PBS walltimes: [days-]hours:minutes:seconds or minutes
_WALLTIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")


def _walltime_seconds(text: str) -> float:
    days, _, rest = text.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    if len(parts) == 1:  # minutes, as sbatch reads a bare number
        seconds = parts[0] * 60
    else:
        parts = [0] * (3 - len(parts)) + parts
        seconds = parts[0] * 3600 + parts[1] * 60 + parts[2]
    return seconds + int(days or 0) * 86400


def _str_list_ok(v) -> bool:
    return isinstance(v, (list, tuple)) and all(isinstance(s, str) for s in v)


POSITIVE_INT = _Check(lambda v: _is_int(v) and v >= 1, "an integer >= 1")
NON_NEGATIVE_INT = _Check(lambda v: _is_int(v) and v >= 0, "an integer >= 0")
TEXT = _Check(lambda v: isinstance(v, str) and v != "", "a non-empty string")
PATH = _Check(lambda v: isinstance(v, (str, os.PathLike)) and str(v) != "", "a path")
BOOL = _Check(lambda v: isinstance(v, bool), "true or false")
BYTES = _Check(_bytes_ok, "a memory size such as '4GB' or a number of bytes > 0")
MEMORY_LIMIT = _Check(
    lambda v: v == "auto" or _bytes_ok(v) or (isinstance(v, float) and 0 < v <= 1),
    "'auto', a memory size such as '4GB', or a fraction of the machine's memory in (0, 1]",
)
TIME = _Check(_time_ok, "a duration in one unit such as '340m' (not '5h40m'), '1h', or a number of seconds > 0")
WALLTIME = _Check(lambda v: isinstance(v, str) and bool(_WALLTIME.match(v)), "a walltime 'HH:MM:SS' or 'D-HH:MM:SS'")
STR_LIST = _Check(_str_list_ok, "a list of strings")
DASHBOARD = _Check(lambda v: v is None or isinstance(v, str), "an address such as ':8787' (':0' for a free port) or null")
DEVICES = _Check(
    lambda v: (isinstance(v, str) and bool(re.fullmatch(r"\d+(,\d+)*", v)))
    or (isinstance(v, (list, tuple)) and len(v) > 0 and all(_is_int(d) and d >= 0 for d in v)),
    "GPU indices: a list such as [0, 1] or a string such as '0,1'",
)
PROTOCOL = _Check(lambda v: v in ("tcp", "tls", "ucx", "ucxx", "inproc"), "one of ('tcp', 'tls', 'ucx', 'ucxx', 'inproc')")

_LOCAL = {
    "n_workers": POSITIVE_INT,
    "threads_per_worker": POSITIVE_INT,
    "memory_limit": MEMORY_LIMIT,
    "local_directory": PATH,
    "dashboard_address": DASHBOARD,
    "processes": BOOL,
}
_CUDA = {
    "n_workers": POSITIVE_INT,
    "threads_per_worker": POSITIVE_INT,
    "devices": DEVICES,
    "memory_limit": MEMORY_LIMIT,
    "device_memory_limit": MEMORY_LIMIT,
    "rmm_pool_size": BYTES,
    "rmm_managed_memory": BOOL,
    "local_directory": PATH,
    "dashboard_address": DASHBOARD,
    "protocol": PROTOCOL,
}
_JOBQUEUE = {
    "cores": POSITIVE_INT,
    "memory": BYTES,
    "processes": POSITIVE_INT,
    "walltime": WALLTIME,
    "queue": TEXT,
    "account": TEXT,
    "interface": TEXT,
    "job_extra_directives": STR_LIST,
    "job_script_prologue": STR_LIST,
    "worker_extra_args": STR_LIST,
    "local_directory": TEXT,  # text, not a path: '$TMPDIR' is expanded on the compute node
    "log_directory": PATH,
    "lifetime": TIME,
    "lifetime_stagger": TIME,
    "n_jobs": NON_NEGATIVE_INT,
    "minimum_jobs": NON_NEGATIVE_INT,
    "maximum_jobs": POSITIVE_INT,
    "python": TEXT,
    "job_name": TEXT,
    "death_timeout": TIME,
    "dashboard_address": DASHBOARD,
}
_ADDRESS = {
    "address": TEXT,
    "scheduler_file": PATH,
    "tls_ca_file": PATH,
    "tls_client_cert": PATH,
    "tls_client_key": PATH,
    "require_encryption": BOOL,
    "timeout": TIME,
}

#: the settings each kind accepts (besides ``kind``)
OPTIONS: Mapping[str, Mapping[str, _Check]] = MappingProxyType(
    {
        "local": _LOCAL,
        "cuda": _CUDA,
        "slurm": _JOBQUEUE,
        "pbs": {**_JOBQUEUE, "resource_spec": TEXT},
        "address": _ADDRESS,
    }
)


# --- the spec ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterSpec:
    """A checked cluster description: its ``kind`` and the settings given for it.

    Settings left out take their defaults when the cluster starts (from the cores and memory of
    the machine for ``local``, from dask-jobqueue's configuration for ``slurm`` and ``pbs``).
    Build one with :func:`validate_cluster_spec`.
    """

    kind: str = "local"
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    def to_dict(self) -> dict[str, Any]:
        """The spec as a plain mapping, as it would be written in YAML."""
        return {"kind": self.kind, **self.options}


def validate_cluster_spec(spec: Mapping | ClusterSpec | None, *, where: str = "cluster") -> ClusterSpec:
    """Check a cluster description and return it as a :class:`ClusterSpec`.

    Parameters
    ----------
    spec : mapping, ClusterSpec or None
        ``{"kind": ..., setting: value, ...}``; ``kind`` defaults to ``"local"``; None is ``{}``.
    where : str
        Where the mapping came from (a file and key), used in error messages.

    Returns
    -------
    ClusterSpec

    Raises
    ------
    ValueError
        For an unknown kind, an unknown key (the message lists the allowed keys), a bad value (the
        message says what is expected) or settings that contradict each other.
    """
    if spec is None:
        spec = {}
    if isinstance(spec, ClusterSpec):
        spec = spec.to_dict()
    if not isinstance(spec, Mapping):
        msg = f"{where}: got {spec!r}; expected a mapping of cluster settings such as {{'kind': 'local', 'n_workers': 2}}"
        raise InputError(msg)
    kind = spec.get("kind", "local")
    if kind not in KINDS:
        msg = f"{where}.kind: got {kind!r}; expected one of {KINDS}"
        raise InputError(msg)
    allowed = OPTIONS[kind]
    options = {}
    for key, value in spec.items():
        if key == "kind":
            continue
        if key not in allowed:
            elsewhere = [k for k in KINDS if key in OPTIONS[k]]
            hint = f" ({key!r} is a setting of kind {' / '.join(elsewhere)})" if elsewhere else ""
            msg = f"{where}: unknown key {key!r} for kind {kind!r}{hint}; allowed keys: {['kind', *sorted(allowed)]}"
            raise InputError(msg)
        check = allowed[key]
        if value is None and check is not DASHBOARD:
            continue  # null in YAML means "the default"
        if not check.ok(value):
            msg = f"{where}.{key}: got {value!r}; expected {check.expected}"
            raise InputError(msg)
        options[key] = os.fspath(value) if isinstance(value, os.PathLike) else value
    _check_together(kind, options, where)
    return ClusterSpec(kind, options)


def _check_together(kind: str, options: dict, where: str) -> None:
    """Settings that are fine alone but contradict each other."""
    if kind == "address":
        given = [k for k in ("address", "scheduler_file") if k in options]
        if len(given) != 1:
            msg = f"{where}: kind 'address' needs exactly one of 'address' or 'scheduler_file'; got {given or 'neither'}"
            raise InputError(msg)
        if str(options.get("address", "")).startswith("tls://") and not ({"tls_client_cert", "tls_ca_file"} <= options.keys()):
            msg = f"{where}.address: got {options['address']!r}, a TLS scheduler; expected 'tls_ca_file', 'tls_client_cert' and 'tls_client_key' with it"
            raise InputError(msg)
        tls = [k for k in ("tls_client_cert", "tls_client_key") if k in options]
        if len(tls) == 1:
            msg = f"{where}: {tls[0]!r} given without {({'tls_client_cert', 'tls_client_key'} - set(tls)).pop()!r}; TLS needs both"
            raise InputError(msg)
        tls_given = [k for k in ("tls_ca_file", "tls_client_cert", "tls_client_key") if k in options]
        if "address" in options and (tls_given or options.get("require_encryption")) and not str(options["address"]).startswith("tls://"):
            what = f"TLS files ({', '.join(tls_given)})" if tls_given else "require_encryption"
            msg = (
                f"{where}.address: got {options['address']!r} with {what}; expected a 'tls://' address "
                f"(a tcp:// or schemeless address would connect in plaintext)"
            )
            raise InputError(msg)
        if options.get("require_encryption") and not {"tls_client_cert", "tls_client_key"} <= options.keys():
            msg = f"{where}.require_encryption: true needs 'tls_client_cert' and 'tls_client_key' (and usually 'tls_ca_file')"
            raise InputError(msg)
    if kind in ("slurm", "pbs"):
        if "n_jobs" in options and ("minimum_jobs" in options or "maximum_jobs" in options):
            msg = f"{where}: 'n_jobs' (a fixed number of jobs) and 'minimum_jobs'/'maximum_jobs' (adaptive) exclude each other; give one"
            raise InputError(msg)
        if "minimum_jobs" in options and "maximum_jobs" not in options:
            msg = f"{where}: 'minimum_jobs' needs 'maximum_jobs' (adaptive scaling between the two)"
            raise InputError(msg)
        if options.get("minimum_jobs", 0) > options.get("maximum_jobs", sys.maxsize):
            msg = f"{where}.minimum_jobs: got {options['minimum_jobs']!r}; expected <= maximum_jobs ({options['maximum_jobs']!r})"
            raise InputError(msg)
        if "lifetime_stagger" in options and "lifetime" not in options:
            msg = f"{where}: 'lifetime_stagger' needs 'lifetime'"
            raise InputError(msg)
        if "lifetime" in options and "walltime" in options:
            life = parse_timedelta(options["lifetime"]) + parse_timedelta(options.get("lifetime_stagger", 0))
            wall = _walltime_seconds(options["walltime"])
            if life >= wall:
                msg = (
                    f"{where}.lifetime: got {options['lifetime']!r} (+ stagger {options.get('lifetime_stagger', 0)!r}); "
                    f"expected less than the walltime {options['walltime']!r}, so that workers retire before the job is killed"
                )
                raise InputError(msg)
    if kind in ("local", "cuda") and "n_workers" in options and "devices" in options and options["n_workers"] > len(_device_list(options["devices"])):
        msg = f"{where}.n_workers: got {options['n_workers']!r}; expected at most one worker per device ({options['devices']!r})"
        raise InputError(msg)


def _device_list(devices) -> list[int]:
    if isinstance(devices, str):
        return [int(d) for d in devices.split(",")]
    return list(devices)


def load_cluster_config(path: str | os.PathLike) -> dict:
    """Read the cluster mapping from a YAML file.

    The file may hold the mapping itself (``kind: slurm ...``), a run configuration with a
    ``cluster:`` key, or dask configuration with ``mosaic: {cluster: ...}``.

    Parameters
    ----------
    path : str or path-like
        The YAML file.

    Returns
    -------
    dict
        The cluster mapping (not yet validated).
    """
    import yaml  # noqa: PLC0415

    path = Path(path)
    if not path.is_file():
        msg = f"{path}: no such cluster configuration file"
        raise FileNotFoundError(msg)
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        msg = f"{path}: not valid YAML ({err})"
        raise InputError(msg) from None
    if not isinstance(doc, Mapping):
        msg = f"{path}: got a {type(doc).__name__}; expected a mapping with 'kind' or a 'cluster' key"
        raise InputError(msg)
    if isinstance(doc.get("mosaic"), Mapping) and "cluster" in doc["mosaic"]:
        return dict(doc["mosaic"]["cluster"] or {})
    if "cluster" in doc:
        return dict(doc["cluster"] or {})
    return dict(doc)


def resolve_cluster_spec(spec: Mapping | ClusterSpec | None = None, *, where: str = "cluster", **overrides) -> ClusterSpec:
    """The spec to start: ``spec``, or dask's ``mosaic.cluster`` configuration when None, with
    ``overrides`` on top, checked by :func:`validate_cluster_spec`.

    Parameters
    ----------
    spec : mapping, ClusterSpec or None
        The cluster description; None reads ``dask.config.get("mosaic.cluster")`` (then ``{}``:
        a local cluster sized from the machine).
    where : str
        Where ``spec`` came from, for error messages.
    **overrides
        Settings that replace those of ``spec`` (a ``kind`` override starts from an empty spec).

    Returns
    -------
    ClusterSpec
    """
    if spec is None:
        spec = dask.config.get("mosaic.cluster", default=None) or {}
        where = "dask config mosaic.cluster" if spec else where
    base = spec.to_dict() if isinstance(spec, ClusterSpec) else spec
    if not isinstance(base, Mapping):
        return validate_cluster_spec(base, where=where)
    if "kind" in overrides and overrides["kind"] != base.get("kind", "local"):
        base = {}  # another kind's settings would not fit
    return validate_cluster_spec({**base, **overrides}, where=where)


# --- starting clusters -------------------------------------------------------------------------


def _local_directory(options: Mapping) -> str:
    return str(options.get("local_directory") or dask.config.get("temporary-directory", default=None) or tempfile.gettempdir())


def _local_kwargs(options: Mapping) -> dict:
    """LocalCluster arguments with the defaults mosaic chooses filled in."""
    from dask.system import CPU_COUNT  # noqa: PLC0415
    from distributed.deploy.utils import nprocesses_nthreads  # noqa: PLC0415

    n_workers, n_threads = nprocesses_nthreads()
    n_workers = options.get("n_workers", n_workers)
    if "threads_per_worker" in options:
        n_threads = options["threads_per_worker"]
    elif "n_workers" in options:
        # the cores this process may use (a batch job's allocation or a container's quota), as
        # distributed's own default counts them; not the node's
        n_threads = max(1, CPU_COUNT // n_workers)
    kwargs = {
        "n_workers": n_workers,
        "threads_per_worker": n_threads,
        "memory_limit": options.get("memory_limit", "auto"),
        "local_directory": _local_directory(options),
        "processes": options.get("processes", True),
    }
    kwargs["dashboard_address"] = options.get("dashboard_address", DEFAULT_DASHBOARD)
    return kwargs


def _cuda_kwargs(options: Mapping) -> dict:
    kwargs = {k: options[k] for k in ("n_workers", "memory_limit", "device_memory_limit", "rmm_pool_size", "rmm_managed_memory", "protocol", "dashboard_address") if k in options}
    kwargs["threads_per_worker"] = options.get("threads_per_worker", 1)
    kwargs["dashboard_address"] = options.get("dashboard_address", DEFAULT_DASHBOARD)
    kwargs["local_directory"] = _local_directory(options)
    if "devices" in options:
        kwargs["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, _device_list(options["devices"])))
    return kwargs


def _jobqueue_kwargs(options: Mapping) -> dict:
    """SLURMCluster / PBSCluster arguments; what is not given comes from jobqueue's config."""
    passed = ("cores", "memory", "processes", "walltime", "queue", "account", "interface", "job_extra_directives",
              "local_directory", "log_directory", "job_name", "death_timeout", "resource_spec")
    kwargs = {k: options[k] for k in passed if k in options}
    kwargs["python"] = options.get("python", sys.executable)  # the workers run the same environment
    # first, so that a prologue line of the user's may still change it
    kwargs["job_script_prologue"] = [_environ_prologue(), *options.get("job_script_prologue", ())]
    extra = list(options.get("worker_extra_args", ()))
    if "lifetime" in options:
        extra += ["--lifetime", str(options["lifetime"])]
        if "lifetime_stagger" in options:
            extra += ["--lifetime-stagger", str(options["lifetime_stagger"])]
    if extra:
        kwargs["worker_extra_args"] = extra
    kwargs["scheduler_options"] = {"dashboard_address": options.get("dashboard_address", DEFAULT_DASHBOARD)}
    return kwargs


def _jobqueue_class(kind: str):
    try:
        import dask_jobqueue  # noqa: PLC0415
    except ImportError:
        msg = f"cluster kind {kind!r} needs dask-jobqueue, which is not installed; pip install 'mosaic-jwst[hpc]'"
        raise ClusterDependencyError(msg) from None
    return {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}[kind]


def _cuda_class():
    try:
        from dask_cuda import LocalCUDACluster  # noqa: PLC0415
    except ImportError:
        msg = "cluster kind 'cuda' needs dask-cuda, which is not installed; pip install 'mosaic-jwst[gpu]', or use kind 'local'"
        raise ClusterDependencyError(msg) from None
    return LocalCUDACluster


def _malloc_text() -> str:
    return ", ".join(f"{k}={v}" for k, v in WORKER_MALLOC_ENV.items())


def worker_environ() -> dict:
    """The environment nannies set before their worker starts: dask's
    ``distributed.nanny.pre-spawn-environ`` with :data:`WORKER_MALLOC_ENV` (values the site's
    dask config sets are kept, except dask's own default trim threshold, which these replace)."""
    import distributed  # noqa: F401, PLC0415  (load its config first)

    env = dict(dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {})
    for key, value in WORKER_MALLOC_ENV.items():
        if key not in env or (key == "MALLOC_TRIM_THRESHOLD_" and str(env[key]) == str(DASK_MALLOC_TRIM_THRESHOLD)):
            env[key] = value
    return env


def _environ_value(key: str) -> str | None:
    """``key`` from this process's environment unless it is dask's default trim threshold, which
    a nanny started here before (with dask's config) leaves behind in ``os.environ``."""
    value = os.environ.get(key)
    if key == "MALLOC_TRIM_THRESHOLD_" and value == str(DASK_MALLOC_TRIM_THRESHOLD):
        return None
    return value


def quiet_polling() -> dict:
    """The :data:`QUIET_POLLING` settings whose keys hold distributed's default in the dask config
    now (for ``dask.config.set`` around a cluster's start: a user's own value is kept)."""
    import distributed  # noqa: F401, PLC0415 -- its config loaded, so that the defaults are there to compare with

    return {k: ours for k, (default, ours) in QUIET_POLLING.items() if dask.config.get(k, default=None) == default}


@contextmanager
def _malloc_trim_env() -> Iterator[None]:
    """Nannies started inside the block set :func:`worker_environ` before their worker starts.

    A nanny prefers this process's environment variables to its config, and every nanny writes
    its settings there: after a cluster with dask's settings (in a notebook, or an earlier test),
    ``MALLOC_TRIM_THRESHOLD_=65536`` would win. So the malloc settings go into the environment
    too, where it holds dask's default or nothing; a value the user exported is kept.
    """
    env = worker_environ()  # (loads distributed's config first: set() would drop it on exit otherwise)
    saved = {key: os.environ.get(key) for key in WORKER_MALLOC_ENV}
    for key in WORKER_MALLOC_ENV:
        mine = _environ_value(key)
        if mine is None:
            os.environ[key] = str(env[key])
        else:
            env[key] = mine
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ": env}):
            yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _environ_prologue() -> str:
    """The job script line that gives a jobqueue worker the malloc settings of :func:`worker_environ`
    (read from the config here, which a login node and its compute nodes usually share). They are
    exported as variables: a nanny prefers those to its own config."""
    env = worker_environ()
    return "export " + " ".join(f"{k}={shlex.quote(str(env[k]))}" for k in WORKER_MALLOC_ENV)


def make_cluster(spec: Mapping | ClusterSpec | None = None, /, **overrides):
    """Create (but do not scale or connect to) the cluster a spec describes.

    Parameters
    ----------
    spec : mapping, ClusterSpec or None
        As for :func:`cluster_client`; kind ``address`` has no cluster object.
    **overrides
        Settings that replace those of ``spec``.

    Returns
    -------
    distributed.deploy.Cluster
        A ``LocalCluster``, ``LocalCUDACluster``, ``SLURMCluster`` or ``PBSCluster``; for the
        jobqueue kinds no job has been submitted yet. Close it (or use it as a context manager).
    """
    spec = resolve_cluster_spec(spec, **overrides)
    if spec.kind == "address":
        msg = "cluster kind 'address' connects to an existing scheduler and has no cluster object; use cluster_client"
        raise InputError(msg)
    if spec.kind == "local":
        from distributed import LocalCluster  # noqa: PLC0415

        with _malloc_trim_env(), dask.config.set(quiet_polling()):
            return LocalCluster(**_local_kwargs(spec.options))
    if spec.kind == "cuda":
        cls = _cuda_class()
        with _malloc_trim_env(), dask.config.set(quiet_polling()):
            return cls(**_cuda_kwargs(spec.options))
    return _jobqueue_class(spec.kind)(**_jobqueue_kwargs(spec.options))


def job_script(spec: Mapping | ClusterSpec, /, **overrides) -> str:
    """The batch script one worker job of a ``slurm`` or ``pbs`` spec would run, without starting
    a scheduler or submitting anything (the scheduler address is a placeholder).

    Parameters
    ----------
    spec : mapping or ClusterSpec
        A ``slurm`` or ``pbs`` cluster description.
    **overrides
        Settings that replace those of ``spec``.

    Returns
    -------
    str
    """
    spec = resolve_cluster_spec(spec, **overrides)
    if spec.kind not in ("slurm", "pbs"):
        msg = f"cluster kind {spec.kind!r} has no job script; expected one of ('slurm', 'pbs')"
        raise InputError(msg)
    cls = _jobqueue_class(spec.kind)
    kwargs = _jobqueue_kwargs(spec.options)
    kwargs.pop("scheduler_options")
    return cls.job_cls("tcp://<scheduler-address>:8786", name="dask-worker", **kwargs).job_script()


def _security(options: Mapping):
    if not any(k.startswith("tls_") for k in options) and not options.get("require_encryption"):
        return None
    from distributed.security import Security  # noqa: PLC0415

    for key in ("tls_ca_file", "tls_client_cert", "tls_client_key"):
        if key in options and not Path(options[key]).is_file():
            msg = f"cluster.{key}: {options[key]!r} is not a file"
            raise FileNotFoundError(msg)
    return Security(
        tls_ca_file=options.get("tls_ca_file"),
        tls_client_cert=options.get("tls_client_cert"),
        tls_client_key=options.get("tls_client_key"),
        require_encryption=options.get("require_encryption", False),
    )


def _scale(cluster, options: Mapping) -> None:
    if "maximum_jobs" in options:
        cluster.adapt(minimum_jobs=options.get("minimum_jobs", 0), maximum_jobs=options["maximum_jobs"])
        log.info("adaptive: %d to %d jobs", options.get("minimum_jobs", 0), options["maximum_jobs"])
    else:
        n_jobs = options.get("n_jobs", 1)
        cluster.scale(jobs=n_jobs)
        log.info("submitted %d worker job(s)", n_jobs)


@contextmanager
def cluster_client(spec: Mapping | ClusterSpec | None = None, /, **overrides) -> Iterator[Any]:
    """A ``distributed.Client`` on the cluster a spec describes; the cluster is closed on exit.

    Parameters
    ----------
    spec : mapping, ClusterSpec or None
        ``{"kind": "local" | "cuda" | "slurm" | "pbs" | "address", setting: value, ...}``; None
        reads dask's configuration key ``mosaic.cluster``, then falls back to a local cluster
        sized from this machine's cores and memory.
    **overrides
        Settings that replace those of ``spec`` (e.g. ``n_workers=4``).

    Yields
    ------
    distributed.Client
        Connected to the cluster; its dashboard link is logged. For ``slurm``/``pbs`` the worker
        jobs have been submitted (``n_jobs``) or adaptive scaling set (``maximum_jobs``); tasks
        wait until the jobs start. For ``address`` only the client is closed on exit.

    Raises
    ------
    ValueError
        For a bad spec (see :func:`validate_cluster_spec`); :class:`ClusterDependencyError` (a
        ``ValueError`` and an ``ImportError``) when dask-cuda or dask-jobqueue is missing.
    """
    from distributed import Client  # noqa: PLC0415

    spec = resolve_cluster_spec(spec, **overrides)
    with _scheduler_config_restored():
        yield from _client(Client, spec)


@contextmanager
def _scheduler_config_restored() -> Iterator[None]:
    """A client closed after ``client.shutdown()`` leaves dask's ``scheduler`` set to
    dask.distributed (distributed 2026.8), so later ``compute()`` calls in this process fail with
    'no Client active'; put it back as it was."""
    before = dask.config.get("scheduler", None)
    try:
        yield
    finally:
        if dask.config.get("scheduler", None) != before:
            if before is None:
                dask.config.config.pop("scheduler", None)
            else:
                dask.config.set(scheduler=before)


def _client(Client, spec: ClusterSpec) -> Iterator[Any]:
    if spec.kind == "address":
        opts = spec.options
        kwargs = {"security": _security(opts)}
        if "timeout" in opts:
            kwargs["timeout"] = parse_timedelta(opts["timeout"])
        target = {"scheduler_file": os.fspath(opts["scheduler_file"])} if "scheduler_file" in opts else {"address": opts["address"]}
        if "scheduler_file" in opts and kwargs["security"] is not None:
            _check_file_scheme(opts["scheduler_file"])
        client = _connect(Client, target, kwargs)
        with client:
            log.info("connected to scheduler %s; dask dashboard: %s", client.scheduler.address, client.dashboard_link)
            yield client
        return
    with make_cluster(spec) as cluster:
        if spec.kind in ("slurm", "pbs"):
            _scale(cluster, spec.options)
        with Client(cluster) as client:
            log.info("%s cluster started; dask dashboard: %s", spec.kind, _dashboard_words(cluster, client))
            yield client


def _scheduler_file_address(path) -> str | None:
    import json  # noqa: PLC0415

    try:
        return str(json.loads(Path(path).read_text()).get("address"))
    except (OSError, ValueError, AttributeError):
        return None


def _check_file_scheme(path) -> None:
    """TLS files with a scheduler file: its address must be tls://, or the client would connect in plaintext."""
    address = _scheduler_file_address(path)
    if address is not None and not address.startswith("tls://"):
        msg = f"cluster.scheduler_file: {path} gives the address {address!r} and TLS files are set; expected a 'tls://' scheduler"
        raise InputError(msg)


def _connect(Client, target: dict, kwargs: dict):
    """A client of an existing scheduler; a failure to connect is one :class:`InputError` line."""
    where = target.get("address") or f"the scheduler file {target.get('scheduler_file')}"
    try:
        return Client(**target, **kwargs)
    except (OSError, TimeoutError, ValueError) as err:  # ssl.SSLError and refused connections are OSErrors
        text = " ".join(str(err).split()) or type(err).__name__
        msg = f"cluster: could not connect to {where} ({type(err).__name__}: {text}); expected a running scheduler there (check address, TLS files and timeout)"
        raise InputError(msg) from None


def dashboard_listening(cluster) -> list[str]:
    """``host:port`` of every socket the cluster's dashboard listens on (empty where unknown, e.g. a remote scheduler)."""
    server = getattr(getattr(cluster, "scheduler", None), "http_server", None)
    sockets = getattr(server, "_sockets", None) or {}
    out = []
    for sock in sockets.values():
        try:
            host, port = sock.getsockname()[:2]
        except (OSError, ValueError):
            continue
        out.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    return sorted(set(out))


def _dashboard_words(cluster, client) -> str:
    """The dashboard's link from where it really listens, and who can reach it."""
    bound = dashboard_listening(cluster)
    if not bound:
        return str(client.dashboard_link)
    wide = [b for b in bound if b.split(":")[0] in ("0.0.0.0", "[::]")]
    if wide:
        return f"{client.dashboard_link} (listening on {', '.join(bound)}: every interface, reachable from other hosts)"
    return f"http://{bound[0]}/status (listening on {', '.join(bound)} only)"


def describe(spec: Mapping | ClusterSpec | None = None, /, **overrides) -> str:
    """What :func:`cluster_client` would start for a spec, in words (and the job script for
    ``slurm``/``pbs``); starts and submits nothing.

    Parameters
    ----------
    spec : mapping, ClusterSpec or None
        As for :func:`cluster_client`.
    **overrides
        Settings that replace those of ``spec``.

    Returns
    -------
    str
    """
    spec = resolve_cluster_spec(spec, **overrides)
    o = spec.options
    if spec.kind == "local":
        k = _local_kwargs(o)
        memory = k["memory_limit"]
        if memory == "auto":
            from distributed.system import MEMORY_LIMIT as total  # noqa: PLC0415

            memory = f"auto ({dask.utils.format_bytes(total // k['n_workers'])})"
        return (
            f"kind: local (distributed.LocalCluster)\n"
            f"workers: {k['n_workers']} {'processes' if k['processes'] else 'threads-only'} x {k['threads_per_worker']} threads\n"
            f"memory limit per worker: {memory}\n"
            f"spill directory: {k['local_directory']}\n"
            f"dashboard: {_dashboard_text(k['dashboard_address'])}\n"
            f"worker environment: {_malloc_text()} (unless set in dask config or exported)"
        )
    if spec.kind == "cuda":
        k = _cuda_kwargs(o)
        lines = ["kind: cuda (dask_cuda.LocalCUDACluster)"] + [f"{key}: {value}" for key, value in sorted(k.items())]
        try:
            import dask_cuda  # noqa: F401, PLC0415
        except ImportError:
            lines.append("note: dask-cuda is not installed here; pip install 'mosaic-jwst[gpu]'")
        return "\n".join(lines)
    if spec.kind == "address":
        if "address" in o:
            target = o["address"]
            tls = "with TLS" if str(target).startswith("tls://") else "without TLS (plaintext)"
        else:
            address = _scheduler_file_address(o["scheduler_file"])
            target = f"the scheduler file {o['scheduler_file']}"
            if address is None:
                tls = "(the file cannot be read yet: its address decides TLS" + (", which the TLS files require)" if _security_keys(o) else ")")
            else:
                target += f" ({address})"
                tls = "with TLS" if address.startswith("tls://") else "without TLS (plaintext)"
        return f"kind: address (an existing scheduler)\nconnect to: {target} {tls}"
    scaling = (
        f"adaptive, {o.get('minimum_jobs', 0)} to {o['maximum_jobs']} jobs"
        if "maximum_jobs" in o else f"{o.get('n_jobs', 1)} job(s)"
    )
    header = f"kind: {spec.kind} (dask_jobqueue.{_jobqueue_class(spec.kind).__name__})\nscaling: {scaling}\n"
    if "walltime" in o and "lifetime" not in o:
        header += "note: walltime without lifetime: workers die with the job and lose their results; set lifetime < walltime\n"
    return header + "job script:\n" + job_script(spec)


def _dashboard_text(address) -> str:
    if address is None:
        return "none"
    host = str(address).rsplit(":", 1)[0]
    if host in ("127.0.0.1", "localhost", "[::1]", "::1"):
        return f"{address} (this host only; the next free port if taken)"
    return f"{address} (every interface: reachable from other hosts; the next free port if taken)"


def _security_keys(options: Mapping) -> list[str]:
    return [k for k in options if k.startswith("tls_")]
