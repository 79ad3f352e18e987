"""The algorithm registry: every algorithm's name, category, description and typed parameters.

Entries are made from the functions themselves -- the signature gives the parameters, their
annotations and defaults; the numpydoc docstring gives the one-line description and each
parameter's text -- so the registry cannot drift from the code. A function joins with the
decorator::

    from mosaic.registry import algorithm

    @algorithm("background")
    def background_2d(data, *, box_size=64, ...):
        '''Background and RMS maps from sigma-clipped meshes.

        Parameters
        ----------
        box_size : int
            Mesh size in pixels.
        '''

:func:`algorithms` imports every module of the algorithm subpackages (:data:`PACKAGES`), so a new
module is listed without being named anywhere else.

Parameters that take one of a set of values carry ``choices``, from (first found) the
decorator's ``choices={"name": values}``, a ``Literal[...]`` annotation, a numpydoc type set
(``mode : {"same", "full"}``), or the library's own list for that parameter name
(:data:`NAMED_CHOICES`, applied where the parameter's default is one of the values).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from dataclasses import asdict, dataclass, replace

__all__ = ["NAMED_CHOICES", "PACKAGES", "Algorithm", "Parameter", "algorithm", "algorithms", "get"]

#: subpackages whose modules are imported to fill the registry
PACKAGES = ("mosaic.ops", "mosaic.coadd", "mosaic.prep", "mosaic.image", "mosaic.psf", "mosaic.catalog", "mosaic.viz")

#: the library's lists of allowed values, by parameter name (``module:ATTRIBUTE``)
NAMED_CHOICES = {
    "stretch": "mosaic.viz.stretch:STRETCHES",
    "interval": "mosaic.viz.stretch:INTERVALS",
    "estimator": "mosaic.ops.background:ESTIMATORS",
    "rms_estimator": "mosaic.ops.background:RMS_ESTIMATORS",
    "mode": "mosaic.ops.filters:FILTER_MODES",
    "boundary": "mosaic.ops.filters:CONVOLVE_BOUNDARIES",
    "nan_treatment": "mosaic.ops.filters:NAN_TREATMENTS",
    "kind": "mosaic.catalog.masks:MASK_KINDS",
    "connectivity": "mosaic.catalog.merge:CONNECTIVITIES",
    "deblend_mode": "mosaic.catalog.detect:DEBLEND_MODES",
}

_EMPTY = inspect.Parameter.empty
_REGISTRY: dict[str, Algorithm] = {}
#: explicit choices of the decorator, by algorithm name
_DECLARED: dict[str, dict] = {}
#: algorithms whose choices are filled in
_RESOLVED: set[str] = set()


@dataclass(frozen=True)
class Parameter:
    """One parameter of an algorithm: ``default`` is None and ``required`` True when it has none."""

    name: str
    type: str
    default: object
    required: bool
    keyword_only: bool
    description: str
    choices: tuple | None = None


@dataclass(frozen=True)
class Algorithm:
    """A registered algorithm: where it lives, what it does, what it takes."""

    name: str
    category: str
    description: str
    function: str
    parameters: tuple[Parameter, ...]

    def as_dict(self) -> dict:
        d = asdict(self)
        for p in d["parameters"]:
            p["default"] = _jsonable(p["default"])
            p["choices"] = None if p["choices"] is None else [_jsonable(c) for c in p["choices"]]
        return d


def _jsonable(value):
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return repr(value)


def _docstring_parameters(doc: str) -> tuple[dict[str, str], dict[str, tuple]]:
    """``{name: text}`` and ``{name: choices}`` (numpydoc type sets ``{'a', 'b'}``) from a ``Parameters`` section."""
    lines = inspect.cleandoc(doc).splitlines()
    out: dict[str, str] = {}
    sets: dict[str, tuple] = {}
    try:
        start = next(i for i, ln in enumerate(lines[:-1]) if ln.strip() == "Parameters" and set(lines[i + 1].strip()) == {"-"})
    except StopIteration:
        return out, sets
    names: list[str] = []
    for i in range(start + 2, len(lines)):
        ln = lines[i]
        if ln and not ln.startswith(" "):
            if i + 1 < len(lines) and lines[i + 1].strip() and set(lines[i + 1].strip()) == {"-"}:
                break  # the next section
            head, _, kind = ln.partition(":")
            names = [n.strip().lstrip("*") for n in head.split(",")]
            values = _type_set(kind)
            for n in names:
                out.setdefault(n, "")
                if values is not None:
                    sets[n] = values
        elif ln.strip() and names:
            for n in names:
                out[n] = (out[n] + " " + ln.strip()).strip()
    return out, sets


def _type_set(text: str) -> tuple | None:
    """The values of a numpydoc type set ``{"a", "b"}`` (or ``{4, 8}``), or None when ``text`` is not one."""
    match = re.match(r"\s*\{([^{}]*)\}", text)
    if not match:
        return None
    try:
        values = ast.literal_eval(f"({match.group(1)},)")
    except (ValueError, SyntaxError):
        return None
    return tuple(values) if all(isinstance(v, str | int | float | bool) for v in values) else None


def _literal(annotation: str) -> tuple | None:
    """The values of a ``Literal[...]`` annotation (as text), or None."""
    match = re.fullmatch(r"\s*(?:typing\.)?Literal\[(.*)\]\s*", annotation)
    if not match:
        return None
    try:
        return tuple(ast.literal_eval(f"({match.group(1)},)"))
    except (ValueError, SyntaxError):
        return None


def _named_choices(name: str, default) -> tuple | None:
    """The library's list for a parameter ``name``, if ``default`` is one of its values (or None)."""
    ref = NAMED_CHOICES.get(name)
    if ref is None:
        return None
    module, _, attr = ref.partition(":")
    try:
        values = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return None
    values = tuple(sorted(values)) if isinstance(values, set | frozenset | dict) else tuple(values)
    return values if default is None or default in values else None


def _annotation(p: inspect.Parameter) -> str:
    a = p.annotation
    if a is _EMPTY:
        return "" if p.default is _EMPTY or p.default is None else type(p.default).__name__
    if getattr(a, "__origin__", None) is not None and str(getattr(a, "__origin__", "")) == "typing.Literal":
        return f"Literal[{', '.join(map(repr, a.__args__))}]"
    return a if isinstance(a, str) else re.sub(r"<class '([^']+)'>", r"\1", str(a))


def _describe(func, name: str, category: str) -> Algorithm:
    doc = inspect.getdoc(func) or ""
    texts, sets = _docstring_parameters(doc)
    params = []
    for p in inspect.signature(func).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in ("self", "client"):
            continue
        params.append(
            Parameter(
                name=p.name,
                type=_annotation(p),
                default=None if p.default is _EMPTY else p.default,
                required=p.default is _EMPTY,
                keyword_only=p.kind == p.KEYWORD_ONLY,
                description=texts.get(p.name, ""),
                choices=_literal(_annotation(p)) or sets.get(p.name),
            )
        )
    summary = doc.split("\n\n")[0].replace("\n", " ").strip()
    return Algorithm(name, category, summary, f"{func.__module__}.{func.__qualname__}", tuple(params))


def algorithm(category: str, *, name: str | None = None, choices: dict | None = None):
    """Register the decorated function under ``name`` (default: its own name) and ``category``.

    ``choices`` maps parameter names to their allowed values (a sequence, or ``"module:ATTRIBUTE"``
    naming one, resolved when the registry is read).
    """

    def register(func):
        key = name or func.__name__
        known = _REGISTRY.get(key)
        if known is not None and known.function != f"{func.__module__}.{func.__qualname__}":
            msg = f"algorithm name {key!r} is taken by {known.function}; pass name= to register {func.__qualname__}"
            raise ValueError(msg)
        entry = _describe(func, key, category)
        unknown = sorted(set(choices or {}) - {p.name for p in entry.parameters})
        if unknown:
            msg = f"algorithm {key!r}: choices for {unknown}, which are not its parameters"
            raise ValueError(msg)
        _REGISTRY[key] = entry
        _DECLARED[key] = dict(choices or {})
        _RESOLVED.discard(key)
        return func

    return register


def _resolve(values) -> tuple:
    if isinstance(values, str):
        module, _, attr = values.partition(":")
        values = getattr(importlib.import_module(module), attr)
    return tuple(sorted(values)) if isinstance(values, set | frozenset | dict) else tuple(values)


def _with_choices(entry: Algorithm) -> Algorithm:
    """``entry`` with the choices of its parameters filled in (declared, annotated, documented or named)."""
    declared = _DECLARED.get(entry.name, {})
    params = tuple(
        replace(p, choices=_resolve(declared[p.name]))
        if p.name in declared
        else p
        if p.choices is not None
        else replace(p, choices=_named_choices(p.name, p.default))
        for p in entry.parameters
    )
    return replace(entry, parameters=params)


def _import_all() -> None:
    for pkg_name in PACKAGES:
        try:
            pkg = importlib.import_module(pkg_name)
        except ModuleNotFoundError as err:
            if err.name == pkg_name:
                continue  # a subpackage not written yet
            raise
        for mod in pkgutil.iter_modules(pkg.__path__):
            if not mod.name.startswith("_"):
                importlib.import_module(f"{pkg_name}.{mod.name}")
    # choices last: their lists may live in modules imported after the function's
    for key, entry in list(_REGISTRY.items()):
        if key not in _RESOLVED:
            _REGISTRY[key] = _with_choices(entry)
            _RESOLVED.add(key)


def algorithms(category: str | None = None) -> list[Algorithm]:
    """Every registered algorithm (of ``category`` if given), sorted by category and name."""
    _import_all()
    found = [a for a in _REGISTRY.values() if category is None or a.category == category]
    if category is not None and not found:
        known = sorted({a.category for a in _REGISTRY.values()})
        msg = f"no algorithm has category {category!r}; expected one of {known}"
        raise ValueError(msg)
    return sorted(found, key=lambda a: (a.category, a.name))


def get(name: str) -> Algorithm:
    """The registered algorithm called ``name``."""
    _import_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        msg = f"no algorithm is called {name!r}; expected one of {sorted(_REGISTRY)}"
        raise KeyError(msg) from None
