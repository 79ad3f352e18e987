"""What ``POST /process`` runs: registry algorithms applied to an image, one after another.

Each algorithm the service can run on an image is an :class:`Operation`: a name from
:mod:`mosaic.registry` (whose signature gives the parameters, types and defaults) and what its
result is in a chain -- a new image (``image``: filters, stretches, background subtraction), a
table of sources (``table``: detection) or values (``values``: statistics). A chain (a
pipeline, seed 001 sec. 5.4) is a list of steps; every step but the last must give an image.

Parameters are checked against the registry before anything is read: unknown names, missing
required parameters, values of the wrong type and values outside a known set of choices are
:class:`ParameterError` (HTTP 422), naming the step, the parameter and what is allowed. Array
parameters (masks, kernels) cannot be sent over the API and are refused by name.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from mosaic import registry

__all__ = ["OPERATIONS", "Operation", "ParameterError", "Step", "describe", "parse_steps", "run_steps"]

log = logging.getLogger(__name__)


class ParameterError(ValueError):
    """A parameter the registry does not allow; ``parameter`` and ``allowed`` say which and what."""

    def __init__(self, message: str, *, parameter: str | None = None, allowed=None, step: int | None = None):
        super().__init__(message)
        self.parameter = parameter
        self.allowed = allowed
        self.step = step


def _background(image, kwargs):
    from mosaic.image.background import background_2d  # noqa: PLC0415

    bkg = background_2d(image, **kwargs)
    return image - bkg.background


def _icl(image, kwargs):
    from mosaic.image.background import icl_background  # noqa: PLC0415

    return image - icl_background(image, **kwargs).final.background


def _segmentation(image, kwargs, wcs=None):
    from mosaic.catalog.detect import detect_segmentation  # noqa: PLC0415
    from mosaic.catalog.photometry import source_catalog  # noqa: PLC0415

    threshold = kwargs.pop("threshold")
    seg = detect_segmentation(image, threshold, **kwargs)
    return source_catalog(image, seg, wcs=wcs)


def _daofind(image, kwargs, wcs=None):
    from mosaic.catalog.daofind import detect_daofind  # noqa: PLC0415

    threshold = kwargs.pop("threshold")
    table = detect_daofind(image, threshold, **kwargs)
    if wcs is not None and len(table):
        ra, dec = wcs.pixel_to_world_values(np.asarray(table["x_centroid"]), np.asarray(table["y_centroid"]))
        table["ra"], table["dec"] = ra, dec
    return table


def _plain(module: str, name: str):
    def call(image, kwargs):
        import importlib  # noqa: PLC0415

        return getattr(importlib.import_module(module), name)(image, **kwargs)

    return call


def _as_float_image(module: str, name: str):
    plain = _plain(module, name)

    def call(image, kwargs):
        return plain(image, kwargs).astype(np.float32)

    return call


@dataclass(frozen=True)
class Operation:
    """An algorithm of the registry as a step of a chain.

    Attributes
    ----------
    name : str
        Its registry name.
    result : str
        ``image``, ``table`` or ``values``.
    run : callable
        ``run(image, kwargs)`` (``run(image, kwargs, wcs)`` for tables) -> the result.
    summary : str
        What the service does with it, where that differs from the bare function.
    """

    name: str
    result: str
    run: Callable
    summary: str = ""


_OPS = (
    Operation("background_2d", "image", _background, "the image minus its Background2D background"),
    Operation("icl_background", "image", _icl, "the image minus its ICL-preserving background"),
    Operation("gaussian_filter", "image", _plain("mosaic.image.filters", "gaussian_filter")),
    Operation("median_filter", "image", _plain("mosaic.image.filters", "median_filter")),
    Operation("smooth", "image", _plain("mosaic.catalog.detect", "smooth")),
    Operation("derivative_image", "image", _plain("mosaic.catalog.masks", "derivative_image")),
    Operation("source_mask", "image", _as_float_image("mosaic.catalog.masks", "source_mask"), "1 where the mask is set, else 0"),
    Operation("stretch_image", "image", _plain("mosaic.viz.stretch", "stretch_image")),
    Operation("detect_segmentation", "table", _segmentation, "segments measured by source_catalog (photometry)"),
    Operation("detect_daofind", "table", _daofind),
    Operation("image_statistics", "values", _plain("mosaic.image.stats", "image_statistics")),
    Operation("sigma_clipped_stats", "values", _plain("mosaic.image.stats", "sigma_clipped_stats")),
    Operation("median", "values", _plain("mosaic.image.stats", "median")),
    Operation("mad_std", "values", _plain("mosaic.image.stats", "mad_std")),
    Operation("biweight_location", "values", _plain("mosaic.image.stats", "biweight_location")),
    Operation("biweight_scale", "values", _plain("mosaic.image.stats", "biweight_scale")),
    Operation("percentile", "values", _plain("mosaic.image.stats", "percentile")),
)
#: the algorithms ``POST /process`` runs, by registry name
OPERATIONS: Mapping[str, Operation] = {op.name: op for op in _OPS}

#: parameters whose values are arrays or objects: never sent over the API
_NOT_SETTABLE_TYPES = ("Table", "Segmentation", "MosaicGrid", "DetectionTier", "Mapping", "Sequence", "xr.", "Unit")
_ARRAY_NAMES = {"mask", "coverage_mask", "footprint", "kernel", "error", "convolved", "wcs", "segmentation", "tiers"}


def _choices_of(algorithm: str, parameter: str) -> tuple | None:
    """The allowed values of a parameter, from the registry (None when any value of its type goes)."""
    return next((p.choices for p in registry.get(algorithm).parameters if p.name == parameter), None)


def _kinds(p: registry.Parameter) -> set[str] | None:
    """The JSON kinds a parameter takes (``int``, ``float``, ``str``, ``bool``, ``null``,
    ``list``, ``number``), or None when it cannot be sent over the API."""
    if p.name in _ARRAY_NAMES or any(t in p.type for t in _NOT_SETTABLE_TYPES):
        return None
    text = p.type.replace("Optional[", "").replace("]", "")
    parts = {t.strip() for t in text.split("|")} if text else set()
    kinds = set()
    for t in parts:
        if t in ("int", "float", "str", "bool"):
            kinds.add(t)
        elif t == "None":
            kinds.add("null")
        elif t in ("tuple", "list") or t.startswith(("tuple[", "list[")):
            kinds.add("list")
        else:
            return None
    if not parts:  # untyped: a number, or a list of numbers (a per-axis value)
        kinds = {"number", "list"}
    if p.default is None and not p.required:
        kinds.add("null")
    return kinds


def _settable(op: Operation) -> list[registry.Parameter]:
    params = registry.get(op.name).parameters[1:]  # the first is the image
    return [p for p in params if _kinds(p) is not None]


def describe() -> list[dict]:
    """``GET /algorithms``: every registered algorithm, with what ``POST /process`` can set."""
    out = []
    for a in registry.algorithms():
        d = a.as_dict()
        op = OPERATIONS.get(a.name)
        d["processable"] = op is not None
        if op is not None:
            d["result"] = op.result
            d["service"] = op.summary or a.description
        for p, rp in zip(d["parameters"], a.parameters, strict=True):
            kinds = _kinds(rp)
            p["settable"] = op is not None and kinds is not None and rp is not a.parameters[0]
            if p["settable"]:
                p["accepts"] = sorted(kinds)
                allowed = _choices_of(a.name, rp.name)
                if allowed is not None:
                    p["enum"] = list(allowed)
        out.append(d)
    return out


def _coerce(value, kinds: set[str], where: str, name: str, default):
    def ok(v, k):
        if k == "null":
            return v is None
        if k == "bool":
            return isinstance(v, bool)
        if k == "int":
            return isinstance(v, int) and not isinstance(v, bool)
        if k in ("float", "number"):
            return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        if k == "str":
            return isinstance(v, str)
        if k == "list":
            return isinstance(v, list) and all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)
        return False

    if any(ok(value, k) for k in kinds):
        if isinstance(value, list):
            if isinstance(default, tuple) and len(default) and len(value) != len(default):
                raise ParameterError(f"{where}: parameter {name!r} got {value!r}; expected a list of {len(default)} numbers",
                                     parameter=name)
            return tuple(value)
        if "float" in kinds and "int" not in kinds and isinstance(value, int):
            return float(value)
        return value
    words = {"int": "an integer", "float": "a number", "number": "a number", "str": "a string", "bool": "true or false",
             "null": "null", "list": "a list of numbers"}
    expected = " or ".join(sorted({words[k] for k in kinds}))
    raise ParameterError(f"{where}: parameter {name!r} got {value!r}; expected {expected}", parameter=name, allowed=sorted(kinds))


@dataclass(frozen=True)
class Step:
    """One checked step: the operation and its keyword arguments."""

    operation: Operation
    kwargs: dict


def _parse_step(raw, index: int, n_steps: int) -> Step:
    where = f"steps[{index}]"
    if not isinstance(raw, Mapping):
        raise ParameterError(f"{where}: got {raw!r}; expected {{'algorithm': name, 'params': {{...}}}}", step=index)
    unknown = sorted(set(raw) - {"algorithm", "params"})
    if unknown:
        raise ParameterError(f"{where}: unknown keys {unknown}; expected 'algorithm' and 'params'", step=index)
    name = raw.get("algorithm")
    if name not in OPERATIONS:
        raise ParameterError(f"{where}.algorithm: got {name!r}; expected one of {sorted(OPERATIONS)}",
                             parameter="algorithm", allowed=sorted(OPERATIONS), step=index)
    op = OPERATIONS[name]
    if op.result != "image" and index < n_steps - 1:
        images = sorted(k for k, o in OPERATIONS.items() if o.result == "image")
        raise ParameterError(f"{where}.algorithm: {name!r} gives {op.result}, so it can only be the last step; "
                             f"expected one that gives an image: {images}", parameter="algorithm", allowed=images, step=index)
    params = raw.get("params") or {}
    if not isinstance(params, Mapping):
        raise ParameterError(f"{where}.params: got {params!r}; expected a mapping of parameter name to value", step=index)
    settable = {p.name: p for p in _settable(op)}
    everything = {p.name for p in registry.get(name).parameters[1:]}
    kwargs = {}
    for key, value in params.items():
        if key not in settable:
            why = "cannot be set over the API (an array or object)" if key in everything else "is not a parameter of it"
            raise ParameterError(f"{where}: {name!r} parameter {key!r} {why}; settable: {sorted(settable)}",
                                 parameter=key, allowed=sorted(settable), step=index)
        p = settable[key]
        value = _coerce(value, _kinds(p), f"{where} ({name})", key, p.default)
        allowed = _choices_of(name, key)
        if allowed is not None and value not in allowed and not (value is None and "null" in _kinds(p)):
            raise ParameterError(f"{where} ({name}): parameter {key!r} got {value!r}; expected one of {list(allowed)}",
                                 parameter=key, allowed=list(allowed), step=index)
        kwargs[key] = value
    missing = [p.name for p in settable.values() if p.required and p.name not in kwargs]
    if missing:
        raise ParameterError(f"{where} ({name}): required parameter {missing[0]!r} is missing; required: {missing}",
                             parameter=missing[0], allowed=missing, step=index)
    return Step(op, kwargs)


def parse_steps(body: Mapping) -> list[Step]:
    """The checked steps of a ``/process`` request: ``{"algorithm", "params"}`` or ``{"steps": [...]}``.

    Raises
    ------
    ParameterError
        Naming the step and parameter at fault and what is allowed.
    """
    if "steps" in body:
        raw = body["steps"]
        if not isinstance(raw, list) or not raw:
            raise ParameterError(f"steps: got {raw!r}; expected a non-empty list of {{'algorithm', 'params'}}", parameter="steps")
        if "algorithm" in body or "params" in body:
            raise ParameterError("give either 'steps' or 'algorithm' (with 'params'), not both", parameter="steps")
    elif "algorithm" in body:
        raw = [{"algorithm": body["algorithm"], "params": body.get("params") or {}}]
    else:
        raise ParameterError("expected 'algorithm' (with 'params') or 'steps'", parameter="algorithm", allowed=sorted(OPERATIONS))
    return [_parse_step(s, i, len(raw)) for i, s in enumerate(raw)]


def run_steps(image, steps: list[Step], *, wcs=None):
    """Apply the steps in turn; returns ``(kind, result)`` of the last (``image``, ``table``, ``values``)."""
    result = image
    for step in steps:
        kwargs = dict(step.kwargs)
        log.info("process: %s(%s)", step.operation.name, ", ".join(f"{k}={v!r}" for k, v in kwargs.items()))
        if step.operation.result == "table":
            result = step.operation.run(result, kwargs, wcs)
        else:
            result = step.operation.run(result, kwargs)
    return steps[-1].operation.result, result
