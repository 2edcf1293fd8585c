"""``index.html``: the tables and figures on one page, readable offline (relative paths, inline CSS, no JS),
rendered from the jinja2 template ``templates/index.html`` with every text escaped."""

from __future__ import annotations

import base64
import html
import re
from datetime import datetime, timezone
from pathlib import Path

import jinja2
from markupsafe import Markup

from reports.figures import Figure
from reports.tables import Table, to_html

TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("reports", "templates"),
    autoescape=True,  # summary lines, titles and captions are text; only the tables' own HTML is marked safe
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    undefined=jinja2.StrictUndefined,
)


def rel(path: Path, out: Path) -> str:
    return Path(path).resolve().relative_to(out.resolve()).as_posix()


def write_page(
    out: Path,
    experiment: str,
    summary: list[str],
    tables: list[tuple[Table, dict[str, Path]]],
    figures: list[Figure],
) -> Path:
    page = TEMPLATES.get_template("index.html").render(
        experiment=experiment,
        stamp=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        summary=summary,
        tables=[
            {
                "name": t.name,
                "title": t.title,
                "html": Markup(to_html(t)),  # pandas Styler's own escaped HTML
                "files": [(fmt, rel(p, out)) for fmt, p in files.items()],
            }
            for t, files in tables
        ],
        figures=[{"name": f.name, "title": f.title, "caption": f.caption, "src": rel(f.path, out)} for f in figures],
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
