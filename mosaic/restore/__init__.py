"""Learned restoration of mosaics (seed 002, Restormer).

Modules: ``normalise`` (the one global intensity transform), ``infer`` (ONNX Runtime, tiled on
dask; no PyTorch), ``product`` (a restored ``_i2d.fits`` from a mosaic file), ``data`` (training
pairs from mosaic's simulator), ``linear`` (the model's least-squares linear base), ``augment``
(smooth sources injected into training patches), ``evaluate`` (figures against truth), and, with PyTorch (the
``train`` extra), ``model``, ``train`` and ``export``. The shipped model and its card are in
``mosaic/data/restore``.
"""
