"""Data layer: exposures (``cal``), the output grid (``grid``), the zarr store (``store``), products."""
