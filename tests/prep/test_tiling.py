"""The tiled outlier graph equals its untiled computation on awkward tilings (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from mosaic.io.cal import CalCutouts, read_exposures
from mosaic.io.grid import MosaicGrid
from mosaic.ops.outliers import flag_outliers, robust_combine
from mosaic.prep.outliers import outlier_graph


@pytest.fixture(scope="module")
def untiled(cr_field):
    """One tile, one row block: the median of whole single-exposure drizzles, flags on whole exposures."""
    ds = read_exposures(cr_field.exposures[:4])
    grid = MosaicGrid.from_exposures(ds.attrs["wcs"], [(160, 160)] * 4, psr=1.0, tile=4096)
    g = outlier_graph(ds, grid, rows_per_chunk=160).compute()
    # the operators on the whole arrays, outside any graph
    for k in range(4):
        direct = flag_outliers(ds.sci[k].values, ds.err[k].values, g.blot.values[k])
        np.testing.assert_array_equal(g.outlier.values[k], direct)
    return ds, grid, g


def test_untiled_median_is_the_median(untiled):
    ds, grid, g = untiled
    from mosaic.coadd.drizzle import drizzle_mosaic

    sci, wht = [], []
    for k in range(4):
        sub = ds.isel(exposure=[k])
        sub.attrs = {**ds.attrs, "wcs": [ds.attrs["wcs"][k]]}
        m = drizzle_mosaic(sub, grid, variance=False).compute()
        sci.append(m.sci.values - np.float32(g.sky.values[k]))  # each exposure's own sky off
        wht.append(m.wht.values)
    want, _ = robust_combine(np.stack(sci), np.stack(wht), weight_threshold=None)
    got = g.combined.values
    # maskpt only removes values: wherever both have a result from the same values, they agree
    assert np.isfinite(got).mean() > 0.5
    both = np.isfinite(got) & np.isfinite(want)
    assert np.mean(np.isclose(got[both], want[both], rtol=1e-5)) > 0.9


@settings(max_examples=4, deadline=None, phases=[Phase.explicit, Phase.generate])  # no slow shrinking
@given(tile=st.integers(23, 140), rows=st.integers(7, 97), reader=st.booleans())
def test_tiled_equals_untiled(cr_field, untiled, tile, rows, reader):
    ds, grid, ref = untiled
    tiled_grid = grid.with_tiling(tile)
    cut = CalCutouts(cr_field.exposures[:4], ds.attrs["bad_bits"]) if reader else None
    g = outlier_graph(ds, tiled_grid, rows_per_chunk=rows, cutout_reader=cut).compute()
    np.testing.assert_allclose(g.combined.values, ref.combined.values, rtol=1e-5, atol=1e-7, equal_nan=True)
    # drizzle's interpolating blot of a strip depends on the strip's cut-out at float32 round-off
    np.testing.assert_allclose(g.blot.values, ref.blot.values, rtol=1e-4, atol=1e-6, equal_nan=True)
    np.testing.assert_array_equal(g.outlier.values, ref.outlier.values)
