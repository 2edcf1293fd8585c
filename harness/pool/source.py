"""Where ``spectrum.pool`` points: a folder, or ``ORG/NAME``, a dataset repo already in the local Hugging Face cache
(nothing is downloaded at run time); its data files' digest; and the exported dataset opened with its metadata."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from harness.config import ConfigError, stable_hash
from harness.config.keys import file_digest
from harness.pool.schema import LOOKUP_COLUMNS, META_FILE

# besides the lookup columns: what the import reads (the images, and the scores it may reuse)
READ_COLUMNS = [*LOOKUP_COLUMNS, "image", "text_score", "image_score"]
AGAIN = "export it again with `harness pool export` (or fetch it again)"

REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass
class PoolSource:
    spec: str  # what spectrum.pool says
    path: Path  # the folder read
    revision: str | None  # a Hub repo's commit, for a dataset repo in the local cache
    digest: str  # of the data files' contents

    def describe(self) -> dict:
        return {"source": self.spec, "path": str(self.path), "revision": self.revision, "digest": self.digest}


def data_digest(folder: Path) -> str:
    """sha256 over the data files (names and contents; each file's digest cached by path, mtime and size)."""
    files = sorted(p for p in (folder / "data").rglob("*") if p.is_file())
    return stable_hash([[str(p.relative_to(folder)), file_digest(str(p))["sha256"]] for p in files], 16)


def resolve_source(spec: str) -> PoolSource:
    """``spectrum.pool``: a folder, or ``ORG/NAME``: a dataset repo already in the local Hugging Face cache."""
    try:
        folder = Path(spec).expanduser()
    except RuntimeError:  # ~user of no user here
        raise ConfigError(
            f"spectrum.pool: {spec!r} names the home of an unknown user; give the folder's path"
        ) from None
    revision = None
    if not folder.is_dir():
        if not REPO_ID.fullmatch(spec):
            raise ConfigError(f"spectrum.pool: {spec!r} is not a folder, nor a Hub dataset id ORG/NAME")
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            folder = Path(snapshot_download(repo_id=spec, repo_type="dataset", local_files_only=True))
        except LocalEntryNotFoundError:
            raise ConfigError(
                f"spectrum.pool: {spec} is not a folder and not in the local Hugging Face cache (nothing is "
                f"downloaded at run time); fetch it first: huggingface-cli download --repo-type dataset {spec}"
            ) from None
        revision = folder.name
    if not (folder / META_FILE).is_file():
        raise ConfigError(f"spectrum.pool: {folder} has no {META_FILE}; export a pool with `harness pool export`")
    if not any(p.is_file() for p in (folder / "data").rglob("*")):
        raise ConfigError(f"spectrum.pool: {folder} has no data files under data/; {AGAIN}")
    return PoolSource(spec, folder.resolve(), revision, data_digest(folder))


def read_meta(source: PoolSource) -> dict:
    """The export's ``harness_pool.json``, refused in one line unless it is a JSON object."""
    path = source.path / META_FILE
    try:
        meta = json.loads(path.read_text())
    except ValueError as e:  # not JSON, or not UTF-8
        raise ConfigError(f"spectrum.pool: {path} is not JSON ({e}); {AGAIN}") from e
    if not isinstance(meta, dict):
        raise ConfigError(f"spectrum.pool: {path} holds a {type(meta).__name__}, not a JSON object; {AGAIN}")
    return meta


def open_pool(source: PoolSource, cache: Path, progress: bool = True):
    """The exported dataset (memory-mapped Arrow, converted once into the workdir's cache) and its metadata; a
    folder ``datasets`` cannot read, or whose rows lack a column the import reads, is refused in one line."""
    import datasets
    from datasets.exceptions import DatasetGenerationError

    meta = read_meta(source)
    enabled = datasets.is_progress_bar_enabled()
    if not progress:
        datasets.disable_progress_bars()
    try:
        ds = datasets.load_dataset(str(source.path), split="train", cache_dir=str(cache / "hf-datasets"))
    except (ValueError, DatasetGenerationError) as e:  # pyarrow's ArrowInvalid is a ValueError
        first = (str(e).strip().splitlines() or [""])[0]
        raise ConfigError(
            f"spectrum.pool: {source.path} is no readable dataset ({type(e).__name__}: {first}); {AGAIN}"
        ) from e
    finally:
        if enabled:
            datasets.enable_progress_bars()
    missing = [c for c in READ_COLUMNS if c not in ds.column_names]
    if missing:
        raise ConfigError(f"spectrum.pool: {source.path} lacks the column(s) {', '.join(missing)}; {AGAIN}")
    return ds, meta
