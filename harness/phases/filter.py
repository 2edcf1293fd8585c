"""Phase 4: score every synthetic image (image–text and image–image) and keep those above the threshold.

Scores are cached in ``scores.jsonl`` beside the manifest, so a new threshold costs nothing and a killed
scoring job resumes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from harness.core.io import append_jsonl, read_jsonl
from harness.data.base import DatasetBundle
from harness.phases.spectrum import source_blocks
from harness.scorers.base import Scorer


def source_block(manifest: pd.DataFrame, rank: int, world: int) -> pd.DataFrame:
    """This rank's rows: a contiguous block of the sources (in manifest order), so each real image is read by one
    rank only."""
    return manifest[manifest.source_index.map(source_blocks(manifest.source_index, world)) == rank]


def read_scores(pool_dir: Path, scores_file: str) -> dict[str, dict]:
    """Every score row written so far, by one process (``NAME.jsonl``) or by ranks (``NAME.shardRRR.jsonl``)."""
    stem = scores_file.removesuffix(".jsonl")
    files = [pool_dir / scores_file, *sorted(pool_dir.glob(f"{stem}.shard*.jsonl"))]
    return {r["key"]: r for f in files for r in read_jsonl(f)}


class DecodedChunks(Dataset):
    """Chunk j of the rows to score, decoded (in a DataLoader worker): each row's synthetic image and its real
    source image, as uint8 arrays (tensors cross from the workers through shared memory; PIL images would be
    pickled through a pipe). Each real image is read once per chunk."""

    def __init__(self, todo: pd.DataFrame, pool_dir: Path, train, batch_size: int):
        self.files = [list(todo.file.iloc[s : s + batch_size]) for s in range(0, len(todo), batch_size)]
        self.sources = [list(todo.source_index.iloc[s : s + batch_size]) for s in range(0, len(todo), batch_size)]
        self.pool_dir, self.train = pool_dir, train

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, j: int) -> tuple[list[np.ndarray], list[np.ndarray], list[int]]:
        """The chunk's synthetic images, its distinct real images, and which of those each row's source is."""
        images = [pixels(Image.open(self.pool_dir / f)) for f in self.files[j]]
        distinct = list(dict.fromkeys(self.sources[j]))
        return images, [pixels(self.train.raw(i)) for i in distinct], [distinct.index(i) for i in self.sources[j]]


def pixels(img: Image.Image) -> np.ndarray:
    with img:
        return np.array(img if img.mode in ("L", "RGB") else img.convert("RGB"))  # a writable copy


def as_images(arrays: list[torch.Tensor]) -> list[Image.Image]:
    return [Image.fromarray(a.numpy()) for a in arrays]


def score_pool(
    scorer: Scorer,
    data: DatasetBundle,
    manifest: pd.DataFrame,
    pool_dir: Path,
    scores_file: str = "scores.jsonl",
    batch_size: int = 256,
    progress: bool = True,
    rank: int = 0,
    world: int = 1,
) -> pd.DataFrame:
    """The manifest with ``text_score`` and ``image_score`` columns, scoring only what is not yet scored.

    With ``world`` > 1 this rank scores only its block of sources, into its own shard file, and returns its rows;
    ``read_scores`` then sees every rank's."""
    scored = read_scores(pool_dir, scores_file)
    if world > 1:
        manifest = source_block(manifest, rank, world)
        scores_file = f"{scores_file.removesuffix('.jsonl')}.shard{rank:03d}.jsonl"
    scores_path = pool_dir / scores_file
    todo = manifest[~manifest.key.isin(scored)]
    chunks = DecodedChunks(todo, pool_dir, data.train, batch_size)
    # images are decoded in data.num_workers worker processes, chunks in order
    decoded = DataLoader(chunks, batch_size=None, num_workers=min(data.num_workers, len(chunks)))
    for start, (images, distinct, which) in zip(
        tqdm(
            range(0, len(todo), batch_size),
            desc="score spectrum",
            unit="batch",
            disable=not progress or todo.empty,
            mininterval=2,
        ),
        decoded,
    ):
        chunk = todo.iloc[start : start + batch_size]
        images, distinct = as_images(images), as_images(distinct)
        sources = [distinct[k] for k in which]  # rows of one source share its image
        text, image = scorer.score(images, list(chunk.prompt), list(chunk.label), sources)
        rows = [{"key": k, "text_score": float(t), "image_score": float(s)} for k, t, s in zip(chunk.key, text, image)]
        append_jsonl(scores_path, rows)
        scored.update({r["key"]: r for r in rows})
    return with_scores(manifest, scored)


def with_scores(manifest: pd.DataFrame, scored: dict[str, dict]) -> pd.DataFrame:
    frame = manifest.copy()
    frame["text_score"] = [scored[k]["text_score"] for k in frame.key]
    frame["image_score"] = [scored[k]["image_score"] for k in frame.key]
    return frame


def apply_filter(scored: pd.DataFrame, threshold: float) -> pd.DataFrame:
    out = scored.copy()
    out["keep"] = out.text_score >= threshold
    return out


def acceptance_by_level(filtered: pd.DataFrame) -> pd.DataFrame:
    """Generated, kept and the acceptance rate per λ: the paper's per-level filter statistics."""
    table = filtered.groupby("lam").agg(
        generated=("key", "size"),
        kept=("keep", "sum"),
        text_score=("text_score", "mean"),
        image_score=("image_score", "mean"),
    )
    table["acceptance"] = table.kept / table.generated
    return table.reset_index()


def cached_text_scores(cfg, data: DatasetBundle, pool_dir: Path, cache: Path, device: torch.device, progress: bool):
    """``spectrum.max_tries``: the text scores of a pool's tries as ``retry_low_scores`` asks for them, cached in the
    scores file the filter reads later; only what the file lacks is scored, and the scorer is loaded only then."""
    from harness.config.keys import scorer_key
    from harness.core.io import lock
    from harness.core.registry import get_scorer

    name, scorer = f"scores-{scorer_key(cfg)}", None

    def text_scores(tries: pd.DataFrame) -> dict[str, float]:
        nonlocal scorer
        with lock(pool_dir / name):
            if not tries.key.isin(read_scores(pool_dir, f"{name}.jsonl")).all():
                if scorer is None:
                    scorer = get_scorer(cfg.scorer.name).from_config(cfg, data, cache, device)
                score_pool(scorer, data, tries, pool_dir, f"{name}.jsonl", progress=progress)
        return {k: r["text_score"] for k, r in read_scores(pool_dir, f"{name}.jsonl").items()}

    return text_scores
