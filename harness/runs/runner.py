"""`harness run`: prepare the shared phases, then one tracked fine-tuning run per (method, seed)."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from harness.config import Config, validate
from harness.core import distributed as dist
from harness.core.io import read_json, write_json
from harness.core.registry import get_method
from harness.engine import preempt
from harness.phases.domain import domain_frame
from harness.phases.filter import acceptance_by_level
from harness.phases.pipeline import Prepared, RunResult, fine_tune, prepare
from harness.pool.load import imported_from
from harness.runs import plots
from harness.runs.cleanup import prune_finished_run, release_loaders
from harness.runs.describe import dataset_inputs, method_description
from harness.runs.finished import finished_runs, result_row
from harness.runs.logged_model import log_selected_model
from harness.runs.paths import RUN_IDS, run_dir
from harness.runs.tracking import Run, client, run_in_store

log = logging.getLogger("harness")


POOL_SCORE_COLUMNS = ["key", "source_index", "label", "lam", "seed_index", "text_score", "image_score", "keep",
                      "pool_text_score", "pool_image_score"]  # fmt: skip


def log_run_outputs(run: Run, cfg: Config, prep: Prepared, result: RunResult, grid_path: Path | None) -> None:
    run.log_metrics(
        {
            **result.test_metrics,
            **result.post_hoc,  # wise/…, taunorm/…: the cheap baselines on the selected model
            **{f"best/{k}": v for k, v in result.val_metrics.items()},
            "best/epoch": result.best_epoch,
        }
    )
    run.log_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), "config.yaml")
    for split, frame in result.predictions.items():
        run.log_frame(frame, f"predictions/{split}.csv")
    run.log_text(yaml.safe_dump({"stages": result.stages}, sort_keys=False), "curriculum.yaml")
    run.log_frame(prep.data.class_counts(), "data/class_counts.csv")  # for reports: per-class accuracy vs count
    fig = plots.training_curves(result.history, f"{result.method} seed {result.seed}")
    run.log_figure(fig, "plots/training_curves.png")
    plots.close(fig)
    if prep.pool_dir is not None and get_method(result.method).synthetic:
        from harness.phases.spectrum import prompts_frame

        run.log_frame(prompts_frame(prep.pool, prep.data.class_names), "spectrum/prompts.csv")
    if prep.retrieved is not None and get_method(result.method).retrieves:
        log_retrieved(run, prep)
    if grid_path is not None and prep.pool_dir is not None and get_method(result.method).synthetic:
        run.log_file(grid_path, "spectrum")
        run.log_frame(acceptance_by_level(prep.pool), "spectrum/acceptance.csv")
        run.log_frame(prep.pool[[c for c in POOL_SCORE_COLUMNS if c in prep.pool]], "spectrum/scores.csv")
        run.log_frame(domain_frame(prep), "spectrum/domain.csv")  # judge vs target-domain classifier per λ


def log_retrieved(run: Run, prep: Prepared) -> None:
    """``retrieved_real``'s images: which real image was retrieved for which hard source, and a picture of them."""
    got, train = prep.retrieved, prep.data.train
    frame = pd.DataFrame(
        {
            "source_id": [train.ids[int(s)] for s in got.source_index],
            "retrieved_id": list(got.images.ids),
            "label": np.asarray(got.images.labels),
        }
    )
    run.log_frame(frame, "retrieval/retrieved.csv")
    fig = plots.retrieval_grid(got, train)
    run.log_figure(fig, "retrieval/grid.png")
    plots.close(fig)


def run_experiment(
    cfg: Config,
    workdir: Path,
    methods: list[str] | None = None,
    seeds: list[int] | None = None,
    progress: bool = True,
    tags: dict | None = None,
    force: bool = False,
) -> pd.DataFrame:
    """Every (method, seed); returns one row per run with its test metrics and MLflow run id.

    Under torchrun (DDP) every rank trains each run in lockstep; rank 0 decides what to run, scores the pool,
    tracks in MLflow and writes checkpoints, and only its rows are complete."""
    methods, seeds = methods or cfg.methods, seeds if seeds is not None else cfg.seeds
    validate(cfg, f"experiment {cfg.name}", methods)  # before any data is read: e.g. the λ levels they need
    todo, rows = [], []
    for m, s, h, done in finished_runs(cfg, workdir, methods, seeds, force) if dist.is_main() else ():
        if done is None:
            todo.append((m, s, h))
            continue
        log.info("%s seed %d: finished run %s found, reusing it", m, s, done.info.run_id)
        rows.append(result_row(m, s, done, cached=True))
    todo = dist.share(todo)
    if todo:
        prep = prepare_all_ranks(cfg, workdir, sorted({m for m, _, _ in todo}), progress)
        prep.pool_source = prep.pool_source or imported_from(prep.pool_dir)  # spectrum.pool set or not
        with tempfile.TemporaryDirectory(prefix="harness-grid-") as tmp:  # the spectrum grid, logged by each run
            grid_path = spectrum_grid_file(prep, Path(tmp))
            for m, s, h in todo:
                rows.append(run_one(cfg, workdir, prep, m, s, h, grid_path, progress, tags, force))
    return pd.DataFrame(rows)


def spectrum_grid_file(prep: Prepared, folder: Path) -> Path | None:
    """The spectrum grid figure as a PNG in ``folder`` (rank 0, when there is a pool), else None."""
    if prep.pool_dir is None or not len(prep.pool) or not dist.is_main():
        return None
    grid_path = folder / "grid.png"
    fig = plots.spectrum_grid(prep.pool, prep.pool_dir, prep.data.train)
    fig.savefig(grid_path, dpi=110)
    plots.close(fig)
    return grid_path


def prepare_all_ranks(cfg: Config, workdir: Path, methods: list[str], progress: bool) -> Prepared:
    """Under DDP every rank trains the base model, generates and scores its shard of the spectrum in lockstep;
    rank 0 writes the shared caches and every rank ends with the same ``Prepared``."""
    prep = prepare(cfg, workdir, methods, progress=progress and dist.is_main(), rank=dist.rank(), world=dist.world())
    dist.barrier()
    return prep


def run_one(
    cfg: Config,
    workdir: Path,
    prep: Prepared,
    method: str,
    seed: int,
    config_hash: str,
    grid_path: Path | None,
    progress: bool,
    tags: dict | None = None,
    force: bool = False,
) -> dict:
    ckpt_dir = run_dir(workdir, cfg, method, seed, config_hash)
    if not dist.is_main():  # a DDP rank: train in lockstep with rank 0, which tracks and checkpoints
        dist.barrier()  # rank 0 has cleared (force) or kept the checkpoint
        result = fine_tune(prep, method, seed, None, ckpt_dir, progress=False)
        release_loaders(prep.data.loaders)
        return {"method": method, "seed": seed, "run_id": None, "cached": False, **result.test_metrics}
    if force and ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)  # a forced rerun starts from the base model, in a new MLflow run
    c = client(workdir)
    run_id = remembered_run_id(ckpt_dir, c)
    run = Run(
        workdir,
        cfg.name,
        f"{method}-seed{seed}",
        run_id=run_id,
        tags={
            "method": method,
            "dataset": cfg.data.name,
            "seed": str(seed),
            "generator": cfg.generator.name,
            "scorer": cfg.scorer.name,
            "config_hash": config_hash,
            "experiment": cfg.name,
            "recipe": cfg.recipe,
            **(tags or {}),
        },
    )
    run.set_tags(preempt.launcher_tags())  # this attempt's launcher and job (a requeued run keeps its MLflow run)
    if cfg.tracking.system_metrics:
        run.start_system_metrics(cfg.tracking.system_metrics_interval_s)
    if run_id is None:  # a new run in this store (resuming from the cached checkpoint, if any, re-logs its epochs)
        remember_run_id(ckpt_dir, c.tracking_uri, run.id)
        run.describe(method_description(cfg, method))
        run.log_params(cfg.to_dict() | {"method": method, "seed": seed})
        run.log_inputs(dataset_inputs(cfg, prep, method))
        if prep.data.corrupt:
            run.log_text(
                "\n".join(
                    f"{split}\t{path}\t{reason}" for split, rows in prep.data.corrupt.items() for path, reason in rows
                ),
                "data/corrupt_images.tsv",
            )
        run.log_metrics(
            {
                "data/corrupt_images": sum(len(v) for v in prep.data.corrupt.values()),
                "hard/count": len(prep.hard),
                "spectrum/generated": len(prep.pool),
                "spectrum/kept": int(prep.pool.keep.sum()) if len(prep.pool) else 0,
                **{f"time/{k}": v for k, v in prep.timings.items()},
            }
        )
    dist.barrier()
    try:
        with preempt.deferred():  # a stop signal waits for the next step boundary
            result = fine_tune(prep, method, seed, run, ckpt_dir, progress)
        log_run_outputs(run, cfg, prep, result, grid_path)
        model_logged = log_selected_model(run, cfg, workdir, prep, result, ckpt_dir)
    except preempt.Preempted as e:
        run.set_tags({"launcher.preempted": str(e)})
        run.end("KILLED")  # resumable: the next attempt reopens this run and resumes from the last epoch
        raise
    except BaseException:
        run.end("FAILED")
        raise
    finally:
        release_loaders(prep.data.loaders)  # the evaluation loaders' workers end with the run
    run.end("FINISHED")
    prune_finished_run(ckpt_dir, model_logged)  # MLflow has the run: optimizer state and checkpoint go
    return {"method": method, "seed": seed, "run_id": run.id, "cached": False, **result.test_metrics}


def remembered_run_id(ckpt_dir: Path, c) -> str | None:
    """The MLflow run this cached run logs to in the store ``c`` talks to, or None: the cache may have been
    made with another store (``MLFLOW_TRACKING_URI`` pointing elsewhere, a deleted ``mlflow.db``, a cache
    copied from another workdir), whose run ids this store does not know."""
    ids = read_json(ckpt_dir / RUN_IDS) if (ckpt_dir / RUN_IDS).exists() else {}
    legacy = ckpt_dir / "run_id"  # before run_ids.json: one id, of whichever store made it
    candidates = [ids.get(c.tracking_uri), *ids.values(), legacy.read_text().strip() if legacy.exists() else None]
    return next((r for r in candidates if run_in_store(c, r)), None)


def remember_run_id(ckpt_dir: Path, uri: str, run_id: str) -> None:
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    ids = read_json(ckpt_dir / RUN_IDS) if (ckpt_dir / RUN_IDS).exists() else {}
    write_json(ckpt_dir / RUN_IDS, {**ids, uri: run_id})
