"""An imported pool's own scores: used as this experiment's when ``spectrum.pool_scores`` is ``trust`` and the pool's
scorer is ours; otherwise kept beside the local scorer's (``imported-scores.jsonl``, the pool frame's
``pool_text_score`` and ``pool_image_score`` columns), with one line when the two disagree on many images."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from harness.core.io import append_jsonl, read_jsonl
from harness.phases.filter import read_scores
from harness.phases.spectrum import PlannedImage
from harness.pool.schema import lookup_key, try_column

log = logging.getLogger("harness")
IMPORTED_SCORES = "imported-scores.jsonl"
# a disagreement worth a line: the keep decision of this share of the images, or this mean text-score gap
DISAGREE_SHARE, DISAGREE_GAP = 0.1, 0.1


def row_index(rows: pd.DataFrame) -> dict[tuple, int]:
    """``lookup_key`` → row position, for every try."""
    columns = (rows.source_id, rows.lam, rows.seed_index, try_column(rows))
    return {lookup_key(s, lam, k, t): i for i, (s, lam, k, t) in enumerate(zip(*columns))}


def pool_scores(rows: pd.DataFrame, wanted: list[tuple[str, tuple]]) -> list[dict] | None:
    """The pool's scores of ``wanted`` (our key, ``lookup_key``) as score rows; None when any is missing or not
    finite."""
    index = row_index(rows)
    if any(at not in index for _, at in wanted):
        return None
    picked = [index[at] for _, at in wanted]
    text, image = rows.text_score.to_numpy()[picked], rows.image_score.to_numpy()[picked]
    if not (np.isfinite(text).all() and np.isfinite(image).all()):
        return None
    rows = zip(wanted, text, image)
    return [{"key": key, "text_score": float(t), "image_score": float(s)} for (key, _), t, s in rows]


def copy_scores(rows: pd.DataFrame, wanted: list[tuple[str, tuple]], pool_dir: Path, scores_file: str) -> None:
    """Append the pool's scores of ``wanted`` not in the scores file yet; none when any of them is missing or not
    finite (the scorer then makes them)."""
    done = read_scores(pool_dir, scores_file)
    todo = [(key, at) for key, at in wanted if key not in done]
    scores = pool_scores(rows, todo) if todo else None
    if scores:
        append_jsonl(pool_dir / scores_file, scores)


def planned_lookups(plan: list[PlannedImage]) -> list[tuple[str, tuple]]:
    return [(p.key, lookup_key(p.source_id, p.lam, p.seed_index, p.try_index)) for p in plan]


def keep_pool_scores(rows: pd.DataFrame, plan: list[PlannedImage], pool_dir: Path) -> None:
    """The pool's own scores of the planned images, beside the pool (``imported-scores.jsonl``), to compare."""
    index = row_index(rows)
    wanted = [(key, at) for key, at in planned_lookups(plan) if at in index]
    picked = [index[at] for _, at in wanted]
    text, image = rows.text_score.to_numpy()[picked], rows.image_score.to_numpy()[picked]
    (pool_dir / IMPORTED_SCORES).unlink(missing_ok=True)
    append_jsonl(
        pool_dir / IMPORTED_SCORES,
        [{"key": k, "text_score": float(t), "image_score": float(s)} for (k, _), t, s in zip(wanted, text, image)],
    )


def with_pool_scores(pool: pd.DataFrame, pool_dir: Path | None, threshold: float) -> pd.DataFrame:
    """``pool`` (scored and filtered here) with the imported pool's own scores as ``pool_text_score`` and
    ``pool_image_score`` when it has them; one line when they disagree with this experiment's on many images."""
    path = None if pool_dir is None else pool_dir / IMPORTED_SCORES
    if path is None or not path.exists() or not len(pool):
        return pool
    theirs = {r["key"]: r for r in read_jsonl(path) if isinstance(r, dict) and "key" in r}
    out = pool.copy()
    out["pool_text_score"] = [theirs.get(k, {}).get("text_score", np.nan) for k in out.key]
    out["pool_image_score"] = [theirs.get(k, {}).get("image_score", np.nan) for k in out.key]
    both = out[out.pool_text_score.notna()]
    flipped = int(((both.pool_text_score >= threshold) != both.keep).sum())
    gap = float((both.pool_text_score - both.text_score).abs().mean()) if len(both) else 0.0
    if len(both) and (flipped / len(both) > DISAGREE_SHARE or gap > DISAGREE_GAP):
        log.warning(
            "spectrum.pool: this experiment's scorer disagrees with the pool's scores: %d of %d images would be kept "
            "otherwise by filter.threshold %g (mean text-score gap %.3f); its own scores decide (the pool's are the "
            "pool_text_score column)",
            flipped, len(both), threshold, gap,
        )  # fmt: skip
    return out
