"""Where ``spectrum.pool`` points: a folder, or ``ORG/NAME``, a dataset repo already in the local Hugging Face cache
(nothing is downloaded, ever); the folder its files may lie in (symbolic links out of it are refused); and the digest
of its files as found now (``harness.config.keys.imported_pool_digest``, part of the pool key)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.config import ConfigError
from harness.config.keys import REPO_ID, imported_pool_digest, imported_pool_folder
from harness.pool.meta import AGAIN
from harness.pool.schema import META_FILE


@dataclass
class PoolSource:
    spec: str  # what spectrum.pool says
    path: Path  # the folder read
    root: Path  # the folder every file read must lie in, links resolved (a Hub snapshot's links point to its blobs)
    revision: str | None  # a Hub repo's commit, for a dataset repo in the local cache
    digest: str  # of the files' contents (harness_pool.json and data/)

    def describe(self) -> dict:
        return {"source": self.spec, "path": str(self.path), "revision": self.revision, "digest": self.digest}


def resolve_source(spec: str) -> PoolSource:
    """``spectrum.pool``: a folder, or ``ORG/NAME``: a dataset repo already in the local Hugging Face cache."""
    try:
        Path(spec).expanduser()
    except RuntimeError:  # ~user of no user here
        raise ConfigError(
            f"spectrum.pool: {spec!r} names the home of an unknown user; give the folder's path"
        ) from None
    found = imported_pool_folder(spec)
    if found is None and not REPO_ID.fullmatch(spec):
        raise ConfigError(f"spectrum.pool: {spec!r} is not a folder, nor a Hub dataset id ORG/NAME")
    if found is None:
        raise ConfigError(
            f"spectrum.pool: {spec} is not a folder and not in the local Hugging Face cache (nothing is "
            f"downloaded at run time); fetch it first: huggingface-cli download --repo-type dataset {spec}"
        )
    folder, revision = found
    if not (folder / META_FILE).is_file():
        raise ConfigError(f"spectrum.pool: {folder} has no {META_FILE}; export a pool with `harness pool export`")
    if not (folder / "data").is_dir() or not any(p.is_file() for p in (folder / "data").rglob("*")):
        raise ConfigError(f"spectrum.pool: {folder} has no data files under data/; {AGAIN}")
    # a Hub snapshot's files are links into the repo's blobs/ (snapshots/REV/… → ../../blobs/…)
    root = folder.resolve().parent.parent if revision else folder.resolve()
    return PoolSource(spec, folder.resolve(), root, revision, imported_pool_digest(spec))


def inside(source: PoolSource, path: Path) -> Path:
    """``path`` with its links resolved, refused in one line when that is outside the pool's folder or not a
    regular file (a FIFO, a device, a folder)."""
    real = path.resolve()
    if not real.is_relative_to(source.root):
        raise ConfigError(
            f"spectrum.pool: {path} is a link to {real}, outside the pool's folder {source.root}; an import reads "
            f"only the pool's own files; {AGAIN}"
        )
    if not real.is_file():
        raise ConfigError(f"spectrum.pool: {path} is not a regular file; {AGAIN}")
    return real


def data_files(source: PoolSource) -> list[Path]:
    """Every file under the pool's ``data/`` (sorted; a link to a folder inside the pool is not followed)."""
    out = []
    for path in sorted((source.path / "data").rglob("*")):
        if path.is_dir() and path.resolve().is_relative_to(source.root):
            continue
        inside(source, path)
        out.append(path)
    return out
