"""The README's CLI stays true: every command of its CLI table answers ``--help``, the table lists every subcommand
the parser has, and every ``harness …`` line in a fenced block parses against the parser."""

import re
import shlex
from pathlib import Path

import pytest

from harness.cli.app import main, parser

README = Path(__file__).resolve().parents[1] / "README.md"


def section(text: str, heading: str) -> str:
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def table_commands() -> list[str]:
    """The subcommand of each row of the ``## CLI`` table (e.g. ``run`` for `harness run --experiment NAME …`)."""
    rows = re.findall(r"^\| `harness ([a-z][a-z-]*)", section(README.read_text(), "## CLI"), flags=re.M)
    assert rows, "no `harness …` rows in the README's CLI table"
    return list(dict.fromkeys(rows))


def parser_commands() -> list[str]:
    p = parser()
    sub = next(a for a in p._actions if a.__class__.__name__ == "_SubParsersAction")
    return list(sub.choices)


def fenced_command_lines() -> list[str]:
    """Every ``harness …`` command in a fenced code block (``a && harness b`` and ``python -m harness.cli`` /
    ``torchrun … -m harness.cli`` included), without trailing comments."""
    text = README.read_text()
    found = []
    for lang, block in re.findall(r"^[ \t]*```([a-z]*)\n(.*?)^[ \t]*```", text, flags=re.M | re.S):
        if lang not in ("", "bash", "sh", "shell", "console"):
            continue  # YAML, Python, a printed table: not commands
        for line in block.replace("\\\n", " ").splitlines():  # continuation lines joined
            for part in re.split(r"&&|;|\|", line.split(" #")[0]):
                if not re.search(r"\bharness(\.cli)?\b", part):
                    continue
                words = shlex.split(part.replace("…", ""))
                if "harness.cli" in words:
                    words = ["harness", *words[words.index("harness.cli") + 1 :]]
                if words[:1] == ["harness"]:
                    found.append(shlex.join(words[1:]))
    return found


def test_the_cli_table_lists_every_subcommand():
    missing = [c for c in parser_commands() if c not in table_commands()]
    assert missing == [], f"subcommands the README's CLI table lacks: {missing}"
    unknown = [c for c in table_commands() if c not in parser_commands()]
    assert unknown == [], f"README CLI table rows the parser does not have: {unknown}"


@pytest.mark.parametrize("command", table_commands())
def test_every_table_command_answers_help(command, capsys):
    with pytest.raises(SystemExit) as exit:
        main([command, "--help"])
    assert exit.value.code == 0
    assert f"harness {command}" in capsys.readouterr().out


def test_the_readme_has_command_lines():
    assert len(fenced_command_lines()) >= 5


@pytest.mark.parametrize("line", fenced_command_lines())
def test_every_fenced_command_parses(line, capsys):
    try:
        args = parser().parse_args(shlex.split(line))
    except SystemExit as e:  # argparse: exit 2 with its usage message
        pytest.fail(f"`harness {line}` does not parse: {capsys.readouterr().err.strip().splitlines()[-1:]} ({e})")
    assert callable(args.fn)
