"""A new workdir's MLflow store starts as a copy of an empty, already migrated one.

MLflow builds a fresh SQLite store by running every Alembic migration (seconds on a laptop, tens of seconds on a
busy node), and every new workdir pays it. The first store a machine builds is kept, emptied of its "Default"
experiment (whose artifact location names the folder it was built from; MLflow creates it again, with this store's
location, when the copy is first opened), under the user's cache, one per MLflow version and schema; later workdirs
copy it. ``HARNESS_CACHE_DIR`` moves that cache (default ``$XDG_CACHE_HOME/discl-harness`` or
``~/.cache/discl-harness``).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

from harness.core.errors import HarnessError
from harness.core.io import lock


def user_cache() -> Path:
    if os.environ.get("HARNESS_CACHE_DIR"):
        return Path(os.environ["HARNESS_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "discl-harness"


def template_path() -> Path:
    import mlflow

    return user_cache() / f"mlflow-{mlflow.__version__}-empty.db"


def build_template(path: Path) -> None:
    """Migrate an empty SQLite store with MLflow itself, drop its Default experiment, then publish it atomically."""
    from mlflow.tracking import MlflowClient

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        db = Path(tmp) / "empty.db"
        MlflowClient(f"sqlite:///{db}").search_experiments(max_results=1)
        with sqlite3.connect(db) as con:
            con.execute("DELETE FROM experiments WHERE name = 'Default'")
        con.close()
        os.replace(db, path)


def empty_store() -> Path | None:
    """The migrated empty store of this MLflow version (built on first use); None where it cannot be kept."""
    path = template_path()
    try:
        with lock(path):
            if not path.exists():
                build_template(path)
    except (OSError, HarnessError):  # a read-only or lock-less cache: MLflow migrates each new store itself
        return None
    return path


def seed_store(workdir: Path, uri: str) -> None:
    """Give ``workdir`` its SQLite store from the empty template when the store does not exist yet. Call it under
    the store's lock: the copy lands under a temporary name and is renamed into place."""
    db = workdir / "mlflow.db"
    if uri != f"sqlite:///{db}" or db.exists():
        return
    template = empty_store()
    if template is None:
        return
    partial = db.with_name(f".{db.name}.{os.getpid()}.partial")
    shutil.copyfile(template, partial)
    os.replace(partial, db)
