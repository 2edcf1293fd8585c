"""MLflow tracking: one MLflow experiment per harness experiment, one run per (method, seed)."""
from __future__ import annotations

import logging
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from harness.config import flatten
from harness.io import lock
from harness.workdir import artifact_root, tracking_uri

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # no "Creating initial MLflow database tables" chatter
logging.getLogger("alembic").setLevel(logging.WARNING)


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def client(workdir: Path):
    """An MlflowClient on the workdir's store; the first use creates the SQLite schema under a lock."""
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(workdir)  # never mlflow.set_tracking_uri: it exports MLFLOW_TRACKING_URI to later workdirs
    with lock(workdir / "mlflow.db"):
        c = MlflowClient(uri)
        c.search_experiments(max_results=1)  # runs the schema migrations once, serialized
    return c


def experiment_id(c, workdir: Path, name: str) -> str:
    with lock(workdir / "mlflow.db"):
        exp = c.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        return c.create_experiment(name, artifact_location=f"{artifact_root(workdir)}/{name}")


class Run:
    """A thin handle on one MLflow run (client API: safe with several runs in one process)."""

    def __init__(self, workdir: Path, experiment: str, run_name: str, tags: dict[str, str] | None = None,
                 run_id: str | None = None, parent_run_id: str | None = None):
        from mlflow.entities import Metric, Param, RunTag  # noqa: F401

        self.c = client(workdir)
        if run_id is None:
            tags = dict(tags or {})
            tags["mlflow.runName"] = run_name
            tags.setdefault("git_commit", git_commit())
            if parent_run_id:
                tags["mlflow.parentRunId"] = parent_run_id
            run = self.c.create_run(experiment_id(self.c, workdir, experiment), run_name=run_name, tags=tags)
            run_id = run.info.run_id
        else:
            self.c.update_run(run_id, status="RUNNING")
        self.id = run_id

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self.c.get_run(self.id).data.params
        items = [Param(k[:250], str(v)[:6000]) for k, v in flatten(params).items() if k[:250] not in existing]
        for start in range(0, len(items), 100):
            self.c.log_batch(self.id, params=items[start:start + 100])

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items() if v == v]  # NaN is not logged
        for start in range(0, len(items), 1000):
            self.c.log_batch(self.id, metrics=items[start:start + 1000])

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.c.log_batch(self.id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_file(self, path: Path, artifact_dir: str | None = None) -> None:
        self.c.log_artifact(self.id, str(path), artifact_dir)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.c.log_text(self.id, text, artifact_file)

    def log_frame(self, frame: pd.DataFrame, artifact_file: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact_file).name
            frame.to_csv(path, index=False)
            self.log_file(path, str(Path(artifact_file).parent) if "/" in artifact_file else None)

    def log_figure(self, fig, artifact_file: str) -> None:
        self.c.log_figure(self.id, fig, artifact_file)

    def end(self, status: str = "FINISHED") -> None:
        self.c.set_terminated(self.id, status=status)


def runs_frame(c, experiment_ids: list[str]) -> pd.DataFrame:
    """Every run of the experiments as one wide frame (``metrics.*``, ``params.*``, ``tags.*``), like the fluent
    ``mlflow.search_runs`` but on this client's store rather than the process-global one."""
    rows, token = [], None
    while True:
        page = c.search_runs(experiment_ids, max_results=1000, page_token=token)
        for r in page:
            rows.append({"run_id": r.info.run_id, "experiment_id": r.info.experiment_id, "status": r.info.status,
                         "artifact_uri": r.info.artifact_uri,
                         "start_time": pd.to_datetime(r.info.start_time, unit="ms", utc=True),
                         "end_time": pd.to_datetime(r.info.end_time, unit="ms", utc=True) if r.info.end_time else pd.NaT,
                         **{f"metrics.{k}": v for k, v in r.data.metrics.items()},
                         **{f"params.{k}": v for k, v in r.data.params.items()},
                         **{f"tags.{k}": v for k, v in r.data.tags.items()}})
        token = page.token
        if not token:
            return pd.DataFrame(rows)

