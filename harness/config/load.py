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


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{at}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    parent = data.pop("extends", None)
    if parent:
        base = _read_yaml(find_experiment(parent))
        base.pop("name", None)
        data = deep_merge(base, data)
    return data


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
        value = yaml.safe_load(raw) if raw else ""
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
