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
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from dataclasses import asdict, dataclass

__all__ = ["PACKAGES", "Algorithm", "Parameter", "algorithm", "algorithms", "get"]

#: subpackages whose modules are imported to fill the registry
PACKAGES = ("mosaic.ops", "mosaic.coadd", "mosaic.prep", "mosaic.image", "mosaic.psf", "mosaic.catalog", "mosaic.viz")

_EMPTY = inspect.Parameter.empty
_REGISTRY: dict[str, Algorithm] = {}


@dataclass(frozen=True)
class Parameter:
    """One parameter of an algorithm: ``default`` is None and ``required`` True when it has none."""

    name: str
    type: str
    default: object
    required: bool
    keyword_only: bool
    description: str


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
        return d


def _jsonable(value):
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return repr(value)


def _docstring_parameters(doc: str) -> dict[str, str]:
    """``{name: text}`` from a numpydoc ``Parameters`` section (names may be ``a, b : type``)."""
    lines = inspect.cleandoc(doc).splitlines()
    out: dict[str, str] = {}
    try:
        start = next(i for i, ln in enumerate(lines[:-1]) if ln.strip() == "Parameters" and set(lines[i + 1].strip()) == {"-"})
    except StopIteration:
        return out
    names: list[str] = []
    for i in range(start + 2, len(lines)):
        ln = lines[i]
        if ln and not ln.startswith(" "):
            if i + 1 < len(lines) and lines[i + 1].strip() and set(lines[i + 1].strip()) == {"-"}:
                break  # the next section
            names = [n.strip().lstrip("*") for n in ln.split(":")[0].split(",")]
            for n in names:
                out.setdefault(n, "")
        elif ln.strip() and names:
            for n in names:
                out[n] = (out[n] + " " + ln.strip()).strip()
    return out


def _annotation(p: inspect.Parameter) -> str:
    a = p.annotation
    if a is _EMPTY:
        return "" if p.default is _EMPTY or p.default is None else type(p.default).__name__
    return a if isinstance(a, str) else re.sub(r"<class '([^']+)'>", r"\1", str(a))


def _describe(func, name: str, category: str) -> Algorithm:
    doc = inspect.getdoc(func) or ""
    texts = _docstring_parameters(doc)
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
            )
        )
    summary = doc.split("\n\n")[0].replace("\n", " ").strip()
    return Algorithm(name, category, summary, f"{func.__module__}.{func.__qualname__}", tuple(params))


def algorithm(category: str, *, name: str | None = None):
    """Register the decorated function under ``name`` (default: its own name) and ``category``."""

    def register(func):
        key = name or func.__name__
        known = _REGISTRY.get(key)
        if known is not None and known.function != f"{func.__module__}.{func.__qualname__}":
            msg = f"algorithm name {key!r} is taken by {known.function}; pass name= to register {func.__qualname__}"
            raise ValueError(msg)
        _REGISTRY[key] = _describe(func, key, category)
        return func

    return register


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
