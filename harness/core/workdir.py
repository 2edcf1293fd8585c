"""The workdir: one folder with the MLflow store, the Optuna database and the phase caches."""

from __future__ import annotations

import os
from pathlib import Path


def resolve_workdir(workdir: str | Path | None = None) -> Path:
    path = Path(workdir or os.environ.get("HARNESS_WORKDIR") or "harness-workdir").resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def tracking_uri(workdir: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{workdir / 'mlflow.db'}"


def artifact_root(workdir: Path) -> str:
    return (workdir / "mlartifacts").as_uri()


def cache_dir(workdir: Path) -> Path:
    return workdir / "cache"
