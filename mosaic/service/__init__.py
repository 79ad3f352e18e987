"""The processing service: mosaic's algorithms and field runs behind a REST API and a web page.

``mosaic serve --data DIR --store STORE.zarr`` starts it (:mod:`mosaic.cli.serve`);
:func:`mosaic.service.app.create_app` builds the FastAPI application. Needs the ``service``
extra (``pip install 'mosaic-jwst[service]'``: FastAPI, uvicorn, python-multipart).
"""

__all__ = ["app", "files", "jobs", "process"]
