"""MLflow tracking: one MLflow experiment per harness experiment, one run per (method, seed).

Everything goes through ``MlflowClient`` on the workdir's store (never the fluent, process-global API): runs
carry MLflow's source tags and a description, their datasets (``log_inputs``), the validation-selected model (a
LoggedModel: safetensors + the config that rebuilds it, plus MLflow's pytorch flavor) and system metrics.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from harness.config import flatten
from harness.core.errors import NotFoundError
from harness.core.io import git_commit, lock
from harness.core.workdir import artifact_root, tracking_uri
from harness.runs.store import seed_store

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # no "Creating initial MLflow database tables" chatter
logging.getLogger("alembic").setLevel(logging.WARNING)


def client(workdir: Path):
    """An MlflowClient on the workdir's store; the first use creates it (``runs.store``) under a lock."""
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(workdir)  # never mlflow.set_tracking_uri: it exports MLFLOW_TRACKING_URI to later workdirs
    with lock(workdir / "mlflow.db"):
        seed_store(workdir, uri)
        c = MlflowClient(uri)
        c.search_experiments(max_results=1)  # runs the schema migrations once, serialized, where nothing was seeded
    return c


KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"  # the UI opens on the training runs


def experiment_id(c, workdir: Path, name: str) -> str:
    with lock(workdir / "mlflow.db"):
        exp = c.get_experiment_by_name(name)
        if exp is None:
            return c.create_experiment(
                name, artifact_location=f"{artifact_root(workdir)}/{name}", tags={KIND_TAG: KIND}
            )
        if exp.tags.get(KIND_TAG) != KIND:  # experiments made before the tag existed get it now
            c.set_experiment_tag(exp.experiment_id, KIND_TAG, KIND)
        return exp.experiment_id


def run_in_store(c, run_id: str | None) -> bool:
    """Whether this store holds ``run_id`` as a live run (a run id remembered from another store, or from a
    deleted ``mlflow.db``, is not found here)."""
    if not run_id:
        return False
    from mlflow.exceptions import MlflowException

    try:
        return c.get_run(run_id).info.lifecycle_stage == "active"
    except MlflowException:
        return False


def command_line() -> str:
    """The command that started this process, as a user would type it (``harness run -e ...``)."""
    argv = list(sys.argv)
    if argv and argv[0] == "-c":  # python -c CODE (a pytest-xdist worker, a one-line script)
        return "python -c"
    if argv:
        argv[0] = "harness" if Path(argv[0]).name in ("harness", "cli.py") else Path(argv[0]).name
    return shlex.join(argv) if argv else "python"


def short_source(command: str) -> str:
    """The command up to its first path: MLflow's UI shows a LOCAL source name's last path segment, so a
    ``--workdir /tmp/x`` would make the Source column read ``x ...``."""
    words = shlex.split(command)
    cut = next((i for i, w in enumerate(words) if "/" in w), len(words))
    while cut > 1 and words[cut - 1].startswith("-"):  # drop the option whose value was the path
        cut -= 1
    return shlex.join(words[:cut]) or "harness"


def source_tags() -> dict[str, str]:
    """MLflow's own source tags (the UI's Source and User columns), the full ``command`` and ``git_commit``."""
    commit, command = git_commit(), command_line()
    return {
        "mlflow.source.type": "LOCAL",
        "mlflow.source.name": short_source(command)[:500],
        "command": command[:5000],
        "mlflow.user": user(),
        "mlflow.source.git.commit": commit,
        "git_commit": commit,
    }


def user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class Run:
    """A thin handle on one MLflow run (client API: safe with several runs in one process)."""

    def __init__(
        self,
        workdir: Path,
        experiment: str,
        run_name: str,
        tags: dict[str, str] | None = None,
        run_id: str | None = None,
        parent_run_id: str | None = None,
    ):
        self.c = client(workdir)
        if run_id is None:
            tags = {**source_tags(), **(tags or {})}
            tags["mlflow.runName"] = run_name
            if parent_run_id:
                tags["mlflow.parentRunId"] = parent_run_id
            run = self.c.create_run(experiment_id(self.c, workdir, experiment), run_name=run_name, tags=tags)
            run_id = run.info.run_id
        else:
            self.c.update_run(run_id, status="RUNNING")
        self.id = run_id
        self.monitor = None
        self.workdir = workdir

    def describe(self, text: str) -> None:
        """The run's description (the UI shows it on the run page and as the Description column)."""
        self.c.set_tag(self.id, "mlflow.note.content", text)

    def log_inputs(self, datasets: list[tuple[dict, str]]) -> None:
        """Datasets as MLflow dataset inputs: (``dataset_entity(...)`` fields, context) pairs."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        # MLflow looks a dataset up, then inserts it: two processes logging the same dataset at once would both insert
        # (UNIQUE constraint failed: datasets...), so runs sharing a workdir log their inputs one at a time
        with lock(self.workdir / "mlflow.db"):
            self.c.log_inputs(
                self.id,
                [DatasetInput(Dataset(**d), [InputTag("mlflow.data.context", context)]) for d, context in datasets],
            )

    def start_system_metrics(self, interval_s: float = 10.0) -> None:
        """MLflow's system metrics (``system/cpu_utilization_percentage``, memory, disk, network, GPU with
        nvidia-ml-py) for this run, sampled in a thread that logs through this run's store."""
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
        self.monitor = SystemMetricsMonitor(
            self.id,
            sampling_interval=interval_s,
            samples_before_logging=1,
            resume_logging=True,
            tracking_uri=self.c.tracking_uri,
        )
        self.monitor.start()

    def stop_system_metrics(self) -> None:
        if self.monitor is None:
            return
        mon, self.monitor = self.monitor, None
        try:
            mon.collect_metrics()  # one last sample, so a run shorter than the interval has system metrics too
            mon.publish_metrics(mon.aggregate_metrics())
        except Exception as e:  # system metrics never fail a run
            logging.getLogger("harness").warning("system metrics: %s", e)
        mon.finish()

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self.c.get_run(self.id).data.params
        items = [Param(k[:250], str(v)[:6000]) for k, v in flatten(params).items() if k[:250] not in existing]
        for start in range(0, len(items), 100):
            self.c.log_batch(self.id, params=items[start : start + 100])

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items() if v == v]  # NaN is not logged
        for start in range(0, len(items), 1000):
            self.c.log_batch(self.id, metrics=items[start : start + 1000])

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
        self.stop_system_metrics()
        self.c.set_terminated(self.id, status=status)


def dataset_entity(name: str, digest: str, source: str, profile: dict, source_type: str = "local") -> dict:
    """The fields of an MLflow ``Dataset``: ``source`` a path or URI, ``profile`` shown in the UI."""
    return {
        "name": name,
        "digest": digest[:36],
        "source_type": source_type,
        "source": json.dumps({"uri": source}),
        "profile": json.dumps(profile),
    }


def digest_of(*columns) -> str:
    h = hashlib.sha256()
    for col in columns:
        h.update("\x1f".join(map(str, col)).encode())
        h.update(b"\x1e")
    return h.hexdigest()[:12]


def runs_frame(c, experiment_ids: list[str]) -> pd.DataFrame:
    """Every run of the experiments as one wide frame (``metrics.*``, ``params.*``, ``tags.*``), like the fluent
    ``mlflow.search_runs`` but on this client's store rather than the process-global one."""
    rows, token = [], None
    while True:
        page = c.search_runs(experiment_ids, max_results=1000, page_token=token)
        for r in page:
            rows.append(
                {
                    "run_id": r.info.run_id,
                    "experiment_id": r.info.experiment_id,
                    "status": r.info.status,
                    "artifact_uri": r.info.artifact_uri,
                    "start_time": pd.to_datetime(r.info.start_time, unit="ms", utc=True),
                    "end_time": pd.to_datetime(r.info.end_time, unit="ms", utc=True) if r.info.end_time else pd.NaT,
                    **{f"metrics.{k}": v for k, v in r.data.metrics.items()},
                    **{f"params.{k}": v for k, v in r.data.params.items()},
                    **{f"tags.{k}": v for k, v in r.data.tags.items()},
                }
            )
        token = page.token
        if not token:
            return pd.DataFrame(rows)


# --------------------------------------------------------------------------- the selected model

MODEL_INFO = "harness_model.yaml"  # beside model.safetensors: the config and sizes that rebuild the model


def state_mb(state: dict) -> float:
    return sum(v.numel() * v.element_size() for v in state.values()) / 2**20


def save_pytorch_flavor(model, folder: Path, example) -> None:
    """MLflow's pytorch flavor: the safe ``pt2`` graph format (traced on ``example``, a batch of two inputs so the
    batch size stays dynamic); a model that ``torch.export`` cannot trace falls back to pickle."""
    import mlflow.pytorch
    import torch

    reqs = [f"torch=={torch.__version__.split('+')[0]}", "discl-harness"]
    quiet = [logging.getLogger(n) for n in ("mlflow.pytorch", "mlflow.utils.requirements_utils", "mlflow.models")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.ERROR)
    try:
        try:
            mlflow.pytorch.save_model(model, str(folder), input_example=example.numpy(), pip_requirements=reqs)
        except Exception as e:  # torch.export cannot trace every model
            logging.getLogger("harness").info("pt2 export failed (%s); logging the pytorch flavor pickled", e)
            shutil.rmtree(folder, ignore_errors=True)
            mlflow.pytorch.save_model(model, str(folder), serialization_format="pickle", pip_requirements=reqs)
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)


def log_model(
    run: Run,
    experiment: str,
    workdir: Path,
    model,
    info: dict,
    name: str,
    step: int,
    params: dict[str, Any] | None = None,
    example=None,
) -> str:
    """Log ``model`` as an MLflow LoggedModel of ``run`` (the run page's "Logged models"): MLflow's pytorch
    flavor (``mlflow.pytorch.load_model`` works on it) plus ``model.safetensors`` and ``harness_model.yaml``
    (``info``: the resolved config, class count, channels, class names), which ``load_model`` uses without
    unpickling. Returns the model id."""
    import warnings

    import torch
    import yaml
    from mlflow.entities import LoggedModelOutput
    from safetensors.torch import save_file

    model = model.cpu().eval()
    if example is None:
        size, channels = info["config"]["data"]["image_size"], info["channels"]
        example = torch.zeros(2, channels, size, size)
    lm = run.c.create_logged_model(
        experiment_id(run.c, workdir, experiment),
        name=name,
        source_run_id=run.id,
        params={k: str(v) for k, v in (params or {}).items()},
        model_type="pytorch",
    )
    try:
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            folder = Path(tmp) / "model"
            save_pytorch_flavor(model, folder, example)
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
            (folder / MODEL_INFO).write_text(yaml.safe_dump(info, sort_keys=False))
            run.c.log_model_artifacts(lm.model_id, str(folder))
    except BaseException:
        run.c.finalize_logged_model(lm.model_id, "FAILED")
        raise
    run.c.finalize_logged_model(lm.model_id, "READY")
    run.c.log_outputs(run.id, [LoggedModelOutput(lm.model_id, step)])
    return lm.model_id


def logged_model_id(c, run_id: str) -> str:
    outputs = c.get_run(run_id).outputs
    ids = [o.model_id for o in (outputs.model_outputs if outputs else [])]
    if not ids:
        raise NotFoundError(
            f"MLflow run {run_id} has no logged model (tracking.log_model was off, or the "
            "model was over tracking.max_model_mb)"
        )
    return ids[-1]


def load_model(run_id: str, workdir: Path | str | None = None):
    """The validation-selected model of a run, rebuilt from its logged safetensors and config:
    ``model, cfg = load_model(run_id, workdir)`` (``workdir`` for its store; ``MLFLOW_TRACKING_URI`` wins)."""
    import yaml
    from mlflow.artifacts import download_artifacts
    from safetensors.torch import load_file

    from harness.config import Config, build
    from harness.core.workdir import resolve_workdir
    from harness.models.base import build_model

    wd = resolve_workdir(workdir)
    c = client(wd)
    lm = c.get_logged_model(logged_model_id(c, run_id))
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(download_artifacts(artifact_uri=lm.artifact_location, dst_path=tmp, tracking_uri=tracking_uri(wd)))
        info = yaml.safe_load((local / MODEL_INFO).read_text())
        cfg = build(Config, info["config"])
        model = build_model(cfg, info["num_classes"], info["channels"], info.get("class_names"))
        model.load_state_dict(load_file(str(local / "model.safetensors")))
    return model.eval(), cfg
