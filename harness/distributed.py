"""Sharded generation under ``torchrun`` / ``accelerate launch``: which shard this process owns, its device, the
locks that let the ranks run in parallel while an independent job still cannot generate the same pool, and
rank 0's wait for the other shards. Shards meet through the pool folder (a shared file system across nodes),
so no process group is needed.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch

from harness.io import lock

log = logging.getLogger("harness")


def rank_world() -> tuple[int, int]:
    """(RANK, WORLD_SIZE) as torchrun and accelerate set them; (0, 1) otherwise."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is not in [0, WORLD_SIZE={world})")
    return rank, world


def local_device(device: torch.device) -> torch.device:
    """Each process on a node takes its own GPU (LOCAL_RANK) when the config says plain ``cuda``."""
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        index = int(os.environ["LOCAL_RANK"]) % max(1, torch.cuda.device_count())
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return device


def generation_lock(pool_dir: Path, rank: int):
    """Rank 0 (or a one-process job) holds the pool's lock until the pool is complete, so a second job waits;
    rank r > 0 holds only its shard's lock, so the ranks of one job run in parallel."""
    return lock(pool_dir / "generate") if rank == 0 else lock(pool_dir / f"generate.shard{rank:03d}")


def wait_for_shards(pool_dir: Path, keys: set[str], poll_s: float = 2.0, timeout_s: float | None = None) -> None:
    """Rank 0: block until every planned key is in some shard's manifest."""
    from harness.spectrum import read_manifest

    start, last_log = time.monotonic(), 0.0
    while True:
        missing = len(keys - set(read_manifest(pool_dir).key))
        if not missing:
            return
        waited = time.monotonic() - start
        if timeout_s is not None and waited > timeout_s:
            raise TimeoutError(f"{missing} images of {pool_dir} still missing after {waited:.0f} s: did a rank die?")
        if waited - last_log >= 60:
            log.info("rank 0: waiting for the other shards (%d images to go)", missing)
            last_log = waited
        time.sleep(poll_s)
