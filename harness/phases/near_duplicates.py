"""The scorer's image embeddings, cached by content, and the near-duplicate check against validation and test.

Every embedding (a reference set, the validation and test images, the hard sources, a pool's kept images) is computed
once per workdir and cached by content and scorer (``cache/retrieval/emb-KEY.npy``), under a lock beside it: two
processes (two runs, two DDP ranks, two SLURM jobs) on one workdir wait for each other and the second only reads.

A pool's near duplicates (``spectrum/test_near_duplicates/<λ>``): per λ, how many of its kept synthetic images have a
cosine above the threshold (``retrieval.near_duplicate``, else the scorer's own) to a validation or test image: a
generator that memorised its training data shows here. The count is a property of the pool and the evaluation
splits: computed once per pool key, filter threshold, scorer key and near-duplicate threshold
(``cache/retrieval/near-KEY.json``) and logged on every run that trains on the pool.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch

from harness.config.hashing import stable_hash
from harness.config.keys import data_identity, pool_key, scorer_key
from harness.core import distributed as dist
from harness.core.io import atomic_path, lock, read_json, write_json
from harness.core.registry import get_scorer
from harness.data.base import LabeledImages
from harness.phases.prepared import Prepared
from harness.phases.retrieval_sources import split_identity

log = logging.getLogger("harness")
BATCH = 256  # images embedded at once
CHUNK = 4096  # rows of a similarity matrix computed at once


def embed_cached(scorer, images: LabeledImages, rows: np.ndarray, identity: dict, cache: Path, desc: str):
    """The scorer's embeddings of ``images[rows]`` (N×D float32), cached by ``identity`` (the content). Under DDP
    the ranks share the work (``embed_sharded``)."""
    path = cache / "retrieval" / f"emb-{stable_hash(identity)}.npy"
    if dist.active():
        return embed_sharded(scorer, images, rows, path, desc)
    with lock(path):
        if path.exists():
            return np.load(path)
        emb = embed_rows(scorer, images, rows, desc)
        save_array(path, emb)
    return emb


def embed_rows(scorer, images: LabeledImages, rows: np.ndarray, desc: str) -> np.ndarray:
    from tqdm.auto import tqdm

    out = []
    for start in tqdm(range(0, len(rows), BATCH), desc=f"embed {desc}", unit="batch", mininterval=2):
        batch = [images.raw(int(i)) for i in rows[start : start + BATCH]]
        out.append(scorer.embed_images(batch).float().cpu().numpy())
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 1), np.float32)


def save_array(path: Path, emb: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, emb)


def embed_sharded(scorer, images: LabeledImages, rows: np.ndarray, path: Path, desc: str) -> np.ndarray:
    """DDP: each rank embeds a contiguous block of ``rows`` (as scoring splits the pool), the blocks are gathered on
    every rank, and rank 0 writes the cache. Every rank takes the branch rank 0's file system shows, so they enter
    the collectives together; no lock is held across them (a rank waiting on a lock would stall the others)."""
    if dist.share(path.exists()):
        return np.load(path)
    world, rank = dist.world(), dist.rank()
    block = max(1, math.ceil(len(rows) / world))
    mine = torch.from_numpy(embed_rows(scorer, images, rows[rank * block : (rank + 1) * block], desc))
    dim = dist.share(mine.shape[1] if len(mine) else 0)  # rank 0's block is the first, never empty when rows are
    if dim == 0:
        return np.zeros((0, 1), np.float32)
    on = "cuda" if torch.distributed.get_backend() == "nccl" else "cpu"  # the backend's device (the current GPU)
    local = mine.reshape(len(mine), dim).to(on)
    gathered = dist.gather_padded(local, block).cpu()
    sizes = [len(rows[r * block : (r + 1) * block]) for r in range(world)]
    emb = torch.cat([gathered[r, :n] for r, n in enumerate(sizes)]).numpy().astype(np.float32)
    if rank == 0:
        with lock(path):
            if not path.exists():
                save_array(path, emb)
    dist.barrier()
    return emb


def max_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row of ``a``: its largest cosine to a row of ``b`` (both L2-normalised); −1 when ``b`` is empty."""
    if len(b) == 0 or len(a) == 0:
        return np.full(len(a), -1.0)
    tb = torch.from_numpy(b)
    return np.concatenate(
        [(torch.from_numpy(a[i : i + CHUNK]) @ tb.T).max(1).values.numpy() for i in range(0, len(a), CHUNK)]
    )


def threshold(cfg) -> float:
    """The cosine above which two images are near duplicates: ``retrieval.near_duplicate``, else the scorer's."""
    own = cfg.retrieval.near_duplicate
    return own if own is not None else get_scorer(cfg.scorer.name).near_duplicate


def load_scorer(prep: Prepared, cache: Path):
    return get_scorer(prep.cfg.scorer.name).from_config(prep.cfg, prep.data, cache, prep.device)


def eval_embeddings(prep: Prepared, scorer, cache: Path) -> np.ndarray:
    """The validation and test images' embeddings, stacked."""
    data, data_id, skey = prep.data, data_identity(prep.cfg), scorer_key(prep.cfg)
    parts = []
    for name in dict.fromkeys([data.val_split, *data.test_splits.values()]):
        split = data.splits[name]
        rows = np.arange(len(split))
        identity = {**split_identity(data_id, split, rows, name), "scorer": skey}
        parts.append(embed_cached(scorer, split, rows, identity, cache, name))
    return np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)


def count_pool_near_duplicates(prep: Prepared, scorer, cache: Path, eval_emb: np.ndarray) -> dict:
    """Per λ of the pool: how many of its kept synthetic images are near duplicates of a validation or test image."""
    cfg, pool = prep.cfg, prep.pool
    rows = np.flatnonzero(pool.keep.to_numpy(dtype=bool))
    identity = {"pool": pool_key(cfg), "threshold": cfg.filter.threshold, "what": "kept", "scorer": scorer_key(cfg)}
    emb = embed_cached(scorer, prep.pool_images, rows, identity, cache, "pool") if len(rows) else eval_emb[:0]
    near = max_cosine(emb, eval_emb) > threshold(cfg)
    kept_lams, lams = pool.lam.to_numpy()[rows], pool.lam.to_numpy()
    return {f"spectrum/test_near_duplicates/{lam:g}": int(near[kept_lams == lam].sum()) for lam in np.unique(lams)}


def pool_near_duplicates(prep: Prepared, cache: Path, scorer=None, eval_emb: np.ndarray | None = None) -> dict:
    """``count_pool_near_duplicates``, once per pool (see the module doc); {} without a pool. The scorer is loaded,
    and the evaluation images embedded, only when the count is not cached (or pass them)."""
    if prep.pool_images is None or not len(prep.pool):
        return {}
    cfg = prep.cfg
    key = {"pool": pool_key(cfg), "filter": cfg.filter.threshold, "scorer": scorer_key(cfg), "near": threshold(cfg)}
    path = cache / "retrieval" / f"near-{stable_hash({**key, 'data': data_identity(cfg)})}.json"
    if dist.active():  # every rank counts (its embeddings sharded), rank 0 writes; no lock across the collectives
        if dist.share(path.exists()):
            return read_json(path)
        counts = count_near(prep, cache, scorer, eval_emb)
        if dist.is_main():
            write_json(path, counts)
        dist.barrier()
        return counts
    with lock(path):
        if path.exists():
            return read_json(path)
        counts = count_near(prep, cache, scorer, eval_emb)
        write_json(path, counts)
    return counts


def count_near(prep: Prepared, cache: Path, scorer=None, eval_emb: np.ndarray | None = None) -> dict:
    scorer = scorer if scorer is not None else load_scorer(prep, cache)
    eval_emb = eval_emb if eval_emb is not None else eval_embeddings(prep, scorer, cache)
    counts = count_pool_near_duplicates(prep, scorer, cache, eval_emb)
    log.info("near duplicates of validation or test images in the kept pool, per λ: %s", counts)
    return counts


def log_pool_near_duplicates(prep: Prepared, method, run) -> None:
    """On a run of a method that trains on the synthetic pool: the pool's near duplicates per λ."""
    if method.synthetic and prep.pool_dir is not None:
        counts = pool_near_duplicates(prep, prep.pool_dir.parents[1])  # on every DDP rank: it may be collective
        if run is not None:  # rank 0's
            run.log_metrics(counts)
