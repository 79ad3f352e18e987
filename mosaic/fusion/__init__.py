"""Imaging-spectroscopy fusion (seed 003): NIRCam images + a NIRSpec IFU cube -> a cube at NIRCam resolution.

- :mod:`mosaic.fusion.operators`: the forward models ``NIRCam(X)`` and ``NIRSpec(X)`` and their adjoints.
- :mod:`mosaic.fusion.objective`: the PCA subspace, the Sobolev regulariser, objective (9).
- :mod:`mosaic.fusion.solve`: its exact minimiser (Fourier blocks) and a conjugate-gradient peer.
"""
