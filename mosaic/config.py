"""Run and batch configuration: YAML files validated into frozen dataclasses.

A *field* config (``mosaic run FIELD.yaml``) says where one field's exposures and PSFs are, per
band, and how to process them::

    field: abell2744                 # name in the store (default: the file's stem)
    bands:
      F200W:
        inputs: ["data/*_cal.fits"]  # globs of _cal.fits files, relative to this file
        psf: data/psf_f200w.fits     # a PSF file, or a folder (<stem>_psf.fits or psf_<band>.fits)
    grid: {psr: 0.5, rotation: 0.0, tile: 1024, halo: 0}
    preprocessing:
      outliers: {enabled: false}     # other keys are the step's options
      destripe: {enabled: false}
      background: {enabled: false}
      skymatch: {enabled: false}    # sky levels matched over the overlaps (box_size: 64)
    drizzle: {enabled: true, pixfrac: 1.0, kernel: square, weight: ivm}
    updc: {enabled: true, iterations: 10, method: updc, blot: exact, save: [0, 5, 10], background: median}
    catalogs: {enabled: false, threshold: 3.0, npixels: 5, iterations: [5]}
    products: {outdir: products, previews: true, rgb: null}
    fusion: {enabled: false, cube: ifu_s3d.fits, images: ["products/*_f2*_i2d.fits"], components: 5}
    restore: {enabled: false, model: null, tile: 512, overlap: null, input: drizzle}
    store: products/mosaic.zarr      # default: <products.outdir>/mosaic.zarr
    cluster: null                    # passed to mosaic.cluster.cluster_client

A *survey* config (``mosaic batch SURVEY.yaml``) lists fields (config files, or inline
mappings) with shared ``defaults`` and one ``store``, ``outdir`` and ``cluster``; see
:func:`load_survey`.

Every error is a :class:`ConfigError` (an :class:`~mosaic.exceptions.InputError`) that names
the file and the key path (``updc.method``), the value, and what is allowed. Relative paths
are resolved against the file they are written in.
"""

from __future__ import annotations

import glob
import logging
import math
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType

from mosaic.catalog.flux_errors import FLUX_ERRORS
from mosaic.exceptions import InputError

__all__ = [
    "BandConfig",
    "CatalogConfig",
    "ConfigError",
    "DrizzleConfig",
    "FieldConfig",
    "FusionConfig",
    "GridConfig",
    "PREP_STEPS",
    "PrepConfig",
    "ProductsConfig",
    "RestoreConfig",
    "StepConfig",
    "SurveyConfig",
    "UPDCConfig",
    "field_from_mapping",
    "load_field",
    "load_survey",
    "merge",
]

log = logging.getLogger(__name__)

#: preprocessing steps, in the order they run (seed 000 sec. 2.1-2.2)
PREP_STEPS = ("outliers", "destripe", "background", "skymatch")


class ConfigError(InputError):
    """A configuration that is not valid; the message names the file and the key path."""


# -- value parsers: (value, where, base) -> value ---------------------------------------------------


def _join(where: str, key) -> str:
    return f"{where}.{key}" if where else str(key)


def _bad(where: str, value, expected: str):
    raise ConfigError(f"{where}: got {value!r}; expected {expected}")


def _number(value, where, *, minimum=None, maximum=None, open_min=False):
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        _bad(where, value, "a number")
    lo_ok = minimum is None or (value > minimum if open_min else value >= minimum)
    hi_ok = maximum is None or value <= maximum
    if not (lo_ok and hi_ok):
        lo = "" if minimum is None else (f"> {minimum}" if open_min else f">= {minimum}")
        hi = "" if maximum is None else f"<= {maximum}"
        _bad(where, value, "a number " + " and ".join(s for s in (lo, hi) if s))
    return float(value)


def _float(*, minimum=None, maximum=None, open_min=False):
    return lambda v, w, b: _number(v, w, minimum=minimum, maximum=maximum, open_min=open_min)


def _int(*, minimum=0):
    def parse(v, w, b):
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            _bad(w, v, f"an integer >= {minimum}")
        return int(v)

    return parse


def _bool(v, w, b):
    if not isinstance(v, bool):
        _bad(w, v, "true or false")
    return v


def _choice(allowed):
    allowed = tuple(allowed)

    def parse(v, w, b):
        if v not in allowed:
            _bad(w, v, f"one of {allowed}")
        return v

    return parse


#: the longest field name: it becomes a folder of the store and part of every product's file name
MAX_NAME = 100


def _printable(text: str) -> bool:
    return all(c.isprintable() for c in text)


def _name(v, w, b):
    if not isinstance(v, str) or not v or v.startswith(".") or "/" in v or v != v.strip():
        _bad(w, v, "a non-empty name without '/', a leading '.' or surrounding spaces")
    if not _printable(v) or len(v) > MAX_NAME:
        _bad(w, v[:40] + ("..." if len(v) > 40 else ""), f"a name of printable characters, at most {MAX_NAME} long (got {len(v)})")
    return v


def _path(v, w, base):
    if not isinstance(v, str | Path) or not str(v).strip():
        _bad(w, v, "a path (relative paths are taken from the config file's folder)")
    if "\x00" in str(v):
        _bad(w, v, "a path without NUL characters")
    p = Path(v).expanduser()
    return p if p.is_absolute() else (Path(base) / p).resolve()


def _optional(parse):
    return lambda v, w, b: None if v is None else parse(v, w, b)


def _globs(v, w, base):
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list | tuple) or not items or not all(isinstance(s, str) and s.strip() for s in items):
        _bad(w, v, "a glob of _cal.fits files or a non-empty list of them")
    return tuple(str(_path(s, w, base)) for s in items)


def _int_list(v, w, b):
    if not isinstance(v, list | tuple) or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in v):
        _bad(w, v, "a list of iteration numbers >= 0")
    return tuple(sorted(set(int(i) for i in v)))


def _background(v, w, b):
    if v is None or v == "median":
        return v
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        _bad(w, v, "'median', a number (MJy/sr) or null")
    return float(v)


def _mapping(v, w, b):
    if v is None:
        return None
    if not isinstance(v, Mapping):
        _bad(w, v, "a mapping or null")
    return MappingProxyType(dict(v))


def _option(default=MISSING, *, parse, kind: str | None = None, factory=MISSING, expected: str = ""):
    """A config key: its parser, its kind for path resolution, what a missing one needed."""
    meta = {"parse": parse, "kind": kind, "expected": expected}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _keys(cls) -> list[str]:
    return [f.name for f in fields(cls) if "parse" in f.metadata]


def _build(cls, raw, where: str, base: Path):
    """A ``cls`` from a mapping: unknown keys and bad values are errors naming the key path."""
    names = _keys(cls)
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        _bad(where or "config", raw, f"a mapping with keys {names}")
    for key in raw:
        if key not in names:
            raise ConfigError(f"{_join(where, key)}: unknown key; expected one of {names}")
    kwargs = {}
    for f in fields(cls):
        if "parse" not in f.metadata:
            continue
        if f.name in raw:
            kwargs[f.name] = f.metadata["parse"](raw[f.name], _join(where, f.name), base)
        elif f.default is MISSING and f.default_factory is MISSING:
            raise ConfigError(f"{_join(where, f.name)}: missing; expected {f.metadata['expected']}")
    obj = cls(**kwargs)
    check = getattr(obj, "_check", None)
    if check is not None:
        check(where)
    return obj


def _section(cls):
    return lambda v, w, b: _build(cls, v, w, b)


# -- sections -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BandConfig:
    """Inputs of one band.

    Attributes
    ----------
    inputs : tuple of str
        Absolute globs of ``_cal.fits`` files.
    psf : Path
        A PSF file for all exposures, or a folder with ``<stem>_psf.fits`` per exposure or
        ``psf_<band>.fits`` (as ``mosaic simulate`` writes).
    """

    inputs: tuple[str, ...] = _option(parse=_globs, kind="globs", expected="a glob of _cal.fits files or a list of them")
    psf: Path = _option(parse=_path, kind="path", expected="a PSF file or a folder of PSF files")

    def exposure_paths(self, where: str = "inputs") -> list[Path]:
        """The files the globs match, sorted; a glob that matches nothing is an error."""
        out = set()
        for pattern in self.inputs:
            found = [Path(p) for p in glob.glob(pattern)]
            if not found:
                raise ConfigError(f"{where}: {pattern!r} matches no file; expected _cal.fits exposures")
            out.update(p.resolve() for p in found)
        return sorted(out)

    def check_inputs(self, where: str) -> None:
        """Raise :class:`ConfigError` naming inputs that are missing."""
        self.exposure_paths(_join(where, "inputs"))
        if not self.psf.exists():
            raise ConfigError(f"{_join(where, 'psf')}: {self.psf} does not exist; expected a PSF file or a folder of PSF files")


@dataclass(frozen=True)
class GridConfig:
    """The output grid (:class:`mosaic.io.grid.MosaicGrid`).

    Attributes
    ----------
    psr : float
        Output pixel scale over the input pixel scale (0.5 in the paper).
    rotation : float
        Position angle of the grid's +y axis, degrees east of north.
    tile : int
        Tile size in output pixels (the tasks' unit of work).
    halo : int
        Extra pixels around every tile core (graph builders add what their kernels need).
    header : Path or None
        A FITS header file of the grid (e.g. ``grid.hdr``); overrides ``psr`` and ``rotation``
        and gives every band the same grid.
    """

    psr: float = _option(0.5, parse=_float(minimum=0.0, open_min=True))
    rotation: float = _option(0.0, parse=_float(minimum=-360.0, maximum=360.0))
    tile: int = _option(1024, parse=_int(minimum=16))
    halo: int = _option(0, parse=_int(minimum=0))
    header: Path | None = _option(None, parse=_optional(_path), kind="path")


@dataclass(frozen=True)
class StepConfig:
    """A preprocessing step: on or off, and its options (keyword arguments of its function)."""

    enabled: bool = False
    options: Mapping = field(default_factory=lambda: MappingProxyType({}))


def _step(v, w, b):
    if v is None:
        return StepConfig()
    if isinstance(v, bool):
        return StepConfig(enabled=v)
    if not isinstance(v, Mapping):
        _bad(w, v, "true, false, or a mapping with 'enabled' and the step's options")
    options = dict(v)
    enabled = _bool(options.pop("enabled", True), _join(w, "enabled"), b)
    for key in options:
        if not isinstance(key, str) or not key.isidentifier():
            raise ConfigError(f"{_join(w, key)}: not an option name; expected a Python identifier")
    return StepConfig(enabled=enabled, options=MappingProxyType(options))


@dataclass(frozen=True)
class PrepConfig:
    """Preprocessing of the exposures, in this order: outliers, destripe, background, skymatch.

    Each is ``false``/``true`` or a mapping with ``enabled`` (default true when a mapping is
    given) and the options of its function; the options are checked against the function's
    signature by :func:`mosaic.pipeline.check_config`.
    """

    outliers: StepConfig = _option(parse=_step, factory=StepConfig)
    destripe: StepConfig = _option(parse=_step, factory=StepConfig)
    background: StepConfig = _option(parse=_step, factory=StepConfig)
    skymatch: StepConfig = _option(parse=_step, factory=StepConfig)


def _drizzle_choices():
    from mosaic.ops.drizzle import BLOT_METHODS, KERNELS, WEIGHTS  # noqa: PLC0415

    return KERNELS, WEIGHTS, BLOT_METHODS


_KERNELS, _WEIGHTS, _BLOTS = _drizzle_choices()
_METHODS = ("updc", "landweber", "rl")
_NOISE = ("measured", "err")  # mosaic.pipeline.detect.DETECTION_NOISE (not imported: photutils is slow to import)
_FLUX_ERRORS = FLUX_ERRORS  # light to import (NumPy only), unlike photutils: the list itself, not a copy
_ARRAYS = ("numpy", "cupy")


@dataclass(frozen=True)
class DrizzleConfig:
    """The drizzle mosaic (``<field>_<band>_drizzle_i2d.fits``); ``weight`` is also UPDC's.

    Attributes
    ----------
    enabled : bool
    pixfrac : float
        Drizzle pixel fraction, in (0, 1].
    kernel : str
    weight : {"ivm", "exptime", "uniform"}
    """

    enabled: bool = _option(True, parse=_bool)
    pixfrac: float = _option(1.0, parse=_float(minimum=0.0, maximum=1.0, open_min=True))
    kernel: str = _option("square", parse=_choice(_KERNELS))
    weight: str = _option("ivm", parse=_choice(_WEIGHTS))


def _updc_pedestal(v, w, b):
    if v is None or v == "auto":
        return v
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
        _bad(w, v, "'auto', a number >= 0 (MJy/sr) or null")
    return float(v)


@dataclass(frozen=True)
class UPDCConfig:
    """UPDC (or a baseline) from the drizzle mosaic (:func:`mosaic.coadd.updc.updc`).

    Attributes
    ----------
    enabled : bool
    iterations : int
    method : {"updc", "landweber", "rl"}
    blot : {"exact", "interp"}
    save : tuple of int or None
        Iterations written as ``_i2d.fits`` files (default: 0, 5, 10 up to ``iterations``,
        and the last).
    background : "median", float or None
        Sky removed from the products.
    tau : float
        Landweber step.
    errors : bool
        Propagate VAR_* and ERR.
    array : {"numpy", "cupy"}
        Iterate on host arrays, or on CuPy chunks on the workers' GPUs (a ``cuda`` cluster).
    pedestal : "auto", float or None
        ``s`` of the read-noise-corrected ratio ``(g + s) / (m + s)``: ``auto`` from VAR_RNOISE
        and the gain, a value (MJy/sr), or null for the plain ratio.
    damping : float
        Damp the update where the data are fitted to within this many sigmas (0: none).
    """

    enabled: bool = _option(True, parse=_bool)
    iterations: int = _option(10, parse=_int(minimum=0))
    method: str = _option("updc", parse=_choice(_METHODS))
    blot: str = _option("exact", parse=_choice(_BLOTS))
    save: tuple[int, ...] | None = _option(None, parse=_optional(_int_list))
    background: float | str | None = _option("median", parse=_background)
    tau: float = _option(1.0, parse=_float(minimum=0.0, maximum=2.0, open_min=True))
    errors: bool = _option(True, parse=_bool)
    array: str = _option("numpy", parse=_choice(_ARRAYS))
    pedestal: float | str | None = _option("auto", parse=_updc_pedestal)
    damping: float = _option(0.0, parse=_float(minimum=0.0))

    def _check(self, where):
        if self.save is not None and any(s > self.iterations for s in self.save):
            _bad(_join(where, "save"), list(self.save), f"iteration numbers in 0..{self.iterations} (updc.iterations)")

    def saved(self) -> tuple[int, ...]:
        """The iterations written as files."""
        from mosaic.coadd.updc import check_save  # noqa: PLC0415

        return check_save(self.save, self.iterations)


@dataclass(frozen=True)
class CatalogConfig:
    """Segmentation catalogues of chosen iterations (:mod:`mosaic.catalog`).

    Attributes
    ----------
    enabled : bool
    threshold : float
        Detection threshold in units of the background RMS.
    npixels : int
        Minimum connected pixels of a source.
    iterations : tuple of int or None
        Saved UPDC iterations to catalogue (from their ``_i2d.fits`` files); default: all
        those saved. With UPDC off, the drizzle mosaic is catalogued.
    background_box : int or None
        Subtract a local background of meshes this size before detection (the ICL and other
        light the global sky leaves); None: none.
    noise : {"measured", "err"}
        The noise ``threshold`` is in units of: ``measured`` (default) ERR scaled to the scatter
        measured on the image's own sky, or ``err`` the image's ERR as it is (which UPDC's
        iterations distort; see ``mosaic detect --noise``).
    flux_errors : {"correlated", "independent"}
        ``correlated`` (default): on a drizzle mosaic, flux errors scaled for the noise the
        drizzle correlates between pixels; ``independent``: ``sqrt(sum ERR²)`` as photutils
        gives it (see ``mosaic detect --flux-errors``).
    """

    enabled: bool = _option(False, parse=_bool)
    threshold: float = _option(3.0, parse=_float(minimum=0.0, open_min=True))
    npixels: int = _option(5, parse=_int(minimum=1))
    iterations: tuple[int, ...] | None = _option(None, parse=_optional(_int_list))
    background_box: int | None = _option(None, parse=_optional(_int(minimum=4)))
    noise: str = _option("measured", parse=_choice(_NOISE))
    flux_errors: str = _option("correlated", parse=_choice(_FLUX_ERRORS))


def _rgb(v, w, b):
    if v is None or v == "paper":
        return v
    if not isinstance(v, list | tuple) or len(v) != 3 or not all(isinstance(s, str) for s in v):
        _bad(w, v, "three band names (red, green, blue), 'paper' (the paper's colours of every band) or null")
    return tuple(s.upper() for s in v)


@dataclass(frozen=True)
class ProductsConfig:
    """What files the run writes and where.

    Attributes
    ----------
    outdir : Path
        Folder of the ``_i2d.fits`` files, previews and catalogues (default: ``products``
        beside the config file).
    previews : bool
        PNG previews of the drizzle mosaic and the saved iterations.
    rgb : tuple of str, "paper" or None
        A colour composite ``previews/<field>_rgb.png`` of the last saved iteration (or the
        drizzle mosaic): three bands (red, green, blue), or ``"paper"`` for the paper's colours
        of every band the field has (seed 000 fig. 5).
    """

    outdir: Path | None = _option(None, parse=_optional(_path), kind="path")
    previews: bool = _option(True, parse=_bool)
    rgb: tuple[str, str, str] | str | None = _option(None, parse=_rgb)


@dataclass(frozen=True)
class FusionConfig:
    """Fusion of NIRCam images with a NIRSpec IFU cube (seed 003, :mod:`mosaic.fusion`), after the bands.

    Runs once per field, after its last band, on ``images`` (typically this run's own SW
    products, so their globs are matched then, not when the config is read) and writes
    ``<outdir>/<field>_fused.fits``.

    Attributes
    ----------
    enabled : bool
    cube : Path
        The IFU cube (an ``_s3d.fits``) with a spectral WCS.
    images : tuple of str
        Globs of the NIRCam images, one per filter (FILTER keyword).
    components : int
        Principal spectra kept, k.
    gamma, mu : float
        Weights of the IFU term and of the Sobolev regulariser.
    solver : {"exact", "cg"}
    tile : int or None
        Solve in tiles of this many spaxels (exact solver).
    boundary : {"reflect", "periodic"}
    align : {"wcs", "phase"}
    factor : int
        Fine pixels per spaxel and axis.
    previews : bool
        PNG previews of three planes beside the cube.
    mean : {"projected", "data"}
        The model's mean spectrum: the IFU's averaged spectrum projected on the cube's signal
        subspace (default), or as it is (seed 003); see :mod:`mosaic.fusion.objective`.
    """

    enabled: bool = _option(False, parse=_bool)
    cube: Path | None = _option(None, parse=_optional(_path), kind="path")
    images: tuple[str, ...] | None = _option(None, parse=_optional(_globs), kind="globs")
    components: int = _option(5, parse=_int(minimum=1))
    gamma: float = _option(1.0, parse=_float(minimum=0.0, open_min=True))
    mu: float = _option(1e-3, parse=_float(minimum=0.0))
    solver: str = _option("exact", parse=_choice(("exact", "cg")))
    tile: int | None = _option(None, parse=_optional(_int(minimum=1)))
    boundary: str = _option("reflect", parse=_choice(("reflect", "periodic")))
    align: str = _option("wcs", parse=_choice(("wcs", "phase")))
    factor: int = _option(3, parse=_int(minimum=1))
    previews: bool = _option(False, parse=_bool)
    mean: str = _option("projected", parse=_choice(("projected", "data")))  # mosaic.fusion.objective.MEANS

    def _check(self, where):
        if self.enabled and self.cube is None:
            raise ConfigError(f"{_join(where, 'cube')}: missing; expected the IFU cube (an _s3d.fits) when fusion is enabled")
        if self.enabled and not self.images:
            raise ConfigError(f"{_join(where, 'images')}: missing; expected globs of the NIRCam images when fusion is enabled")


def _restore_input(v, w, b):
    if v == "drizzle" or (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
        return v
    _bad(w, v, "'drizzle' or the number of a saved UPDC iteration (updc.save)")


def _multiple_of_8(*, minimum: int):
    def parse(v, w, b):
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum or v % 8:
            _bad(w, v, f"an integer >= {minimum}, a multiple of 8 (the network's lattice)")
        return v

    return parse


@dataclass(frozen=True)
class RestoreConfig:
    """Learned restoration (seed 002, :mod:`mosaic.restore`) of a band's mosaic, after UPDC.

    Runs in the bands the model is trained for and writes ``<outdir>/<field>_<band>_restored_i2d.fits``
    (the drizzle mosaic) or ``<field>_<band>_<method>_iterNN_restored_i2d.fits`` (a saved iteration).

    Attributes
    ----------
    enabled : bool
    model : Path or None
        ONNX model (default: the shipped one).
    tile, overlap : int
        Tile core side and overlap in pixels, multiples of 8; overlap null: the model's halo.
    input : "drizzle" or int
        The drizzle mosaic, or a saved UPDC iteration (the model is trained on drizzle mosaics).
    """

    enabled: bool = _option(False, parse=_bool)
    model: Path | None = _option(None, parse=_optional(_path), kind="path")
    tile: int = _option(512, parse=_multiple_of_8(minimum=8))
    overlap: int | None = _option(None, parse=_optional(_multiple_of_8(minimum=0)))
    input: str | int = _option("drizzle", parse=_restore_input)

    def _check(self, where):
        if self.overlap is not None and self.overlap > self.tile:
            _bad(_join(where, "overlap"), self.overlap, f"at most restore.tile ({self.tile})")


def _known_bands():
    from mosaic.psf.model import BANDS  # noqa: PLC0415

    return tuple(sorted(BANDS))


def _bands(v, w, base):
    if not isinstance(v, Mapping) or not v:
        _bad(w, v, "a mapping of band name (e.g. F200W) to {inputs, psf}")
    out = {}
    known = _known_bands()
    for name, section in v.items():
        band = str(name).upper()
        if band not in known:
            raise ConfigError(f"{_join(w, name)}: unknown band; expected one of {known}")
        if band in out:
            raise ConfigError(f"{_join(w, name)}: band given twice")
        out[band] = _build(BandConfig, section, _join(w, name), base)
    return MappingProxyType(out)


def _cluster(v, w, b):
    spec = _mapping(v, w, b)
    try:
        from mosaic.cluster import validate_cluster_spec  # noqa: PLC0415
    except ImportError:
        return spec
    if spec is not None:
        try:
            validate_cluster_spec(dict(spec), where=w)
        except ValueError as err:  # InputError included
            raise ConfigError(str(err)) from None
    return spec


@dataclass(frozen=True)
class FieldConfig:
    """One field: inputs per band and how to process them (``mosaic run``).

    Attributes
    ----------
    field : str
        Name of the field in the store.
    bands : mapping of str to BandConfig
    grid, preprocessing, drizzle, updc, catalogs, products, fusion, restore
        The sections.
    store : Path
        The zarr store (checkpoints, products, status).
    cluster : mapping or None
        Passed to :func:`mosaic.cluster.cluster_client`.
    source : Path or None
        The file it was read from.
    """

    field: str = _option(parse=_name, expected="a field name")
    bands: Mapping = _option(parse=_bands, kind="bands", expected="a mapping of band name to {inputs, psf}")
    grid: GridConfig = _option(parse=_section(GridConfig), kind=GridConfig, factory=GridConfig)
    preprocessing: PrepConfig = _option(parse=_section(PrepConfig), factory=PrepConfig)
    drizzle: DrizzleConfig = _option(parse=_section(DrizzleConfig), factory=DrizzleConfig)
    updc: UPDCConfig = _option(parse=_section(UPDCConfig), factory=UPDCConfig)
    catalogs: CatalogConfig = _option(parse=_section(CatalogConfig), factory=CatalogConfig)
    products: ProductsConfig = _option(parse=_section(ProductsConfig), kind=ProductsConfig, factory=ProductsConfig)
    fusion: FusionConfig = _option(parse=_section(FusionConfig), kind=FusionConfig, factory=FusionConfig)
    restore: RestoreConfig = _option(parse=_section(RestoreConfig), kind=RestoreConfig, factory=RestoreConfig)
    store: Path | None = _option(None, parse=_optional(_path), kind="path")
    cluster: Mapping | None = _option(None, parse=_cluster)
    source: Path | None = None

    def _check(self, where):
        if isinstance(self.products.rgb, tuple):
            missing = [b for b in self.products.rgb if b not in self.bands]
            if missing:
                _bad(_join(where, "products.rgb"), list(self.products.rgb), f"bands of this field {sorted(self.bands)}")
        its = self.catalogs.iterations
        if self.catalogs.enabled and its is not None:
            if not self.updc.enabled:
                _bad(_join(where, "catalogs.iterations"), list(its), "null when updc is off (the drizzle mosaic is catalogued)")
            saved = self.updc.saved()
            if not set(its) <= set(saved):
                _bad(_join(where, "catalogs.iterations"), list(its), f"saved iterations (updc.save: {list(saved)})")
        if self.catalogs.enabled and not self.updc.enabled and not self.drizzle.enabled:
            _bad(_join(where, "catalogs.enabled"), True, "false when both drizzle and updc are off (nothing to catalogue)")
        r = self.restore
        if r.enabled and r.input == "drizzle" and not self.drizzle.enabled:
            _bad(_join(where, "restore.input"), r.input, "a saved UPDC iteration when drizzle is off")
        if r.enabled and r.input != "drizzle" and (not self.updc.enabled or r.input not in self.updc.saved()):
            saved = list(self.updc.saved()) if self.updc.enabled else []
            _bad(_join(where, "restore.input"), r.input, f"'drizzle' or a saved UPDC iteration (updc.save: {saved})")

    @property
    def outdir(self) -> Path:
        """Folder of the products."""
        return self.products.outdir

    @property
    def store_path(self) -> Path:
        """The store (default ``<outdir>/mosaic.zarr``)."""
        return self.store if self.store is not None else self.outdir / "mosaic.zarr"

    def check_inputs(self) -> None:
        """Raise :class:`ConfigError` naming a glob that matches nothing or a PSF that is missing."""
        for band, cfg in self.bands.items():
            try:
                cfg.check_inputs(f"bands.{band}")
            except ConfigError as err:
                raise ConfigError(f"{self._where()}{err}") from None
        if self.grid.header is not None and not self.grid.header.is_file():
            raise ConfigError(f"{self._where()}grid.header: {self.grid.header} is not a file; expected a FITS header of the grid")
        for key, path in (("store", self.store_path), ("products.outdir", self.outdir)):
            if path.exists() and not path.is_dir():
                raise ConfigError(f"{self._where()}{key}: {path} is a file; expected a folder (or a path to create one)")

    def _where(self) -> str:
        return f"{self.source}: " if self.source is not None else ""


def _absolute(cls, raw, base: Path):
    """``raw`` with the relative paths of ``cls``'s path keys made absolute against ``base``.

    Mappings merged from several files (survey defaults, a field file, inline overrides) keep
    each path relative to the file it was written in. Values that are not of the expected
    shape are left for the validation to report.
    """
    if not isinstance(raw, Mapping):
        return raw
    out = dict(raw)
    for f in fields(cls):
        kind = f.metadata.get("kind")
        if f.name not in out or kind is None:
            continue
        v = out[f.name]
        if kind == "path" and isinstance(v, str) and v.strip():
            out[f.name] = str(_path(v, f.name, base))
        elif kind == "globs" and (isinstance(v, str) or isinstance(v, list | tuple)):
            out[f.name] = [str(_path(s, f.name, base)) if isinstance(s, str) and s.strip() else s for s in ([v] if isinstance(v, str) else v)]
        elif kind == "bands" and isinstance(v, Mapping):
            out[f.name] = {b: _absolute(BandConfig, s, base) for b, s in v.items()}
        elif isinstance(kind, type):
            out[f.name] = _absolute(kind, v, base)
    return out


def merge(base: Mapping, override: Mapping) -> dict:
    """Deep merge of two config mappings: ``override`` wins; mappings merge, lists replace."""
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def _read_yaml(path: Path, what: str) -> dict:
    import yaml  # noqa: PLC0415

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such {what} file; expected a YAML file")
    data = path.read_bytes()
    if b"\x00" in data:
        raise ConfigError(f"{path}: has NUL bytes (a binary file?); expected a YAML text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: byte {err.start} is not UTF-8 (a binary file?); expected a YAML text file") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(err)}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: got a {type(raw).__name__} at the top level; expected a mapping of config keys")
    return dict(raw)


def _yaml_problem(err) -> str:
    """One line of a YAML error: what and where (line, column), without the parser's excerpt and caret."""
    problem = getattr(err, "problem", None) or getattr(err, "context", None) or type(err).__name__
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    context = getattr(err, "context", None)
    extra = f" ({context})" if context and context != problem else ""
    return " ".join(f"{problem}{extra}{where}".split())


def field_from_mapping(raw: Mapping, *, base, source=None, where: str = "", default_name: str | None = None) -> FieldConfig:
    """A :class:`FieldConfig` from a mapping (paths relative to ``base``).

    Parameters
    ----------
    raw : mapping
        The config keys.
    base : path-like
        Folder that relative paths are taken from (and the default ``products.outdir``'s parent).
    source : path-like, optional
        The file it came from (kept for messages).
    where : str
        Prefix of key paths in messages (e.g. ``fields[2]``).
    default_name : str, optional
        The field name when ``raw`` has none.
    """
    base = Path(base).resolve()
    raw = _absolute(FieldConfig, raw, base)
    if "field" not in raw and default_name is not None:
        raw["field"] = default_name
    prefix = f"{source}: " if source is not None else ""
    try:
        cfg = _build(FieldConfig, raw, where, base)
    except ConfigError as err:
        raise ConfigError(f"{prefix}{err}") from None
    if cfg.products.outdir is None:
        cfg = replace(cfg, products=replace(cfg.products, outdir=base / "products"))
    return replace(cfg, source=Path(source) if source is not None else None)


def load_field(path, *, check_inputs: bool = True) -> FieldConfig:
    """Read and validate a field config file.

    Parameters
    ----------
    path : path-like
        The YAML file.
    check_inputs : bool
        Also check that every input glob matches files and every PSF exists.

    Returns
    -------
    FieldConfig

    Raises
    ------
    ConfigError
        Naming the file and the key.
    """
    path = Path(path).resolve()
    raw = _read_yaml(path, "field config")
    cfg = field_from_mapping(raw, base=path.parent, source=path, default_name=path.stem)
    if check_inputs:
        cfg.check_inputs()
    return cfg


# -- survey ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SurveyConfig:
    """Fields run as one batch on one cluster (``mosaic batch``).

    Attributes
    ----------
    fields : tuple of FieldConfig
        Each with ``store`` set to the survey's store and ``products.outdir`` to
        ``<outdir>/<field>``.
    store : Path
    outdir : Path
    cluster : mapping or None
    bands : tuple of str or None
        Only these bands of every field.
    max_concurrent_fields : int
        Fields run at the same time on the cluster.
    source : Path or None
    """

    fields: tuple[FieldConfig, ...]
    store: Path
    outdir: Path
    cluster: Mapping | None = None
    bands: tuple[str, ...] | None = None
    max_concurrent_fields: int = 1
    source: Path | None = None


_SURVEY_KEYS = ("store", "outdir", "cluster", "bands", "max_concurrent_fields", "defaults", "fields")


def _survey_bands(v, w, b):
    if v is None:
        return None
    items = [v] if isinstance(v, str) else v
    known = _known_bands()
    if not isinstance(items, list | tuple) or not items or not all(isinstance(s, str) and s.upper() in known for s in items):
        _bad(w, v, f"a list of bands from {known}")
    return tuple(s.upper() for s in items)


def load_survey(path, *, check_inputs: bool = False) -> SurveyConfig:
    """Read and validate a survey config file.

    The file's keys: ``fields`` (a list; each entry a field config path, a mapping with
    ``config: PATH`` and keys that override the file's, or a whole field inline with its
    ``field`` name), ``defaults`` (keys every field starts from), ``store`` (default
    ``survey.zarr`` beside the file), ``outdir`` (default ``products``; field ``F`` writes
    into ``<outdir>/F``), ``cluster``, ``bands`` (only these bands of every field) and
    ``max_concurrent_fields`` (default 1). A field's own ``store``, ``products.outdir`` and
    ``cluster`` are replaced by the survey's. Precedence: defaults < field file < entry.

    Parameters
    ----------
    path : path-like
    check_inputs : bool
        Also check every field's inputs now (by default each field checks its own when it
        runs, so a field whose data are missing fails alone).

    Raises
    ------
    ConfigError
        For a structural error anywhere (unknown key, bad value), naming the file, the entry
        (``fields[2]``) and the key.
    """
    path = Path(path).resolve()
    base = path.parent
    raw = _read_yaml(path, "survey config")
    for key in raw:
        if key not in _SURVEY_KEYS:
            raise ConfigError(f"{path}: {key}: unknown key; expected one of {list(_SURVEY_KEYS)}")

    def get(key, parse, default):
        try:
            return parse(raw[key], key, base) if key in raw and raw[key] is not None else default
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None

    store = get("store", _path, base / "survey.zarr")
    outdir = get("outdir", _path, base / "products")
    cluster = get("cluster", _cluster, None)
    bands = get("bands", _survey_bands, None)
    n_concurrent = get("max_concurrent_fields", _int(minimum=1), 1)
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        raise ConfigError(f"{path}: defaults: got {defaults!r}; expected a mapping of field config keys")
    defaults = _absolute(FieldConfig, defaults, base)
    entries = raw.get("fields")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: fields: got {entries!r}; expected a non-empty list of field config files or mappings")

    out, seen = [], {}
    for i, entry in enumerate(entries):
        where = f"fields[{i}]"
        if isinstance(entry, str):
            entry = {"config": entry}
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{path}: {where}: got {entry!r}; expected a config file path or a mapping")
        entry = dict(entry)
        source, file_raw, file_base, default_name = path, {}, base, None
        if "config" in entry:
            field_file = _path(entry.pop("config"), f"{where}.config", base)
            file_raw = _read_yaml(field_file, "field config")
            file_base, source, default_name = field_file.parent, field_file, field_file.stem
            file_raw = _absolute(FieldConfig, file_raw, file_base)
        elif "field" not in entry:
            raise ConfigError(f"{path}: {where}: an inline field needs 'field' (its name) or 'config' (its file)")
        merged = merge(merge(defaults, file_raw), _absolute(FieldConfig, entry, base))
        name = merged.get("field", default_name)
        merged["field"] = name
        if isinstance(name, str):
            merged["store"] = str(store)
            merged.setdefault("products", {})
            if isinstance(merged["products"], Mapping):
                merged["products"] = {**merged["products"], "outdir": str(outdir / name)}
        merged.pop("cluster", None)
        try:
            cfg = field_from_mapping(merged, base=file_base, source=source, where=where if source == path else "")
        except ConfigError as err:
            raise ConfigError(str(err) if source == path else f"{path}: {where}: {err}") from None
        if cfg.field in seen:
            raise ConfigError(f"{path}: {where}: field {cfg.field!r} is also fields[{seen[cfg.field]}]; expected unique field names")
        seen[cfg.field] = i
        if bands is not None:
            missing = [b for b in bands if b not in cfg.bands]
            if len(missing) == len(bands):
                raise ConfigError(f"{path}: {where}: field {cfg.field!r} has none of the survey's bands {list(bands)}")
            cfg = replace(cfg, bands=MappingProxyType({b: c for b, c in cfg.bands.items() if b in bands}))
        if check_inputs:
            cfg.check_inputs()
        out.append(cfg)
    return SurveyConfig(
        fields=tuple(out), store=store, outdir=outdir, cluster=cluster, bands=bands, max_concurrent_fields=n_concurrent, source=path,
    )
