"""Imaging-spectroscopy fusion (seed 003): NIRCam images + a NIRSpec IFU cube -> a cube at NIRCam resolution.

Operators (arrays in, arrays out):

- :mod:`mosaic.fusion.operators`: the forward models ``NIRCam(X)``, ``NIRSpec(X)`` and their adjoints;
- :mod:`mosaic.fusion.objective`: the PCA subspace, the Sobolev regulariser, objective (9);
- :mod:`mosaic.fusion.solve`: its exact minimiser (Fourier blocks) and a conjugate-gradient peer;
- :mod:`mosaic.fusion.calibrate`: filter throughputs (top hats) and cross-calibration (eqs. 6-7);
- :mod:`mosaic.fusion.metrics`: PSNR, SSIM, spectral angle and error, single-instrument baselines.

Graphs and preparation:

- :mod:`mosaic.fusion.tiled`: large fields as a dask graph of overlapping, tapered tiles;
- :mod:`mosaic.fusion.prepare`: the fine grid, co-registration, the common field, PSF cubes;
- :mod:`mosaic.fusion.fuse`: one call from co-registered data to the fused cube;
- :mod:`mosaic.io.cubes` (the data layer): the IFU cube in, the fused FITS cube out;
- :mod:`mosaic.fusion.simulate`: a scene with truth, its images and IFU cube.
"""
