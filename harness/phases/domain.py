"""Where the synthetic spectrum lies between the generator's world and the target domain (``spectrum/domain.csv``).

Per λ, two true-class probabilities of the synthetic images: the judge's (the scorer's image–text score, i.e. the
filter's score: how well the image fits the clean world the generator and the judge know) and the base model's
(a classifier trained on the real training split only: how much the image looks like the target domain). A real
spectrum starts near the judge's world at λ = 0 and ends near the target's as λ → 1. Reference rows give both
probabilities on real validation images (``source = real val``), and, where the dataset has one, on the
generator's clean pool (``source = clean pool``; the judge was trained on it, so its score there is optimistic),
both restricted to the classes the synthetic images have (the hard samples' classes): a tail class scores lower
in any domain, so only same-class rows compare.
The base model saw the hard sources in training, so its score at λ → 1 is optimistic too; the val row is the
unbiased level for real target images.

``source_similarity`` is the scorer's image–image score per λ (the judge's feature cosine, CLIP's image cosine,
between each synthetic image and its source), the mean over the level: how much of the source a level keeps.

Computed once per experiment pool and cached beside the scores.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from harness.config import stable_hash
from harness.core.io import atomic_path, lock
from harness.engine.evaluate import class_probs

COLUMNS = [
    "source",
    "lam",
    "images",
    "kept",
    "judge_p_true",
    "source_similarity",
    "field_p_true",
    "field_p_true_kept",
    "field_acc",
]


def domain_frame(prep, max_per_level: int = 2000, max_real: int = 2000) -> pd.DataFrame:
    """One row per λ of the synthetic pool and one per reference split; cached in the pool folder.

    At most ``max_per_level`` images per λ (and ``max_real`` real images) are classified, a fixed random subset."""
    cfg = prep.cfg
    key = stable_hash(
        {
            "pool": prep.pool_dir.name,
            "threshold": cfg.filter.threshold,
            **{k: getattr(cfg, k).model_dump() for k in ("data", "model", "base", "scorer")},
            "max": [max_per_level, max_real],
            "columns": COLUMNS,  # a frame cached before a column was added is not reused
        }
    )
    path = prep.pool_dir / f"domain-{key}.csv"
    with lock(path):
        if not path.exists():
            frame = compute(prep, max_per_level, max_real)
            with atomic_path(path) as tmp:
                frame.to_csv(tmp, index=False)
    return pd.read_csv(path)


def base_model(prep):
    from harness.models.base import build_model

    data = prep.data
    model = build_model(prep.cfg, data.num_classes, data.channels, data.class_names)
    model.load_state_dict(prep.base_state)
    return model.to(prep.device).eval()


def true_class(model, images, labels: np.ndarray, prep) -> np.ndarray:
    """The model's probability of the true class and whether its top-1 is right, per image (eval transform)."""
    if len(labels) == 0:
        return np.zeros((0, 2))
    probs = class_probs(model, images, prep.device, transform=prep.data.eval_transform)
    return np.stack([probs[np.arange(len(labels)), labels], probs.argmax(1) == labels], 1)


def subset(images, rows: np.ndarray):
    from harness.data.base import take

    return take(images, np.asarray(rows, dtype=np.int64).copy())


@torch.no_grad()
def compute(prep, max_per_level: int, max_real: int) -> pd.DataFrame:
    model, pool, rng = base_model(prep), prep.pool.reset_index(drop=True), np.random.default_rng(0)
    rows = []
    for lam, group in pool.groupby(pool.lam.round(4)):
        idx = group.index.to_numpy()
        if len(idx) > max_per_level:
            idx = np.sort(rng.choice(idx, max_per_level, replace=False))
        labels = pool.label.to_numpy()[idx]
        field = true_class(model, subset(prep.pool_images, idx), labels, prep)
        keep = pool.keep.to_numpy()[idx].astype(bool)
        rows.append(
            {
                "source": "synthetic",
                "lam": float(lam),
                "images": len(group),
                "kept": int(group.keep.sum()),
                "judge_p_true": float(pool.text_score.to_numpy()[idx].mean()),
                # the scorer's image–image score: the judge's feature cosine (CLIP's image cosine) to the source
                "source_similarity": float(pool.image_score.to_numpy()[idx].mean()),
                "field_p_true": float(field[:, 0].mean()),
                "field_p_true_kept": float(field[keep, 0].mean()) if keep.any() else float("nan"),
                "field_acc": float(field[:, 1].mean()),
            }
        )
    rows += reference_rows(prep, model, max_real, rng)
    return pd.DataFrame(rows, columns=COLUMNS)


def reference_rows(prep, model, max_real: int, rng: np.random.Generator) -> list[dict]:
    """Both probabilities on real images of the pool's classes: the validation split (target domain) and the clean
    pool, if the dataset has one."""
    from harness.core.registry import get_scorer
    from harness.phases.spectrum import class_prompts

    data, cfg = prep.data, prep.cfg
    scorer = get_scorer(cfg.scorer.name).from_config(cfg, data, prep.pool_dir.parents[1], prep.device)
    classes = np.unique(prep.pool.label.to_numpy())  # the hard classes: a tail class is harder in any domain
    prompts = [options[0] for options in class_prompts(cfg.spectrum, data.class_names, classes)]
    out = []
    for source, split in (("real val", data.val_split), ("clean pool", "pool")):
        images = data.splits.get(split)
        if images is None or len(images) == 0:
            continue
        idx = np.flatnonzero(np.isin(images.labels, classes))
        if len(idx) > max_real:
            idx = np.sort(rng.choice(idx, max_real, replace=False))
        labels = images.labels[idx]
        field = true_class(model, subset(images, idx), labels, prep)
        judge = []
        for chunk in np.array_split(idx, max(1, -(-len(idx) // 256))):
            raw = [images.raw(int(i)) for i in chunk]
            judge.append(
                scorer.score(
                    raw, [prompts[int(y)] for y in images.labels[chunk]], [int(y) for y in images.labels[chunk]], raw
                )[0]
            )
        out.append(
            {
                "source": source,
                "lam": 1.0,
                "images": len(idx),
                "kept": float("nan"),
                "judge_p_true": float(np.concatenate(judge).mean()),
                "source_similarity": float("nan"),  # a real image is its own source
                "field_p_true": float(field[:, 0].mean()),
                "field_p_true_kept": float("nan"),
                "field_acc": float(field[:, 1].mean()),
            }
        )
    return out
