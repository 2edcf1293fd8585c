"""An experiment YAML from someone else: an alias bomb, deep nesting, duplicate keys, bad or cyclic ``extends`` and
unknown component params are each one line naming the file, fast, with bounded memory; relative ``extends`` are
read from the file's own folder."""

import subprocess
import sys
import textwrap
import time

import pytest

from harness.cli import main
from harness.config import ConfigError, load_config


def write(folder, name, text):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return str(folder / name)


def alias_bomb() -> str:
    """About 400 bytes that stand for 9**9 strings once the aliases are expanded, under ``generator.params``."""
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "extends: digits_lt_tiny\ngenerator:\n  params:\n    " + "\n    ".join(lines) + "\n"


BOUNDED_LOAD = """
import resource, sys, time
from harness.config import ConfigError, load_config
usage = int(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmSize"))) * 1024
resource.setrlimit(resource.RLIMIT_AS, (usage + 512 * 2**20, usage + 512 * 2**20))
start = time.monotonic()
try:
    load_config(sys.argv[1])
except ConfigError as e:
    print(f"{time.monotonic() - start:.2f} {e}")
"""


def test_an_alias_bomb_fails_fast_in_one_line_under_a_memory_limit(tmp_path):
    path = write(tmp_path, "bomb.yaml", alias_bomb())
    assert len(alias_bomb()) < 450
    out = subprocess.run(
        [sys.executable, "-c", BOUNDED_LOAD, path], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0 and out.stdout, out.stderr[-2000:]
    seconds, message = out.stdout.strip().split(" ", 1)
    assert float(seconds) < 1, "the bomb is refused before anything walks it"
    assert message.startswith(f"{path} line ") and "aliases are expanded" in message and "\n" not in message


def test_anchors_and_aliases_within_bounds_still_work(tmp_path):
    text = "extends: digits_lt_tiny\nspectrum: {levels: &l [0.0, 0.1, 0.3, 0.5, 0.7, 0.9]}\ncurriculum: {levels: *l}\n"
    cfg = load_config(write(tmp_path, "ok.yaml", text))
    assert cfg.spectrum.levels == cfg.curriculum.levels == [0.0, 0.1, 0.3, 0.5, 0.7, 0.9]


def test_deep_nesting_is_one_line(tmp_path):
    deep = "[" * 5000 + "]" * 5000
    path = write(tmp_path, "deep.yaml", "extends: digits_lt_tiny\ngenerator: {params: " + deep + "}\n")
    start = time.monotonic()
    with pytest.raises(ConfigError, match=r"deep.yaml line 2: nested deeper than 32 levels"):
        load_config(path)
    assert time.monotonic() - start < 5, "PyYAML looks at most 1024 characters ahead; nothing walks the nesting"


def test_a_duplicate_key_is_refused_with_both_lines(tmp_path):
    path = write(tmp_path, "dup.yaml", "extends: digits_lt_tiny\ntrain:\n  epochs: 3\n  epochs: 30\n")
    with pytest.raises(ConfigError, match=r"dup.yaml line 4: duplicate key 'epochs' \(first on line 3\); keep one"):
        load_config(path)
    path = write(tmp_path, "merge.yaml", "extends: digits_lt_tiny\ntrain: {<<: {epochs: 3, lr: 0.5}, epochs: 4}\n")
    cfg = load_config(path)  # a key of its own over a merged one is no duplicate
    assert (cfg.train.epochs, cfg.train.lr) == (4, 0.5)


def test_extends_cycles_are_one_line(tmp_path):
    write(tmp_path, "a.yaml", "extends: b\n")
    write(tmp_path, "b.yaml", "extends: a.yaml\n")
    with pytest.raises(ConfigError, match=r"extends: a cycle \(.*a.yaml -> .*b.yaml -> .*a.yaml\)"):
        load_config(str(tmp_path / "a.yaml"))
    with pytest.raises(ConfigError, match="a cycle"):
        load_config(write(tmp_path, "self.yaml", "extends: self.yaml\n"))


@pytest.mark.parametrize("value", ["[digits_lt_tiny]", "5", "{name: x}", "''"])
def test_an_extends_that_is_not_one_name_is_one_line(tmp_path, value):
    path = write(tmp_path, "bad.yaml", f"extends: {value}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: extends: expected the name or path of one experiment, got "):
        load_config(path)


def test_a_relative_extends_is_read_from_the_files_own_folder(tmp_path, monkeypatch):
    folder = tmp_path / "team" / "exps"
    write(tmp_path / "team" / "shared", "base.yaml", "extends: digits_lt_tiny\ntrain: {epochs: 7}\n")
    write(folder, "sibling.yaml", "extends: ../shared/base.yaml\ndescription: sibling\n")
    child = write(folder, "child.yaml", "extends: sibling\nseeds: [3]\n")
    monkeypatch.chdir(tmp_path)  # neither parent is where the working directory would find it
    cfg = load_config(child)
    assert (cfg.name, cfg.train.epochs, cfg.description, cfg.seeds) == ("child", 7, "sibling", [3])
    missing = write(folder, "missing.yaml", "extends: nowhere/base.yaml\n")
    with pytest.raises(ConfigError, match=r"missing.yaml: extends: no file .*exps/nowhere/base.yaml"):
        load_config(missing)


def test_the_cli_prints_each_as_one_line(tmp_path, capsys):
    path = write(tmp_path, "dup.yaml", textwrap.dedent("extends: digits_lt_tiny\nseeds: [0]\nseeds: [1]\n"))
    assert main(["plan", "-e", path]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"harness: error: {path} line 3: duplicate key 'seeds'") and err.count("\n") == 1


@pytest.mark.parametrize(
    "section, key, suggestion",
    [
        ("generator", "train_stesp", "train_steps"),
        ("scorer", "epohcs", "epochs"),
        ("model", "widht", "width"),
        ("data", "max_per_clas", "max_per_class"),
    ],
)
def test_an_unknown_component_param_is_refused_at_load(tmp_path, section, key, suggestion):
    path = write(tmp_path, "typo.yaml", f"extends: digits_lt_tiny\n{section}: {{params: {{{key}: 3}}}}\n")
    with pytest.raises(ConfigError, match=rf"typo.yaml: unknown key '{section}.params.{key}' \(did you mean "):
        load_config(path)
    with pytest.raises(ConfigError, match=rf"digits_lt_tiny.yaml: {section}.params.{suggestion}: expected "):
        load_config("digits_lt_tiny", [f"{section}.params.{suggestion}=[wrong type]"])
