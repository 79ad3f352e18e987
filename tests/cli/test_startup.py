"""Start-up of ``mosaic``: ``--version`` and ``--help`` import no heavy library; a command imports only its own module."""

from __future__ import annotations

import argparse
import json
import pkgutil
import subprocess
import sys

import pytest

import mosaic.cli
from mosaic.cli import COMMANDS, _command_named, build_parser

HEAVY = ("dask", "distributed", "scipy", "astropy", "numba", "xarray", "matplotlib", "mosaic.simulate")


def _modules_after(argv: list[str]) -> set[str]:
    """The modules loaded by ``mosaic.cli.main(argv)`` in a fresh interpreter."""
    code = (
        "import json, sys\n"
        "from mosaic.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "sys.stderr.write(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stderr.strip().splitlines()[-1]))


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


@pytest.mark.parametrize("argv", [["--version"], ["--help"]])
def test_version_and_help_import_no_heavy_library(argv):
    modules = _modules_after(argv)
    assert "mosaic.cli" in modules  # the probe ran the CLI
    assert _heavy(modules) == []
    assert not any(m.startswith("mosaic.cli.") for m in modules), "no subcommand module is needed to list them"


def test_a_command_imports_only_its_own_module():
    modules = _modules_after(["--log-level", "WARNING", "simulate", "--help"])
    assert {m for m in modules if m.startswith("mosaic.cli.")} == {"mosaic.cli.simulate"}
    assert _heavy(modules) == [], "the simulator is imported by `mosaic simulate` when it runs, not to parse"


def test_commands_table_lists_every_module_with_its_own_help():
    found = {m.name for m in pkgutil.iter_modules(mosaic.cli.__path__) if not m.name.startswith("_")}
    assert set(COMMANDS) == found
    parser = build_parser([], full=True)
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help for a in sub._choices_actions}
    assert helps == COMMANDS


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["drizzle", "a_cal.fits", "--out", "updc"], "drizzle"),
        (["--log-level", "DEBUG", "--log-file", "run", "updc", "--help"], "updc"),
        (["--log-level=DEBUG", "info", "x"], "info"),
        (["--version"], None),
        (["nosuch", "drizzle"], None),
    ],
)
def test_command_named(argv, expected):
    assert _command_named(argv) == expected


def test_unknown_command_is_refused(capsys):
    with pytest.raises(SystemExit) as info:
        mosaic.cli.main(["drizle"])
    assert info.value.code == 2
    assert "invalid choice: 'drizle'" in capsys.readouterr().err


def test_no_command_help_shows_sphinx_markup(capsys):
    """``--help`` is read in a terminal: no ``literal``, :mod: or :func: roles."""
    import re

    import pytest

    from mosaic.cli import COMMANDS, main

    for name in COMMANDS:
        with pytest.raises(SystemExit):
            main([name, "--help"])
        text = capsys.readouterr().out
        assert not re.search(r"``|:(mod|func|class|meth):`", text), (name, text)


def test_local_clusters_poll_less_and_keep_the_users_settings():
    """A command's local cluster measures its event loops every second, not every 20 ms (the
    scheduler and nannies share the command's process with the client); a value the user set in
    their dask config is theirs."""
    import dask
    from distributed import LocalCluster

    from mosaic.cli._common import forked_workers
    from mosaic.cluster import QUIET_POLLING

    with dask.config.set({"distributed.worker.memory.monitor-interval": "250ms"}), forked_workers():
        assert dask.config.get("distributed.admin.tick.interval") == QUIET_POLLING["distributed.admin.tick.interval"][1]
        assert dask.config.get("distributed.worker.memory.monitor-interval") == "250ms"
        with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster:
            assert cluster.scheduler.periodic_callbacks["tick"].callback_time == 1000
            assert cluster.scheduler.periodic_callbacks["monitor"].callback_time == 1000
            (nanny,) = cluster.workers.values()
            assert nanny.periodic_callbacks["tick"].callback_time == 1000
    assert dask.config.get("distributed.admin.tick.interval") == "20ms"
