"""An exported pool's ``harness_pool.json`` and card, read as untrusted input: the metadata is validated by a
pydantic model, the card's YAML header is parsed safely and its ``data_files`` must stay inside the pool's folder,
and the generator the card, the metadata and the rows name must be one. Every refusal is one line naming the file."""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.config import ConfigError
from harness.pool.schema import META_FILE

AGAIN = "export it again with `harness pool export` (or fetch it again)"
MAX_META_BYTES = 16 * 2**20  # harness_pool.json and README.md: a resolved config and a card, far below this


class PoolMeta(BaseModel):
    """``harness_pool.json``: what the fit check and the import read (other keys are kept, unread)."""

    model_config = ConfigDict(extra="allow", strict=True)

    format: Literal["parquet", "imagefolder"]
    pool_key: str
    scorer_key: str
    filter_threshold: float = Field(strict=False)  # a JSON 0 is a float threshold
    max_tries: int = Field(ge=1)
    class_names: list[str]
    identity: dict[str, Any]
    generator_settings: dict[str, Any]
    images: int = Field(ge=0)


def read_text(path, what: str) -> str:
    """A small regular file of the pool, as text; refused in one line when it is not."""
    if not path.is_file() or path.stat().st_size > MAX_META_BYTES:
        raise ConfigError(f"spectrum.pool: {path} is not a file of at most {MAX_META_BYTES} bytes ({what}); {AGAIN}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"spectrum.pool: {path} is not UTF-8 text ({e.reason}); {AGAIN}") from None


def read_meta(folder) -> PoolMeta:
    """``folder/harness_pool.json`` validated, or one line naming what is wrong with it."""
    path = folder / META_FILE
    text = read_text(path, "the pool's metadata")
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise ConfigError(f"spectrum.pool: {path} is not JSON ({e}); {AGAIN}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"spectrum.pool: {path} holds a {type(raw).__name__}, not a JSON object; {AGAIN}")
    try:
        return PoolMeta.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or '(top)'}: {err['msg']}" for err in e.errors()[:5])
        raise ConfigError(f"spectrum.pool: {path} is no pool metadata ({problems}); {AGAIN}") from None


def card_header(folder) -> dict:
    """The YAML header of the pool's card (``README.md``), {} without a card; bad YAML is one line."""
    import yaml

    path = folder / "README.md"
    if not path.exists():
        return {}
    text = read_text(path, "the dataset card")
    if not text.startswith("---"):
        return {}
    header = text.split("\n---", 1)[0].removeprefix("---")
    try:
        data = yaml.safe_load(header)
    except yaml.YAMLError as e:
        first = str(e).strip().splitlines()[0]
        raise ConfigError(f"spectrum.pool: {path} has a YAML header that does not parse ({first}); {AGAIN}") from None
    return data if isinstance(data, dict) else {}


def card_data_files(header: dict) -> list[str]:
    """Every path the card's ``configs`` name as data files."""
    out = []
    for config in header.get("configs") or []:
        files = config.get("data_files") if isinstance(config, dict) else None
        for entry in files if isinstance(files, list) else [files]:
            paths = entry.get("path") if isinstance(entry, dict) else entry
            out += [str(p) for p in (paths if isinstance(paths, list) else [paths]) if p is not None]
    return out


def check_card(folder) -> None:
    """The card's ``data_files`` must be relative paths under ``data/``: the import reads only the pool's own
    ``data/`` folder, so a card that points elsewhere (out of the folder, an absolute path, a URL) is refused rather
    than silently not followed."""
    path = folder / "README.md"
    for name in card_data_files(card_header(folder)):
        pure = PurePosixPath(name)
        if "://" in name or pure.is_absolute() or ".." in pure.parts or pure.parts[:1] != ("data",):
            raise ConfigError(
                f"spectrum.pool: {path} points its data_files at {name!r}, outside the pool's data/ folder; an import "
                f"reads only the files under {folder / 'data'}; {AGAIN}"
            )


def check_generator(folder, meta: PoolMeta, generators: set[str]) -> None:
    """The card's resolved config, the metadata's identity and every row must name one generator."""
    said = {"harness_pool.json": str(meta.identity.get("generator.name"))}
    config_generator = (meta.model_extra or {}).get("config", {})
    if isinstance(config_generator, dict) and isinstance(config_generator.get("generator"), dict):
        said["harness_pool.json config"] = str(config_generator["generator"].get("name"))
    if generators:
        said["the rows"] = " and ".join(sorted(generators))
    card = card_generator(folder)
    if card is not None:
        said["README.md"] = card
    if len(set(said.values())) > 1:
        named = ", ".join(f"{where} says {name!r}" for where, name in said.items())
        raise ConfigError(f"spectrum.pool: {folder} names more than one generator ({named}); {AGAIN}")


def card_generator(folder) -> str | None:
    """The generator of the card's resolved config (its ``yaml`` block), None when the card has none."""
    import yaml

    path = folder / "README.md"
    if not path.exists():
        return None
    text = read_text(path, "the dataset card")
    block = text.rsplit("```yaml\n", 1)
    if len(block) < 2:
        return None
    try:
        config = yaml.safe_load(block[1].split("\n```", 1)[0])
    except yaml.YAMLError as e:
        first = str(e).strip().splitlines()[0]
        raise ConfigError(f"spectrum.pool: {path} has a config block that does not parse ({first}); {AGAIN}") from None
    generator = config.get("generator") if isinstance(config, dict) else None
    return str(generator.get("name")) if isinstance(generator, dict) else None
