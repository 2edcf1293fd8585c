"""The README and the pages of docs/ stay true: the README's CLI table lists every subcommand and each answers
``--help``; every ``harness …`` line in a fenced block of the README or a page parses against the parser; the README
stays a front door (at most 250 lines); and every relative link, heading anchor, repository path and ``harness.…``
name they mention exists."""

import importlib
import re
import shlex
from pathlib import Path

import pytest

from harness.cli.app import main, parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
MAX_README_LINES = 250
FENCE = re.compile(r"^[ \t]*(`{3,})([\w-]*)")


def section(text: str, heading: str) -> str:
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def split_fences(text: str) -> tuple[str, list[tuple[str, str]]]:
    """The prose outside fenced code blocks, and each outermost block as (language, body). A block closes on a
    fence at least as long as the one that opened it, so a ```` block may hold ``` blocks."""
    prose, blocks, fence, lang, body = [], [], "", "", []
    for line in text.splitlines():
        m = FENCE.match(line)
        if not fence:
            if m:
                fence, lang, body = m.group(1), m.group(2), []
            else:
                prose.append(line)
        elif m and m.group(1).startswith(fence) and not m.group(2):
            blocks.append((lang, "\n".join(body)))
            fence = ""
        else:
            body.append(line)
    return "\n".join(prose), blocks


def table_commands() -> list[str]:
    """The subcommand of each row of the ``## CLI`` table (e.g. ``run`` for `harness run --experiment NAME …`)."""
    rows = re.findall(r"^\| `harness ([a-z][a-z-]*)", section(README.read_text(), "## CLI"), flags=re.M)
    assert rows, "no `harness …` rows in the README's CLI table"
    return rows


def parser_commands() -> list[str]:
    p = parser()
    sub = next(a for a in p._actions if a.__class__.__name__ == "_SubParsersAction")
    return list(sub.choices)


def command_lines(text: str) -> list[str]:
    """Every ``harness …`` command in the fenced shell blocks of ``text`` (``a && harness b``, ``$ harness …`` and
    ``python -m harness.cli`` / ``torchrun … -m harness.cli`` included), without trailing comments."""
    found = []
    for lang, block in split_fences(text)[1]:
        if lang not in ("", "bash", "sh", "shell", "console"):
            continue  # YAML, Python, TOML: not commands
        for line in block.replace("\\\n", " ").splitlines():  # continuation lines joined
            if line.lstrip().startswith("#"):
                continue
            for part in re.split(r"&&|;|\|", line.split(" #")[0]):
                if not re.search(r"\bharness(\.cli)?\b", part):
                    continue
                try:
                    words = shlex.split(part.replace("…", "").removeprefix("$ "))
                except ValueError:  # printed output, not a command
                    continue
                if "harness.cli" in words:
                    words = ["harness", *words[words.index("harness.cli") + 1 :]]
                if words[:1] == ["harness"]:
                    found.append(shlex.join(words[1:]))
    return found


def fenced_command_lines() -> list[tuple[str, str]]:
    return [(page.name, line) for page in PAGES for line in command_lines(page.read_text())]


def test_the_fence_parser_keeps_nested_blocks_inside_the_outer_one():
    text = "a\n````markdown\n```python\nx\n```\n````\nb\n```bash\nharness list\n```\n"
    prose, blocks = split_fences(text)
    assert prose == "a\nb" and [lang for lang, _ in blocks] == ["markdown", "bash"]
    assert command_lines(text) == ["list"]


def test_the_cli_table_has_one_row_per_subcommand():
    rows = table_commands()
    assert sorted(rows) == sorted(parser_commands()), "the README's CLI table and the parser's subcommands differ"
    assert len(rows) == len(set(rows)), f"subcommands with more than one row: {rows}"


@pytest.mark.parametrize("command", parser_commands())
def test_every_table_command_answers_help(command, capsys):
    with pytest.raises(SystemExit) as exit:
        main([command, "--help"])
    assert exit.value.code == 0
    assert f"harness {command}" in capsys.readouterr().out


def test_the_readme_and_the_pages_have_command_lines():
    assert len(command_lines(README.read_text())) >= 1
    assert len(fenced_command_lines()) >= 20


@pytest.mark.parametrize("page,line", fenced_command_lines())
def test_every_fenced_command_parses(page, line, capsys):
    try:
        args = parser().parse_args(shlex.split(line))
    except SystemExit as e:  # argparse: exit 2 with its usage message
        err = capsys.readouterr().err.strip().splitlines()[-1:]
        pytest.fail(f"{page}: `harness {line}` does not parse: {err} ({e})")
    assert callable(args.fn)


def test_the_readme_is_a_front_door():
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines, at most {MAX_README_LINES}: move detail into docs/"


def test_the_readme_links_every_page_of_docs():
    linked = {Path(t).name for t in re.findall(r"\]\(docs/([\w.-]+\.md)", README.read_text())}
    assert sorted(p.name for p in PAGES[1:] if p.name not in linked) == []


# --------------------------------------------------------------------------- links, anchors, paths and names


def anchors(page: Path) -> set[str]:
    """GitHub's ids of a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    prose = split_fences(page.read_text())[0]
    headings = re.findall(r"^#{1,6} +(.+?) *$", prose, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def links(page: Path) -> list[str]:
    prose = split_fences(page.read_text())[0]
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", prose) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_points_at_an_existing_file_and_heading(page):
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target} (no such heading)")
    assert broken == [], f"{page.name}: broken links {broken}"


def code_spans(page: Path) -> list[str]:
    return re.findall(r"`([^`\n]+)`", split_fences(page.read_text())[0])


REPO_PATH = re.compile(r"(?:harness|baselines|reports|experiments|benchmarks|tests|docs|\.ci)/[\w./-]*")
HARNESS_NAME = re.compile(r"harness(?:\.\w+)+")


def resolves(dotted: str) -> bool:
    """``harness.a.b.C.d``: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_repository_path_and_harness_name_exists(page):
    paths = {m.group(0) for s in code_spans(page) if (m := REPO_PATH.fullmatch(s.split(" ")[0]))}
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    names = {m.group(0) for s in code_spans(page) if (m := HARNESS_NAME.match(s)) and re.fullmatch(r"[\w.]+(\(.*)?", s)}
    unknown = sorted(n for n in names if not resolves(n))
    assert (missing, unknown) == ([], []), f"{page.name}: paths that do not exist, names that do not resolve"
