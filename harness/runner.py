"""`harness run`: prepare the shared phases, then one tracked fine-tuning run per (method, seed)."""
from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from harness import distributed as dist
from harness import plots
from harness.config import Config, stable_hash
from harness.domain import domain_frame
from harness.filter import acceptance_by_level
from harness.pipeline import Prepared, RunResult, fine_tune, prepare
from harness.registry import get_method
from harness.tracking import Run, client, experiment_id
from harness.workdir import cache_dir

log = logging.getLogger("harness")


def run_config_hash(cfg: Config, method: str) -> str:
    """What determines one run besides its seed: the config less the run list and other methods' params."""
    d = cfg.to_dict()
    for k in ("methods", "seeds", "name", "description", "sweep"):
        d.pop(k)
    d["method_params"] = cfg.method_params.get(method, {})
    return stable_hash(d)


def finished_run(workdir: Path, cfg: Config, method: str, seed: int, config_hash: str):
    c = client(workdir)
    exp = c.get_experiment_by_name(cfg.name)
    if exp is None:
        return None
    runs = c.search_runs([exp.experiment_id], filter_string=(
        f"tags.method = '{method}' and tags.seed = '{seed}' and tags.config_hash = '{config_hash}' "
        "and attributes.status = 'FINISHED'"), max_results=1)
    return runs[0] if runs else None


POOL_SCORE_COLUMNS = ["key", "source_index", "label", "lam", "seed_index", "text_score", "image_score", "keep"]


def class_counts(prep: Prepared) -> pd.DataFrame:
    data = prep.data
    return pd.DataFrame({"class": np.arange(data.num_classes), "name": data.class_names,
                         "train_count": data.train_counts, "shot_group": data.shot_group()})


def log_run_outputs(run: Run, cfg: Config, prep: Prepared, result: RunResult, grid_path: Path | None) -> None:
    run.log_metrics({**result.test_metrics, **{f"best/{k}": v for k, v in result.val_metrics.items()},
                     "best/epoch": result.best_epoch})
    run.log_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), "config.yaml")
    for split, frame in result.predictions.items():
        run.log_frame(frame, f"predictions/{split}.csv")
    run.log_text(yaml.safe_dump({"stages": result.stages}, sort_keys=False), "curriculum.yaml")
    run.log_frame(class_counts(prep), "data/class_counts.csv")  # for reports: per-class accuracy vs count
    fig = plots.training_curves(result.history, f"{result.method} seed {result.seed}")
    run.log_figure(fig, "plots/training_curves.png")
    plots.close(fig)
    if prep.pool_dir is not None and get_method(result.method).synthetic:
        from harness.spectrum import prompts_frame

        run.log_frame(prompts_frame(prep.pool, prep.data.class_names), "spectrum/prompts.csv")
    if grid_path is not None and prep.pool_dir is not None and get_method(result.method).synthetic:
        run.log_file(grid_path, "spectrum")
        run.log_frame(acceptance_by_level(prep.pool), "spectrum/acceptance.csv")
        run.log_frame(prep.pool[[c for c in POOL_SCORE_COLUMNS if c in prep.pool]], "spectrum/scores.csv")
        run.log_frame(domain_frame(prep), "spectrum/domain.csv")  # judge vs target-domain classifier per λ


def run_experiment(cfg: Config, workdir: Path, methods: list[str] | None = None, seeds: list[int] | None = None,
                   progress: bool = True, tags: dict | None = None, force: bool = False) -> pd.DataFrame:
    """Every (method, seed); returns one row per run with its test metrics and MLflow run id.

    Under torchrun (DDP) every rank trains each run in lockstep; rank 0 decides what to run, scores the pool,
    tracks in MLflow and writes checkpoints, and only its rows are complete."""
    methods, seeds = methods or cfg.methods, seeds if seeds is not None else cfg.seeds
    todo, rows = [], []
    for m in methods if dist.is_main() else ():
        h = run_config_hash(cfg, m)
        for s in seeds:
            done = None if force else finished_run(workdir, cfg, m, s, h)
            if done is not None:
                log.info("%s seed %d: finished run %s found, reusing it", m, s, done.info.run_id)
                rows.append({"method": m, "seed": s, "run_id": done.info.run_id, "cached": True,
                             **{k: v for k, v in done.data.metrics.items() if k.startswith("test")}})
            else:
                todo.append((m, s, h))
    todo = dist.share(todo)
    if todo:
        prep = prepare_all_ranks(cfg, workdir, sorted({m for m, _, _ in todo}), progress)
        grid_path = None
        if prep.pool_dir is not None and len(prep.pool) and dist.is_main():
            grid_path = Path(tempfile.mkdtemp()) / "grid.png"
            fig = plots.spectrum_grid(prep.pool, prep.pool_dir, prep.data.train)
            fig.savefig(grid_path, dpi=110)
            plots.close(fig)
        for m, s, h in todo:
            rows.append(run_one(cfg, workdir, prep, m, s, h, grid_path, progress, tags, force))
    return pd.DataFrame(rows)


def prepare_all_ranks(cfg: Config, workdir: Path, methods: list[str], progress: bool) -> Prepared:
    """Each rank generates its shard; only rank 0 scores, so the others then load its scored pool from the cache."""
    prep = prepare(cfg, workdir, methods, progress=progress and dist.is_main(), rank=dist.rank(), world=dist.world())
    dist.barrier()
    if not dist.is_main() and prep.pool_dir is not None:
        prep = prepare(cfg, workdir, methods, progress=False)
    return prep


def run_one(cfg: Config, workdir: Path, prep: Prepared, method: str, seed: int, config_hash: str,
            grid_path: Path | None, progress: bool, tags: dict | None = None, force: bool = False) -> dict:
    ckpt_dir = cache_dir(workdir) / "runs" / f"{cfg.name}-{method}-seed{seed}-{config_hash}"
    if not dist.is_main():  # a DDP rank: train in lockstep with rank 0, which tracks and checkpoints
        dist.barrier()  # rank 0 has cleared (force) or kept the checkpoint
        result = fine_tune(prep, method, seed, None, ckpt_dir, progress=False)
        return {"method": method, "seed": seed, "run_id": None, "cached": False, **result.test_metrics}
    if force and ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)  # a forced rerun starts from the base model, in a new MLflow run
    run_id_file = ckpt_dir / "run_id"
    run_id = run_id_file.read_text().strip() if run_id_file.exists() else None
    run = Run(workdir, cfg.name, f"{method}-seed{seed}", run_id=run_id, tags={
        "method": method, "dataset": cfg.data.name, "seed": str(seed), "generator": cfg.generator.name,
        "scorer": cfg.scorer.name, "config_hash": config_hash, "experiment": cfg.name, **(tags or {})})
    if run_id is None:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        run_id_file.write_text(run.id)
        run.log_params(cfg.to_dict() | {"method": method, "seed": seed})
        if prep.data.corrupt:
            run.log_text("\n".join(f"{split}\t{path}\t{reason}" for split, rows in prep.data.corrupt.items()
                                    for path, reason in rows), "data/corrupt_images.tsv")
        run.log_metrics({"data/corrupt_images": sum(len(v) for v in prep.data.corrupt.values()),
                         "hard/count": len(prep.hard), "spectrum/generated": len(prep.pool),
                         "spectrum/kept": int(prep.pool.keep.sum()) if len(prep.pool) else 0,
                         **{f"time/{k}": v for k, v in prep.timings.items()}})
    dist.barrier()
    try:
        result = fine_tune(prep, method, seed, run, ckpt_dir, progress)
        log_run_outputs(run, cfg, prep, result, grid_path)
    except BaseException:
        run.end("FAILED")
        raise
    run.end("FINISHED")
    return {"method": method, "seed": seed, "run_id": run.id, "cached": False, **result.test_metrics}


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over seeds of every test metric, one row per method."""
    metrics = [c for c in results.columns if c.startswith("test")]
    grouped = results.groupby("method", sort=False)[metrics]
    mean, std, n = grouped.mean() * 100, grouped.std(ddof=1).fillna(0) * 100, grouped.size()
    table = pd.DataFrame(index=mean.index)
    for m in metrics:
        table[m] = [f"{a:.1f} ± {b:.1f}" if k > 1 else f"{a:.1f}" for a, b, k in zip(mean[m], std[m], n)]
    table["seeds"] = n
    return table
