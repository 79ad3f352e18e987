"""``mosaic serve``: the processing service (REST API and web page) over a data directory.

    mosaic serve --data DIR --store STORE.zarr [--host 127.0.0.1] [--port 8000] [--cluster SPEC]
                 [--state DIR] [--max-upload-mb 256] [--token-file FILE]

Serves the algorithm registry, images under DIR (and uploads into DIR/uploads), processing
chains, previews, statistics, catalogues and field runs on the dask cluster; see
:mod:`mosaic.service.app`. Binds to loopback unless told otherwise.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
from pathlib import Path

from mosaic.cli._common import positive_int

__all__ = ["add_parser", "run"]

log = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``serve`` subcommand on ``subparsers``; returns its parser."""
    p = subparsers.add_parser(
        "serve",
        help="serve the algorithms, images and field runs over HTTP (REST API and a web page)",
        description=(
            "Start the processing service: a REST API and a web page over the images of a data directory, "
            "running processing chains and field runs on a dask cluster. Binds to 127.0.0.1 by default."
        ),
    )
    p.add_argument("--data", required=True, metavar="DIR", help="folder of the images to serve; nothing outside it is read")
    p.add_argument("--store", required=True, metavar="STORE.zarr", help="zarr store of the field runs")
    p.add_argument("--state", metavar="DIR", default=None, help="folder of results and run records (default: STORE.zarr.service)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 for a free one)")
    p.add_argument(
        "--cluster", default=None, metavar="SPEC",
        help="the dask cluster: a YAML file (as for `mosaic cluster`), an inline JSON mapping such as "
             "'{\"kind\": \"local\", \"n_workers\": 2}', a scheduler address tcp://..., or 'none' (no runs); "
             "default: dask config mosaic.cluster, else a local cluster",
    )
    p.add_argument("--max-upload-mb", type=positive_int, default=256, help="largest upload in MiB (default 256)")
    p.add_argument("--max-age-hours", type=float, default=None, metavar="H",
                   help="delete results of /process, uploads and cached previews older than H hours (default: keep)")
    p.add_argument("--token-file", metavar="FILE", default=None,
                   help="require this file's token as 'Authorization: Bearer <token>' (also read from $MOSAIC_SERVICE_TOKEN)")
    p.set_defaults(func=run)
    return p


def _cluster_spec(text: str | None):
    """``(use a cluster, spec)`` from --cluster."""
    from mosaic.cluster import load_cluster_config  # noqa: PLC0415
    from mosaic.exceptions import InputError  # noqa: PLC0415

    if text is None:
        return True, None
    if text.lower() == "none":
        return False, None
    if "://" in text:
        return True, {"kind": "address", "address": text}
    if text.lstrip().startswith("{"):
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as err:
            raise InputError(f"--cluster {text!r}: not valid JSON ({err}); expected a mapping such as '{{\"kind\": \"local\"}}'") from None
        return True, spec
    return True, load_cluster_config(text)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    """Run ``mosaic serve`` until interrupted; returns the exit code."""
    from contextlib import nullcontext  # noqa: PLC0415

    from mosaic.exceptions import InputError  # noqa: PLC0415

    try:
        import uvicorn  # noqa: PLC0415

        from mosaic.service.app import Settings, create_app  # noqa: PLC0415
    except ImportError as err:
        raise InputError(f"mosaic serve needs the service extra ({err.name} is missing); pip install 'mosaic-jwst[service]'") from None
    from mosaic.cluster import cluster_client  # noqa: PLC0415

    token = os.environ.get("MOSAIC_SERVICE_TOKEN") or None
    if args.token_file:
        path = Path(args.token_file)
        if not path.is_file():
            raise InputError(f"--token-file {path}: no such file")
        token = path.read_text().strip() or None
    if not _loopback(args.host) and token is None:
        log.warning("serving on %s without a token: anyone who can reach this address can read the data and run jobs", args.host)
    use_cluster, spec = _cluster_spec(args.cluster)
    context = cluster_client(spec) if use_cluster else nullcontext(None)
    with context as client:
        settings = Settings(data_dir=Path(args.data), store=Path(args.store), state_dir=Path(args.state) if args.state else None,
                            max_upload_bytes=args.max_upload_mb * 2**20, token=token, max_age_hours=args.max_age_hours)
        app = create_app(settings, client=client)
        config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", access_log=False)
        server = uvicorn.Server(config)
        if client is not None:
            log.info("dask dashboard: %s", client.dashboard_link)
        log.info("serving %s (store %s) on http://%s:%d", settings.data_dir, settings.store, args.host, args.port)
        server.run()
    return 0
