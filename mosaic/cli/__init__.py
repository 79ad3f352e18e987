"""The ``mosaic`` command.

Each subcommand lives in its own module ``mosaic.cli.<name>`` with ``add_parser(subparsers)``,
which registers it and sets ``func`` to a ``run(args) -> int``. A new command is one new module
plus one line in :data:`COMMANDS` (its name and the one-line help of ``mosaic --help``).

Start-up is lazy: ``mosaic --help`` and ``mosaic --version`` read only :data:`COMMANDS`, and a
command line imports only the module of the command it names, whose heavy imports (dask, scipy,
astropy, the simulator) sit inside its ``run``. Errors about input end the command with one line
on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings
from pathlib import Path

from mosaic import __version__

__all__ = ["main", "build_parser", "commands", "COMMANDS"]

#: every subcommand, in the order ``mosaic --help`` lists them, with its one-line help (the same
#: text as its module's ``add_parser`` gives; a test keeps the two equal)
COMMANDS = {
    "demo": "run the whole job on a small simulated field",
    "run": "run a field from a YAML config (preprocess, drizzle, UPDC, catalogues, previews); resumable",
    "batch": "run the fields of a survey manifest on one cluster; resumable",
    "simulate": "simulate a dithered NIRCam field (cal files, truth, PSFs)",
    "info": "describe _cal.fits exposures",
    "drizzle": "drizzle _cal.fits exposures into an _i2d.fits mosaic (UPDC iteration 0)",
    "updc": "deconvolved, super-resolved mosaic (UPDC) of _cal.fits exposures",
    "restore": "learned restoration of a mosaic (Restormer, seed 002) with the shipped ONNX model, tiled",
    "algorithms": "list the algorithms with their parameters",
    "background": "background and RMS maps of a FITS image (photutils Background2D, tiled; ICL option)",
    "cluster": "show what a cluster configuration would start (local, cuda, slurm, pbs, address)",
    "destripe": "remove 1/f striping from exposures; write _1fc.fits",
    "detect": "detect and measure sources in a mosaic (segmentation + photometry, or DAOFIND)",
    "filter": "Gaussian, median or NaN-safe convolution filter of a FITS image, tiled",
    "fuse": "fuse NIRCam images with a NIRSpec IFU cube into a cube at NIRCam resolution (seed 003)",
    "masks": "value-sliced / derivative source masks scored against a reference catalogue",
    "match": "cross-match two catalogues on the sky",
    "outliers": "flag cosmic rays and hot pixels against the other exposures; write _crf.fits",
    "preview": "write a PNG preview of a FITS image or zarr array of any size",
    "psf": "build a PSF from the stars of an image (hybrid model + stars, or empirical ePSF)",
    "rgb": "write an RGB composite PNG of images of several bands",
    "serve": "serve the algorithms, images and field runs over HTTP (REST API and a web page)",
    "skymatch": "match the sky levels of exposures over their overlaps; write _skm.fits",
    "stats": "exact robust statistics of a FITS image (sigma-clipped, biweight, MAD, percentiles)",
}

#: options of ``mosaic`` itself that take a value (skipped when looking for the command's name)
_VALUED_OPTIONS = ("--log-level", "--log-file")


def commands() -> list[str]:
    """The names of the subcommands, in the order of ``mosaic --help``."""
    return list(COMMANDS)


def _command_named(argv: list[str]) -> str | None:
    """The subcommand that ``argv`` names (its first word that is not an option of ``mosaic``), or None."""
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word in _VALUED_OPTIONS:
            skip = True
        elif not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


log = logging.getLogger("mosaic")


def build_parser(argv: list[str] | None = None, *, full: bool = False) -> argparse.ArgumentParser:
    """The parser of ``mosaic``.

    Only the command named in ``argv`` has its own options (its module is imported); the others
    are listed with their help. ``full=True`` imports every command and gives each its options.
    """
    chosen = _command_named(sys.argv[1:] if argv is None else argv)
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
    for name, help_ in COMMANDS.items():
        if full or name == chosen:
            importlib.import_module(f"mosaic.cli.{name}").add_parser(sub)
        else:
            sub.add_parser(name, help=help_, add_help=False)
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


class _QuietShutdown(logging.Filter):
    """Log a local cluster's end as what it is: the nanny kills its worker process when the process
    has not exited 4 s after the worker closed (its results are in, the scheduler has already
    removed it). A routine end of every run, so DEBUG, not a WARNING a user must read."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "distributed.nanny" and record.levelno == logging.WARNING:
            text = record.getMessage()
            if text.startswith("Worker process still alive after") or (text.startswith("Worker process ") and "was killed by signal" in text):
                record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> str:
    """A library's warning as one log line: category and message, no source line."""
    text = " ".join(str(message).split())
    return f"{category.__name__}: {text} ({Path(filename).name}:{lineno})"


class _StderrHandler(logging.StreamHandler):
    """A handler on whatever ``sys.stderr`` is when a record comes, not the one it was made with:
    ``main()`` called in a process that later swaps or closes its stderr (a notebook, a test's
    capture) must not leave a handler writing to a closed stream ("--- Logging error ---")."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ sets it; the property always answers sys.stderr
        pass


def _setup_logging(level: str, log_file: str | None) -> None:
    handlers = [_StderrHandler()]
    if log_file:
        handlers.append(logging.FileHandler(log_file))
    threshold = max(logging.WARNING, getattr(logging, level))
    for handler in handlers:
        # the shutdown filter runs first: it demotes records that the threshold then drops
        handler.addFilter(_QuietShutdown())
        handler.addFilter(_QuietLibraries(threshold))
    # warnings from libraries go to the log (logger py.warnings), one line each
    warnings.formatwarning = _one_line_warning
    logging.captureWarnings(True)
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
    from mosaic.exceptions import InputError  # noqa: PLC0415

    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    _setup_logging(args.log_level, args.log_file)
    try:
        return int(args.func(args) or 0)
    except (InputError, FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"mosaic {args.command}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    except OSError as err:  # a read-only folder, a full disk, a vanished file: one line, no traceback
        print(f"mosaic {args.command}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    except Exception as err:  # a fault no check foresaw: one line here, the traceback at --log-level DEBUG
        log.debug("traceback of the error", exc_info=True)
        text = " ".join(str(err).split())
        print(f"mosaic {args.command}: error: unexpected {type(err).__name__}: {text} (--log-level DEBUG shows where)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"mosaic {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
