"""Sharded generation under ``torchrun`` / ``accelerate launch``: which shard this process owns, its device, the
locks that let the ranks run in parallel while an independent job still cannot generate the same pool, and
rank 0's wait for the other shards. Shards meet through the pool folder (a shared file system across nodes),
so generation needs no process group.

Training under ``torchrun`` (DDP) does: ``init_from_env`` starts it, and ``rank``/``world``/``is_main``/
``barrier``/``share`` are no-ops in a one-process run.
"""
from __future__ import annotations

import logging
import os
import time
from datetime import timedelta
from pathlib import Path

import torch

from harness.io import lock

log = logging.getLogger("harness")

# Ranks > 0 wait in a barrier while rank 0 scores the synthetic pool, which can take hours at paper scale.
PROCESS_GROUP_TIMEOUT = timedelta(hours=12)


def init_from_env() -> None:
    """Join torchrun's process group (nccl on GPUs, gloo on CPUs) when WORLD_SIZE > 1; a no-op otherwise."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", 1)) <= 1 or dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", timeout=PROCESS_GROUP_TIMEOUT)


def active() -> bool:
    """Whether this process trains as one rank of several."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return torch.distributed.get_rank() if active() else 0


def world() -> int:
    return torch.distributed.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if active():
        torch.distributed.barrier()


def share(obj):
    """Rank 0's ``obj`` on every rank (any picklable value)."""
    if not active():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


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
