"""Retrieval for ``retrieved_real``: for each hard source, the real images of its class nearest to it in a reference
set (``retrieval.source``), by the scorer's image embedding, in place of its synthetic images.

How many per source: the most images of that source the filter kept at any one of the method's λ levels. A
single-level stage (``discl_diverse_to_specific``) draws a level's kept images, so no stage of the synthetic
method draws more of one source than that; the epoch then draws exactly as many images as the synthetic method
would (``curriculum.epoch_parts``), from the retrieved ones.

Every embedding (reference set, validation and test images, hard sources) is computed once and cached by content
and scorer, under a lock (``harness.phases.near_duplicates.embed_cached``).

The near-duplicate check: a reference image whose cosine to any validation or test image exceeds
``retrieval.near_duplicate`` (the scorer's own by default) is dropped before retrieval and counted
(``retrieval/test_near_duplicates``); the pool it stands in for is counted per λ too
(``spectrum/test_near_duplicates/<λ>``, ``harness.phases.near_duplicates``).

Where it is built: in the shared phase when the experiment's methods include a retrieving one (``warm_retrieval``:
``harness.phases.pipeline.prepare``, so the local launcher's and torchrun's shared phase, and the SLURM ``merge`` /
``shared`` job), then in each run's own process from those caches (the selection itself is cheap). Under DDP the
ranks split each embedding between them, as scoring splits the pool (``embed_sharded``). Every cache entry is built
under its own lock, so runs started at once on one workdir (SLURM array tasks, `harness run` processes) still embed
each set once: the first builds, the others wait and read.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from harness.config import ConfigError
from harness.config.keys import data_identity, scorer_key
from harness.core.registry import get_method
from harness.data.base import LabeledImages, take
from harness.phases.near_duplicates import (
    embed_cached,
    eval_embeddings,
    load_scorer,
    max_cosine,
    pool_near_duplicates,
    threshold,
)
from harness.phases.prepared import Prepared, RetrievedPool
from harness.phases.retrieval_sources import HFImages, load_reference, split_identity

log = logging.getLogger("harness")


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
        out = HFImages(images.dataset.select(rows), images.column, images.size, images.channels, images.labels[rows])
        out.ids = [images.ids[int(r)] for r in rows]  # the rows of the saved dataset, as the report names them
        return out
    return take(images, rows)


def build_retrieved(prep: Prepared, levels: tuple[float, ...], cache: Path) -> RetrievedPool:
    """The retrieved images of every hard source (held-out ones too: an epoch draws those of its training sources),
    with the counts a run logs."""
    cfg, data = prep.cfg, prep.data
    rcfg, skey = cfg.retrieval, scorer_key(cfg)
    scorer = load_scorer(prep, cache)
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
    near = max_cosine(ref_emb, eval_emb) > threshold(cfg)
    source_id = {**split_identity(data_identity(cfg), data.train, sources, "hard"), "scorer": skey}
    source_emb = embed_cached(scorer, data.train, sources, source_id, cache, "hard sources")
    counts = per_source_counts(prep.pool, sources, levels)
    rows, owners = retrieve(ref_emb, labels, ~near, source_emb, source_labels, counts)
    images = subset(ref.images, rows)
    images.labels = labels[rows]  # the class retrieval assigned (an unlabelled set's from its prompt)
    metrics = {"retrieval/images": len(rows), "retrieval/test_near_duplicates": int(near.sum())}
    metrics |= pool_near_duplicates(prep, cache, scorer, eval_emb)  # the synthetic images these stand in for
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


def warm_retrieval(prep: Prepared, methods) -> None:
    """The shared phase's part: the retrieved images of a retrieving method among ``methods`` (its embeddings cached
    for the runs), and the pool's near-duplicate counts for a method that trains on the pool."""
    wanted = [get_method(m) for m in methods]
    for method in wanted:
        attach_retrieved(prep, method)
    if prep.pool_dir is not None and any(m.synthetic for m in wanted):
        pool_near_duplicates(prep, prep.pool_dir.parents[1])
