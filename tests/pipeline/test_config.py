"""Field and survey configs: defaults, key paths in errors, allowed values, paths, merging, examples."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from mosaic.config import ConfigError, field_from_mapping, load_field, load_survey, merge
from mosaic.exceptions import InputError
from mosaic.pipeline import check_config
from mosaic.simulate import SimConfig, simulate_field

from .conftest import write_yaml

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

MINIMAL = {"bands": {"F200W": {"inputs": "data/*_cal.fits", "psf": "data/psf_f200w.fits"}}}


def test_defaults_and_relative_paths(tmp_path):
    path = write_yaml(tmp_path / "cfg" / "deep.yaml", MINIMAL)
    cfg = load_field(path, check_inputs=False)
    assert cfg.field == "deep"  # the file's stem
    band = cfg.bands["F200W"]
    assert band.inputs == (str(tmp_path / "cfg" / "data" / "*_cal.fits"),)
    assert band.psf == tmp_path / "cfg" / "data" / "psf_f200w.fits"
    assert cfg.outdir == tmp_path / "cfg" / "products"
    assert cfg.store_path == tmp_path / "cfg" / "products" / "mosaic.zarr"
    assert (cfg.grid.psr, cfg.grid.rotation, cfg.grid.tile, cfg.grid.halo) == (0.5, 0.0, 1024, 0)
    assert (cfg.drizzle.pixfrac, cfg.drizzle.kernel, cfg.drizzle.weight) == (1.0, "square", "ivm")
    assert (cfg.updc.iterations, cfg.updc.method, cfg.updc.blot, cfg.updc.background) == (10, "updc", "exact", "median")
    assert cfg.updc.array == "numpy"
    assert cfg.updc.saved() == (0, 5, 10)
    assert not cfg.preprocessing.outliers.enabled and not cfg.catalogs.enabled
    assert cfg.cluster is None


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"updc": {"method": "wiener"}}, r"updc\.method: got 'wiener'; expected one of \('updc', 'landweber', 'rl'\)"),
        ({"updc": {"iteratons": 3}}, r"updc\.iteratons: unknown key; expected one of \['enabled', 'iterations',"),
        ({"updc": {"iterations": -1}}, r"updc\.iterations: got -1; expected an integer >= 0"),
        ({"updc": {"iterations": 4, "save": [2, 6]}}, r"updc\.save: got \[2, 6\]; expected iteration numbers in 0\.\.4"),
        ({"updc": {"blot": "nearest"}}, r"updc\.blot: got 'nearest'; expected one of \('exact', 'interp'\)"),
        ({"updc": {"array": "gpu"}}, r"updc\.array: got 'gpu'; expected one of \('numpy', 'cupy'\)"),
        ({"updc": {"background": "mean"}}, r"updc\.background: got 'mean'; expected 'median', a number \(MJy/sr\) or null"),
        ({"drizzle": {"pixfrac": 1.5}}, r"drizzle\.pixfrac: got 1\.5; expected a number > 0\.0 and <= 1\.0"),
        ({"drizzle": {"kernel": "box"}}, r"drizzle\.kernel: got 'box'; expected one of \('square', 'turbo',"),
        ({"drizzle": {"weight": "ivar"}}, r"drizzle\.weight: got 'ivar'; expected one of \('ivm', 'exptime', 'uniform'\)"),
        ({"grid": {"psr": 0}}, r"grid\.psr: got 0; expected a number > 0\.0"),
        ({"grid": {"tile": "big"}}, r"grid\.tile: got 'big'; expected an integer >= 16"),
        ({"grid": {"halo": True}}, r"grid\.halo: got True; expected an integer >= 0"),
        ({"grid": 5}, r"grid: got 5; expected a mapping with keys \['psr', 'rotation', 'tile', 'halo', 'header'\]"),
        ({"bands": {"F201W": {"inputs": "x", "psf": "y"}}}, r"bands\.F201W: unknown band; expected one of \("),
        ({"bands": {"F200W": {"inputs": "x"}}}, r"bands\.F200W\.psf: missing; expected a PSF file or a folder"),
        ({"bands": {"F200W": {"inputs": [], "psf": "y"}}}, r"bands\.F200W\.inputs: got \[\]; expected a glob of _cal\.fits files"),
        ({"catalogs": {"enabled": True, "npixels": 0}}, r"catalogs\.npixels: got 0; expected an integer >= 1"),
        ({"catalogs": {"enabled": True, "noise": "rms"}}, r"catalogs\.noise: got 'rms'; expected one of \('measured', 'err'\)"),
        ({"catalogs": {"enabled": True, "flux_errors": "none"}}, r"catalogs\.flux_errors: got 'none'; expected one of \('correlated', 'independent'\)"),
        ({"catalogs": {"enabled": True, "iterations": [3]}}, r"catalogs\.iterations: got \[3\]; expected saved iterations \(updc\.save: \[0, 5, 10\]\)"),
        ({"products": {"rgb": ["F200W", "F444W"]}}, r"products\.rgb: got \['F200W', 'F444W'\]; expected three band names"),
        ({"products": {"rgb": ["F200W", "F150W", "F090W"]}}, r"products\.rgb: got .*; expected bands of this field \['F200W'\]"),
        ({"preprocessing": {"outliers": "yes"}}, r"preprocessing\.outliers: got 'yes'; expected true, false, or a mapping"),
        ({"preprocessing": {"sky": True}}, r"preprocessing\.sky: unknown key; expected one of \['outliers', 'destripe', 'background', 'skymatch'\]"),
        ({"cluster": {"kind": "local", "n_worker": 2}}, r"cluster: unknown key 'n_worker' for kind 'local'"),
        ({"cluster": {"kind": "kubernetes"}}, r"cluster\.kind: got 'kubernetes'; expected one of"),
        ({"field": "a/b"}, r"field: got 'a/b'; expected a non-empty name without '/'"),
        ({"colour": "red"}, r"colour: unknown key; expected one of \['field', 'bands', 'grid',"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(tmp_path, change, match):
    path = write_yaml(tmp_path / "f.yaml", merge(MINIMAL, change) if "bands" not in change else {**MINIMAL, **change})
    with pytest.raises(ConfigError, match=match) as info:
        load_field(path, check_inputs=False)
    assert str(info.value).startswith(f"{path}: ")
    assert isinstance(info.value, InputError)


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("bands: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_field(bad)
    with pytest.raises(ConfigError, match=r"nope\.yaml: no such field config file"):
        load_field(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"got a list at the top level; expected a mapping"):
        load_field(tmp_path / "list.yaml")


def test_missing_inputs_are_named(tmp_path):
    path = write_yaml(tmp_path / "f.yaml", MINIMAL)
    with pytest.raises(ConfigError, match=r"bands\.F200W\.inputs: '.*data/\*_cal\.fits' matches no file"):
        load_field(path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a_cal.fits").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"bands\.F200W\.psf: .*psf_f200w\.fits does not exist"):
        load_field(path)
    (tmp_path / "data" / "psf_f200w.fits").write_bytes(b"")
    assert [p.name for p in load_field(path).bands["F200W"].exposure_paths()] == ["a_cal.fits"]


def test_step_options_are_checked_against_the_function(tmp_path):
    pytest.importorskip("mosaic.prep.outliers")
    cfg = field_from_mapping({**MINIMAL, "field": "t", "preprocessing": {"outliers": {"snr": [6.0, 4.0], "replace": "flag"}}}, base=tmp_path)
    assert cfg.preprocessing.outliers.enabled and dict(cfg.preprocessing.outliers.options) == {"snr": [6.0, 4.0], "replace": "flag"}
    check_config(cfg)
    cfg = field_from_mapping({**MINIMAL, "field": "t", "preprocessing": {"outliers": {"sigma": 5}}}, base=tmp_path)
    with pytest.raises(ConfigError, match=r"preprocessing\.outliers\.sigma: unknown option of mosaic\.prep\.outliers\.clean_exposures; expected one of \[.*'snr'"):
        check_config(cfg)


def test_survey_merges_defaults_file_and_entry(tmp_path):
    write_yaml(tmp_path / "fields" / "a.yaml", {**MINIMAL, "updc": {"iterations": 3, "method": "landweber"}, "store": "elsewhere.zarr"})
    survey = {
        "store": "s.zarr",
        "outdir": "out",
        "defaults": {"grid": {"tile": 256}, "updc": {"iterations": 7, "save": [0]}, "drizzle": {"pixfrac": 0.8}},
        "fields": [
            "fields/a.yaml",
            {"config": "fields/a.yaml", "field": "a2", "updc": {"iterations": 2}},
            {"field": "inline", "bands": {"F200W": {"inputs": "raw/*_cal.fits", "psf": "raw"}}},
        ],
    }
    s = load_survey(write_yaml(tmp_path / "survey.yaml", survey))
    assert s.store == tmp_path / "s.zarr" and s.outdir == tmp_path / "out"
    a, a2, inline = s.fields
    assert (a.field, a.updc.iterations, a.updc.method, a.grid.tile, a.drizzle.pixfrac) == ("a", 3, "landweber", 256, 0.8)
    assert (a2.field, a2.updc.iterations, a2.updc.method) == ("a2", 2, "landweber")
    assert (inline.field, inline.updc.iterations) == ("inline", 7)
    # the file's paths are relative to the file, the inline field's to the survey
    assert a.bands["F200W"].inputs == (str(tmp_path / "fields" / "data" / "*_cal.fits"),)
    assert inline.bands["F200W"].psf == tmp_path / "raw"
    # one store and one products folder per field, whatever the field files say
    assert {f.store_path for f in s.fields} == {tmp_path / "s.zarr"}
    assert [f.outdir for f in s.fields] == [tmp_path / "out" / n for n in ("a", "a2", "inline")]


@pytest.mark.parametrize(
    ("survey", "match"),
    [
        ({"fields": []}, r"fields: got \[\]; expected a non-empty list"),
        ({"fields": [{"bands": {}}]}, r"fields\[0\]: an inline field needs 'field'"),
        ({"fields": ["a.yaml", "a.yaml"]}, r"fields\[1\]: field 'a' is also fields\[0\]"),
        ({"fields": ["a.yaml"], "stores": "x"}, r"stores: unknown key; expected one of \['store', 'outdir',"),
        ({"fields": [{"config": "a.yaml", "updc": {"method": "x"}}]}, r"survey\.yaml: fields\[0\]: .*a\.yaml: updc\.method: got 'x'"),
        ({"fields": [{"field": "i", **MINIMAL, "drizzle": {"kernel": "x"}}]}, r"survey\.yaml: fields\[0\]\.drizzle\.kernel: got 'x'"),
        ({"fields": ["a.yaml"], "bands": ["F444W"]}, r"fields\[0\]: field 'a' has none of the survey's bands \['F444W'\]"),
        ({"fields": ["a.yaml"], "max_concurrent_fields": 0}, r"max_concurrent_fields: got 0; expected an integer >= 1"),
        ({"fields": ["missing.yaml"]}, r"missing\.yaml: no such field config file"),
    ],
)
def test_bad_surveys(tmp_path, survey, match):
    write_yaml(tmp_path / "a.yaml", MINIMAL)
    with pytest.raises(ConfigError, match=match):
        load_survey(write_yaml(tmp_path / "survey.yaml", survey))


def test_examples_load_and_their_inputs_are_what_simulate_writes(tmp_path):
    for name in ("field.yaml", "survey.yaml"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    # the examples name their inputs as `mosaic simulate examples/sim ...` writes them
    text = (EXAMPLES / "field.yaml").read_text()
    assert "mosaic simulate sim" in text
    simulate_field(tmp_path / "sim", SimConfig(size=32, psf_size=5, n_exposures=2, n_wavelengths=1, n_galaxies=1, n_stars=1, n_pairs=0))
    field = load_field(tmp_path / "field.yaml")  # inputs checked: the globs match, the PSF is there
    check_config(field)
    assert len(field.bands["F200W"].exposure_paths()) == 2
    survey = load_survey(tmp_path / "survey.yaml", check_inputs=True)
    assert [f.field for f in survey.fields] == ["sim", "sim_landweber"]
    sim, landweber = survey.fields
    assert (sim.updc.iterations, sim.updc.method) == (10, "updc")  # the field file's own keys win over the defaults
    assert (landweber.updc.iterations, landweber.updc.method, landweber.grid.tile) == (5, "landweber", 512)
    assert landweber.bands["F200W"].exposure_paths() == sim.bands["F200W"].exposure_paths()
    for f in survey.fields:
        check_config(f)
    raw = yaml.safe_load((EXAMPLES / "field.yaml").read_text())
    assert raw["cluster"]["kind"] == "local"


def test_catalogue_noise_choices_are_those_of_mosaic_detect():
    # the config lists them without importing photutils; they must not drift apart
    from mosaic.config import _NOISE
    from mosaic.pipeline.detect import DETECTION_NOISE

    assert _NOISE == DETECTION_NOISE


def test_catalogue_flux_error_choices_are_those_of_mosaic_detect():
    from mosaic.catalog.flux_errors import FLUX_ERRORS
    from mosaic.config import _FLUX_ERRORS

    assert _FLUX_ERRORS == FLUX_ERRORS
