"""A tiny simulated field (one per session) and a writer of field configs for the pipeline tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mosaic.simulate import SimConfig, simulate_field

#: a cluster of threads in the process of the run: nothing outlives a killed run
THREADS = {"kind": "local", "processes": False, "n_workers": 1, "threads_per_worker": 2, "dashboard_address": ":0"}


@pytest.fixture(scope="session")
def tiny_field(tmp_path_factory):
    """Three dithered 96² F200W exposures with sky, noise and artifacts; PSF of 21² on the grid."""
    out = tmp_path_factory.mktemp("tiny_field")
    cfg = SimConfig(size=96, psf_size=21, n_exposures=3, seed=7, n_galaxies=6, n_stars=3, n_pairs=1, n_wavelengths=3)
    return simulate_field(out, cfg)


def field_mapping(field, name: str = "tiny", **sections) -> dict:
    """A field config for ``field`` (a SimulatedField) with ``sections`` replacing the defaults."""
    raw = {
        "field": name,
        "bands": {"F200W": {"inputs": str(Path(field.outdir) / "*_cal.fits"), "psf": str(field.outdir)}},
        "grid": {"tile": 128},
        "updc": {"iterations": 2, "save": [0, 2]},
        "products": {"outdir": "out", "previews": False},
        "cluster": THREADS,
    }
    raw.update(sections)
    return raw


def write_yaml(path: Path, raw: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path
