"""What a run tells MLflow about itself when it starts: its one-line description (the method's summary and what it
trains on) and its dataset inputs (the real splits and, for the methods that draw on it, the synthetic pool)."""

from __future__ import annotations

import numpy as np

from harness.config import Config, stable_hash
from harness.core.registry import get_method
from harness.phases.pipeline import Prepared
from harness.runs.tracking import dataset_entity, digest_of


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
    if not getattr(cls, "fine_tunes", True):
        what = f"no fine-tuning, the base model after its {cfg.base.epochs} epochs"
    elif cls.synthetic:
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
