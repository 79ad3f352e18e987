"""Data layer: exposures (``cal``), the output grid (``grid``), the zarr store (``store``), FITS images (``images``), products (``products``: ``_i2d.fits``; ``catalogs``)."""
