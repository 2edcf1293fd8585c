"""``index.html``: the tables and figures on one page, readable offline (relative paths, inline CSS, no JS)."""

from __future__ import annotations

import base64
import html
import re
from datetime import datetime, timezone
from pathlib import Path

from reports.figures import Figure
from reports.tables import Table, to_html

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
thead th { background: #f2f2f2; } tbody th { text-align: left; font-weight: normal; }
p.note { font-size: 0.8em; color: #555; margin: 0.2em 0; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #444; } .files { font-size: 0.8em; } code { background: #f5f5f5; }
"""


def table_section(table: Table, files: dict[str, Path], out: Path) -> str:
    links = " · ".join(f"<a href='{rel(p, out)}'>{fmt}</a>" for fmt, p in files.items())
    return (
        f"<section id='{table.name}'><h2>{html.escape(table.title)}</h2>{to_html(table)}"
        f"<p class='files'>download: {links}</p></section>"
    )


def figure_section(fig: Figure, out: Path) -> str:
    return (
        f"<figure id='{fig.name}'><h3>{html.escape(fig.title)}</h3>"
        f"<img src='{rel(fig.path, out)}' alt='{html.escape(fig.title)}'>"
        f"<figcaption>{html.escape(fig.caption)}</figcaption></figure>"
    )


def rel(path: Path, out: Path) -> str:
    return Path(path).resolve().relative_to(out.resolve()).as_posix()


def write_page(
    out: Path,
    experiment: str,
    summary: list[str],
    tables: list[tuple[Table, dict[str, Path]]],
    figures: list[Figure],
    extra_html: str = "",
) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    facts = "".join(f"<li>{html.escape(s)}</li>" for s in summary)
    body = [
        f"<h1>Report: {html.escape(experiment)}</h1>",
        f"<p class='note'>Rebuilt from the MLflow runs by <code>harness report</code> on {stamp}.</p>",
        f"<ul>{facts}</ul>",
    ]
    body += [table_section(t, files, out) for t, files in tables]
    body.append(extra_html)
    if figures:
        body.append("<h2>Figures</h2>")
        body += [figure_section(f, out) for f in figures]
    page = (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(experiment)} report</title><style>{STYLE}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def self_contained(index: Path) -> str:
    """``index.html`` with its figures inlined as data URIs: MLflow's artifact viewer shows an HTML artifact in a
    sandboxed frame where the page's relative image paths do not resolve."""
    folder = index.parent

    def inline(match: re.Match) -> str:
        path = (folder / html.unescape(match.group(2))).resolve()
        if not path.is_file() or folder.resolve() not in path.parents:
            return match.group(0)
        data = base64.b64encode(path.read_bytes()).decode()
        return f"{match.group(1)}data:image/png;base64,{data}{match.group(3)}"

    text = re.sub(r"(<img src=')([^']+\.png)(')", inline, index.read_text(encoding="utf-8"))
    note = (
        "<p class='note'>This copy, logged to MLflow, carries its figures inline; the tables' download links "
        "point at the run's <code>tables/</code> artifacts.</p>"
    )
    return text.replace("</h1>", "</h1>" + note, 1)
