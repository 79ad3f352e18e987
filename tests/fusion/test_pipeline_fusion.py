"""The ``fusion:`` section of a field config and its pipeline step, against ``mosaic fuse`` on the same files."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from mosaic.cli import main
from mosaic.config import ConfigError, field_from_mapping
from mosaic.fusion.simulate import simulate_scene, write_scene
from mosaic.pipeline.steps import STEPS, BandRun, FusionStep

FILTERS = ("F182M", "F187N", "F200W", "F210M", "F212N")


@pytest.fixture(scope="module")
def scene_files(tmp_path_factory):
    scene = simulate_scene(coarse_shape=(14, 14), n_wave=24, seed=8)
    return write_scene(scene, tmp_path_factory.mktemp("fusion_step"))


def _config(paths, tmp_path, **fusion):
    images = [str(paths[f]) for f in FILTERS]
    raw = {
        "field": "ifu",
        "bands": {"F200W": {"inputs": "x/*_cal.fits", "psf": "x"}, "F150W": {"inputs": "y/*_cal.fits", "psf": "y"}},
        "products": {"outdir": str(tmp_path / "products")},
        "fusion": {"enabled": True, "cube": str(paths["cube"]), "images": images, "components": 3, "mu": 2e-3, **fusion},
    }
    return field_from_mapping(raw, base=tmp_path)


def test_fusion_step_equals_mosaic_fuse(scene_files, tmp_path):
    config = _config(scene_files, tmp_path, boundary="periodic", mean="data")
    assert any(isinstance(s, FusionStep) for s in STEPS)
    step = FusionStep()
    # once per field: in the run of its last band only
    assert [step.enabled(BandRun(config=config, band=b, store=None)) for b in config.bands] == [False, True]
    run = BandRun(config=config, band="F150W", store=None)
    settings = step.settings(run)
    outcome = step.run(run, resume=False, overwrite=False)
    out = tmp_path / "products" / "ifu_fused.fits"
    assert outcome.products == {"fused": str(out)}
    ref = tmp_path / "ref.fits"
    argv = ["fuse", "--images", *config.fusion.images, "--cube", str(scene_files["cube"]), "--out", str(ref),
            "--components", "3", "--mu", "2e-3", "--boundary", "periodic", "--mean", "data"]
    assert main(argv) == 0
    np.testing.assert_array_equal(fits.getdata(out, "SCI"), fits.getdata(ref, "SCI"))
    # the token follows the options
    changed = FusionStep().settings(BandRun(config=_config(scene_files, tmp_path, boundary="periodic", mu=1e-2), band="F150W", store=None))
    assert changed != settings
    # and the mean spectrum's key reaches the solve: with the default (projected) mean the cube differs
    default = FusionStep().settings(BandRun(config=_config(scene_files, tmp_path, boundary="periodic"), band="F150W", store=None))
    assert default != settings
    assert main([*argv[:-2], "--out", str(tmp_path / "projected.fits")]) == 0
    assert not np.array_equal(fits.getdata(tmp_path / "projected.fits", "SCI"), fits.getdata(out, "SCI"))


@pytest.mark.parametrize(("fusion", "words"), [
    ({"cube": None}, "fusion.cube: missing"),
    ({"images": None}, "fusion.images: missing"),
    ({"solver": "lsqr"}, "fusion.solver"),
    ({"components": 0}, "fusion.components"),
    ({"mean": "median"}, "fusion.mean"),
    ({"colour": 1}, "fusion.colour: unknown key"),
])
def test_bad_fusion_sections_name_the_key(scene_files, tmp_path, fusion, words):
    with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
        _config(scene_files, tmp_path, **fusion)


def test_fusion_images_matching_nothing_is_one_clear_error(scene_files, tmp_path):
    config = _config(scene_files, tmp_path, images=str(tmp_path / "none" / "*.fits"))
    with pytest.raises(ConfigError, match="fusion.images: .* match no files"):
        FusionStep().run(BandRun(config=config, band="F150W", store=None), resume=False, overwrite=False)
