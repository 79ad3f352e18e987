"""``mosaic algorithms``: the algorithm registry as a table or JSON."""

from __future__ import annotations

import json
import sys

from mosaic.registry import algorithms

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    p = sub.add_parser(
        "algorithms",
        help="list the algorithms with their parameters",
        description="List every registered algorithm: name, category, description and typed parameters with defaults.",
    )
    p.add_argument("--category", default=None, help="only this category")
    p.add_argument("--json", action="store_true", help="write JSON to stdout instead of a table")
    p.set_defaults(func=run)


def _signature(a) -> str:
    parts = []
    for p in a.parameters:
        t = f": {p.type}" if p.type else ""
        parts.append(f"{p.name}{t}" if p.required else f"{p.name}{t} = {p.default!r}")
    return ", ".join(parts)


def run(args) -> int:
    found = algorithms(args.category)
    if args.json:
        json.dump([a.as_dict() for a in found], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    for a in found:
        sys.stdout.write(f"{a.category:<12} {a.name:<22} {a.description}\n{'':<35} ({_signature(a)})\n")
    return 0
