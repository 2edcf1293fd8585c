"""A run's validation-selected weights as its MLflow logged model, and that model reloaded from MLflow and
evaluated again (``harness evaluate``)."""

from __future__ import annotations

import logging
from pathlib import Path

from harness.config import Config
from harness.core.io import load_torch
from harness.core.workdir import cache_dir
from harness.phases.pipeline import Prepared, RunResult
from harness.runs.tracking import Run, log_model, state_mb

log = logging.getLogger("harness")


def log_selected_model(run: Run, cfg: Config, workdir: Path, prep: Prepared, result: RunResult, ckpt_dir: Path) -> bool:
    """The validation-selected weights (from the run's last checkpoint) as the run's logged model, when
    ``tracking.log_model`` says so: ``auto`` logs models up to ``tracking.max_model_mb``. True if logged."""

    from harness.models.base import build_model

    mode, ckpt = cfg.tracking.log_model, ckpt_dir / "checkpoint.pt"
    if mode == "never" or not ckpt.exists():
        return False
    saved = load_torch(ckpt, "delete it and rerun with --force to retrain this run")
    state = saved["state"].get("best_state") or saved["trainer"]["model"]
    mb = state_mb(state)
    if mode == "auto" and mb > cfg.tracking.max_model_mb:
        run.set_tags({"model_logged": f"no: {mb:.0f} MB > tracking.max_model_mb {cfg.tracking.max_model_mb:g}"})
        log.info("%s seed %d: model not logged (%.0f MB > tracking.max_model_mb)", result.method, result.seed, mb)
        return False
    data = prep.data
    model = build_model(cfg, data.num_classes, data.channels, data.class_names)
    model.load_state_dict(state)
    info = {
        "config": cfg.to_dict() | {"methods": [result.method], "seeds": [result.seed]},
        "num_classes": data.num_classes,
        "channels": data.channels,
        "class_names": list(data.class_names),
        "method": result.method,
        "seed": result.seed,
        "best_epoch": result.best_epoch,
        "test_metrics": {k: float(v) for k, v in result.test_metrics.items()},
    }
    log_model(
        run,
        cfg.name,
        workdir,
        model,
        info,
        f"{result.method}-seed{result.seed}",
        max(result.best_epoch, 0),
        params={
            "method": result.method,
            "seed": result.seed,
            "model": cfg.model.name,
            "size_mb": round(mb, 2),
            "best_epoch": result.best_epoch,
        },
    )
    run.set_tags({"model_logged": "yes"})
    return True


def evaluate_logged_model(run_id: str, workdir: Path | str | None = None, device: str = "cpu") -> dict[str, float]:
    """Reload a run's logged model from MLflow and evaluate it on the test split(s) of the data its config
    names; the result matches the run's logged ``test/*`` metrics."""
    import torch

    from harness.core.workdir import resolve_workdir
    from harness.data import load_dataset
    from harness.data.verify import drop_corrupt
    from harness.engine.evaluate import evaluate_split
    from harness.runs.tracking import load_model

    wd = resolve_workdir(workdir)
    model, cfg = load_model(run_id, wd)
    dev = torch.device(device)
    data = drop_corrupt(load_dataset(cfg), cfg.data.max_corrupt_fraction, cache_dir(wd), False)
    metrics = {}
    for name, split in data.test_splits.items():
        m, _ = evaluate_split(model.to(dev), data, split, dev, data.num_workers)
        metrics.update({f"{name}/{k}": v for k, v in m.items()})
    return metrics
