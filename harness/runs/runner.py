"""`harness run`: prepare the shared phases, then one tracked fine-tuning run per (method, seed)."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from harness.config import Config, stable_hash, validate
from harness.config.keys import run_key
from harness.core import distributed as dist
from harness.core.io import read_json, write_json
from harness.core.registry import get_method
from harness.core.workdir import cache_dir
from harness.engine import preempt
from harness.phases.domain import domain_frame
from harness.phases.filter import acceptance_by_level
from harness.phases.pipeline import Prepared, RunResult, fine_tune, prepare
from harness.runs import plots
from harness.runs.cleanup import prune_finished_run, release_loaders
from harness.runs.tracking import Run, client, dataset_entity, digest_of, log_model, run_in_store, state_mb

log = logging.getLogger("harness")


def run_config_hash(cfg: Config, method: str) -> str:
    """What determines one run besides its seed (``harness.config.keys.run_key``, at this process's world size)."""
    return run_key(cfg, method, dist.world())


def finished_run(workdir: Path, cfg: Config, method: str, seed: int, config_hash: str):
    c = client(workdir)
    exp = c.get_experiment_by_name(cfg.name)
    if exp is None:
        return None
    runs = c.search_runs(
        [exp.experiment_id],
        filter_string=(
            f"tags.method = '{method}' and tags.seed = '{seed}' and tags.config_hash = '{config_hash}' "
            "and attributes.status = 'FINISHED'"
        ),
        max_results=1,
    )
    return runs[0] if runs else None


POOL_SCORE_COLUMNS = ["key", "source_index", "label", "lam", "seed_index", "text_score", "image_score", "keep"]


def log_run_outputs(run: Run, cfg: Config, prep: Prepared, result: RunResult, grid_path: Path | None) -> None:
    run.log_metrics(
        {
            **result.test_metrics,
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
    if grid_path is not None and prep.pool_dir is not None and get_method(result.method).synthetic:
        run.log_file(grid_path, "spectrum")
        run.log_frame(acceptance_by_level(prep.pool), "spectrum/acceptance.csv")
        run.log_frame(prep.pool[[c for c in POOL_SCORE_COLUMNS if c in prep.pool]], "spectrum/scores.csv")
        run.log_frame(domain_frame(prep), "spectrum/domain.csv")  # judge vs target-domain classifier per λ


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
    for m in methods if dist.is_main() else ():
        h = run_config_hash(cfg, m)
        for s in seeds:
            done = None if force else finished_run(workdir, cfg, m, s, h)
            if done is not None:
                log.info("%s seed %d: finished run %s found, reusing it", m, s, done.info.run_id)
                rows.append(
                    {
                        "method": m,
                        "seed": s,
                        "run_id": done.info.run_id,
                        "cached": True,
                        **{k: v for k, v in done.data.metrics.items() if k.startswith("test")},
                    }
                )
            else:
                todo.append((m, s, h))
    todo = dist.share(todo)
    if todo:
        prep = prepare_all_ranks(cfg, workdir, sorted({m for m, _, _ in todo}), progress)
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
    ckpt_dir = cache_dir(workdir) / "runs" / f"{cfg.name}-{method}-seed{seed}-{config_hash}"
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


RUN_IDS = "run_ids.json"  # in a run's cache folder: {tracking URI: MLflow run id}


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


def fmt_levels(levels) -> str:
    return ", ".join(f"{x:g}"[1:] if 0 < x < 1 else f"{x:g}" for x in levels)  # 0, .1, .3, .5


def method_description(cfg: Config, method: str) -> str:
    """One line for the run's MLflow description: the method's own summary (its class docstring) and what it
    trained on here, e.g. "... λ 0, .1, .3, .5 over the first 8 of 12 epochs, then real data only"."""
    cls = get_method(method)
    doc = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
    params = cfg.method_params.get(method, {})
    head = f"{method}" + (f" ({', '.join(f'{k}={v}' for k, v in params.items())})" if params else "")
    epochs, cur = cfg.train.epochs, cfg.train.curriculum_epochs
    if cls.synthetic:
        levels = (
            cfg.curriculum.adaptive_levels if cls.adaptive and cfg.curriculum.adaptive_levels else cfg.curriculum_levels
        )
        what = f"λ {fmt_levels(sorted(levels))} over the first {cur} of {epochs} epochs, then real data only"
    elif cls.rebalance:
        what = f"real images only, re-balanced in the first {cur} of {epochs} epochs"
    else:
        what = f"real images only, {epochs} epochs"
    return f"{head}: {doc} {what}." if doc else f"{head}: {what}."


def dataset_inputs(cfg: Config, prep: Prepared, method: str) -> list[tuple[dict, str]]:
    """MLflow dataset inputs of one run: the real splits (contexts training / validation / test, digest over
    ids and labels) and, for methods that draw on it, the synthetic pool (digest: its cache key)."""
    data = prep.data
    source, kind = (cfg.data.root, "local") if cfg.data.root else (f"harness.data:{cfg.data.name} (embedded)", "code")
    contexts = {"train": "training", data.val_split: "validation", **{s: "test" for s in data.test_splits.values()}}
    out = []
    for split, context in contexts.items():
        images = data.splits[split]
        counts = np.bincount(images.labels, minlength=data.num_classes)
        profile = {
            "num_rows": len(images),
            "num_classes": int((counts > 0).sum()),
            "min_per_class": int(counts.min()),
            "max_per_class": int(counts.max()),
            "split": split,
        }
        out.append(
            (
                dataset_entity(
                    f"{cfg.data.name}/{split}",
                    digest_of(images.ids, images.labels),
                    source if kind == "code" else f"{source}#{split}",
                    profile,
                    kind,
                ),
                context,
            )
        )
    if get_method(method).synthetic and prep.pool_dir is not None and len(prep.pool):
        pool = prep.pool
        kept = pool[pool.keep]
        profile = {
            "num_rows": len(kept),
            "generated": len(pool),
            "kept": len(kept),
            "levels": sorted(float(x) for x in pool.lam.unique()),
            "kept_per_level": {f"{k:g}": int(v) for k, v in kept.groupby("lam").size().items()},
            "generator": cfg.generator.name,
            "scorer": cfg.scorer.name,
            "filter_threshold": cfg.filter.threshold,
            "cache_key": prep.pool_dir.name,
        }
        # the pool's cache key, then which of its images the scorer and threshold kept
        digest = f"{prep.pool_dir.name}-{stable_hash([cfg.scorer.name, cfg.scorer.params, cfg.filter.threshold], 6)}"
        source = str(prep.pool_dir)
        if prep.pool_source:  # spectrum.pool: the exported pool's path or repo id and revision, and its digest
            imported = prep.pool_source
            source = f"{imported['source']}@{imported['revision']}" if imported.get("revision") else imported["path"]
            profile["imported_from"] = imported
            digest = f"{digest}-{imported['digest']}"
        out.append((dataset_entity("synthetic_pool", digest, source, profile), "training"))
    return out


def log_selected_model(run: Run, cfg: Config, workdir: Path, prep: Prepared, result: RunResult, ckpt_dir: Path) -> bool:
    """The validation-selected weights (from the run's last checkpoint) as the run's logged model, when
    ``tracking.log_model`` says so: ``auto`` logs models up to ``tracking.max_model_mb``. True if logged."""
    import torch

    from harness.models.base import build_model

    mode, ckpt = cfg.tracking.log_model, ckpt_dir / "checkpoint.pt"
    if mode == "never" or not ckpt.exists():
        return False
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
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
