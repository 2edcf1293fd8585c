"""Files written atomically, JSON-lines manifests, and cross-process locks for shared caches."""

from __future__ import annotations

import contextlib
import errno
import inspect
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock

from harness.core.errors import DataError, FileSystemError


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str))


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def load_torch(path: str | Path, fix: str) -> Any:
    """``torch.load`` of a checkpoint or weights file: tensors and plain types only (``weights_only``, no pickled
    code), on the CPU. One that cannot be read (cut short by a kill or a full disk, another format, objects that are
    not plain) is a one-line ``DataError`` naming the file and saying what to do (``fix``)."""
    import pickle
    import zipfile

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        why = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DataError(f"{path}: not a readable torch checkpoint ({why}); {fix}") from None


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def append_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Append rows durably. A crash can leave at most a torn last line, which ``read_jsonl`` drops."""
    if not rows:
        return
    with open(path, "a+b") as f:
        torn = f.tell() > 0 and (f.seek(f.tell() - 1), f.read(1))[1] != b"\n"
        f.write(("\n" if torn else "").encode())  # end a torn line so it cannot swallow the next row
        f.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode())
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn line from a killed writer: the item will be redone
    return rows


def lock(path: str | Path) -> FileLock:
    """A lock file beside a cache entry, so two processes never build the same entry at once.

    An OS lock (``flock``; over NFS the kernel maps it to a POSIX lock the server holds): it dies with its process,
    so a killed builder never blocks the others. Where the file system has no such locks, this is an error naming
    the file, not filelock's silent fallback to a marker-file lock that a process killed on another host would
    leave behind for ever (docs/scaling-and-slurm.md)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return OSLock(str(path) + ".lock", **NO_SOFT_FALLBACK)


# filelock ≥ 3.21 falls back to a marker-file lock where flock() is missing; older ones raise, as we want
NO_SOFT_FALLBACK = (
    {"fallback_to_soft": False} if "fallback_to_soft" in inspect.signature(FileLock.__init__).parameters else {}
)


class OSLock(FileLock):
    def _acquire(self) -> None:
        try:
            super()._acquire()
        except OSError as e:
            if e.errno != errno.ENOSYS:
                raise
            raise FileSystemError(
                f"{self.lock_file}: this file system has no flock() locks, which the workdir's caches need "
                "(NFS: mount without 'nolock'; Lustre: mount with '-o flock'; or put --workdir on a local disk)"
            ) from None


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
