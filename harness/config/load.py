"""Loading an experiment: its YAML, the ``extends`` chain (the child's keys win, nested sections merge), the
``--set key=value`` overrides (each key checked against the schema), then the validated ``Config``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from harness.config.errors import ConfigError, build, did_you_mean, nested_section
from harness.config.experiments import find_experiment
from harness.config.schema import Config
from harness.config.validate import validate
from harness.config.yaml_bounds import YAMLLimitError, load_bounded

MAX_EXTENDS = 16  # the longest ``extends`` chain (the shipped ones are two or three long)


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The mapping in ``path``, merged over its ``extends`` parents (``chain``: the files that extend it)."""
    try:
        data = load_bounded(path.read_text()) or {}
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot be read as a text file ({e})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark else ""
        if isinstance(e, YAMLLimitError):
            raise ConfigError(f"{path}{at}: {e.problem}") from None
        raise ConfigError(f"{path}{at}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    parent = data.pop("extends", None)
    if parent is not None:
        base = _read_yaml(*parent_file(path, parent, chain))
        base.pop("name", None)
        data = deep_merge(base, data)
    return data


def parent_file(path: Path, parent: Any, chain: tuple[Path, ...]) -> tuple[Path, tuple[Path, ...]]:
    """The file ``extends: parent`` in ``path`` names, and the chain that reads it. A path (``base.yaml``,
    ``../shared/base.yaml``) is read from ``path``'s own folder; a name (``digits_lt_discl``) from that folder, else
    where experiments are looked up (``find_experiment``)."""
    if not isinstance(parent, str) or not parent:
        raise ConfigError(
            f"{path}: extends: expected the name or path of one experiment, got {type(parent).__name__} {parent!r}"
        )
    is_path = parent.endswith((".yaml", ".yml")) or "/" in parent
    local = path.parent / (parent if is_path else f"{parent}.yaml")
    if local.is_file():
        found = local
    elif is_path:
        raise ConfigError(f"{path}: extends: no file {local} (a relative path is read from this file's folder)")
    else:
        found = find_experiment(parent)
    chain = (*chain, path)
    seen = [p.resolve() for p in chain]
    if found.resolve() in seen:
        loop = " -> ".join(str(p) for p in [*chain[seen.index(found.resolve()) :], found])
        raise ConfigError(f"{path}: extends: a cycle ({loop}); remove one of these extends")
    if len(chain) >= MAX_EXTENDS:
        raise ConfigError(f"{path}: extends: a chain longer than {MAX_EXTENDS} files; shorten it")
    return found, chain


def deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for k, v in override.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. train.epochs=5")
    key, raw = text.split("=", 1)
    try:
        value = load_bounded(raw) if raw else ""
    except YAMLLimitError as e:
        raise ConfigError(f"--set {key}: {e.problem}") from None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_override(values: dict, keys: list[str], value: Any) -> None:
    """Set ``keys`` in the raw mapping, checking each key exists in the schema (a typo is an error)."""
    section: type[BaseModel] | None = Config
    node = values
    for i, key in enumerate(keys):
        if section is not None:
            if key not in section.model_fields:
                raise ConfigError(
                    f"--set {'.'.join(keys)}: no key {'.'.join(keys[: i + 1])!r} in the config"
                    f"{did_you_mean(key, section.model_fields)}"
                )
            section = nested_section(section.model_fields[key].annotation)
        if i == len(keys) - 1:
            node[key] = value
        else:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]


def load_config(
    name: str, overrides: list[str] | tuple[str, ...] = (), methods: list[str] | tuple[str, ...] | None = None
) -> Config:
    """The experiment ``name`` with its ``extends`` chain and ``--set`` overrides, validated; ``methods``: the
    methods to be run when not the config's own (``harness run -m``), checked as those would be."""
    path = find_experiment(name)
    values = _read_yaml(path)
    values.setdefault("name", path.stem)
    for text in overrides:
        apply_override(values, *parse_override(text))
    try:
        cfg = build(Config, values)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    validate(cfg, path, methods)
    return cfg
