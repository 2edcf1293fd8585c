"""Retrieval's embeddings under DDP: each rank embeds its own block of the images, every rank gets all of them, in
order, equal to one process's, and rank 0 writes the cache that a later call (any rank) only reads."""

import json
import os
import socket

import numpy as np
import torch

from harness.data.base import TensorImages

N = 7  # not a multiple of the world: the last rank's block is short


class PixelScorer:
    """An embedding that says which image it came from: its mean pixel and 1. Counts what it embedded."""

    def __init__(self):
        self.embedded = 0

    def embed_images(self, images):
        self.embedded += len(images)
        return torch.tensor([[float(np.asarray(img).mean()), 1.0] for img in images])


def images() -> TensorImages:
    pixels = torch.arange(N, dtype=torch.float32).view(N, 1, 1, 1).expand(N, 1, 2, 2) / N
    return TensorImages(pixels, np.zeros(N, np.int64), [str(i) for i in range(N)])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_worker(rank: int, port: int, cache: str) -> None:
    from pathlib import Path

    from harness.phases.near_duplicates import embed_cached

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    try:
        scorer = PixelScorer()
        rows = np.arange(N)
        first = embed_cached(scorer, images(), rows, {"set": "pixels"}, Path(cache), "pixels")
        done_first = scorer.embedded
        again = embed_cached(scorer, images(), rows, {"set": "pixels"}, Path(cache), "pixels")
        out = {"first": first.tolist(), "again": again.tolist(), "embedded": done_first, "after": scorer.embedded}
        (Path(cache) / f"rank{rank}.json").write_text(json.dumps(out))
    finally:
        torch.distributed.destroy_process_group()


def test_ranks_embed_a_block_each_and_all_get_one_process_embeddings(tmp_path):
    from harness.phases.near_duplicates import embed_rows

    torch.multiprocessing.spawn(rank_worker, args=(free_port(), str(tmp_path)), nprocs=2)
    alone = embed_rows(PixelScorer(), images(), np.arange(N), "pixels")
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r in results:
        assert np.allclose(r["first"], alone) and np.allclose(r["again"], alone)
        assert r["after"] == r["embedded"], "the second call read the cache"
    assert [r["embedded"] for r in results] == [4, 3], "each rank embedded its own block"
    (cached,) = (tmp_path / "retrieval").glob("emb-*.npy")
    assert np.allclose(np.load(cached), alone)
