"""Retrieval for ``retrieved_real``: for each hard source, the real images of its class nearest to it in a reference
set (``retrieval.source``), by the scorer's image embedding, in place of its synthetic images.

How many per source: the most images of that source the filter kept at any one of the method's λ levels. A
single-level stage (``discl_diverse_to_specific``) draws a level's kept images, so no stage of the synthetic
method draws more of one source than that; the epoch then draws exactly as many images as the synthetic method
would (``curriculum.epoch_parts``), from the retrieved ones.

Every embedding (reference set, validation and test images, hard sources, the kept synthetic images) is computed
once and cached by content and scorer (``cache/retrieval/emb-KEY.npy``), in batches with a progress bar.

The near-duplicate check: a reference image whose cosine to any validation or test image exceeds
``retrieval.near_duplicate`` (the scorer's own by default) is dropped before retrieval and counted
(``retrieval/test_near_duplicates``); the kept synthetic images are checked the same way and counted per λ
(``spectrum/test_near_duplicates/<λ>``: a generator that memorised its training data shows there).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from harness.config import ConfigError
from harness.config.hashing import stable_hash
from harness.config.keys import data_identity, pool_key, scorer_key
from harness.core.io import atomic_path, lock
from harness.core.registry import get_scorer
from harness.data.base import LabeledImages, take
from harness.phases.prepared import Prepared, RetrievedPool
from harness.phases.retrieval_sources import HFImages, load_reference, split_identity

log = logging.getLogger("harness")
BATCH = 256  # images embedded at once
CHUNK = 4096  # rows of a similarity matrix computed at once


def embed_cached(scorer, images: LabeledImages, rows: np.ndarray, identity: dict, cache: Path, desc: str):
    """The scorer's embeddings of ``images[rows]`` (N×D float32), cached by ``identity`` (the content)."""
    path = cache / "retrieval" / f"emb-{stable_hash(identity)}.npy"
    with lock(path):
        if path.exists():
            return np.load(path)
        from tqdm.auto import tqdm

        out = []
        for start in tqdm(range(0, len(rows), BATCH), desc=f"embed {desc}", unit="batch", mininterval=2):
            batch = [images.raw(int(i)) for i in rows[start : start + BATCH]]
            out.append(scorer.embed_images(batch).float().cpu().numpy())
        emb = np.concatenate(out).astype(np.float32) if out else np.zeros((0, 1), np.float32)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, emb)
    return emb


def max_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row of ``a``: its largest cosine to a row of ``b`` (both L2-normalised); −1 when ``b`` is empty."""
    if len(b) == 0 or len(a) == 0:
        return np.full(len(a), -1.0)
    tb = torch.from_numpy(b)
    return np.concatenate(
        [(torch.from_numpy(a[i : i + CHUNK]) @ tb.T).max(1).values.numpy() for i in range(0, len(a), CHUNK)]
    )


def assign_classes(emb: np.ndarray, class_emb: np.ndarray) -> np.ndarray:
    """An unlabelled image's class: the class whose prompt embedding is nearest to it."""
    return (torch.from_numpy(emb) @ torch.from_numpy(class_emb).T).argmax(1).numpy()


def per_source_counts(pool, sources: np.ndarray, levels: tuple[float, ...]) -> np.ndarray:
    """Per hard source: the most of its images the filter kept at any one of ``levels`` (see the module doc)."""
    kept = pool[pool.keep.astype(bool) & pool.lam.round(4).isin([round(x, 4) for x in levels])]
    most = kept.groupby(["source_index", kept.lam.round(4)]).size().groupby(level=0).max()
    return np.array([int(most.get(s, 0)) for s in sources], dtype=np.int64)


def retrieve(
    ref_emb: np.ndarray,
    ref_labels: np.ndarray,
    usable: np.ndarray,
    source_emb: np.ndarray,
    source_labels: np.ndarray,
    counts: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """For each source (row of ``source_emb``): the ``counts`` usable reference rows of its class nearest to it, by
    cosine, nearest first (fewer when its class has fewer). Returns (reference rows, the source position of each)."""
    rows, owners = [], []
    for c in np.unique(source_labels):
        candidates = np.flatnonzero((ref_labels == c) & usable)
        mine = np.flatnonzero(source_labels == c)
        if len(candidates) == 0:
            continue
        sims = torch.from_numpy(source_emb[mine]) @ torch.from_numpy(ref_emb[candidates]).T
        order = torch.argsort(sims, dim=1, descending=True, stable=True).numpy()
        for position, ranked in zip(mine, order):
            picked = candidates[ranked[: counts[position]]]
            rows.append(picked)
            owners.append(np.full(len(picked), position))
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(rows).astype(np.int64), np.concatenate(owners).astype(np.int64)


def subset(images: LabeledImages, rows: np.ndarray) -> LabeledImages:
    """The images at ``rows`` of a reference set, as a set of their own."""
    if isinstance(images, HFImages):
        return HFImages(images.dataset.select(rows), images.column, images.size, images.channels, images.labels[rows])
    return take(images, rows)


def eval_embeddings(prep: Prepared, scorer, cache: Path) -> np.ndarray:
    """The validation and test images' embeddings, stacked."""
    data, data_id = prep.data, data_identity(prep.cfg)
    names = dict.fromkeys([data.val_split, *data.test_splits.values()])
    parts = []
    for name in names:
        split = data.splits[name]
        rows = np.arange(len(split))
        parts.append(embed_cached(scorer, split, rows, split_identity(data_id, split, rows, name), cache, name))
    return np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)


def synthetic_near_duplicates(prep: Prepared, scorer, cache: Path, eval_emb: np.ndarray, threshold: float) -> dict:
    """Per λ: how many kept synthetic images are near duplicates of a validation or test image."""
    rows = np.flatnonzero(prep.pool.keep.to_numpy(dtype=bool))
    if prep.pool_images is None or len(rows) == 0:
        return {}
    identity = {"pool": pool_key(prep.cfg), "threshold": prep.cfg.filter.threshold, "what": "kept"}
    emb = embed_cached(scorer, prep.pool_images, rows, {**identity, "scorer": scorer_key(prep.cfg)}, cache, "pool")
    near = max_cosine(emb, eval_emb) > threshold
    lams = prep.pool.lam.to_numpy()[rows]
    return {f"spectrum/test_near_duplicates/{lam:g}": int(near[lams == lam].sum()) for lam in np.unique(lams)}


def build_retrieved(prep: Prepared, levels: tuple[float, ...], cache: Path) -> RetrievedPool:
    """The retrieved images of every hard source (held-out ones too: an epoch draws those of its training sources),
    with the counts a run logs."""
    cfg, data = prep.cfg, prep.data
    rcfg, skey = cfg.retrieval, scorer_key(cfg)
    scorer = get_scorer(cfg.scorer.name).from_config(cfg, data, cache, prep.device)
    ref = load_reference(rcfg.source, cfg, data)
    all_rows = np.arange(len(ref.images))
    ref_emb = embed_cached(scorer, ref.images, all_rows, {**ref.identity, "scorer": skey}, cache, "reference")
    labels = ref.labels
    if labels is None:
        labels = assign_classes(ref_emb, scorer.embed_classes(list(data.class_names)).float().cpu().numpy())
    sources = np.unique(prep.hard)
    source_labels = data.train.labels[sources]
    missing = sorted(set(source_labels.tolist()) - set(labels.tolist()))
    if missing:
        names = ", ".join(repr(data.class_names[c]) for c in missing[:5])
        raise ConfigError(
            f"retrieval.source: {rcfg.source} has no image of the hard sources' class(es) {names}; add them"
        )
    eval_emb = eval_embeddings(prep, scorer, cache)
    threshold = rcfg.near_duplicate if rcfg.near_duplicate is not None else scorer.near_duplicate
    near = max_cosine(ref_emb, eval_emb) > threshold
    source_id = {**split_identity(data_identity(cfg), data.train, sources, "hard"), "scorer": skey}
    source_emb = embed_cached(scorer, data.train, sources, source_id, cache, "hard sources")
    counts = per_source_counts(prep.pool, sources, levels)
    rows, owners = retrieve(ref_emb, labels, ~near, source_emb, source_labels, counts)
    images = subset(ref.images, rows)
    images.labels = labels[rows]  # the class retrieval assigned (an unlabelled set's from its prompt)
    metrics = {"retrieval/images": len(rows), "retrieval/test_near_duplicates": int(near.sum())}
    metrics |= synthetic_near_duplicates(prep, scorer, cache, eval_emb, threshold)
    log.info("retrieved %d real images for %d hard sources (%s)", len(rows), len(sources), rcfg.source)
    return RetrievedPool(images, sources[owners], metrics)


def attach_retrieved(prep: Prepared, method, run=None) -> None:
    """For a retrieving method: build (once per ``prep``) the retrieved images it draws, and log their counts on
    ``run``. The cache is the workdir's, above the pool's folder (``cache/pool/KEY``)."""
    if not method.retrieves or prep.pool_dir is None:
        return
    if prep.retrieved is None:
        prep.retrieved = build_retrieved(prep, prep.cfg.method_levels(method), prep.pool_dir.parents[1])
    if run is not None:
        run.log_metrics(prep.retrieved.metrics)
