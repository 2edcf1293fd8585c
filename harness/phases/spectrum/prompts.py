"""The spectrum's prompts: each class's real name (a placeholder is an error), ``spectrum.descriptions`` keyed by
``spectrum.description_names`` or the class names, and the table of prompts a run logs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from harness.config import ConfigError, SpectrumConfig
from harness.core.errors import MissingFileError

# what loaders call a class they have no name for (``class_17``, FLYP's ``class 3``)
PLACEHOLDER_NAME = re.compile(r"class[ _-]?\d+", re.IGNORECASE)
HOW_TO_NAME = (
    "give the class names in a file: imagenet_lt data.params.class_names (one name per line in label "
    "order, or JSON), iwildcam data.params.common_names (JSON {y: name})"
)


def check_class_names(class_names: list[str], labels) -> None:
    """Prompts (and the CLIP filter's text) need real class names: a placeholder such as ``class_17`` is an error."""
    unnamed = [int(c) for c in labels if PLACEHOLDER_NAME.fullmatch(class_names[int(c)].strip())]
    if unnamed:
        c = unnamed[0]
        raise ConfigError(
            f"spectrum: class {c} has no name ({class_names[c]!r}; {len(unnamed)} classes with hard "
            f"images are unnamed), so its prompts cannot depict it; {HOW_TO_NAME}"
        )


def read_descriptions(path: str) -> dict[str, list[str]]:
    """``spectrum.descriptions``: a JSON object {class name: [description, ...]} (a single string is one)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise MissingFileError(f"spectrum.descriptions: no file {file} (a JSON of class name → [descriptions])")
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"spectrum.descriptions: {file} is not valid JSON ({e})") from None
    if not isinstance(data, dict) or not all(
        isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v)) for v in data.values()
    ):
        raise ConfigError(f'spectrum.descriptions: {file}: expected {{"class name": ["description", ...], ...}}')
    return {str(k): [v] if isinstance(v, str) else list(v) for k, v in data.items()}


def read_description_names(path: str, num_classes: int) -> list[str]:
    """``spectrum.description_names``: the name of each label id as the descriptions JSON keys it (a text file, one
    name per line in label order, or a JSON list); names may repeat (the authors' ImageNet-LT list names two pairs
    of classes alike, which then share descriptions)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise MissingFileError(
            f"spectrum.description_names: no file {file}; give a file of one class name per label id, in label order "
            "(one per line, or a JSON list), or drop spectrum.description_names"
        )
    text = file.read_text()
    if file.suffix.lower() == ".json":
        try:
            names = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"spectrum.description_names: {file} is not valid JSON ({e})") from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"spectrum.description_names: {file}: expected a JSON list of names in label order")
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != num_classes:
        raise ConfigError(
            f"spectrum.description_names: {file} has {len(names)} names for {num_classes} classes (one per label id)"
        )
    return names


def description_keys(spec: SpectrumConfig, class_names: list[str]) -> list[str]:
    """The key of each class in the descriptions JSON: ``spectrum.description_names`` when given, else its name."""
    if spec.description_names:
        return read_description_names(spec.description_names, len(class_names))
    return list(class_names)


def class_prompts(spec: SpectrumConfig, class_names: list[str], labels=None) -> list[list[str]]:
    """Per class, the prompts to cycle through: with ``spectrum.descriptions``, the class's descriptions (keyed by
    its ``description_keys`` name, or by its label id), each after ``spectrum.description_prefix``; else the
    template ``spectrum.prompt``. ``labels``: the classes that will be prompted (default: all); each must have
    descriptions when a descriptions file is given."""
    labels = range(len(class_names)) if labels is None else [int(c) for c in labels]
    if not spec.descriptions:
        return [[spec.prompt.format(name=name)] for name in class_names]
    descriptions = read_descriptions(spec.descriptions)
    keys = description_keys(spec, class_names)
    found = [descriptions.get(key) or descriptions.get(str(c)) for c, key in enumerate(keys)]
    missing = [keys[c] for c in labels if not found[c]]
    if missing:
        keyed = "spectrum.description_names" if spec.description_names else "the dataset's class names"
        raise ConfigError(
            f"spectrum.descriptions: {spec.descriptions} has no descriptions for {len(missing)} of the "
            f"{len(labels)} classes to prompt, e.g. {', '.join(repr(m) for m in missing[:3])} (keys "
            f"are {keyed} or label ids); add them, give spectrum.description_names, or drop spectrum.descriptions"
        )
    return [
        [spec.description_prefix + d for d in found[c]] if found[c] else [spec.prompt.format(name=name)]
        for c, name in enumerate(class_names)
    ]


def prompts_frame(pool: pd.DataFrame, class_names: list[str]) -> pd.DataFrame:
    """``label,class_name,prompt``: one row per class in the pool (the classes with hard images), its prompts as
    generated (from the manifest, in order of use) joined with " | "."""
    if not len(pool) or "prompt" not in pool:
        return pd.DataFrame(columns=["label", "class_name", "prompt"])
    ordered = pool.sort_values(["label", "seed_index", "source_index", "lam"], kind="stable")
    prompts = ordered.groupby("label", sort=True)["prompt"].agg(lambda p: " | ".join(dict.fromkeys(p)))
    labels = prompts.index.astype(int)
    return pd.DataFrame({"label": labels, "class_name": [class_names[c] for c in labels], "prompt": prompts.to_numpy()})
