"""The steps of a field/band run, each a small adapter over a library function.

A :class:`Step` says whether it is on (:meth:`Step.enabled`), what its products depend on
(:meth:`Step.settings`, digested into a token), how to make them (:meth:`Step.run`) and how to
pick up a finished run's products without redoing them (:meth:`Step.restore`). The driver in
:mod:`mosaic.pipeline.field` records each step in the store's manifest of the field/band
(``pipeline/<step>``: state, token, products, time) and skips a step whose record is complete
with the same token and whose files are all there. A step whose record is ``started`` with the
same token was killed; it is run again and may reuse what it finished (``resume=True``: UPDC
continues after its last complete iteration, the drizzle step reuses a complete store product).
A step whose token changed is redone from scratch (``overwrite=True``).

Adding a library function as a step is one small class: an exposure step (preprocessing) maps
``(paths, outdir, **options)`` to new exposure paths; a mosaic step reads the store.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mosaic.config import ConfigError, FieldConfig
from mosaic.prep import ORDER as PREP_ORDER

__all__ = [
    "BandRun",
    "CatalogStep",
    "DrizzleStep",
    "ExposureStep",
    "FusionStep",
    "Outcome",
    "PreviewStep",
    "RestoreStep",
    "STEPS",
    "Step",
    "UPDCStep",
    "digest",
    "file_token",
]

log = logging.getLogger(__name__)


def _plain(obj):
    """JSON-able form of config values (paths, mappings, tuples, dataclasses)."""
    from dataclasses import fields as dc_fields  # noqa: PLC0415
    from dataclasses import is_dataclass  # noqa: PLC0415

    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dc_fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    return repr(obj)


def digest(*parts) -> str:
    """A stable hex digest of config-like values (the same in every process and session)."""
    text = json.dumps(_plain(list(parts)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_token(paths) -> str:
    """Digest of files by name, size and modification time: changes when a file is replaced."""
    items = []
    for p in paths:
        st = Path(p).stat()
        items.append((str(p), st.st_size, st.st_mtime_ns))
    return digest(items)


@dataclass
class Outcome:
    """What a step made.

    Attributes
    ----------
    products : dict
        ``{name: path}`` of files (or store products) written; all must exist for a skip.
    detail : str
        One line for the summary (what was computed and what was resumed).
    state : dict
        JSON-able values that :meth:`Step.restore` takes up (now, and when the step is
        skipped later).
    resumed : bool
        Nothing was computed: everything was read back from an earlier run.
    """

    products: dict = field(default_factory=dict)
    detail: str = ""
    state: dict = field(default_factory=dict)
    resumed: bool = False


@dataclass
class BandRun:
    """One band of one field while its steps run: the config, the store, the current exposures.

    Attributes
    ----------
    config : FieldConfig
    band : str
    store : mosaic.io.store.Store
    client : distributed.Client or None
        None computes on the current client, or with threads here.
    overwrite : bool
        Redo every step.
    paths : list of Path
        The current exposures (preprocessing steps replace them).
    psf_paths : list of Path
        The PSF of every exposure (same order as ``paths``).
    exposure_token : str
        Digest of what the current exposures hold: the inputs, then each preprocessing step.
    tokens : dict
        Token of every step that ran or was restored, by name.
    results : dict
        In-memory results of steps for later ones (``"updc"``: the UPDCResult).
    """

    config: FieldConfig
    band: str
    store: object
    client: object = None
    overwrite: bool = False
    paths: list = field(default_factory=list)
    psf_paths: list = field(default_factory=list)
    exposure_token: str = ""
    tokens: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def start(cls, config: FieldConfig, band: str, store, *, client=None, overwrite: bool = False) -> BandRun:
        """The run of ``band``: inputs found (a missing one is a ConfigError), PSFs matched."""
        where = f"{config.source}: bands.{band}" if config.source else f"bands.{band}"
        bcfg = config.bands[band]
        try:
            paths = bcfg.exposure_paths(f"bands.{band}.inputs")
        except ConfigError as err:
            raise ConfigError(f"{config.source}: {err}" if config.source else str(err)) from None
        psfs = psf_for_exposures(paths, band, bcfg.psf, where=f"{where}.psf")
        run = cls(config=config, band=band, store=store, client=client, overwrite=overwrite, paths=list(paths), psf_paths=psfs)
        run.exposure_token = digest("inputs", file_token(paths))
        return run

    @property
    def field(self) -> str:
        return self.config.field

    @property
    def outdir(self) -> Path:
        return self.config.outdir

    @property
    def stem(self) -> str:
        """File name stem of this field/band's products."""
        return f"{self.field}_{self.band.lower()}"

    def set_paths(self, paths, token: str) -> None:
        """Replace the exposures (after a preprocessing step) and their token."""
        self.paths = [Path(p) for p in paths]
        self.exposure_token = token
        self._cache.clear()

    def exposures(self):
        """The current exposures, read lazily once (:func:`mosaic.io.cal.read_exposures`)."""
        if "exposures" not in self._cache:
            from mosaic.io.cal import read_exposures  # noqa: PLC0415

            self._cache["exposures"] = read_exposures(self.paths, band=self.band)
        return self._cache["exposures"]

    def cutouts(self):
        """Cut-out reader of the current exposures (tasks read their own pieces)."""
        from mosaic.io.cal import CalCutouts  # noqa: PLC0415

        ds = self.exposures()
        return CalCutouts(ds["path"].values, ds.attrs["bad_bits"])

    def grid(self):
        """The output grid: from ``grid.header``, else around the current exposures."""
        if "grid" not in self._cache:
            from mosaic.io.grid import MosaicGrid  # noqa: PLC0415

            g = self.config.grid
            if g.header is not None:
                from astropy.io import fits  # noqa: PLC0415

                header = fits.Header.fromstring(g.header.read_text(), sep="\n")
                grid = MosaicGrid.from_header(header, tile=g.tile, halo=g.halo)
            else:
                ds = self.exposures()
                shape = (ds.sizes["y"], ds.sizes["x"])
                grid = MosaicGrid.from_exposures(
                    ds.attrs["wcs"], [shape] * ds.sizes["exposure"], psr=g.psr, rotation_deg=g.rotation, tile=g.tile, halo=g.halo,
                )
            self._cache["grid"] = grid
        return self._cache["grid"]

    def used_psfs(self) -> list[Path]:
        """PSFs of the exposures that were read (those excluded as empty are left out)."""
        ds = self.exposures()
        index = {str(Path(p)): k for k, p in enumerate(self.paths)}
        return [self.psf_paths[index[str(Path(p))]] for p in ds["path"].values]


def psf_for_exposures(paths, band: str, psf: Path, *, where: str) -> list[Path]:
    """The PSF file of every exposure: ``psf`` itself, or from the folder ``psf``
    (:func:`mosaic.psf.files.psf_files_for`); a missing one is a :class:`ConfigError` at ``where``."""
    from mosaic.exceptions import InputError  # noqa: PLC0415
    from mosaic.psf.files import psf_files_for  # noqa: PLC0415

    psf = Path(psf)
    if not psf.exists():
        raise ConfigError(f"{where}: {psf} does not exist; expected a PSF file or a folder of PSF files")
    try:
        return psf_files_for(paths, band, **({"psf_dir": psf} if psf.is_dir() else {"psf": psf}))
    except InputError as err:
        raise ConfigError(f"{where}: {err}") from None


def _available(module: str, function: str):
    """The function, or None where its module is not (yet) part of this installation."""
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    return getattr(mod, function, None)


def _call_options(fn, options: Mapping, **given) -> dict:
    """Keyword arguments for ``fn``: the options, and ``client``/``overwrite`` where it takes them."""
    params = inspect.signature(fn).parameters
    kwargs = dict(options)
    for name, value in given.items():
        if name in params:
            kwargs[name] = value
    return kwargs


class Step:
    """A step of a field/band run (see the module notes); subclasses fill in the methods.

    Attributes
    ----------
    name : str
        Record name (``pipeline/<name>`` in the manifest) and summary label.
    section : str
        Config key path of its settings, for messages.
    always_run : bool
        Run even when complete (the step resumes by itself and reads back what is done).
    """

    name = ""
    section = ""
    always_run = False

    def enabled(self, run: BandRun) -> bool:
        raise NotImplementedError

    def settings(self, run: BandRun):
        """What the products depend on (digested into the step's token)."""
        raise NotImplementedError

    def run(self, run: BandRun, *, resume: bool, overwrite: bool) -> Outcome:
        raise NotImplementedError

    def restore(self, run: BandRun, state: dict) -> None:
        """Take up an outcome's state: after running, and when skipped (default: nothing)."""

    def check(self, config: FieldConfig) -> None:
        """Raise :class:`ConfigError` for options this step cannot take (default: none)."""

    def listed(self, run: BandRun) -> bool:
        """Whether the run's summary has a row for this step, ``off`` or not (default: always)."""
        return True


# -- preprocessing ---------------------------------------------------------------------------------


class ExposureStep(Step):
    """A preprocessing step: ``function(paths, outdir, **options) -> list of Path`` of new exposures.

    The function writes cleaned exposures in the cal layout; the run continues on them. Its
    keyword-only parameters are the options a config may give (``client`` and ``overwrite``
    are passed by the pipeline).
    """

    _PASSED = ("client", "overwrite")

    def __init__(self, name: str, module: str, function: str):
        self.name, self.module, self.function = name, module, function
        self.section = f"preprocessing.{name}"

    def _config(self, config: FieldConfig):
        return getattr(config.preprocessing, self.name)

    def _function(self):
        return _available(self.module, self.function)

    def enabled(self, run: BandRun) -> bool:
        return self._config(run.config).enabled

    def allowed_options(self) -> list[str] | None:
        fn = self._function()
        if fn is None:
            return None
        params = inspect.signature(fn).parameters.values()
        return sorted(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in self._PASSED)

    def check(self, config: FieldConfig) -> None:
        cfg = self._config(config)
        allowed = self.allowed_options()
        if allowed is None:
            if cfg.enabled:
                raise ConfigError(f"{self.section}: needs {self.module}.{self.function}, which this installation lacks; expected enabled: false")
            return
        for key in cfg.options:
            if key not in allowed:
                raise ConfigError(f"{self.section}.{key}: unknown option of {self.module}.{self.function}; expected one of {allowed}")

    def settings(self, run: BandRun):
        return {"exposures": run.exposure_token, "options": dict(self._config(run.config).options)}

    def folder(self, run: BandRun) -> Path:
        return run.outdir / "prep" / run.band.lower() / self.name

    def run(self, run: BandRun, *, resume: bool, overwrite: bool) -> Outcome:
        fn = self._function()
        kwargs = _call_options(fn, self._config(run.config).options, client=run.client, overwrite=True)
        new = [Path(p) for p in fn(list(run.paths), self.folder(run), **kwargs)]
        # every file is in state["paths"] (checked before a skip); the summary shows the folder
        folder = self.folder(run)
        return Outcome(products={"exposures": str(folder)}, detail=f"{len(new)} exposures -> {folder}", state={"paths": [str(p) for p in new]})

    def restore(self, run: BandRun, state: dict) -> None:
        run.set_paths(state["paths"], run.tokens[self.name])


# -- coaddition ------------------------------------------------------------------------------------------


class DrizzleStep(Step):
    """The drizzle mosaic: store product ``drizzle`` and ``<stem>_drizzle_i2d.fits``."""

    name = section = "drizzle"

    def enabled(self, run: BandRun) -> bool:
        return run.config.drizzle.enabled

    def settings(self, run: BandRun):
        g = run.config.grid
        return {"exposures": run.exposure_token, "grid": g, "drizzle": run.config.drizzle}

    def run(self, run: BandRun, *, resume: bool, overwrite: bool) -> Outcome:
        from mosaic.coadd.drizzle import drizzle_mosaic  # noqa: PLC0415
        from mosaic.io.products import write_drizzle_products, write_i2d  # noqa: PLC0415

        d = run.config.drizzle
        grid = run.grid()
        out = run.outdir / f"{run.stem}_drizzle_i2d.fits"
        out.parent.mkdir(parents=True, exist_ok=True)
        if resume and run.store.is_complete(run.field, run.band, "drizzle"):
            # killed after the store product was whole: only the file is left to write
            source = run.store.read_product(run.field, run.band, "drizzle")
            write_i2d(out, source, grid, overwrite=True)
            detail = "i2d file from the complete store product"
        else:
            mosaic = drizzle_mosaic(
                run.exposures(), grid, pixfrac=d.pixfrac, kernel=d.kernel, weight=d.weight, cutout_reader=run.cutouts(),
            )
            write_drizzle_products(mosaic, grid, out=out, store=run.store, field=run.field, band=run.band, overwrite=True)
            detail = f"{grid.shape[0]} x {grid.shape[1]}, pixfrac {d.pixfrac}, {d.kernel}, {d.weight}"
        return Outcome(products={"drizzle_i2d": str(out)}, detail=detail)


class UPDCStep(Step):
    """UPDC (or a baseline): every iteration in the store, the saved ones as ``_i2d.fits`` files.

    Always run: :func:`mosaic.coadd.updc.updc` reads back the complete iterations and computes
    only the missing ones, so a longer run (more iterations) continues the shorter one.
    """

    name = section = "updc"
    always_run = True

    def enabled(self, run: BandRun) -> bool:
        return run.config.updc.enabled

    def settings(self, run: BandRun):
        u = run.config.updc
        # iterations and save are left out: more iterations continue the run, they do not redo it;
        # array too: the GPU gives the host's result to round-off
        return {
            "exposures": run.exposure_token, "grid": run.config.grid, "psfs": file_token(sorted(set(run.psf_paths))),
            "weight": run.config.drizzle.weight, "method": u.method, "blot": u.blot, "tau": u.tau, "errors": u.errors,
            "background": u.background, "pedestal": u.pedestal, "damping": u.damping,
        }

    def run(self, run: BandRun, *, resume: bool, overwrite: bool) -> Outcome:
        from mosaic.coadd.updc import updc  # noqa: PLC0415

        u = run.config.updc
        d = run.config.drizzle
        computed = []
        # iteration 0 is the drizzle mosaic with pixfrac 1 and the square kernel: the drizzle
        # step's product when that is what it made, rather than drizzling the band twice
        drizzled = None
        if d.enabled and d.pixfrac == 1.0 and d.kernel == "square" and run.store.is_complete(run.field, run.band, "drizzle"):
            drizzled = run.store.read_product(run.field, run.band, "drizzle")
        result = updc(
            run.exposures(), run.grid(), [str(p) for p in run.used_psfs()], n_iterations=u.iterations, method=u.method, blot=u.blot,
            weight=run.config.drizzle.weight, tau=u.tau, errors=u.errors, background=u.background, pedestal=u.pedestal,
            damping=u.damping, store=run.store,
            field=run.field, save=u.saved(), outdir=run.outdir, name=f"{run.stem}_{u.method}", overwrite=overwrite,
            cutout_reader=run.cutouts(), client=run.client, callback=lambda n, ds: computed.append(n), array=u.array,
            drizzled=drizzled,
        )
        run.results["updc"] = result
        resumed = [n for n in range(u.iterations + 1) if n not in computed]
        detail = f"{u.method}: computed {_ranges(computed) or 'none'}; from the store {_ranges(resumed) or 'none'}"
        products = {f"iter{n:02d}_i2d": str(p) for n, p in sorted(result.files.items())}
        return Outcome(products=products, detail=detail, state={"computed": computed, "resumed": resumed}, resumed=not computed)


def _ranges(numbers) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2, 5"``."""
    out, numbers = [], sorted(numbers)
    i = 0
    while i < len(numbers):
        j = i
        while j + 1 < len(numbers) and numbers[j + 1] == numbers[j] + 1:
            j += 1
        out.append(str(numbers[i]) if i == j else f"{numbers[i]}-{numbers[j]}")
        i = j + 1
    return ", ".join(out)


# -- after coaddition -------------------------------------------------------------------------------------


class RestoreStep(Step):
    """Learned restoration (:func:`mosaic.restore.product.restore_i2d`) of the drizzle mosaic or a
    saved UPDC iteration, in the bands the model is trained for, on the run's cluster."""

    name = section = "restore"

    def _model(self, config: FieldConfig):
        from mosaic.exceptions import InputError  # noqa: PLC0415

        try:
            from mosaic.restore.infer import RestorationModel  # noqa: PLC0415
        except ImportError as err:
            raise ConfigError(f"restore.enabled: needs onnxruntime ({err}; pip install -e .[restore]); expected false") from None
        try:
            return RestorationModel(config.restore.model)
        except InputError as err:
            raise ConfigError(f"restore.model: {err}") from None

    def enabled(self, run: BandRun) -> bool:
        return run.config.restore.enabled and run.band == self._model(run.config).band

    def listed(self, run: BandRun) -> bool:
        return run.config.restore.enabled  # off: no row (configs without it keep their summaries)

    def check(self, config: FieldConfig) -> None:
        r = config.restore
        if not r.enabled:
            return
        model = self._model(config)
        if model.band not in config.bands:
            raise ConfigError(f"restore.model: {model.path.name} is trained for {model.band}; expected a model for one of the bands {sorted(config.bands)}")
        for key, value in (("tile", r.tile), ("overlap", r.overlap)):
            if value is not None and value % model.multiple:
                raise ConfigError(f"restore.{key}: got {value!r}; expected a multiple of {model.multiple} (model {model.path.name})")
        d = config.drizzle
        # the mosaic's PSF depends on its drizzle, which the model is trained to undo
        if r.input == "drizzle" and model.drizzle_differs(kernel=d.kernel, pixfrac=d.pixfrac):
            raise ConfigError(
                f"restore.input: the drizzle mosaic (drizzle.kernel {d.kernel!r}, drizzle.pixfrac {d.pixfrac:g}), but "
                f"{model.trained_drizzle.removeprefix('model ')}; expected those drizzle settings with restore enabled",
            )

    def _paths(self, run: BandRun) -> tuple[Path, Path]:
        """The input mosaic file and the product."""
        r = run.config.restore
        label = "drizzle" if r.input == "drizzle" else f"{run.config.updc.method}_iter{r.input:02d}"
        out = f"{run.stem}_restored_i2d.fits" if r.input == "drizzle" else f"{run.stem}_{label}_restored_i2d.fits"
        return run.outdir / f"{run.stem}_{label}_i2d.fits", run.outdir / out

    def settings(self, run: BandRun):
        r = run.config.restore
        model = self._model(run.config)
        upstream = run.tokens.get("drizzle") if r.input == "drizzle" else run.tokens.get("updc")
        return {"restore": r, "model": file_token([model.path]), "upstream": upstream}

    def run(self, run: BandRun, *, resume: bool, overwrite: bool) -> Outcome:
        from contextlib import nullcontext  # noqa: PLC0415

        from mosaic.restore.product import restore_i2d  # noqa: PLC0415

        r = run.config.restore
        model = self._model(run.config)
        source, out = self._paths(run)
        # the product is written whole under a temporary name, so one that exists is complete
        with run.client.as_current() if run.client is not None else nullcontext():
            restore_i2d(source, out, model=model, tile=r.tile, overlap=r.overlap, overwrite=True)
        overlap = model.halo if r.overlap is None else r.overlap
        return Outcome(products={"restored_i2d": str(out)}, detail=f"{source.name}, {model.path.name}, tile {r.tile}, overlap {overlap}")


def _iteration_images(run: BandRun, iterations):
    """``{label: (lazy sky-subtracted image, grid)}``: UPDC iterations read from the store."""
    result = run.results.get("updc")
    if result is None:
        return {}
    method = run.config.updc.method
    return {f"{method}_iter{n:02d}": result.product(n)["sci"] for n in iterations if n < len(result.iterations)}


class CatalogStep(Step):
    """Segmentation catalogues (``catalogs/<stem>_<label>_cat.ecsv``) of the saved iterations'
    ``_i2d.fits`` files (sky-subtracted, with ERR and WHT), or of the drizzle mosaic when UPDC is off."""

    name = section = "catalogs"

    def enabled(self, run: BandRun) -> bool:
        return run.config.catalogs.enabled

    def _targets(self, run: BandRun) -> dict[str, Path]:
        c, u = run.config.catalogs, run.config.updc
        if not u.enabled:
            return {"drizzle": run.outdir / f"{run.stem}_drizzle_i2d.fits"}
        its = c.iterations if c.iterations is not None else u.saved()
        return {f"{u.method}_iter{n:02d}": run.outdir / f"{run.stem}_{u.method}_iter{n:02d}_i2d.fits" for n in its}

    def settings(self, run: BandRun):
        upstream = run.tokens.get("updc") if run.config.updc.enabled else run.tokens.get("drizzle")
        return {"catalogs": run.config.catalogs, "images": sorted(self._targets(run)), "upstream": upstream}

    def run(self, run: BandRun, *, resume: bool, overwrite: bool) -> Outcome:
        from mosaic.pipeline.detect import detect_image  # noqa: PLC0415

        c = run.config.catalogs
        folder = run.outdir / "catalogs"
        folder.mkdir(parents=True, exist_ok=True)
        products = {}
        for label, image in self._targets(run).items():
            out = folder / f"{run.stem}_{label}_cat.ecsv"
            # the mosaic as it is (no smoothing, no deblending), thresholds in the noise measured on it (ERR scaled) by default
            detect_image(image, out, threshold=c.threshold, n_pixels=c.npixels, fwhm=0.0, radii=(), tile=run.config.grid.tile,
                         require_error=True, overwrite=True, background_box=c.background_box, noise=c.noise,
                         flux_errors=c.flux_errors)
            products[label] = str(out)
        return Outcome(products=products, detail=f"{len(products)} catalogues")


class PreviewStep(Step):
    """PNG previews of the drizzle mosaic and the saved iterations (:func:`mosaic.viz.preview.write_preview`:
    block means to at most ``MAX_SIDE`` pixels, computed tile by tile, never the whole mosaic)."""

    name = section = "previews"
    MAX_SIDE = 2048

    def enabled(self, run: BandRun) -> bool:
        return run.config.products.previews

    def _images(self, run: BandRun) -> dict:
        images = {}
        if run.config.drizzle.enabled:
            images["drizzle"] = run.store.read_product(run.field, run.band, "drizzle")["sci"]
        if run.config.updc.enabled:
            images.update(_iteration_images(run, run.config.updc.saved()))
        return images

    def settings(self, run: BandRun):
        u = run.config.updc
        labels = (["drizzle"] if run.config.drizzle.enabled else []) + ([f"{u.method}_iter{n:02d}" for n in u.saved()] if u.enabled else [])
        return {"images": labels, "upstream": [run.tokens.get("drizzle"), run.tokens.get("updc")]}

    def run(self, run: BandRun, *, resume: bool, overwrite: bool) -> Outcome:
        from mosaic.viz.preview import write_preview  # noqa: PLC0415

        folder = run.outdir / "previews"
        folder.mkdir(parents=True, exist_ok=True)
        products = {}
        for label, image in self._images(run).items():
            products[label] = str(write_preview(folder / f"{run.stem}_{label}.png", image.data, max_size=self.MAX_SIDE))
        return Outcome(products=products, detail=f"{len(products)} PNGs")


class FusionStep(Step):
    """Fusion of NIRCam images with an IFU cube (:func:`mosaic.fusion.files.fuse_files`), once per
    field: in the run of its last band, so ``fusion.images`` may name this run's products."""

    name = section = "fusion"

    def enabled(self, run: BandRun) -> bool:
        return run.config.fusion.enabled and run.band == list(run.config.bands)[-1]

    def listed(self, run: BandRun) -> bool:
        return self.enabled(run)  # not an "off" row in every run and every band

    def _images(self, run: BandRun) -> list[str]:
        import glob  # noqa: PLC0415

        found = sorted({p for pattern in run.config.fusion.images for p in glob.glob(pattern)})
        if not found:
            raise ConfigError(f"fusion.images: {list(run.config.fusion.images)} match no files; expected the NIRCam images to fuse")
        return found

    def settings(self, run: BandRun):
        f = run.config.fusion
        images = self._images(run)
        return {"options": {k: v for k, v in _plain(f).items() if k not in ("enabled", "images", "cube")},
                "files": file_token([*images, f.cube])}

    def run(self, run: BandRun, *, resume: bool, overwrite: bool) -> Outcome:
        from mosaic.fusion.files import fuse_files  # noqa: PLC0415

        f = run.config.fusion
        images = self._images(run)
        run.outdir.mkdir(parents=True, exist_ok=True)
        out = fuse_files(images, f.cube, run.outdir / f"{run.field}_fused.fits", factor=f.factor, components=f.components,
                         gamma=f.gamma, mu=f.mu, solver=f.solver, tile=f.tile, boundary=f.boundary, align=f.align,
                         previews=f.previews, mean=f.mean)
        return Outcome(products={"fused": str(out)}, detail=f"{len(images)} images + {Path(f.cube).name}")


#: the steps of a band, in order
STEPS: tuple[Step, ...] = (
    # preprocessing in mosaic.prep.ORDER; the background step takes the background's structure
    # (ICL, gradients) out and keeps the sky level, for UPDC's positivity
    *(ExposureStep(name, module, function) for name, module, function in PREP_ORDER),
    DrizzleStep(),
    UPDCStep(),
    RestoreStep(),
    CatalogStep(),
    PreviewStep(),
    FusionStep(),
)
