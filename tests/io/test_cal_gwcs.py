"""Pipeline files carry their exact WCS as a gwcs in an ASDF extension: it is preferred to the SIP."""

from __future__ import annotations

import numpy as np
import pytest
from astropy import coordinates as coord
from astropy import units as u
from astropy.io import fits
from astropy.modeling import models
from astropy.wcs import WCS

from mosaic.io.cal import read_exposures, read_wcs
from mosaic.io.grid import MosaicGrid

datamodels = pytest.importorskip("stdatamodels.jwst.datamodels")
gwcs_wcs = pytest.importorskip("gwcs.wcs")
cf = pytest.importorskip("gwcs.coordinate_frames")


def _tan_gwcs(fits_wcs: WCS):
    """A gwcs with the header's linear part and no distortion: it differs from the SIP on purpose."""
    crpix, crval = fits_wcs.wcs.crpix, fits_wcs.wcs.crval
    forward = (
        (models.Shift(-(crpix[0] - 1)) & models.Shift(-(crpix[1] - 1)))
        | models.AffineTransformation2D(matrix=fits_wcs.pixel_scale_matrix, translation=[0, 0])
        | models.Pix2Sky_TAN()
        | models.RotateNative2Celestial(crval[0], crval[1], 180)
    )
    det = cf.Frame2D(name="detector", axes_order=(0, 1), unit=(u.pix, u.pix))
    sky = cf.CelestialFrame(reference_frame=coord.ICRS(), name="world", unit=(u.deg, u.deg))
    return gwcs_wcs.WCS([(det, forward), (sky, None)])


@pytest.fixture(scope="module")
def pipeline_files(small_field, tmp_path_factory):
    """The small field re-written as a pipeline would: datamodel with gwcs + SIP in the SCI header."""
    out = tmp_path_factory.mktemp("asdf")
    paths = []
    for p in small_field.exposures[:2]:
        with fits.open(p) as h:
            model = datamodels.ImageModel(h["SCI"].data)
            for ext in ("ERR", "DQ", "VAR_POISSON", "VAR_RNOISE", "VAR_FLAT"):
                setattr(model, ext.lower(), h[ext].data)
            model.meta.instrument.filter = h[0].header["FILTER"]
            model.meta.wcs = _tan_gwcs(WCS(h["SCI"].header))
            sip = WCS(h["SCI"].header).to_header(relax=True)
        dest = out / p.name
        model.save(dest)
        model.close()
        with fits.open(dest, mode="update") as h:
            h["SCI"].header.update(sip)  # the pipeline's SIP approximation, as in real files
        paths.append(dest)
    return paths


def test_gwcs_is_used_where_the_file_has_one(pipeline_files):
    ds = read_exposures(pipeline_files)
    for p, w in zip(pipeline_files, ds.attrs["wcs"], strict=True):
        assert isinstance(w, gwcs_wcs.WCS)
        sip = read_wcs(p, prefer_gwcs=False)
        x, y = np.array([3.0, 120.0, 64.0]), np.array([5.0, 7.0, 100.0])
        ra, dec = w.pixel_to_world_values(x, y)
        expected = _tan_gwcs(sip).pixel_to_world_values(x, y)
        np.testing.assert_allclose(np.column_stack([ra, dec]), np.column_stack(expected), rtol=0, atol=1e-12)
        # and it is not the SIP: the corners differ by the distortion
        sra, sdec = sip.pixel_to_world_values(x, y)
        assert np.max(np.hypot((ra - sra) * np.cos(np.deg2rad(dec)), dec - sdec)) * 3600 > 1e-3
    # the grid builds from gwcs footprints as from SIP ones
    grid = MosaicGrid.from_exposures(ds.attrs["wcs"], [(128, 128)] * 2, psr=0.5)
    assert grid.pixel_scale_arcsec == pytest.approx(0.0155, rel=0.02)
