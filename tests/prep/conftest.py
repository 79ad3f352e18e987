"""Simulated fields for the preprocessing tests, made once per session."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mosaic.prep.outliers import clean_exposures
from mosaic.simulate import SimConfig, simulate_field
from mosaic.simulate.detector import DetectorModel

#: six dithered 160² SW exposures with noise, cosmic rays, hot pixels (no striping: a separate test)
CR_CONFIG = SimConfig(
    size=160, psf_size=51, n_exposures=6, seed=21, n_galaxies=12, n_stars=6, n_pairs=1,
    detector=DetectorModel(one_over_f=0.0),
)

#: one 256² exposure with strong striping and no cosmic rays or hot pixels, no ICL (flat sky)
STRIPE_AMPLITUDE_E = 30.0
STRIPE_CONFIG = SimConfig(
    size=256, psf_size=51, n_exposures=1, seed=7, n_galaxies=15, n_stars=4, n_pairs=1, icl=False,
    detector=DetectorModel(cosmic_ray_rate=0.0, hot_fraction=0.0, one_over_f=STRIPE_AMPLITUDE_E),
)


@pytest.fixture(scope="session")
def cr_field(tmp_path_factory):
    return simulate_field(tmp_path_factory.mktemp("cr_field"), CR_CONFIG)


@pytest.fixture(scope="session")
def cr_noiseless(tmp_path_factory):
    """The same field (geometry, sources, sky) without noise or artifacts."""
    return simulate_field(tmp_path_factory.mktemp("cr_noiseless"), replace(CR_CONFIG, noiseless=True))


@pytest.fixture(scope="session")
def cleaned(cr_field, tmp_path_factory):
    """``_crf.fits`` files of the field, outliers interpolated, median on 96² tiles (not dividing the grid)."""
    return clean_exposures(cr_field.exposures, tmp_path_factory.mktemp("crf"), tile=96)


@pytest.fixture(scope="session")
def striped(tmp_path_factory):
    return simulate_field(tmp_path_factory.mktemp("striped"), STRIPE_CONFIG)


@pytest.fixture(scope="session")
def unstriped(tmp_path_factory):
    """The same exposure, same noise, without the stripes (the injection comes after the noise)."""
    cfg = replace(STRIPE_CONFIG, detector=replace(STRIPE_CONFIG.detector, one_over_f=0.0))
    return simulate_field(tmp_path_factory.mktemp("unstriped"), cfg)
