"""A run's HTML report: one self-contained file (images embedded), written atomically.

A report is a title and a list of sections; each section holds paragraphs, figures (a PNG
file or a matplotlib figure), tables (an astropy Table or rows of a mapping) and key/value
lists (timings). Images are embedded as base64 ``data:`` URIs so that the file can be mailed,
opened from a cluster's scratch disk or attached to a notebook without its folder. No script
runs in it. Figures are shown at their own size up to the page's width, so a figure drawn for
the page is read at 100 % zoom.

The file is written to a temporary file made by :func:`tempfile.mkstemp` in the same folder
(a new, random name opened exclusively, so a link planted there in advance is never followed)
and renamed over ``path`` when whole.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

__all__ = ["Section", "figure_png", "write_report"]

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 90em; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
figure { display: inline-block; margin: .5em 1em 1em 0; vertical-align: top; max-width: 100%; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-size: .9em; color: #555; max-width: 60em; }
caption { text-align: left; font-size: .95em; color: #444; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .2em .6em; text-align: right; }
th { background: #f3f3f3; } td.text { text-align: left; }
.meta { color: #666; font-size: .9em; }
"""


@dataclass
class Section:
    """One part of a report.

    Attributes
    ----------
    title : str
        Heading.
    text : list of str
        Paragraphs (plain text; escaped).
    figures : list of (image, caption)
        ``image`` is a PNG path, PNG bytes or a matplotlib figure.
    tables : list of (table, caption)
        ``table`` is an astropy Table, or a sequence of mappings with the same keys.
    values : dict
        Key/value pairs shown as a two-column table (e.g. timings).
    """

    title: str
    text: list = field(default_factory=list)
    figures: list = field(default_factory=list)
    tables: list = field(default_factory=list)
    values: dict = field(default_factory=dict)


def figure_png(fig, *, dpi: int = 100) -> bytes:
    """A matplotlib figure as PNG bytes (the figure is closed)."""
    import matplotlib.pyplot as plt  # noqa: PLC0415

    buf = io.BytesIO()
    # a figure with a layout engine is laid out already: a tight box would draw it twice;
    # light compression (zlib level 3): a fraction of the default's time for ~10 % more bytes
    tight = None if fig.get_layout_engine() is not None else "tight"
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches=tight, pil_kwargs={"compress_level": 3})
    plt.close(fig)
    return buf.getvalue()


def _image_uri(image) -> str:
    if isinstance(image, bytes):
        data = image
    elif isinstance(image, str | os.PathLike):
        path = Path(image)
        if not path.is_file():
            msg = f"report image {str(path)!r} does not exist; expected a PNG file"
            raise FileNotFoundError(msg)
        data = path.read_bytes()
    elif hasattr(image, "savefig"):
        data = figure_png(image)
    else:
        msg = f"report image of type {type(image).__name__} is not supported; expected a PNG path, PNG bytes or a matplotlib figure"
        raise TypeError(msg)
    if not data.startswith(b"\x89PNG"):
        msg = "report image is not a PNG (its first bytes are not the PNG signature)"
        raise ValueError(msg)
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _cell(value) -> tuple[str, bool]:
    if isinstance(value, float):
        return (f"{value:.4g}", False)
    if isinstance(value, int | bool):
        return (str(value), False)
    try:
        import numpy as np  # noqa: PLC0415

        if isinstance(value, np.floating):
            return (f"{float(value):.4g}", False)
        if isinstance(value, np.integer):
            return (str(int(value)), False)
    except ImportError:  # pragma: no cover
        pass
    return (html.escape(str(value)), True)


def _table_html(table, caption: str) -> str:
    if hasattr(table, "colnames"):
        names = list(table.colnames)
        rows = [[row[n] for n in names] for row in table]
    elif isinstance(table, Sequence) and all(isinstance(r, Mapping) for r in table):
        names = list(table[0]) if table else []
        rows = [[r.get(n, "") for n in names] for r in table]
    else:
        msg = f"report table of type {type(table).__name__} is not supported; expected an astropy Table or a list of dicts"
        raise TypeError(msg)
    out = ["<table>"]
    if caption:
        out.append(f"<caption>{html.escape(caption)}</caption>")
    out.append("<tr>" + "".join(f"<th>{html.escape(str(n))}</th>" for n in names) + "</tr>")
    for row in rows:
        cells = [_cell(v) for v in row]
        out.append("<tr>" + "".join(f'<td class="text">{c}</td>' if text else f"<td>{c}</td>" for c, text in cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _section_html(s: Section) -> str:
    out = [f"<section><h2>{html.escape(s.title)}</h2>"]
    out += [f"<p>{html.escape(p)}</p>" for p in s.text]
    for image, caption in s.figures:
        out.append(
            f'<figure><img src="{_image_uri(image)}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption></figure>'
        )
    for table, caption in s.tables:
        out.append(_table_html(table, caption))
    if s.values:
        out.append(_table_html([{"": k, "value": v} for k, v in s.values.items()], ""))
    out.append("</section>")
    return "\n".join(out)


def write_report(path, title: str, sections: Sequence[Section], *, subtitle: str = "") -> Path:
    """Write an HTML report; returns its path. Written to a temporary name, renamed when whole."""
    path = Path(path)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = "\n".join(_section_html(s) for s in sections)
    doc = (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n<p class=\"meta\">{html.escape(subtitle)} &middot; written {stamp}</p>\n"
        f"{body}\n</body>\n</html>\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(doc)
        # mkstemp makes the file 0600; a report is for reading
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path
