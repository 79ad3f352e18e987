"""The ``mosaic`` command.

Each subcommand lives in its own module under ``mosaic.cli`` with ``add_parser(subparsers)``,
which registers it and sets ``func`` to a ``run(args) -> int``; every such module (not starting
with ``_``) is found, so a new command is one new file. Errors about input end the
command with one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from mosaic import __version__
from mosaic.exceptions import InputError

__all__ = ["main", "build_parser", "commands"]

#: subcommands listed first by ``mosaic --help``, in this order; the rest follow alphabetically
FIRST = ("demo", "run", "batch", "simulate", "info", "drizzle", "updc")


def commands() -> list[str]:
    """The subcommand modules of ``mosaic.cli``."""
    import mosaic.cli as pkg  # noqa: PLC0415

    found = {m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_")}
    return [n for n in FIRST if n in found] + sorted(found.difference(FIRST))


log = logging.getLogger("mosaic")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mosaic",
        description="Deconvolved, super-resolved JWST NIRCam mosaics and catalogues on dask.",
    )
    parser.add_argument("--version", action="version", version=f"mosaic {__version__}")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="how much to log (default INFO)",
    )
    parser.add_argument("--log-file", default=None, help="also write the log to this file")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in commands():
        importlib.import_module(f"mosaic.cli.{name}").add_parser(sub)
    return parser


#: third-party loggers that are chatty at INFO: shown from WARNING up (or the level asked, if higher)
_NOISY_LOGGERS = ("distributed", "bokeh", "tornado", "asyncio", "matplotlib", "PIL")


class _QuietLibraries(logging.Filter):
    """Drop records of ``_NOISY_LOGGERS`` below their threshold, whatever their logger's level.

    A level set on the logger is not enough: distributed sets its loggers' levels (INFO) when
    it is imported, which happens after the command line is read (when a cluster starts).
    """

    def __init__(self, threshold: int):
        super().__init__()
        self.threshold = threshold

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= self.threshold:
            return True
        return not any(record.name == n or record.name.startswith(n + ".") for n in _NOISY_LOGGERS)


def _setup_logging(level: str, log_file: str | None) -> None:
    handlers = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file))
    threshold = max(logging.WARNING, getattr(logging, level))
    for handler in handlers:
        handler.addFilter(_QuietLibraries(threshold))
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=getattr(logging, level), format=fmt, datefmt="%H:%M:%S", handlers=handlers, force=True)
    for noisy in _NOISY_LOGGERS:
        logger = logging.getLogger(noisy)
        logger.setLevel(threshold)
        if noisy == "distributed" and not logger.propagate:
            # imported before logging was set up, distributed printed through a handler of its own
            for own in list(logger.handlers):
                logger.removeHandler(own)
            logger.propagate = True


def main(argv: list[str] | None = None) -> int:
    """Run the ``mosaic`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    _setup_logging(args.log_level, args.log_file)
    try:
        return int(args.func(args) or 0)
    except (InputError, FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"mosaic {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"mosaic {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
