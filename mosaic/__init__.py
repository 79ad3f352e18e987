"""mosaic: deconvolved, super-resolved JWST NIRCam mosaics and catalogues on dask.

Layers, each calling only those below it: ``mosaic.cli`` (interfaces) → ``mosaic.pipeline`` →
graph builders (``mosaic.coadd``) → operators (``mosaic.ops``, ``mosaic.psf``) → data
(``mosaic.io``, ``mosaic.simulate``).
"""

import logging

__version__ = "0.1.0"
__all__ = ["__version__"]

logging.getLogger(__name__).addHandler(logging.NullHandler())
