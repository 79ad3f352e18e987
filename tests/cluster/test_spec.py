"""Cluster settings: validation messages, defaults, YAML and dask config, job scripts, the CLI."""

from __future__ import annotations

import importlib.util
import re
import shlex

import dask
import pytest

from mosaic.cli import main
from mosaic.cluster import (
    KINDS,
    OPTIONS,
    WORKER_MALLOC_ENV,
    ClusterDependencyError,
    ClusterSpec,
    describe,
    job_script,
    load_cluster_config,
    make_cluster,
    resolve_cluster_spec,
    validate_cluster_spec,
)
from mosaic.exceptions import InputError

SLURM = {
    "kind": "slurm",
    "cores": 2,
    "memory": "4GiB",
    "processes": 1,
    "walltime": "01:30:00",
    "queue": "short",
    "account": "jwst-survey",
    "lifetime": "80m",
    "lifetime_stagger": "4m",
    "local_directory": "$TMPDIR",
    "job_extra_directives": ["--exclusive", "--constraint=cpu"],
}


def test_unknown_key_names_key_and_lists_allowed():
    with pytest.raises(InputError) as err:
        validate_cluster_spec({"kind": "local", "n_worker": 2}, where="run.yaml: cluster")
    msg = str(err.value)
    assert msg.startswith("run.yaml: cluster: unknown key 'n_worker' for kind 'local'")
    for key in ["kind", *OPTIONS["local"]]:
        assert repr(key) in msg


def test_key_of_another_kind_says_which():
    with pytest.raises(InputError, match=r"unknown key 'walltime' for kind 'local' \('walltime' is a setting of kind slurm / pbs\)"):
        validate_cluster_spec({"walltime": "01:00:00"})


def test_bad_kind_lists_kinds():
    with pytest.raises(InputError) as err:
        validate_cluster_spec({"kind": "kubernetes"})
    assert str(err.value) == f"cluster.kind: got 'kubernetes'; expected one of {KINDS}"


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        ({"n_workers": -1}, r"cluster\.n_workers: got -1; expected an integer >= 1"),
        ({"n_workers": 0}, r"cluster\.n_workers: got 0; expected an integer >= 1"),
        ({"n_workers": 2.0}, r"cluster\.n_workers: got 2\.0; expected an integer >= 1"),
        ({"threads_per_worker": True}, r"cluster\.threads_per_worker: got True"),
        ({"memory_limit": "lots"}, r"cluster\.memory_limit: got 'lots'; expected 'auto', a memory size"),
        ({"memory_limit": 1.5}, r"cluster\.memory_limit: got 1\.5; expected .* fraction"),
        ({"kind": "slurm", "walltime": "1 hour"}, r"cluster\.walltime: got '1 hour'; expected a walltime"),
        ({"kind": "slurm", "lifetime": "soon"}, r"cluster\.lifetime: got 'soon'; expected a duration"),
        ({"kind": "slurm", "job_extra_directives": "--exclusive"}, r"job_extra_directives: got '--exclusive'; expected a list of strings"),
        ({"kind": "slurm", "n_jobs": -2}, r"cluster\.n_jobs: got -2; expected an integer >= 0"),
        ({"kind": "pbs", "n_jobs": 2, "maximum_jobs": 4}, r"'n_jobs' .* and 'minimum_jobs'/'maximum_jobs' \(adaptive\) exclude each other"),
        ({"kind": "slurm", "minimum_jobs": 5, "maximum_jobs": 2}, r"cluster\.minimum_jobs: got 5; expected <= maximum_jobs \(2\)"),
        ({"kind": "slurm", "walltime": "01:00:00", "lifetime": "55m", "lifetime_stagger": "10m"}, r"expected less than the walltime '01:00:00'"),
        ({"kind": "slurm", "lifetime_stagger": "2m"}, r"'lifetime_stagger' needs 'lifetime'"),
        ({"kind": "address"}, r"needs exactly one of 'address' or 'scheduler_file'; got neither"),
        ({"kind": "address", "address": "tcp://h:1", "scheduler_file": "f.json"}, r"exactly one .* got \['address', 'scheduler_file'\]"),
        ({"kind": "address", "address": "tcp://h:1", "tls_client_cert": "c.pem"}, r"'tls_client_cert' given without 'tls_client_key'"),
        ({"kind": "address", "address": "tls://h:1"}, r"cluster\.address: got 'tls://h:1', a TLS scheduler; expected 'tls_ca_file', 'tls_client_cert'"),
        ({"kind": "cuda", "devices": "0,a"}, r"cluster\.devices: got '0,a'; expected GPU indices"),
        ({"kind": "cuda", "devices": [0], "n_workers": 2}, r"at most one worker per device"),
        ("local", r"cluster: got 'local'; expected a mapping"),
    ],
)
def test_bad_values_name_key_value_and_expectation(spec, pattern):
    with pytest.raises(ValueError, match=pattern):
        validate_cluster_spec(spec)


def test_valid_spec_round_trips_and_null_means_default():
    spec = validate_cluster_spec({**SLURM, "queue": None})
    assert spec == ClusterSpec("slurm", {k: v for k, v in SLURM.items() if k not in ("kind", "queue")})
    assert validate_cluster_spec(spec) == spec
    assert validate_cluster_spec(None) == ClusterSpec("local", {})
    with pytest.raises(TypeError):
        spec.options["cores"] = 3  # a checked spec cannot be changed behind the check's back


def test_dask_config_supplies_the_spec_and_overrides_win():
    with dask.config.set({"mosaic.cluster": {"kind": "local", "n_workers": 3, "memory_limit": "1GB"}}):
        assert resolve_cluster_spec(None) == ClusterSpec("local", {"n_workers": 3, "memory_limit": "1GB"})
        assert resolve_cluster_spec(None, n_workers=1).options["n_workers"] == 1
        # another kind starts from nothing: the local settings would not fit a slurm cluster
        assert resolve_cluster_spec(None, kind="slurm", cores=2) == ClusterSpec("slurm", {"cores": 2})
        # an explicit spec ignores the config
        assert resolve_cluster_spec({"n_workers": 2}) == ClusterSpec("local", {"n_workers": 2})
    with dask.config.set({"mosaic.cluster": {"kind": "local", "workers": 3}}):
        with pytest.raises(InputError, match=r"^dask config mosaic\.cluster: unknown key 'workers'"):
            resolve_cluster_spec(None)


@pytest.mark.parametrize("layout", ["top", "cluster", "dask"])
def test_load_cluster_config_layouts(tmp_path, layout):
    body = "kind: pbs\ncores: 4\nmemory: 8GB\nwalltime: '02:00:00'\n"
    indented = "".join("  " + line + "\n" for line in body.splitlines())
    text = {"top": body, "cluster": "field: abell2744\ncluster:\n" + indented,
            "dask": "mosaic:\n  cluster:\n" + "".join("  " + line + "\n" for line in indented.splitlines())}[layout]
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert load_cluster_config(path) == {"kind": "pbs", "cores": 4, "memory": "8GB", "walltime": "02:00:00"}


def test_load_cluster_config_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such cluster configuration file"):
        load_cluster_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- kind: local\n")
    with pytest.raises(InputError, match=r"list.yaml: got a list; expected a mapping"):
        load_cluster_config(tmp_path / "list.yaml")


def _directives(script: str, prefix: str) -> list[str]:
    return [line[len(prefix):].strip() for line in script.splitlines() if line.startswith(prefix)]


def test_slurm_job_script_has_the_directives_and_worker_lifetime():
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is not installed (pip install 'mosaic-jwst[hpc]')")
    script = job_script(SLURM)
    directives = _directives(script, "#SBATCH")
    for wanted in ["-p short", "-A jwst-survey", "-t 01:30:00", "--cpus-per-task=2", "--mem=4G", "--exclusive", "--constraint=cpu"]:
        assert wanted in directives, (wanted, directives)
    worker = next(line for line in script.splitlines() if "distributed.cli.dask_worker" in line)
    assert re.search(r"--lifetime 80m --lifetime-stagger 4m", worker)
    assert "--local-directory $TMPDIR" in worker  # expanded on the compute node, not here
    assert "--nworkers" not in worker and "--nthreads 2 --memory-limit 4.00GiB" in worker  # one worker per job


def test_job_scripts_give_the_workers_mosaics_malloc_settings():
    """The first prologue line exports mosaic's malloc settings (a nanny prefers variables to its
    config), and a prologue line of the user's comes after it, so it can still change them."""
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is not installed (pip install 'mosaic-jwst[hpc]')")
    script = job_script({**SLURM, "job_script_prologue": ["module load python"]})
    lines = script.splitlines()
    export = next(i for i, line in enumerate(lines) if line.startswith("export MALLOC_"))
    assert lines[export + 1] == "module load python"
    exported = dict(word.split("=", 1) for word in shlex.split(lines[export])[1:])
    assert exported == {k: str(v) for k, v in WORKER_MALLOC_ENV.items()}


def test_slurm_cluster_job_script_matches(tmp_path):
    """The cluster object's own job_script() (a real scheduler, no submission) carries the same directives."""
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is not installed (pip install 'mosaic-jwst[hpc]')")
    with make_cluster({**SLURM, "dashboard_address": ":0", "log_directory": str(tmp_path)}) as cluster:
        script = cluster.job_script()
        assert cluster.scheduler_address.startswith("tcp://")
        assert not cluster.workers  # nothing submitted
    assert cluster.scheduler_address.split("//")[1] in script
    logs = [f"-e {tmp_path}/dask-worker-%J.err", f"-o {tmp_path}/dask-worker-%J.out"]
    # [0] is the job name; the log files are the only other difference
    assert [d for d in _directives(script, "#SBATCH")[1:] if d not in logs] == _directives(job_script(SLURM), "#SBATCH")[1:]
    assert set(logs) <= set(_directives(script, "#SBATCH"))


def test_pbs_job_script():
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is not installed (pip install 'mosaic-jwst[hpc]')")
    spec = {"kind": "pbs", "cores": 8, "memory": "32GB", "processes": 2, "walltime": "04:00:00", "queue": "workq",
            "account": "p123", "lifetime": "230m", "resource_spec": "select=1:ncpus=8:mem=32GB:ngpus=0"}
    script = job_script(spec)
    directives = _directives(script, "#PBS")
    assert {"-q workq", "-A p123", "-l walltime=04:00:00", "-l select=1:ncpus=8:mem=32GB:ngpus=0"} <= set(directives)
    assert "--lifetime 230m" in script and "--nworkers 2 " in script


def test_cuda_without_dask_cuda_is_a_clear_error():
    if importlib.util.find_spec("dask_cuda") is not None:
        pytest.skip("dask-cuda is installed here, so the missing-package error cannot occur")
    with pytest.raises(ClusterDependencyError) as err:
        make_cluster({"kind": "cuda", "rmm_pool_size": "2GB"})
    assert "needs dask-cuda, which is not installed; pip install 'mosaic-jwst[gpu]'" in str(err.value)
    assert isinstance(err.value, ImportError) and isinstance(err.value, ValueError)
    # the spec itself is fine: only starting it needs the package
    assert validate_cluster_spec({"kind": "cuda", "rmm_pool_size": "2GB"}).options["rmm_pool_size"] == "2GB"


def test_describe_local_defaults_from_the_machine(tmp_path):
    from distributed.deploy.utils import nprocesses_nthreads

    n_workers, n_threads = nprocesses_nthreads()
    text = describe({"local_directory": str(tmp_path)})
    assert f"workers: {n_workers} processes x {n_threads} threads" in text
    assert f"spill directory: {tmp_path}" in text
    text = describe({"n_workers": 3, "threads_per_worker": 2, "memory_limit": "3GB"})
    assert "workers: 3 processes x 2 threads" in text and "memory limit per worker: 3GB" in text


def test_describe_warns_about_walltime_without_lifetime():
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is not installed (pip install 'mosaic-jwst[hpc]')")
    text = describe({"kind": "slurm", "cores": 1, "memory": "1GB", "walltime": "00:10:00", "maximum_jobs": 4})
    assert "scaling: adaptive, 0 to 4 jobs" in text
    assert "walltime without lifetime" in text


def test_cli_cluster_info(tmp_path, capsys):
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is not installed (pip install 'mosaic-jwst[hpc]')")
    cfg = tmp_path / "run.yaml"
    cfg.write_text("cluster:\n  kind: slurm\n  cores: 2\n  memory: 4GB\n  walltime: '00:30:00'\n  queue: debug\n")
    assert main(["cluster", "info", "--config", str(cfg), "--set", "account=abc", "--set", "lifetime=25m"]) == 0
    out = capsys.readouterr().out
    assert "#SBATCH -p debug" in out and "#SBATCH -A abc" in out and "#SBATCH -t 00:30:00" in out
    assert "--lifetime 25m" in out

    assert main(["cluster", "info", "--config", str(cfg), "--set", "walltime=forever"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == f"mosaic cluster: error: {cfg}: cluster.walltime: got 'forever'; expected a walltime 'HH:MM:SS' or 'D-HH:MM:SS'"

    assert main(["cluster", "info", "--kind", "local", "--set", "n_workers=2", "--set", "threads_per_worker=1"]) == 0
    assert "workers: 2 processes x 1 threads" in capsys.readouterr().out


def test_deploy_configs_give_valid_specs_and_job_scripts():
    """deploy/jobqueue.yaml and deploy/dask-mosaic.yaml, loaded as dask config, make the job script they promise."""
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is not installed (pip install 'mosaic-jwst[hpc]')")
    from pathlib import Path

    import yaml

    deploy = Path(__file__).resolve().parents[2] / "deploy"
    jobqueue = yaml.safe_load((deploy / "jobqueue.yaml").read_text())
    for kind in ("slurm", "pbs"):
        jobqueue["jobqueue"][kind]["log-directory"] = None  # nothing written by the test
    mosaic = yaml.safe_load((deploy / "dask-mosaic.yaml").read_text())
    # key by key: setting jobqueue.slurm whole would drop dask-jobqueue's other defaults
    flat = {f"jobqueue.{kind}.{key}": value for kind, section in jobqueue["jobqueue"].items() for key, value in section.items()}
    with dask.config.set(flat), dask.config.set(mosaic):
        text = describe()
        pbs = job_script({"kind": "pbs", "queue": "workq"})
    assert "scaling: adaptive, 1 to 8 jobs" in text
    assert {"-p YOUR_PARTITION", "-A YOUR_ACCOUNT", "-t 06:00:00", "--cpus-per-task=32"} <= set(_directives(text, "#SBATCH"))
    for script in (text, pbs):
        assert "--nthreads 8" in script and "--nworkers 4" in script and "--interface ib0" in script
        assert "--lifetime 340m --lifetime-stagger 10m" in script and "--local-directory $TMPDIR" in script
    assert "-l select=1:ncpus=32:mem=240gb" in _directives(pbs, "#PBS")


# -- hardening (issue 22): the dashboard on loopback, TLS never silently dropped ----------------------


def test_local_cluster_dashboard_listens_on_loopback_and_the_log_says_where(caplog):
    """By default the dashboard of a cluster mosaic starts is reachable from this host only, and
    the logged link is the socket's own address (read back from the listening socket)."""
    from mosaic.cluster import cluster_client, dashboard_listening

    spec = {"kind": "local", "processes": False, "n_workers": 1, "threads_per_worker": 1}
    with caplog.at_level("INFO", logger="mosaic.cluster"), cluster_client({**spec, "dashboard_address": "127.0.0.1:0"}) as client:
        bound = dashboard_listening(client.cluster)
    assert len(bound) == 1 and bound[0].startswith("127.0.0.1:")
    assert f"http://{bound[0]}/status (listening on {bound[0]} only)" in caplog.text
    # the default is loopback too; ':0' (every interface) is allowed and said to be reachable from other hosts
    from mosaic.cluster import DEFAULT_DASHBOARD, _local_kwargs

    assert _local_kwargs({})["dashboard_address"] == DEFAULT_DASHBOARD == "127.0.0.1:8787"
    caplog.clear()
    with caplog.at_level("INFO", logger="mosaic.cluster"), cluster_client({**spec, "dashboard_address": ":0"}) as client:
        bound = dashboard_listening(client.cluster)
    assert bound[0].startswith("0.0.0.0:") and "reachable from other hosts" in caplog.text
    assert "this host only" in describe({"kind": "local"}) and "reachable from other hosts" in describe({"kind": "local", "dashboard_address": ":8787"})


@pytest.mark.parametrize("address", ["tcp://h:8786", "h:8786"])
def test_tls_files_with_a_plaintext_address_are_refused(address):
    spec = {"kind": "address", "address": address, "tls_ca_file": "ca.pem", "tls_client_cert": "c.pem", "tls_client_key": "k.pem"}
    with pytest.raises(ValueError, match=rf"cluster\.address: got '{address}' with TLS files .*expected a 'tls://' address"):
        validate_cluster_spec(spec)
    with pytest.raises(ValueError, match="require_encryption: true needs 'tls_client_cert'"):
        validate_cluster_spec({"kind": "address", "scheduler_file": "s.json", "tls_ca_file": "ca.pem", "require_encryption": True})


def test_cluster_info_says_tls_only_when_the_connection_is_tls(tmp_path):
    import json

    files = {"tls_ca_file": "ca.pem", "tls_client_cert": "c.pem", "tls_client_key": "k.pem"}
    assert describe({"kind": "address", "address": "tls://h:8786", **files}).endswith("tls://h:8786 with TLS")
    assert describe({"kind": "address", "address": "tcp://h:8786"}).endswith("without TLS (plaintext)")
    sched = tmp_path / "scheduler.json"
    sched.write_text(json.dumps({"address": "tcp://h:8786"}))
    text = describe({"kind": "address", "scheduler_file": str(sched), **files})
    assert "(tcp://h:8786) without TLS" in text
    # and connecting refuses it, before any plaintext connection
    from mosaic.cluster import cluster_client

    for name in files.values():
        (tmp_path / name).write_text("x")
    spec = {"kind": "address", "scheduler_file": str(sched), **{k: str(tmp_path / v) for k, v in files.items()}}
    with pytest.raises(ValueError, match=r"scheduler\.json gives the address 'tcp://h:8786' and TLS files are set"), cluster_client(spec):
        pass


def test_connection_failure_is_one_line():
    from mosaic.cluster import cluster_client

    with pytest.raises(ValueError, match=r"cluster: could not connect to tcp://127\.0\.0\.1:9 \(.*expected a running scheduler"), cluster_client(
        {"kind": "address", "address": "tcp://127.0.0.1:9", "timeout": 1}
    ):
        pass


@pytest.mark.skipif(not hasattr(__import__("os"), "sched_setaffinity") or len(__import__("os").sched_getaffinity(0)) < 2, reason="needs a platform with CPU affinity and at least two usable cores")
def test_a_local_cluster_and_the_exposure_scans_count_the_cores_the_process_may_use():
    """Pinned to one core (as a SLURM or PBS allocation smaller than the node pins a job), a
    local cluster of one worker gets one thread and the exposures' scans no second thread: the
    node's core count would oversubscribe the allocation."""
    import os
    import subprocess
    import sys

    probe = (
        "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))});"
        "from mosaic.cluster import _local_kwargs; import mosaic.io.cal as cal; from dask.system import CPU_COUNT;"
        "print(_local_kwargs({'n_workers': 1})['threads_per_worker'], _local_kwargs({})['n_workers'], CPU_COUNT, os.cpu_count())"
    )
    got = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    threads, workers, cores, node = map(int, got)
    assert node >= 2  # the node has more cores than the process may use
    assert (threads, workers, cores) == (1, 1, 1)
    # unpinned, one worker takes every core the process may use
    from mosaic.cluster import _local_kwargs

    assert _local_kwargs({"n_workers": 1})["threads_per_worker"] == len(os.sched_getaffinity(0))
