"""The registry is generated from the functions: signatures, defaults and docstrings."""

from __future__ import annotations

import inspect
import json

import pytest

from mosaic.cli import main
from mosaic.registry import algorithm, algorithms, get


def test_entries_match_signatures():
    found = algorithms()
    assert {"drizzle_mosaic", "updc", "convolve_tiled", "jwst_psf", "blot"} <= {a.name for a in found}
    for a in found:
        module, _, qual = a.function.rpartition(".")
        func = getattr(__import__(module, fromlist=[qual]), qual)
        sig = inspect.signature(func).parameters
        for p in a.parameters:
            ref = sig[p.name]
            assert p.required == (ref.default is inspect.Parameter.empty)
            if not p.required:
                assert p.default is ref.default or p.default == ref.default
        assert a.description, a.name


def test_docstring_parameters_are_read():
    @algorithm("test-only", name="_registry_probe")
    def probe(data, *, box_size: int = 64, estimator: str = "median"):
        """Probe the registry.

        Parameters
        ----------
        data : ndarray
            The image.
        box_size : int
            Mesh size
            in pixels.
        estimator : {'median', 'biweight'}
            Background estimator.

        Returns
        -------
        out : ndarray
        """

    a = get("_registry_probe")
    assert a.description == "Probe the registry."
    assert [(p.name, p.type, p.default, p.required, p.keyword_only) for p in a.parameters] == [
        ("data", "", None, True, False),
        ("box_size", "int", 64, False, True),
        ("estimator", "str", "median", False, True),
    ]
    assert [p.description for p in a.parameters] == ["The image.", "Mesh size in pixels.", "Background estimator."]


def test_name_clash_is_refused():
    @algorithm("test-only", name="_registry_clash")
    def one():
        """One."""

    with pytest.raises(ValueError, match="_registry_clash"):

        @algorithm("test-only", name="_registry_clash")
        def two():
            """Two."""


def test_unknown_category_lists_known():
    with pytest.raises(ValueError, match="coaddition"):
        algorithms("no-such-category")


def test_cli_json(capsys):
    assert main(["algorithms", "--json", "--category", "coaddition"]) == 0
    out = json.loads(capsys.readouterr().out)
    names = {a["name"] for a in out}
    assert {"drizzle_mosaic", "updc"} <= names
    updc = next(a for a in out if a["name"] == "updc")
    n_iter = next(p for p in updc["parameters"] if p["name"] == "n_iterations")
    from mosaic.coadd.updc import updc  # noqa: PLC0415

    assert n_iter["default"] == inspect.signature(updc).parameters["n_iterations"].default


def test_choices_from_docstring_sets_literals_declarations_and_library_lists():
    from typing import Literal

    from mosaic.viz.stretch import STRETCHES

    @algorithm("test-only", name="_registry_choices", choices={"method": ("a", "b")})
    def probe(data, *, method="a", edge: Literal["wrap", "clip"] = "wrap", mode="same", stretch="asinh", interval="nope"):
        """Probe choices.

        Parameters
        ----------
        data : ndarray
            The image.
        method : str
            Declared by the decorator.
        edge : str
            From the annotation.
        mode : {"same", "full"}
            From the docstring.
        stretch, interval : str
            Named lists: only where the default is one of their values.
        """

    got = {p.name: p.choices for p in get("_registry_choices").parameters}
    assert got == {"data": None, "method": ("a", "b"), "edge": ("wrap", "clip"), "mode": ("same", "full"),
                   "stretch": tuple(STRETCHES), "interval": None}
    # every default of the real registry is one of its choices
    for a in algorithms():
        for p in a.parameters:
            if p.choices is not None and not p.required and p.default is not None:
                assert p.default in p.choices, (a.name, p.name)
    with pytest.raises(ValueError, match="not its parameters"):
        algorithm("test-only", name="_registry_bad_choices", choices={"nope": (1,)})(probe)
