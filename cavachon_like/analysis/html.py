"""One self-contained HTML report of a run: figures, table summaries and warnings in a single file.

Figures are embedded as base64 images and tables as HTML, so the report can be
shared as one file; it needs no network, stylesheet or JavaScript.
"""
from __future__ import annotations

import base64
import html
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

#: Rows of each table shown in the report; the full table stays in its CSV file.
MAX_ROWS = 20

_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml",
         ".gif": "image/gif"}

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #bbb; margin-top: 2em; }
nav ol { columns: 2; }
.warnings { background: #fdecea; border: 1px solid #d93025; border-left: 6px solid #d93025;
            padding: .6em 1em; margin: 1em 0; }
.warnings h2, .warnings h3 { color: #a50e0e; border: none; margin: .2em 0; }
.warnings li { margin: .3em 0; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-size: .92em; color: #444; text-align: left; padding: .3em 0; }
.table { overflow-x: auto; margin: 1.5em 0; }
table { border-collapse: collapse; font-size: .85em; }
th, td { border: 1px solid #ccc; padding: .2em .5em; text-align: right; }
th { background: #f2f2f2; }
tbody tr:nth-child(even) { background: #fafafa; }
.source { font-size: .85em; color: #666; }
"""

#: A figure: the image file and its caption.
FigureEntry = tuple[str | Path, str]
#: A table: a DataFrame or CSV file, its caption and, for a DataFrame, optionally the CSV file holding it in full.
TableEntry = tuple[pd.DataFrame | str | Path, str] | tuple[pd.DataFrame, str, str | Path]


@dataclass
class Section:
    """One section of the report.

    Attributes
    ----------
    title
        Heading, also the entry in the table of contents.
    text
        Paragraphs of explanation, separated by blank lines.
    figures
        ``(image path, caption)`` pairs; the images are embedded.
    tables
        ``(DataFrame or CSV path, caption)``, or ``(DataFrame, caption, CSV path)``
        to name the file holding the full table; the first :data:`MAX_ROWS` rows are shown.
    warnings
        Messages shown in this section and collected at the top of the report.
    """

    title: str
    text: str = ""
    figures: list[FigureEntry] = field(default_factory=list)
    tables: list[TableEntry] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _paragraphs(text: str) -> str:
    return "".join(f"<p>{html.escape(p.strip())}</p>\n" for p in text.split("\n\n") if p.strip())


def _warning_list(messages: Iterable[str]) -> str:
    return "<ul>\n" + "".join(f"<li>{html.escape(m)}</li>\n" for m in messages) + "</ul>\n"


def _figure(path: str | Path, caption: str) -> str:
    path = Path(path)
    mime = _MIME.get(path.suffix.lower())
    if mime is None:
        raise ValueError(f"cannot embed {path}: expected one of {sorted(_MIME)}.")
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure>\n<img src="data:{mime};base64,{encoded}" alt="{html.escape(caption)}">\n'
        f"<figcaption>{html.escape(caption)} <span class=\"source\">({html.escape(path.name)})</span>"
        "</figcaption>\n</figure>\n"
    )


def _table(entry: TableEntry, report_dir: Path, max_rows: int) -> str:
    data, caption, *rest = entry
    if isinstance(data, pd.DataFrame):
        table, index, source = data, True, Path(rest[0]) if rest else None
    else:
        source = Path(data)
        # A CSV written with its index reads back with that index as an ordinary first column.
        table, index = pd.read_csv(source), False
        table = table.rename(columns=lambda c: "" if str(c).startswith("Unnamed: ") else c)
    shown = f"first {max_rows} of {len(table)} rows" if len(table) > max_rows else f"{len(table)} rows"
    where = ""
    if source is not None:
        # Relative to the report, so the link still works when the folder is moved or shared whole.
        relative = Path(os.path.relpath(source.resolve(), report_dir.resolve())).as_posix()
        where = f'; full table: <a href="{html.escape(relative)}">{html.escape(relative)}</a>'
    body = table.head(max_rows).to_html(index=index, border=0, float_format=lambda x: f"{x:.4g}",
                                        na_rep="", escape=True)
    return (
        f'<div class="table">\n<p><strong>{html.escape(caption)}</strong> '
        f'<span class="source">({shown}{where})</span></p>\n{body}\n</div>\n'
    )


def write_html_report(
    path: str | Path,
    title: str,
    sections: Sequence[Section],
    warnings: Sequence[str] = (),
    max_rows: int = MAX_ROWS,
) -> Path:
    """Write ``sections`` as one self-contained HTML file and return its path.

    Parameters
    ----------
    path
        The HTML file to write; CSV links in the report are relative to its folder.
    title
        Page title and top heading.
    sections
        The report's sections, in order; each gets an entry in the table of contents.
    warnings
        Run-wide warnings, shown at the top together with every section's warnings.
    max_rows
        Rows shown of each table.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    FileNotFoundError
        A figure or CSV file does not exist.
    """
    path = Path(path)
    anchors = [f"section-{i + 1}" for i in range(len(sections))]
    parts = [
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n",
        f"<h1>{html.escape(title)}</h1>\n",
    ]
    # Each section's warnings are repeated here with a link, so none is missed by a reader who skims.
    flagged = [(m, "") for m in warnings] + [
        (m, f' (<a href="#{a}">{html.escape(s.title)}</a>)') for a, s in zip(anchors, sections) for m in s.warnings
    ]
    if flagged:
        items = "".join(f"<li>{html.escape(m)}{link}</li>\n" for m, link in flagged)
        parts.append(f'<div class="warnings">\n<h2>Warnings ({len(flagged)})</h2>\n<ul>\n{items}</ul>\n</div>\n')
    parts.append("<nav>\n<h2>Contents</h2>\n<ol>\n")
    parts += [f'<li><a href="#{a}">{html.escape(s.title)}</a></li>\n' for a, s in zip(anchors, sections)]
    parts.append("</ol>\n</nav>\n")
    for anchor, section in zip(anchors, sections):
        parts.append(f'<section id="{anchor}">\n<h2>{html.escape(section.title)}</h2>\n')
        if section.warnings:
            parts.append(f'<div class="warnings">\n<h3>Warnings</h3>\n{_warning_list(section.warnings)}</div>\n')
        parts.append(_paragraphs(section.text))
        parts += [_figure(figure, caption) for figure, caption in section.figures]
        parts += [_table(entry, path.parent, max_rows) for entry in section.tables]
        parts.append("</section>\n")
    parts.append("</body>\n</html>\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(parts), encoding="utf-8")
    return path
