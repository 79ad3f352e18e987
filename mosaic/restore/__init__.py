"""Learned restoration of mosaics (seed 002, Restormer).

Modules: ``normalise`` (the one global intensity transform), ``infer`` (ONNX Runtime, tiled on
dask; no PyTorch), ``product`` (a restored ``_i2d.fits`` from a mosaic file), ``data`` (training
pairs from mosaic's simulator), ``evaluate`` (figures against truth), and, with PyTorch (the
``train`` extra), ``model``, ``train`` and ``export``. The shipped model and its card are in
``mosaic/data/restore``.
"""
